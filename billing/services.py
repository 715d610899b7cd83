"""Writes: a call's usage and cost, and an organization's price overrides."""

from __future__ import annotations

import datetime
import logging
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.core.exceptions import ObjectDoesNotExist
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework import serializers

from accounts.models import Organization
from billing.cost import call_cost_compute, usage_summed
from billing.models import CallCost, PriceOverride
from billing.prices import Key, Price, organization_prices
from calls.models import ENDED_STATUSES, Call
from calls.usage_items import usage_report_newer

# Far beyond the platform's table (about fifty lines).
MAX_PRICE_OVERRIDES_PER_ORGANIZATION = 500
# An agent's runs of one call (each re-dispatch after a worker died is one more): more
# is a dispatch loop, whose reports are not kept.
MAX_USAGE_SESSIONS = 16

logger = logging.getLogger(__name__)

_CALL_COLUMNS = (
    "organization_id",
    "channel",
    "direction",
    "workflow_id",
    "created_at",
    "started_at",
    "ended_at",
    "cost__usage",
    "cost__usage_at",
    "cost__usage_sessions",
    "cost__analysis_usage",
    "cost__breakdown",
    "cost__computed_at",
)


def _call_with_cost(call_id: UUID | str) -> tuple[Call, CallCost | None] | None:
    call = Call.objects.select_related("cost").only(*_CALL_COLUMNS).filter(pk=call_id).first()
    if call is None:
        return None
    try:
        return call, call.cost
    except ObjectDoesNotExist:
        return call, None


def _prices_at_end(*, call: Call, existing: CallCost | None) -> dict[Key, Price]:
    """The organization's prices, but those an ended call was already priced with stay:
    a price set since applies to calls that end from then on, not to this call's late
    usage report (a line new to the call gets the price of now: no other is kept)."""
    prices = organization_prices(organization_id=call.organization_id)
    if existing is None or existing.computed_at is None:
        return prices
    for line in existing.breakdown or []:
        if line["unit_price_usd"] is not None:
            key = (line["component"], line["provider"], line["model"])
            prices[key] = Price(
                *key,
                unit=line["unit"],
                unit_price_usd=Decimal(line["unit_price_usd"]),
                origin="call",
            )
    return prices


def _cost_save(
    *,
    call: Call,
    existing: CallCost | None,
    usage: list[dict],
    usage_at: datetime.datetime | None,
    sessions: dict | None = None,
    analysis_usage: list[dict] | None = None,
) -> None:
    """Store the usage, and the cost once the call ended (an upsert: the caller holds the
    call's row lock, so no other writer of this row runs meanwhile). `analysis_usage`
    replaces the kept one when given; either way the cost counts the kept one."""
    values: dict[str, Any] = {"usage": usage, "usage_at": usage_at}
    if sessions is not None:
        values["usage_sessions"] = sessions
    if analysis_usage is not None:
        values["analysis_usage"] = analysis_usage
    else:
        analysis_usage = existing.analysis_usage if existing is not None else []
    if call.ended_at is not None:
        cost = call_cost_compute(
            usage=usage,
            started_at=call.started_at,
            ended_at=call.ended_at,
            prices=_prices_at_end(call=call, existing=existing),
            # A phone call's minutes are SIP minutes too, priced by its direction.
            sip_direction=call.direction if call.is_phone else None,
            analysis_usage=analysis_usage,
        )
        values.update(
            total_usd=cost.total_usd,
            breakdown=cost.breakdown,
            complete=cost.complete,
            computed_at=timezone.now(),
        )
    if existing is not None:
        CallCost.objects.filter(pk=call.pk).update(**values)
    else:
        CallCost.objects.create(
            call_id=call.pk,
            organization_id=call.organization_id,
            workflow_id=call.workflow_id,
            call_created_at=call.created_at,
            **values,
        )


def _usage_sessions(existing: CallCost | None) -> dict[str, dict]:
    """The newest report of each agent session, `{session: {"usage", "at"}}`; a row
    kept before sessions were is one session, ""."""
    if existing is None:
        return {}
    if existing.usage_sessions or existing.usage_at is None:
        return dict(existing.usage_sessions)
    return {"": {"usage": existing.usage, "at": existing.usage_at.isoformat()}}


