"""The toll-fraud guard: every number voicecalls dials or transfers to passes here
first, before anything is dialed (DESIGN.md "Toll-fraud guard").

Refusals are logged at INFO with the organization and a masked number (never the
whole number: logs travel further than the database).
"""

from __future__ import annotations

import datetime
import logging
import math
from dataclasses import dataclass

from django.utils import timezone
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from accounts.models import Organization
from accounts.rates import rate_hit
from calls.models import Call, CallChannel, CallDirection
from telephony import numbers, selectors
from telephony.models import RefusedTransfer, SipTrunk
from voicecalls.errors import LimitExceeded

logger = logging.getLogger(__name__)


def _refuse(
    *, organization: Organization, attr: str, detail: ErrorDetail, number: object
) -> serializers.ValidationError:
    logger.info(
        "phone number refused (%s): organization %s, %s %s",
        detail.code,
        organization.pk,
        attr,
        numbers.number_masked(str(number)),
    )
    return serializers.ValidationError({attr: [detail]})


def destination_check(
    *, organization: Organization, number: str, attr: str = "phone_number"
) -> str:
    """The destination in E.164 if voicecalls may dial it for this organization, else a
    400 naming `attr`: not E.164 or not a valid number, an emergency number,
    premium-rate or shared-cost, or in a country staff have not allowed."""
    try:
        parsed = numbers.number_parse(number)
    except numbers.InvalidNumber as exc:
        raise _refuse(
            organization=organization, attr=attr, detail=exc.detail, number=number
        ) from None
    if numbers.number_is_costly(parsed):
        detail = ErrorDetail(
            "Premium-rate and shared-cost numbers cannot be called.", code="costly_number"
        )
        raise _refuse(organization=organization, attr=attr, detail=detail, number=number)
    region = numbers.number_region(parsed)
    if region not in (organization.allowed_destination_countries or []):
        detail = ErrorDetail(
            f"Calls to this country ({region}) are not allowed for your organization; "
            "ask support to allow it.",
            code="destination_not_allowed",
        )
        raise _refuse(organization=organization, attr=attr, detail=detail, number=number)
    return numbers.number_e164(parsed)


@dataclass(frozen=True)
class CallerId:
    number: str
    trunk: SipTrunk


def caller_id_pick(*, organization: Organization, from_number: str | None) -> CallerId:
    """The number a phone call comes from and the outbound trunk that has it:
    `from_number` (one of the organization's own outbound numbers), else the
    organization's default caller number, else its newest outbound trunk's first."""
    attr = "from_number"
    if from_number is None:
        from_number = organization.default_caller_number
    if from_number is None:
        available = selectors.outbound_numbers(organization=organization)
        if not available:
            detail = ErrorDetail(
                "Your organization has no outbound SIP trunk with a number; create one "
                "first (POST /sip-trunks).",
                code="no_outbound_trunk",
            )
            raise _refuse(organization=organization, attr="phone_number", detail=detail, number="")
        from_number = available[0]
    try:
        from_number = numbers.number_e164(numbers.number_parse(from_number))
    except numbers.InvalidNumber as exc:
        raise _refuse(
            organization=organization, attr=attr, detail=exc.detail, number=from_number
        ) from None
    trunk = selectors.outbound_trunk_for_number(organization=organization, number=from_number)
    if trunk is None:
        detail = ErrorDetail(
            "Must be a number of one of your organization's outbound SIP trunks.",
            code="not_your_number",
        )
        raise _refuse(organization=organization, attr=attr, detail=detail, number=from_number)
    return CallerId(number=from_number, trunk=trunk)


class OutboundRateReached(LimitExceeded):
    """The organization started as many phone calls as it may this minute or day."""

    code = "outbound_rate_limited"
    detail = "Your organization started as many phone calls as it may for now; retry later."


def _refuse_rate(*, setting: str, limit: int, retry_after: int, organization: Organization):
    logger.info(
        "phone call refused (%s, %s): organization %s",
        OutboundRateReached.code,
        setting,
        organization.pk,
    )
    return OutboundRateReached(meta={"limit": setting, setting: limit}, retry_after=retry_after)


def outbound_rate_take(*, organization: Organization) -> None:
    """Count one phone call against the organization's calls per minute (a GCRA bucket
    of accounts/rates.py), or raise OutboundRateReached (429 with Retry-After and
    `meta`). Checked once the numbers passed, before anything is dialed; a call refused
    later (concurrency, daily cap) counts too, unless its request carried an
    Idempotency-Key: that run is one transaction, undone whole when refused (so the
    refused key can be used again), this count with it. Nothing was dialed either way."""
    setting = "outbound_calls_per_minute"
    limit = organization.effective_outbound_calls_per_minute
    decision = rate_hit(key=f"{setting}:{organization.pk}", limit=limit, window=60)
    if not decision.allowed:
        raise _refuse_rate(
            setting=setting,
            limit=limit,
            retry_after=decision.retry_after,
            organization=organization,
        )


def outbound_daily_cap_check(*, organization: Organization) -> None:
    """Raise OutboundRateReached when the organization dialed more numbers this UTC day
    than its daily cap allows (Retry-After: until midnight UTC): outbound phone calls
    and transfers to numbers, those the destination refused too; calls it received do
    not count. Call it after recording the new call or transfer, holding the
    organization's row lock (open_call_reserve takes it), in that transaction: each
    then counts every one that took the lock before it, so concurrent ones never
    overshoot."""
    limit = organization.effective_outbound_calls_per_day
    now = timezone.now().astimezone(datetime.UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    calls = Call.objects.filter(organization=organization)
    made = calls.filter(
        channel=CallChannel.PHONE, direction=CallDirection.OUTBOUND, created_at__gte=midnight
    ).count()
    if made <= limit:
        # (A small partial index: the calls transferred anywhere, by when.)
        made += calls.filter(
            transfer_destination__isnull=False,
            transfer_destination__startswith="+",
            hangup_requested_at__gte=midnight,
        ).count()
    if made <= limit:
        made += RefusedTransfer.objects.filter(
            organization=organization, attempted_at__gte=midnight
        ).count()
    if made > limit:
        tomorrow = midnight + datetime.timedelta(days=1)
        raise _refuse_rate(
            setting="outbound_calls_per_day",
            limit=limit,
            retry_after=max(1, math.ceil((tomorrow - now).total_seconds())),
            organization=organization,
        )
