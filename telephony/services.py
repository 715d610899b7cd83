"""Writes of telephony: SIP trunks (created and deleted in LiveKit first) and phone
numbers (mapped to workflows, verified by staff). Outbound phone calls are created and
dialed in telephony.dialing."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone
from rest_framework import serializers
from rest_framework.exceptions import NotFound

from accounts.models import Organization
from telephony.models import PhoneNumber, PhoneNumberStatus, SipTrunk, TrunkDirection
from telephony.selectors import (
    number_held_elsewhere,
    numbers_on_inbound_trunks,
    numbers_on_trunks,
    outbound_numbers,
    sip_trunk_queryset,
)
from voicecalls import livekit, livekit_sip
from voicecalls.db import advisory_lock
from voicecalls.errors import Conflict
from workflows.models import Workflow
from workflows.selectors import workflow_queryset

logger = logging.getLogger(__name__)

MAX_TRUNKS_PER_ORGANIZATION = 20
NUMBER_TAKEN = "This number is not available."


def _trunk_cap_check(*, organization: Organization) -> None:
    if SipTrunk.objects.filter(organization=organization).count() >= MAX_TRUNKS_PER_ORGANIZATION:
        raise serializers.ValidationError(
            f"An organization can have at most {MAX_TRUNKS_PER_ORGANIZATION} SIP trunks.",
            code="limit_reached",
        )


def _livekit_trunk_create(*, direction: str, **trunk: Any) -> str:
    """The trunk made in LiveKit, its id. When LiveKit fails, a trunk it made anyway
    (its answer lost: a timeout) is found by its marker and deleted, so a retry makes
    no second trunk claiming the same numbers."""
    marker = uuid.uuid4().hex
    inbound = direction != TrunkDirection.OUTBOUND
    try:
        if inbound:
            trunk.pop("address")
            return livekit_sip.create_inbound_trunk(**trunk, marker=marker)
        return livekit_sip.create_outbound_trunk(**trunk, marker=marker)
    except livekit.LiveKitError:
        try:
            livekit_sip.trunks_marked_delete(inbound=inbound, marker=marker)
        except livekit.LiveKitError as exc:
            logger.warning("a SIP trunk LiveKit may have made is not deleted: %s", exc)
        raise


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
    _trunk_numbers_check(organization=organization, numbers=numbers, direction=direction)
    trunk_id = _livekit_trunk_create(
        name=name,
        direction=direction,
        numbers=numbers,
        address=address,
        auth_username=auth_username,
        auth_password=auth_password,
    )
    try:
        with transaction.atomic():
            Organization.objects.select_for_update().filter(pk=organization.pk).exists()
            _trunk_cap_check(organization=organization)
            # Again, with the numbers locked: another organization may have mapped one
            # while LiveKit created the trunk.
            _numbers_lock(numbers)
            _trunk_numbers_check(organization=organization, numbers=numbers, direction=direction)
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


def _trunk_numbers_check(*, organization: Organization, numbers: list[str], direction: str) -> None:
    """No trunk lists a number another organization has, mapped to a workflow or on one
    of its trunks of either direction (the first to list a number keeps it: else the
    one whose inbound trunk answers it could no longer map it), and no inbound trunk a
    number another inbound trunk answers (LiveKit refuses it)."""
    taken = set(
        PhoneNumber.objects.filter(number__in=numbers)
        .exclude(organization=organization)
        .values_list("number", flat=True)
    )
    taken |= numbers_on_trunks(numbers, trunks=SipTrunk.objects.exclude(organization=organization))
    if direction == TrunkDirection.INBOUND:
        taken |= numbers_on_inbound_trunks(numbers)
    for index, number in enumerate(numbers):
        if number in taken:
            raise serializers.ValidationError({"numbers": {index: [NUMBER_TAKEN]}})


def _numbers_lock(numbers: list[str]) -> None:
    """Whoever claims these numbers (a trunk listing them, a number mapped) goes one at
    a time, across organizations, until the transaction ends; in one order, so two
    claims of the same numbers never deadlock."""
    for number in sorted(set(numbers)):
        advisory_lock(f"phone-number:{number}")


def _livekit_trunk_forget(trunk_id: str) -> None:
    try:
        livekit_sip.delete_trunk(trunk_id=trunk_id)
    except livekit.LiveKitError as exc:
        logger.warning("could not delete LiveKit trunk %s again: %s", trunk_id, exc)


def sip_trunk_delete(*, trunk: SipTrunk) -> None:
    """Delete the trunk in LiveKit (already gone there is fine), then here.
    `LiveKitError` leaves it as it was. A default caller number no other outbound
    trunk of the organization has is cleared with it: calls would refuse it. A trunk
    with phone numbers is `TrunkInUse` (their dispatch rules name it).

    One transaction around LiveKit's delete, the trunk's row locked: a number being
    added to it meanwhile waits (phone_number_create locks the trunk too) and then finds
    no trunk; a LiveKit failure rolls the row's delete back."""
    with transaction.atomic():
        locked = SipTrunk.objects.select_for_update().filter(pk=trunk.pk).first()
        if locked is None:
            return
        if locked.phone_numbers.exists():
            raise TrunkInUse()
        locked.delete()
        livekit_sip.delete_trunk(trunk_id=trunk.livekit_trunk_id)
        organization = Organization.objects.select_for_update().get(pk=trunk.organization_id)
        default = organization.default_caller_number
        if default and default not in outbound_numbers(organization=organization):
            organization.default_caller_number = None
            organization.save(update_fields=["default_caller_number"])


