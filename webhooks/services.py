"""Writes for customer webhooks: endpoints, the event outbox, delivery attempts.

The call lifecycle calls `call_status_changed_record` inside the transaction that
changes the call's status, so a committed change always has its events and a rolled
back one never has. Delivery tasks are enqueued on commit; the delivery row is the
source of truth (the queue only wakes it up), so a lost or duplicated wake-up costs
nothing: an attempt first claims the delivery with a conditional UPDATE.
"""

from __future__ import annotations

import datetime
import json
import logging
import random
from uuid import UUID

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from rest_framework import serializers

from accounts.models import Organization
from calls.models import ENDED_STATUSES, Call
from calls.selectors import call_metrics, call_transcript
from calls.serializers import CallMetricsSerializer, CallSerializer, TranscriptEntrySerializer
from webhooks import signing, transport
from webhooks.models import (
    DeliveryStatus,
    EventType,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

logger = logging.getLogger(__name__)

# Seconds to wait before attempt n+1 of a round, after n failed attempts (Standard
# Webhooks' example schedule): immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h,
# 20 h, 24 h — ten attempts over about three days.
RETRY_SCHEDULE: tuple[int, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
# Each wait is stretched by up to this fraction, so endpoints that failed together are
# not retried in lockstep.
RETRY_JITTER = 0.1
# A receiver's Retry-After is honoured up to this long.
RETRY_AFTER_MAX_SECONDS = 86400
# An attempt holds its delivery this long; longer than any request may take.
ATTEMPT_LEASE = datetime.timedelta(seconds=120)
# After a rotation the old secret keeps signing (beside the new one) this long.
SECRET_ROTATION_GRACE = datetime.timedelta(hours=24)
MAX_ENDPOINTS_PER_ORGANIZATION = 20

_iso = serializers.DateTimeField().to_representation


# Endpoints


def _validate_endpoint(*, url: str | None, events: list[str] | None) -> None:
    errors: dict[str, list[str]] = {}
    if url is not None:
        problem = transport.url_problem(url, allow_private=settings.WEBHOOKS_ALLOW_PRIVATE_URLS)
        if problem:
            errors["url"] = [problem]
    if events is not None:
        if not events:
            errors["events"] = ["Subscribe to at least one event type."]
        elif unknown := sorted(set(events) - set(EventType.values)):
            errors["events"] = [
                f"Unknown event type {unknown[0]!r}; allowed: {', '.join(EventType.values)}."
            ]
    if errors:
        raise serializers.ValidationError(errors)


@transaction.atomic
def webhook_endpoint_create(
    *,
    organization: Organization,
    url: str,
    events: list[str],
    enabled: bool = True,
    description: str = "",
) -> tuple[WebhookEndpoint, str]:
    """Create an endpoint; returns it and its signing secret, which is shown only now."""
    _validate_endpoint(url=url, events=events)
    # Lock the organization row so concurrent creates cannot pass the cap together.
    Organization.objects.select_for_update().filter(pk=organization.pk).exists()
    if (
        WebhookEndpoint.objects.filter(organization=organization).count()
        >= MAX_ENDPOINTS_PER_ORGANIZATION
    ):
        raise serializers.ValidationError(
            f"An organization can have at most {MAX_ENDPOINTS_PER_ORGANIZATION} webhook endpoints.",
            code="limit_reached",
        )
    secret = signing.secret_generate()
    endpoint = WebhookEndpoint.objects.create(
        organization=organization,
        url=url,
        events=list(dict.fromkeys(events)),
        enabled=enabled,
        description=description,
        secret=secret,
    )
    return endpoint, secret


def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    events: list[str] | None = None,
    enabled: bool | None = None,
    description: str | None = None,
) -> WebhookEndpoint:
    """Change the given fields. Enabling an endpoint clears why it was disabled."""
    _validate_endpoint(url=url, events=events)
    if url is not None:
        endpoint.url = url
    if events is not None:
        endpoint.events = list(dict.fromkeys(events))
    if description is not None:
        endpoint.description = description
    if enabled is not None:
        endpoint.enabled = enabled
        if enabled:
            endpoint.disabled_reason = ""
    endpoint.updated_at = timezone.now()
    endpoint.save()
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Delete an endpoint with its deliveries and their log."""
    endpoint.delete()


def webhook_endpoint_rotate_secret(
    *, endpoint: WebhookEndpoint, now: datetime.datetime | None = None
) -> str:
    """A new signing secret, shown only now. The old one keeps signing beside it for
    `SECRET_ROTATION_GRACE`, so receivers can switch without rejecting deliveries."""
    now = now or timezone.now()
    secret = signing.secret_generate()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + SECRET_ROTATION_GRACE
    endpoint.secret = secret
    endpoint.updated_at = now
    endpoint.save(
        update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"]
    )
    return secret


@transaction.atomic
def webhook_secrets_reencrypt() -> int:
    """Re-encrypt every endpoint's signing secrets under the current CRYPTOGRAPHY_KEY
    (step 3 of a key rotation, docs/key-rotation.md). All or nothing: a secret that no
    configured key opens raises UndecryptableValue and nothing changes."""
    endpoints = list(
        WebhookEndpoint.objects.select_for_update()
        .only("id", "secret", "previous_secret")
        .order_by("pk")
    )
    for endpoint in endpoints:
        endpoint.save(update_fields=["secret", "previous_secret"])
    return len(endpoints)


def _signing_secrets(endpoint: WebhookEndpoint, *, now: datetime.datetime) -> list[str]:
    secrets = [endpoint.secret]
    if (
        endpoint.previous_secret
        and endpoint.previous_secret_expires_at
        and endpoint.previous_secret_expires_at > now
    ):
        secrets.append(endpoint.previous_secret)
    return secrets


# The outbox


def _dumps(payload: dict) -> str:
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False)


def _wake(delivery_id: int, *, at: datetime.datetime) -> None:
    """Enqueue the delivery's attempt at `at`, once the current transaction commits."""
    from webhooks.tasks import deliver_webhook

    def enqueue() -> None:
        task = deliver_webhook
        if at > timezone.now() and task.get_backend().supports_defer:
            task = task.using(run_after=at)
        task.enqueue(delivery_id)

    # robust: a failed enqueue must not fail the change that already committed; the
    # delivery stays pending and `webhook_deliveries_wake_overdue` picks it up.
    transaction.on_commit(enqueue, robust=True)


def _event_create(
    *,
    organization_id: UUID,
    call_id: UUID | str,
    type: str,
    occurred_at: datetime.datetime,
    endpoints: list[WebhookEndpoint],
    payload: dict | None,
    deliver_at: datetime.datetime,
) -> WebhookEvent:
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
        _wake(delivery.pk, at=deliver_at)
    return event


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
    # One query when, as for most calls, nobody is subscribed.
    endpoints = list(
        WebhookEndpoint.objects.filter(organization__calls__id=call_id, enabled=True).only(
            "id", "organization_id", "events"
        )
    )
    if not endpoints:
        return []
    # One transaction with the change when called inside it (no savepoint: a failure
    # here fails the change); its own transaction otherwise.
    with transaction.atomic(savepoint=False):
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


def _call_ended_payload(call_id: UUID) -> dict:
    """The end-of-call report: the call, its metrics and its whole transcript, as
    GET /calls/{id}, /metrics and /transcript show them."""
    call = Call.objects.get(pk=call_id)
    return {
        "call": CallSerializer(call).data,
        "metrics": CallMetricsSerializer(call_metrics(call=call)).data,
        "transcript": TranscriptEntrySerializer(call_transcript(call=call), many=True).data,
    }


def _event_body(event: WebhookEvent) -> str:
    """The event's body, building and freezing the end-of-call report on first use.
    Whoever freezes first wins; everybody sends the frozen bytes."""
    if event.body is not None:
        return event.body
    body = _dumps(
        {
            "id": event.id,
            "type": event.type,
            "timestamp": _iso(event.occurred_at),
            "data": _call_ended_payload(event.call_id),
        }
    )
    WebhookEvent.objects.filter(pk=event.pk, body__isnull=True).update(body=body)
    event.body = WebhookEvent.objects.values_list("body", flat=True).get(pk=event.pk)
    return event.body


# Delivery


def retry_delay(
    *, round_attempts: int, retry_after: float | None = None, rng: random.Random | None = None
) -> float | None:
    """Seconds to wait after `round_attempts` failed attempts, or None: give up.

    The schedule's wait plus up to 10 % jitter; a receiver's Retry-After (capped at a
    day) when it asks for longer.
    """
    if round_attempts >= len(RETRY_SCHEDULE):
        return None
    base = RETRY_SCHEDULE[round_attempts]
    delay = base + (rng or random).uniform(0, base * RETRY_JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX_SECONDS))
    return delay


