"""Writes of telephony: SIP trunks, created and deleted in LiveKit first."""

from __future__ import annotations

import logging

from django.db import transaction
from rest_framework import serializers

from accounts.models import Organization
from telephony.models import SipTrunk, TrunkDirection
from telephony.selectors import outbound_numbers
from voicecalls import livekit

logger = logging.getLogger(__name__)

MAX_TRUNKS_PER_ORGANIZATION = 20


def _trunk_cap_check(*, organization: Organization) -> None:
    if SipTrunk.objects.filter(organization=organization).count() >= MAX_TRUNKS_PER_ORGANIZATION:
        raise serializers.ValidationError(
            f"An organization can have at most {MAX_TRUNKS_PER_ORGANIZATION} SIP trunks.",
            code="limit_reached",
        )


def sip_trunk_create(
    *,
    organization: Organization,
    name: str,
    direction: str,
    numbers: list[str],
    address: str = "",
    auth_username: str = "",
    auth_password: str = "",
) -> SipTrunk:
    """Create the trunk in LiveKit, then store it with LiveKit's id.

    LiveKit refusing or unreachable raises `LiveKitError` and nothing is stored. Should
    the insert fail after LiveKit created it (a concurrent create took the last place
    under the cap, checked again under the organization's row lock), the LiveKit trunk
    is deleted again.
    """
    _trunk_cap_check(organization=organization)
    if direction == TrunkDirection.OUTBOUND:
        trunk_id = livekit.create_outbound_trunk(
            name=name,
            address=address,
            numbers=numbers,
            auth_username=auth_username,
            auth_password=auth_password,
        )
    else:
        trunk_id = livekit.create_inbound_trunk(
            name=name, numbers=numbers, auth_username=auth_username, auth_password=auth_password
        )
    try:
        with transaction.atomic():
            Organization.objects.select_for_update().filter(pk=organization.pk).exists()
            _trunk_cap_check(organization=organization)
            return SipTrunk.objects.create(
                organization=organization,
                name=name,
                direction=direction,
                address=address,
                numbers=numbers,
                auth_username=auth_username,
                auth_password=auth_password or None,
                livekit_trunk_id=trunk_id,
            )
    except Exception:
        _livekit_trunk_forget(trunk_id)
        raise


def _livekit_trunk_forget(trunk_id: str) -> None:
    try:
        livekit.delete_trunk(trunk_id=trunk_id)
    except livekit.LiveKitError as exc:
        logger.warning("could not delete LiveKit trunk %s again: %s", trunk_id, exc)


def sip_trunk_delete(*, trunk: SipTrunk) -> None:
    """Delete the trunk in LiveKit (already gone there is fine), then here.
    `LiveKitError` leaves it as it was. A default caller number no other outbound
    trunk of the organization has is cleared with it: calls would refuse it."""
    livekit.delete_trunk(trunk_id=trunk.livekit_trunk_id)
    with transaction.atomic():
        trunk.delete()
        organization = Organization.objects.select_for_update().get(pk=trunk.organization_id)
        default = organization.default_caller_number
        if default and default not in outbound_numbers(organization=organization):
            organization.default_caller_number = None
            organization.save(update_fields=["default_caller_number"])
