from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import Organization
from telephony.models import SipTrunk, TrunkDirection


def sip_trunk_queryset(*, organization: Organization) -> QuerySet[SipTrunk]:
    """The organization's trunks: the only way client views reach trunks."""
    return SipTrunk.objects.filter(organization=organization)


def outbound_trunk_for_number(*, organization: Organization, number: str) -> SipTrunk | None:
    """The organization's newest outbound trunk that has `number` (organizations have
    a handful of trunks: read them all rather than query JSON portably)."""
    trunks = sip_trunk_queryset(organization=organization).filter(direction=TrunkDirection.OUTBOUND)
    return next((trunk for trunk in trunks if number in trunk.numbers), None)


def outbound_numbers(*, organization: Organization) -> list[str]:
    trunks = sip_trunk_queryset(organization=organization).filter(direction=TrunkDirection.OUTBOUND)
    return [number for trunk in trunks for number in trunk.numbers]