class TrunkInUse(Conflict):
    default_detail = "The trunk has phone numbers: delete them first."
    default_code = "trunk_in_use"


def phone_number_create(
    *, organization: Organization, number: str, trunk_id: uuid.UUID, workflow_slug: str
) -> PhoneNumber:
    """Map `number` on one of the organization's inbound trunks to a workflow, as
    `unverified`: nothing reaches LiveKit until staff verify it (phone_number_verify).
    400s name the field: a trunk that is not the organization's inbound trunk, a number
    not on it, a number anyone else holds (a phone number, or on another organization's
    trunk), an unknown workflow."""
    with transaction.atomic():
        # Locked until the number is in: a delete of the trunk waits for it, or this for
        # the delete (then the trunk is gone).
        trunk = (
            sip_trunk_queryset(organization=organization)
            .select_for_update()
            .filter(pk=trunk_id, direction=TrunkDirection.INBOUND)
            .first()
        )
        if trunk is None:
            raise serializers.ValidationError(
                {"trunk_id": ["No inbound trunk of yours has this id."]}
            )
        return _phone_number_insert(
            organization=organization, number=number, trunk=trunk, workflow_slug=workflow_slug
        )


def _phone_number_insert(
    *, organization: Organization, number: str, trunk: SipTrunk, workflow_slug: str
) -> PhoneNumber:
    """Insert the number on the (locked) trunk once it is known to be free."""
    if number not in trunk.numbers:
        raise serializers.ValidationError({"number": ["The trunk does not have this number."]})
    workflow = _workflow_locked(organization=organization, slug=workflow_slug)
    _numbers_lock([number])  # until it is in: a trunk listing it elsewhere waits
    if PhoneNumber.objects.filter(number=number).exists() or number_held_elsewhere(
        organization=organization, number=number
    ):
        raise serializers.ValidationError({"number": [NUMBER_TAKEN]})
    try:
        with transaction.atomic():
            return PhoneNumber.objects.create(
                organization=organization, number=number, trunk=trunk, workflow=workflow
            )
    except IntegrityError:  # a concurrent create of the same number won
        raise serializers.ValidationError({"number": [NUMBER_TAKEN]}) from None


@transaction.atomic
def phone_number_verify(*, phone_number: PhoneNumber) -> PhoneNumber:
    """Staff verified the number: create its LiveKit dispatch rule (each caller in a new
    room, our agent dispatched with metadata naming the number) and mark it verified.
    Idempotent; `LiveKitError` leaves it unverified."""
    locked = (
        PhoneNumber.objects.select_for_update()
        .select_related("trunk")
        .defer("trunk__auth_password")
        .get(pk=phone_number.pk)
    )
    if locked.status == PhoneNumberStatus.VERIFIED:
        return locked
    rule = {
        "trunk_id": locked.trunk.livekit_trunk_id,
        "number": locked.number,
        "phone_number_id": str(locked.pk),
    }
    # A verify whose answer was lost left LiveKit's rule behind: it is this number's.
    rule_id = livekit_sip.dispatch_rule_find(**rule) or livekit_sip.create_dispatch_rule(**rule)
    try:
        locked.status = PhoneNumberStatus.VERIFIED
        locked.livekit_dispatch_rule_id = rule_id
        locked.verified_at = timezone.now()
        with transaction.atomic():
            locked.save(update_fields=["status", "livekit_dispatch_rule_id", "verified_at"])
    except Exception:
        _livekit_rule_forget(rule_id)
        raise
    return locked


