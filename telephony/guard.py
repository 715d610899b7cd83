"""The toll-fraud guard: every number voicecalls dials or transfers to passes here
first, before anything is dialed (DESIGN.md "Toll-fraud guard").

Refusals are logged at INFO with the organization and a masked number (never the
whole number: logs travel further than the database).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from accounts.models import Organization
from accounts.rates import rate_hit
from telephony import numbers, selectors
from telephony.models import SipTrunk
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


# (setting, window in seconds): the per-minute rate and the daily cap, each a GCRA
# bucket of accounts/rates.py (the daily cap is over any 24 hours, not a calendar day).
_OUTBOUND_WINDOWS = (("outbound_calls_per_minute", 60), ("outbound_calls_per_day", 86400))


def outbound_allowance_take(*, organization: Organization) -> None:
    """Count one phone call against the organization's rate and daily cap, or raise
    OutboundRateReached (429 with Retry-After and `meta`). Checked after the number
    passed, before anything is dialed; a refused call counts too."""
    for setting, window in _OUTBOUND_WINDOWS:
        limit = getattr(organization, f"effective_{setting}")
        decision = rate_hit(key=f"{setting}:{organization.pk}", limit=limit, window=window)
        if not decision.allowed:
            logger.info(
                "phone call refused (%s): organization %s",
                OutboundRateReached.code,
                organization.pk,
            )
            raise OutboundRateReached(
                meta={"limit": setting, setting: limit}, retry_after=decision.retry_after
            )