def call_usage_record(
    *, call_id: UUID | str, usage: list[dict], at: datetime.datetime, session: str = ""
) -> bool:
    """Keep the agent's usage report if it is newer than its session's
    (`usage_report_newer`: reports are cumulative per session, an older or replayed one
    changes nothing). The call's usage
    is the sum of its sessions': an agent re-dispatched mid-call counts from zero, and
    what the first run used is still billed. Re-prices an ended call. True if kept."""
    found = _call_with_cost(call_id)
    if found is None:
        return False
    call, existing = found
    sessions = _usage_sessions(existing)
    kept = sessions.get(session)
    kept_at = datetime.datetime.fromisoformat(kept["at"]) if kept is not None else at
    if kept is not None and not usage_report_newer(usage, at, kept["usage"], kept_at):
        return False
    if kept is None and len(sessions) >= MAX_USAGE_SESSIONS:
        logger.warning(
            "call %s: usage from a new agent session refused (%d sessions already)",
            call.pk,
            len(sessions),
        )
        return False
    # As of the latest stamp seen: a clock stepped back does not move it back.
    sessions[session] = {"usage": usage, "at": max(at, kept_at).isoformat()}
    newest = max(datetime.datetime.fromisoformat(s["at"]) for s in sessions.values())
    _cost_save(
        call=call,
        existing=existing,
        usage=usage_summed(s["usage"] for s in sessions.values()),
        usage_at=newest,
        sessions=sessions,
    )
    return True


def call_cost_update(*, call_id: UUID | str) -> None:
    """Price an ended call with the usage reported so far."""
    found = _call_with_cost(call_id)
    if found is None:
        return
    call, existing = found
    usage, usage_at = (existing.usage, existing.usage_at) if existing else ([], None)
    _cost_save(call=call, existing=existing, usage=usage, usage_at=usage_at)


def call_analysis_usage_record(*, call_id: UUID | str, usage: list[dict]) -> None:
    """Add what one attempt of the call's post-call analysis used (its requests' tokens,
    per provider and model) to what its analysis used before, and re-price the call.
    Not idempotent: called once per attempt, in the transaction that ends the attempt
    (`analysis.signals.call_analysis_usage_reported`), holding the call's row lock."""
    found = _call_with_cost(call_id)
    if found is None:
        return
    call, existing = found
    before = existing.analysis_usage if existing is not None else []
    kept, kept_at = (existing.usage, existing.usage_at) if existing else ([], None)
    _cost_save(
        call=call,
        existing=existing,
        usage=kept,
        usage_at=kept_at,
        analysis_usage=usage_summed([before, usage]),
    )


def call_status_changed_receiver(signal: object, sender: type, **change: Any) -> None:
    if change["to_status"] in ENDED_STATUSES:
        call_cost_update(call_id=change["call_id"])


def call_usage_reported_receiver(signal: object, sender: type, **report: Any) -> None:
    call_usage_record(
        call_id=report["call_id"],
        session=report.get("session", ""),
        usage=report["usage"],
        at=report["at"],
    )


def call_analysis_usage_reported_receiver(signal: object, sender: type, **report: Any) -> None:
    call_analysis_usage_record(call_id=report["call_id"], usage=report["usage"])


@transaction.atomic
def price_override_set(
    *,
    organization: Organization,
    component: str,
    provider: str,
    model: str,
    unit_price_usd: Decimal,
) -> tuple[PriceOverride, bool]:
    """The organization's price for one line, replacing its previous one; True if new.
    Applies to calls that end from now on. Every call's cost reads all of them, so an
    organization has at most MAX_PRICE_OVERRIDES_PER_ORGANIZATION."""
    line = PriceOverride.objects.filter(
        organization=organization, component=component, provider=provider, model=model
    )
    price_override_room_check(organization=organization, replacing=line)
    return PriceOverride.objects.update_or_create(
        organization=organization,
        component=component,
        provider=provider,
        model=model,
        defaults={"unit_price_usd": unit_price_usd},
    )


def price_override_room_check(
    *, organization: Organization, replacing: QuerySet[PriceOverride]
) -> None:
    """ValidationError (`limit_reached`) unless the organization has room for one more
    override, or one in `replacing` is being replaced. Locks the organization's row
    until the transaction ends: concurrent adds cannot pass the cap together."""
    Organization.objects.select_for_update().filter(pk=organization.pk).exists()
    if (
        not replacing.exists()
        and PriceOverride.objects.filter(organization=organization).count()
        >= MAX_PRICE_OVERRIDES_PER_ORGANIZATION
    ):
        raise serializers.ValidationError(
            f"An organization can have at most {MAX_PRICE_OVERRIDES_PER_ORGANIZATION} price "
            "overrides; replace or delete one.",
            code="limit_reached",
        )


def price_override_delete(*, override: PriceOverride) -> None:
    override.delete()