def _retryable(status_code: int) -> bool:
    # 3xx counts as a failure (redirects are never followed) and, like 5xx, may be
    # fixed on the receiver's side while we retry; other 4xx will not change.
    return status_code == 429 or status_code >= 500 or 300 <= status_code < 400


def webhook_delivery_attempt(
    *, delivery_id: int, now: datetime.datetime | None = None
) -> str | None:
    """Make the delivery's due attempt, log it and schedule what follows.

    Returns the delivery's status afterwards, or None when there was nothing to do
    (already delivered, given up, or not due: a stale or duplicate wake-up).
    """
    now = now or timezone.now()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=now + ATTEMPT_LEASE)
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("event", "endpoint").get(pk=delivery_id)
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        return _attempt_finish(
            delivery,
            now=now,
            url=endpoint.url,
            status_code=None,
            duration_ms=0,
            error=" ".join(["endpoint disabled.", endpoint.disabled_reason]).strip(),
            excerpt="",
            outcome=DeliveryStatus.FAILED,
        )
    body = _event_body(delivery.event).encode()
    timestamp = int(now.timestamp())
    headers = signing.signed_headers(
        secrets=_signing_secrets(endpoint, now=now),
        msg_id=delivery.event_id,
        timestamp=timestamp,
        body=body,
    )
    retry_after = None
    try:
        answer = transport.post(
            endpoint.url,
            body=body,
            headers=headers,
            timeout=settings.WEBHOOKS_TIMEOUT_SECONDS,
            allow_private=settings.WEBHOOKS_ALLOW_PRIVATE_URLS,
        )
    except transport.DeliveryError as exc:
        status_code, duration_ms, error, excerpt = None, exc.duration_ms, str(exc), ""
        outcome = None if exc.retryable else DeliveryStatus.FAILED
    else:
        status_code, duration_ms, excerpt = answer.status_code, answer.duration_ms, answer.excerpt
        retry_after = answer.retry_after_seconds
        error = "" if 200 <= status_code < 300 else f"HTTP {status_code}"
        if 200 <= status_code < 300:
            outcome = DeliveryStatus.SUCCEEDED
        elif status_code == 410:
            outcome = DeliveryStatus.FAILED
            error = "HTTP 410 Gone: endpoint disabled"
        elif _retryable(status_code):
            outcome = None
        else:
            outcome = DeliveryStatus.FAILED
    return _attempt_finish(
        delivery,
        now=now,
        url=endpoint.url,
        status_code=status_code,
        duration_ms=duration_ms,
        error=error,
        excerpt=excerpt,
        outcome=outcome,
        retry_after=retry_after,
    )