def _livekit_rule_forget(rule_id: str) -> None:
    try:
        livekit_sip.delete_dispatch_rule(rule_id=rule_id)
    except livekit.LiveKitError as exc:
        logger.warning("could not delete LiveKit dispatch rule %s again: %s", rule_id, exc)


@transaction.atomic
def phone_number_delete(*, phone_number: PhoneNumber) -> None:
    """Delete the number's dispatch rule in LiveKit (already gone there is fine), then
    the number. `LiveKitError` keeps it as it was."""
    locked = (
        PhoneNumber.objects.select_for_update()
        .select_related("trunk")
        .defer("trunk__auth_password")
        .filter(pk=phone_number.pk)
    ).first()
    if locked is None:
        return
    rule_id = locked.livekit_dispatch_rule_id or livekit_sip.dispatch_rule_find(
        # A verify whose answer was lost left the rule there: it would route callers to
        # a number we no longer have, and refuse the number's rule when it is added again.
        trunk_id=locked.trunk.livekit_trunk_id,
        number=locked.number,
        phone_number_id=str(locked.pk),
    )
    if rule_id:
        livekit_sip.delete_dispatch_rule(rule_id=rule_id)
    locked.delete()


def _workflow_locked(*, organization: Organization, slug: str) -> Workflow:
    """The organization's live workflow `slug`, locked until the number points at it: a
    delete of the workflow waits, or this for the delete (workflows.services)."""
    workflow = (
        workflow_queryset(organization=organization)
        .select_for_update(of=("self",))
        .filter(slug=slug)
        .first()
    )
    if workflow is None:
        raise serializers.ValidationError({"workflow_slug": ["No workflow has this slug."]})
    return workflow


@transaction.atomic
def phone_number_update(
    *, phone_number: PhoneNumber, workflow_slug: str | None = None
) -> PhoneNumber:
    """Point the number at another workflow of its organization: calls already in
    progress keep theirs, the next caller reaches the new one. The dispatch rule names
    only the number, so LiveKit is not asked. Nothing given, nothing changes."""
    if workflow_slug is None:
        return phone_number
    workflow = _workflow_locked(organization=phone_number.organization, slug=workflow_slug)
    # Deleted meanwhile, the number is not found (a save of a row gone is a 500).
    if not PhoneNumber.objects.filter(pk=phone_number.pk).update(workflow=workflow):
        raise NotFound()
    phone_number.workflow = workflow
    return phone_number


@transaction.atomic
def organization_delete(organization: Organization) -> None:
    """Delete an organization with what it has in LiveKit: its numbers' dispatch rules
    and its trunks (carrier credentials), which its rows' cascade would leave there.
    `LiveKitError` keeps it all as it was (what LiveKit deleted already is gone).

    `ProtectedError`, before LiveKit is asked, for one with workflows (and so calls),
    which are kept. Checked holding its row, until the end: a row its customer adds
    meanwhile (a first workflow, a key) waits on it (its foreign key) instead of failing
    the rows' delete after LiveKit's were gone. Its trunks are locked before it, the
    order in which a trunk's own deletion takes them (the other order deadlocked)."""
    trunks = SipTrunk.objects.select_for_update().filter(organization=organization)
    list(trunks.order_by("pk").values_list("pk"))
    Organization.objects.select_for_update().filter(pk=organization.pk).exists()
    protecting = Workflow.objects.filter(organization=organization)[:1]
    if protecting:
        raise ProtectedError("The organization has workflows (and calls): kept.", set(protecting))
    for number in organization.phone_numbers.all():
        phone_number_delete(phone_number=number)
    for trunk in organization.sip_trunks.all():
        sip_trunk_delete(trunk=trunk)
    organization.delete()
