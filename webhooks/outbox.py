"""The outbox: the events a call's status change causes, written in the same
transaction as the change (`calls.signals.call_status_changed`), one delivery per
subscribed endpoint, and the bodies they carry.

Delivery tasks are enqueued on commit; the delivery row is the source of truth (the
queue only wakes it up), so a lost or duplicated wake-up costs nothing.
"""

from __future__ import annotations

import datetime
import json
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.utils import timezone
from rest_framework import serializers

from analysis.models import FINAL_STATUSES
from calls import representations, selectors
from calls.models import ENDED_STATUSES, Call
from recordings import selectors as recording_selectors
from voicecalls.task_queue import LATER_PRIORITY
from webhooks.models import (
    DeliveryStatus,
    EventType,
    SentEventType,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

_iso = serializers.DateTimeField().to_representation


def _dumps(payload: dict) -> str:
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False)


def wake(delivery_id: int, *, at: datetime.datetime, retry: bool = False) -> None:
    """Enqueue the delivery's attempt at `at`, once the current transaction commits; a
    `retry` (its endpoint failed it) at LATER_PRIORITY."""
    from webhooks.tasks import deliver_webhook

    def enqueue() -> None:
        task = deliver_webhook.using(priority=LATER_PRIORITY) if retry else deliver_webhook
        if at > timezone.now() and task.get_backend().supports_defer:
            task = task.using(run_after=at)
        task.enqueue(delivery_id)

    # robust: a failed enqueue must not fail the change that already committed; the
    # delivery stays pending and `webhook_deliveries_wake_overdue` picks it up.
    transaction.on_commit(enqueue, robust=True)


def _event_create(**event: Any) -> WebhookEvent:
    return _event_deliveries_create(**event)[0]


def _event_deliveries_create(
    *,
    organization_id: UUID,
    call_id: UUID | str | None,
    type: str,
    occurred_at: datetime.datetime,
    endpoints: list[WebhookEndpoint],
    payload: dict | None,
    deliver_at: datetime.datetime,
) -> tuple[WebhookEvent, list[WebhookDelivery]]:
    event = WebhookEvent(
        organization_id=organization_id, type=type, call_id=call_id, occurred_at=occurred_at
    )
    if payload is not None:
        event.body = _dumps(
            {"id": event.id, "type": type, "timestamp": _iso(occurred_at), "data": payload}
        )
    event.save(force_insert=True)
    deliveries = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(event=event, endpoint=endpoint, next_attempt_at=deliver_at)
            for endpoint in endpoints
        ]
    )
    for delivery in deliveries:
        wake(delivery.pk, at=deliver_at)
    return event, deliveries


def webhook_test_record(*, endpoint: WebhookEndpoint, at: datetime.datetime) -> int:
    """A `webhook.test` event to this endpoint alone, due now: signed, retried and
    logged as any event. Returns its delivery's id."""
    _, (delivery,) = _event_deliveries_create(
        organization_id=endpoint.organization_id,
        call_id=None,
        type=SentEventType.WEBHOOK_TEST,
        occurred_at=at,
        endpoints=[endpoint],
        payload={"endpoint_id": str(endpoint.pk)},
        deliver_at=at,
    )
    return delivery.pk


def _endpoints_held(call_id: UUID | str) -> list[WebhookEndpoint]:
    """The enabled endpoints of the call's organization, each held until the caller's
    transaction ends (PostgreSQL: FOR KEY SHARE): an endpoint's deletion waits, and the
    retention pass deletes the deliveries written here, instead of this commit failing
    the foreign key of a delivery to a row deleted meanwhile (and the call's change)."""
    endpoints = WebhookEndpoint.objects.filter(
        organization__calls__id=call_id, enabled=True, deleted_at__isnull=True
    ).only("id", "organization_id", "events")
    if connection.vendor != "postgresql":
        return list(endpoints)  # SQLite: one writer at a time
    sql, params = endpoints.query.sql_with_params()
    table = connection.ops.quote_name(WebhookEndpoint._meta.db_table)
    return list(WebhookEndpoint.objects.raw(f"{sql} FOR KEY SHARE OF {table}", params))


def call_status_changed_receiver(signal: object, sender: type, **change: Any) -> None:
    """`calls.signals.call_status_changed` → `call_status_changed_record`."""
    call_status_changed_record(**change)


