from __future__ import annotations

from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast

from accounts.models import Organization
from telephony.models import PhoneNumber, SipTrunk, TrunkDirection


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


def phone_number_queryset(*, organization: Organization) -> QuerySet[PhoneNumber]:
    """The organization's phone numbers: the only way client views reach them."""
    return (
        PhoneNumber.objects.filter(organization=organization)
        .select_related("trunk", "workflow")
        .defer("trunk__auth_password")  # as SipTrunk.objects: never read, never decrypted
    )


def number_held_elsewhere(*, organization: Organization, number: str) -> bool:
    """Whether another organization has `number`: as a phone number, or on one of its
    trunks (a JSON list; its text holds `"<number>"`, quoted, on every database)."""
    if PhoneNumber.objects.filter(number=number).exclude(organization=organization).exists():
        return True
    return (
        SipTrunk.objects.exclude(organization=organization)
        .annotate(numbers_text=Cast("numbers", TextField()))
        .filter(numbers_text__contains=f'"{number}"')
        .exists()
    )


def numbers_on_inbound_trunks(numbers: list[str]) -> set[str]:
    """Which of `numbers` an inbound trunk (of any organization) already answers: LiveKit
    refuses a second inbound trunk with the same number ("Conflicting inbound SIP
    Trunks"), and a number belongs to one organization only."""
    return numbers_on_trunks(
        numbers, trunks=SipTrunk.objects.filter(direction=TrunkDirection.INBOUND)
    )


def numbers_on_trunks(numbers: list[str], *, trunks: QuerySet[SipTrunk]) -> set[str]:
    """Which of `numbers` one of `trunks` lists (a JSON list: its text holds
    `"<number>"`, quoted, on every database)."""
    if not numbers:
        return set()
    listed = Q()
    for number in numbers:
        listed |= Q(numbers_text__contains=f'"{number}"')
    held = (
        trunks.annotate(numbers_text=Cast("numbers", TextField()))
        .filter(listed)
        .values_list("numbers", flat=True)
    )
    return {number for trunk_numbers in held for number in trunk_numbers} & set(numbers)