@transaction.atomic
def _attempt_finish(
    delivery: WebhookDelivery,
    *,
    now: datetime.datetime,
    url: str,
    status_code: int | None,
    duration_ms: int,
    error: str,
    excerpt: str,
    outcome: str | None,
    retry_after: float | None = None,
) -> str:
    """Log the attempt and move the delivery on: delivered, failed, or retried later
    (`outcome` None) unless the schedule is exhausted."""
    number = delivery.attempt_count + 1
    WebhookAttempt.objects.create(
        delivery=delivery,
        number=number,
        attempted_at=now,
        url=url,
        status_code=status_code,
        duration_ms=duration_ms,
        error=error[:500],
        response_excerpt=excerpt,
    )
    changes: dict[str, object] = {
        "attempt_count": F("attempt_count") + 1,
        "round_attempts": F("round_attempts") + 1,
        "last_status_code": status_code,
        "last_error": error[:500],
        "updated_at": now,
        "next_attempt_at": None,
    }
    if outcome is None:
        delay = retry_delay(round_attempts=delivery.round_attempts + 1, retry_after=retry_after)
        if delay is None:
            outcome = DeliveryStatus.FAILED
            changes["last_error"] = f"{error} (gave up after {number} attempts)"[:500]
            _disable_if_failing(endpoint_id=delivery.endpoint_id, now=now)
        else:
            outcome = DeliveryStatus.PENDING
            changes["next_attempt_at"] = now + datetime.timedelta(seconds=delay)
    changes["status"] = outcome
    if outcome == DeliveryStatus.SUCCEEDED:
        changes["delivered_at"] = now
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**changes)
    if status_code == 410:
        WebhookEndpoint.objects.filter(pk=delivery.endpoint_id).update(
            enabled=False, disabled_reason="The receiver answered 410 Gone.", updated_at=now
        )
    if outcome == DeliveryStatus.PENDING:
        _wake(delivery.pk, at=changes["next_attempt_at"])
    log = logger.info if outcome != DeliveryStatus.FAILED else logger.warning
    log(
        "webhook delivery %s attempt %s: %s (%s)",
        delivery.pk,
        number,
        outcome,
        status_code or error,
    )
    return outcome