def call_status_changed_record(
    *,
    call_id: UUID | str,
    from_status: str | None,
    to_status: str,
    end_reason: str | None,
    at: datetime.datetime,
) -> list[WebhookEvent]:
    """Write the events a call's status change causes, for every enabled endpoint of
    its organization subscribed to them: `call.status_changed` always, `call.ended`
    when the call ended. Call it inside the transaction that changes the status.

    The end-of-call report is built at its first delivery attempt, no sooner than
    `WEBHOOKS_END_REPORT_DELAY` after the end, so late transcript lines are in it.
    """
    # One transaction with the change when called inside it (no savepoint: a failure
    # here fails the change); its own transaction otherwise. One query when, as for
    # most calls, nobody is subscribed.
    with transaction.atomic(savepoint=False):
        endpoints = _endpoints_held(call_id)
        if not endpoints:
            return []
        return _call_events_create(
            organization_id=endpoints[0].organization_id,
            endpoints=endpoints,
            call_id=call_id,
            from_status=from_status,
            to_status=to_status,
            end_reason=end_reason,
            at=at,
        )


def _call_events_create(
    *,
    organization_id: UUID,
    endpoints: list[WebhookEndpoint],
    call_id: UUID | str,
    from_status: str | None,
    to_status: str,
    end_reason: str | None,
    at: datetime.datetime,
) -> list[WebhookEvent]:
    events = []
    subscribed = [e for e in endpoints if EventType.CALL_STATUS_CHANGED in e.events]
    if subscribed:
        payload = {
            "call_id": str(call_id),
            "from_status": from_status,
            "to_status": to_status,
            "end_reason": end_reason,
        }
        events.append(
            _event_create(
                organization_id=organization_id,
                call_id=call_id,
                type=EventType.CALL_STATUS_CHANGED,
                occurred_at=at,
                endpoints=subscribed,
                payload=payload,
                deliver_at=timezone.now(),
            )
        )
    subscribed = [e for e in endpoints if EventType.CALL_ENDED in e.events]
    if to_status in ENDED_STATUSES and subscribed:
        delay = datetime.timedelta(seconds=settings.WEBHOOKS_END_REPORT_DELAY)
        events.append(
            _event_create(
                organization_id=organization_id,
                call_id=call_id,
                type=EventType.CALL_ENDED,
                occurred_at=at,
                endpoints=subscribed,
                payload=None,
                deliver_at=max(at, timezone.now()) + delay,
            )
        )
    return events


def _call_ended_payload(call: Call) -> dict:
    """The end-of-call report: the call, its metrics and its whole transcript, exactly
    as GET /calls/{id}, /metrics and /transcript answer them. `call` read with
    `_calls_detailed` (its analysis, cost and recording with it)."""
    samples = selectors.call_samples(call=call)
    rows = selectors.call_transcript_rows(call=call)
    return {
        "call": representations.call_detail(
            call,
            samples=samples,
            analysis=selectors.call_analysis(call=call),
            cost=selectors.call_cost(call=call),
            recording=recording_selectors.call_recording(call=call),
        ),
        "metrics": representations.call_metrics(call, samples=samples),
        "transcript": json.loads(representations.transcript_json(rows)),
    }


def _calls_detailed(call_ids: list[UUID]) -> dict[UUID, Call]:
    """The calls by id, each with what its detail shows (analysis, cost, recording)."""
    return Call.objects.select_related(*selectors.DETAIL_RELATED).in_bulk(call_ids)


def event_body(event: WebhookEvent) -> str:
    """The event's body, building and freezing the end-of-call report on first use.
    Whoever freezes first wins; everybody sends the frozen bytes."""
    if event.body is not None:
        return event.body
    with transaction.atomic():
        # The call row's lock orders the freeze against an analysis finishing
        # (analysis.services): the report either has the result, or the analysis sees
        # the report frozen and sends `call.analyzed` (call_analyzed_record).
        Call.objects.select_for_update().filter(pk=event.call_id).values_list("pk").first()
        # A call erased while open keeps who the caller was until its erasure looks
        # again; the report goes out before that. (Imported here: privacy imports us.)
        from privacy.erasure import erased_call_identity_clear

        erased_call_identity_clear(call_id=event.call_id)
        return _freeze(event)


def _freeze(event: WebhookEvent) -> str:
    body = _dumps(
        {
            "id": event.id,
            "type": event.type,
            "timestamp": _iso(event.occurred_at),
            "data": _call_ended_payload(_calls_detailed([event.call_id])[event.call_id]),
        }
    )
    WebhookEvent.objects.filter(pk=event.pk, body__isnull=True).update(body=body)
    event.body = WebhookEvent.objects.values_list("body", flat=True).get(pk=event.pk)
    return event.body


# Events whose stored body carries a call's personal data (the end-of-call report, the
# analysis); `call.status_changed` carries ids and statuses only.
PERSONAL_EVENT_TYPES = (EventType.CALL_ENDED, EventType.CALL_ANALYZED)


def call_event_bodies_rebuild(*, call_ids: list[UUID]) -> int:
    """Rebuild the stored bodies of these calls' events from the calls as they are now,
    after retention or an erasure removed personal data from them: a queued delivery,
    a retry or a replay then sends the scrubbed body (same event id, type and time).
    Bodies not built yet are left alone: they are built from the call when first sent.
    Call it in the transaction that changed the calls, holding their rows' locks (so an
    end-of-call report cannot be frozen from the data being removed). Returns how many
    bodies were rebuilt."""
    events = list(
        WebhookEvent.objects.filter(
            call_id__in=call_ids, type__in=PERSONAL_EVENT_TYPES, body__isnull=False
        ).only("id", "type", "call_id", "occurred_at")
    )
    # One query for the calls and their one-to-ones: the batch holds the calls' rows.
    calls = _calls_detailed([event.call_id for event in events])
    for event in events:
        call = calls[event.call_id]
        if event.type == EventType.CALL_ENDED:
            data = _call_ended_payload(call)
        else:
            data = _call_analyzed_payload(call)
        body = {"id": event.id, "type": event.type, "timestamp": _iso(event.occurred_at)}
        WebhookEvent.objects.filter(pk=event.pk).update(body=_dumps({**body, "data": data}))
    # What the receivers answered may quote the body (a 400 echoing it), as kept in the
    # delivery log: it goes too.
    WebhookAttempt.objects.filter(
        delivery__event__call_id__in=call_ids, delivery__event__type__in=PERSONAL_EVENT_TYPES
    ).exclude(response_excerpt="").update(response_excerpt="")
    return len(events)


def call_analyzed_receiver(signal: object, sender: type, **change: Any) -> None:
    """`analysis.signals.call_analyzed` → `call_analyzed_record`."""
    call_analyzed_record(**change)


def call_analyzed_record(*, call_id: UUID | str, at: datetime.datetime) -> WebhookEvent | None:
    """A call's analysis reached a final status: `call.analyzed` to every endpoint
    subscribed to it, except those whose end-of-call report is not built yet (it will
    carry the analysis). Called inside the transaction that stored the result, holding
    the call row's lock."""
    endpoints = _endpoints_held(call_id)
    subscribed = [e for e in endpoints if EventType.CALL_ANALYZED in e.events]
    if not subscribed:
        return None
    # A report that ended unsent (its endpoint dropped call.ended, or was disabled) is
    # never built: only one still to be sent carries the analysis.
    waiting = set(
        WebhookDelivery.objects.filter(
            event__call_id=call_id,
            event__type=EventType.CALL_ENDED,
            event__body__isnull=True,
            status=DeliveryStatus.PENDING,
        ).values_list("endpoint_id", flat=True)
    )
    subscribed = [
        e for e in subscribed if not (e.pk in waiting and EventType.CALL_ENDED in e.events)
    ]
    if not subscribed:
        return None
    call = Call.objects.select_related("analysis", "cost").get(pk=call_id)
    return _call_analyzed_create(call=call, endpoints=subscribed, at=at)


def _call_analyzed_payload(call: Call) -> dict:
    """`call.analyzed`'s data: the analysis, and the call's cost with its tokens in it
    (the end-of-call report, built before, had the cost without them)."""
    return {
        "call_id": str(call.pk),
        "analysis": representations.call_analysis(selectors.call_analysis(call=call)),
        "cost": representations.call_cost(selectors.call_cost(call=call)),
    }


def _call_analyzed_create(
    *, call: Call, endpoints: list[WebhookEndpoint], at: datetime.datetime
) -> WebhookEvent:
    payload = _call_analyzed_payload(call)
    return _event_create(
        organization_id=endpoints[0].organization_id,
        call_id=call.pk,
        type=EventType.CALL_ANALYZED,
        occurred_at=at,
        endpoints=endpoints,
        payload=payload,
        deliver_at=timezone.now(),
    )


def call_analyzed_owed_record(
    *, call_id: UUID | str, endpoint_id: UUID, at: datetime.datetime
) -> WebhookEvent | None:
    """The end-of-call report to an endpoint ended unsent (the endpoint dropped
    `call.ended`, or was disabled): if the call's analysis, held back for that report,
    is final, `call.analyzed` goes to the endpoint now, if it takes it and has none.
    Holds the call's row, as `call_analyzed_record` does, so only one of the two sends
    it."""
    call = Call.objects.select_for_update().filter(pk=call_id).first()
    analysis = selectors.call_analysis(call=call) if call is not None else None
    if analysis is None or analysis.status not in FINAL_STATUSES:
        return None  # not done yet: `call_analyzed_record` will find the report failed
    endpoints = [
        e
        for e in _endpoints_held(call_id)
        if e.pk == endpoint_id and EventType.CALL_ANALYZED in e.events
    ]
    sent = WebhookDelivery.objects.filter(
        endpoint_id=endpoint_id, event__call_id=call_id, event__type=EventType.CALL_ANALYZED
    )
    if not endpoints or sent.exists():
        return None
    return _call_analyzed_create(call=call, endpoints=endpoints, at=at)