def _disable_if_failing(*, endpoint_id: UUID, now: datetime.datetime) -> None:
    """Disable an endpoint that has delivered nothing for WEBHOOKS_DISABLE_AFTER_DAYS
    (and was not changed by its owner meanwhile: a fixed URL or a re-enabled endpoint
    gets its own days). Called when a delivery gives up, so it costs nothing while
    deliveries succeed."""
    days = settings.WEBHOOKS_DISABLE_AFTER_DAYS
    since = now - datetime.timedelta(days=days)
    delivered = WebhookDelivery.objects.filter(
        endpoint_id=endpoint_id, status=DeliveryStatus.SUCCEEDED, delivered_at__gte=since
    )
    if delivered.exists():
        return
    disabled = WebhookEndpoint.objects.filter(
        pk=endpoint_id, enabled=True, updated_at__lte=since
    ).update(
        enabled=False,
        disabled_reason=f"No delivery succeeded for {days:g} days; enable it when it answers.",
        updated_at=now,
    )
    if disabled:
        logger.warning("webhook endpoint %s disabled: failing for %g days", endpoint_id, days)


@transaction.atomic
def webhook_delivery_replay(
    *, delivery: WebhookDelivery, now: datetime.datetime | None = None
) -> None:
    """Send the delivery's event again, with the same event id and body, starting a
    new round of the retry schedule."""
    now = now or timezone.now()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.PENDING, round_attempts=0, next_attempt_at=now, updated_at=now
    )
    _wake(delivery.pk, at=now)


def webhook_deliveries_wake_overdue(
    *, now: datetime.datetime | None = None, grace: datetime.timedelta | None = None
) -> int:
    """Enqueue pending deliveries whose attempt is overdue by more than `grace` (a
    wake-up lost with a crashed worker or a failed enqueue). Safe to run any time: a
    duplicate wake-up does nothing."""
    now = now or timezone.now()
    grace = ATTEMPT_LEASE if grace is None else grace
    overdue = list(
        WebhookDelivery.objects.filter(
            status=DeliveryStatus.PENDING, next_attempt_at__lte=now - grace
        ).values_list("pk", flat=True)
    )
    with transaction.atomic():
        for delivery_id in overdue:
            _wake(delivery_id, at=now)
    return len(overdue)
