"""Delivery: one signed attempt at a time, retried on a schedule of about three days.

An attempt first claims its delivery with a conditional UPDATE, so a lost or duplicated
wake-up does nothing; its outcome is logged as a `WebhookAttempt`.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import random
from dataclasses import dataclass
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from calls.models import Call
from voicecalls.logging import log_context
from voicecalls.task_queue import due_within_clock_skew
from voicecalls.text import storable
from webhooks import signing, transport, turns
from webhooks.models import (
    DeliveryStatus,
    EventType,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    endpoint_takes,
)
from webhooks.outbox import call_analyzed_owed_record, event_body, wake

logger = logging.getLogger(__name__)

# The seconds to wait before attempt n+1 of a round, after n failed attempts, are
# settings.WEBHOOKS_RETRY_SCHEDULE (Standard Webhooks' example schedule by default:
# immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h — ten attempts over
# about three days).
# Each wait is stretched by up to this fraction, so endpoints that failed together are
# not retried in lockstep.
RETRY_JITTER = 0.1
# A receiver's Retry-After is honoured up to this long.
RETRY_AFTER_MAX_SECONDS = 86400
# An attempt holds its delivery for its request's whole timeout (transport.post's
# deadline covers the lookup, connecting and the answer) and this much more: the database
# work on either side of it, and hosts' clocks apart by CLOCK_SKEW. Past that it is taken
# for dead (its worker killed) and the overdue sweep sends the event again.
ATTEMPT_MARGIN = datetime.timedelta(seconds=20)


def attempt_lease() -> datetime.timedelta:
    """How long an attempt holds its delivery: longer than any attempt may take."""
    return datetime.timedelta(seconds=settings.WEBHOOKS_TIMEOUT_SECONDS) + ATTEMPT_MARGIN


def retry_delay(
    *, round_attempts: int, retry_after: float | None = None, rng: random.Random | None = None
) -> float | None:
    """Seconds to wait after `round_attempts` failed attempts, or None: give up.

    The schedule's wait plus up to 10 % jitter; a receiver's Retry-After (capped at a
    day) when it asks for longer.
    """
    schedule = settings.WEBHOOKS_RETRY_SCHEDULE
    if round_attempts >= len(schedule):
        return None
    base = schedule[round_attempts]
    delay = base + (rng or random).uniform(0, base * RETRY_JITTER)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX_SECONDS))
    return delay


def _retryable(status_code: int) -> bool:
    # 3xx counts as a failure (redirects are never followed) and, like 5xx, may be
    # fixed on the receiver's side while we retry; other 4xx will not change.
    return status_code == 429 or status_code >= 500 or 300 <= status_code < 400


@dataclass(frozen=True)
class _Attempt:
    """What one HTTP request of a delivery came to; `outcome` None: retry later."""

    url: str
    status_code: int | None
    duration_ms: int
    error: str
    excerpt: str
    outcome: str | None
    retry_after: float | None = None
    sent: bool = True  # False: failed without a request (disabled, unsubscribed)


def webhook_delivery_attempt(
    *, delivery_id: int, now: datetime.datetime | None = None
) -> str | None:
    """Make the delivery's due attempt, log it and schedule what follows.

    Returns the delivery's status afterwards, or None when there was nothing to do
    (already delivered, given up, or not due: a stale or duplicate wake-up).
    """
    now = now or timezone.now()
    lease = attempt_lease()
    due = WebhookDelivery.objects.filter(
        pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    )
    # One of a deleted endpoint is not sent: the retention pass deletes it. (Not in the
    # claim's UPDATE: a join there is a subquery PostgreSQL does not recheck after
    # waiting for another claim, and both would claim it.)
    live = due.filter(endpoint__deleted_at__isnull=True)
    endpoint_id = live.values_list("endpoint_id", flat=True).first()
    if endpoint_id is not None and turns.delivery_waits(
        delivery_id, endpoint_id=endpoint_id, now=now, lease=lease
    ):
        return None  # its endpoint has all the attempts in flight it may
    claimed = endpoint_id is not None and due.update(
        next_attempt_at=now + lease, attempt_started_at=now
    )
    if not claimed:
        _wake_if_early(delivery_id, now=now)
        return None
    delivery = (
        WebhookDelivery.objects.select_related("event", "endpoint").filter(pk=delivery_id).first()
    )
    if delivery is None:
        return None  # deleted since the claim (its endpoint deleted, by the retention pass)
    with log_context(
        call_id=delivery.event.call_id, organization_id=delivery.endpoint.organization_id
    ):
        return _attempt_make(delivery, now=now)


def _attempt_make(delivery: WebhookDelivery, *, now: datetime.datetime) -> str:
    """The claimed delivery's attempt: sent (or failed unsent), logged, and what follows
    scheduled; the delivery's status afterwards."""
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        error = " ".join(["endpoint disabled.", endpoint.disabled_reason]).strip()
        attempt = _Attempt(endpoint.url, None, 0, error, "", DeliveryStatus.FAILED, sent=False)
    elif not endpoint_takes(endpoint.events, delivery.event.type):
        # Its owner dropped the event type since: what was queued is not sent either.
        error = f"endpoint no longer subscribed to {delivery.event.type}."
        attempt = _Attempt(endpoint.url, None, 0, error, "", DeliveryStatus.FAILED, sent=False)
    else:
        attempt = _send(delivery, endpoint=endpoint, now=now)
    outcome = _attempt_finish(delivery, attempt=attempt, now=now)
    # Its endpoint's turn passes on to a delivery waiting for it.
    turns.endpoint_next_wake(endpoint.pk, now=now, lease=attempt_lease())
    return outcome


def _wake_if_early(delivery_id: int, *, now: datetime.datetime) -> None:
    """A wake-up that came before its delivery was due, by less than CLOCK_SKEW, and
    while no attempt holds it: the clock of whoever made it due runs ahead of this
    worker's. It wakes it again at that time (by this worker's clock, as the queue's)."""
    unheld = WebhookDelivery.objects.filter(
        pk=delivery_id,
        status=DeliveryStatus.PENDING,
        attempt_started_at__isnull=True,
        endpoint__deleted_at__isnull=True,
    )
    due = due_within_clock_skew(unheld, now=now)
    if due is not None:
        wake(delivery_id, at=due)


def _send(
    delivery: WebhookDelivery, *, endpoint: WebhookEndpoint, now: datetime.datetime
) -> _Attempt:
    """POST the event, signed with the endpoint's secrets, and judge the answer."""
    body = event_body(delivery.event).encode()
    headers = signing.signed_headers(
        secrets=endpoint.live_secrets(now),
        msg_id=delivery.event_id,
        timestamp=int(now.timestamp()),
        body=body,
    )
    try:
        answer = transport.post(
            endpoint.url,
            body=body,
            headers=headers,
            timeout=settings.WEBHOOKS_TIMEOUT_SECONDS,
            allow_private=settings.WEBHOOKS_ALLOW_PRIVATE_URLS,
        )
    except transport.DeliveryError as exc:
        outcome = None if exc.retryable else DeliveryStatus.FAILED
        return _Attempt(endpoint.url, None, exc.duration_ms, str(exc), "", outcome)
    status_code = answer.status_code
    error = "" if 200 <= status_code < 300 else f"HTTP {status_code}"
    if 200 <= status_code < 300:
        outcome = DeliveryStatus.SUCCEEDED
    elif status_code == 410:
        outcome, error = DeliveryStatus.FAILED, "HTTP 410 Gone: endpoint disabled"
    elif _retryable(status_code):
        outcome = None
    else:
        outcome = DeliveryStatus.FAILED
    return _Attempt(
        endpoint.url,
        status_code,
        answer.duration_ms,
        error,
        answer.excerpt,
        outcome,
        answer.retry_after_seconds,
    )


def _attempt_log(
    delivery: WebhookDelivery, *, attempt: _Attempt, number: int, now: datetime.datetime
) -> _Attempt:
    """Store the attempt in the delivery's log; the attempt as stored."""
    # A library's message may quote what the receiver sent: NUL is no text to PostgreSQL.
    attempt = dataclasses.replace(attempt, error=storable(attempt.error))
    WebhookAttempt.objects.create(
        delivery=delivery,
        number=number,
        attempted_at=now,
        url=attempt.url,
        status_code=attempt.status_code,
        duration_ms=attempt.duration_ms,
        error=attempt.error[:500],
        response_excerpt=attempt.excerpt,
    )
    return attempt


@transaction.atomic
def _attempt_finish(
    delivery: WebhookDelivery, *, attempt: _Attempt, now: datetime.datetime
) -> str | None:
    """Log the attempt and move the delivery on: delivered, failed, or retried later
    (`outcome` None) unless the schedule is exhausted. None: the delivery is gone."""
    # Counted on the row as it is now (a replay may have started a new round meanwhile).
    counts = WebhookDelivery.objects.select_for_update().filter(pk=delivery.pk)
    fields = ("attempt_count", "round_attempts", "status", "attempt_started_at")
    row = counts.values_list(*fields).first()
    if row is None:
        # Its endpoint was deleted while the request was out, taking it and its log.
        logger.info("webhook delivery %s: its endpoint was deleted meanwhile", delivery.pk)
        return None
    attempt_count, round_attempts, status, started_at = row
    number = attempt_count + 1
    attempt = _attempt_log(delivery, attempt=attempt, number=number, now=now)
    if status != DeliveryStatus.PENDING or started_at != now:
        return _overtaken_attempt_finish(delivery, attempt=attempt, status=status, now=now)
    changes: dict[str, object] = {
        "attempt_count": F("attempt_count") + 1,
        "round_attempts": F("round_attempts") + 1,
        "last_status_code": attempt.status_code,
        "last_error": attempt.error[:500],
        "updated_at": now,
        "next_attempt_at": None,
        "attempt_started_at": None,
    }
    outcome = attempt.outcome
    if outcome is None:
        delay = retry_delay(round_attempts=round_attempts + 1, retry_after=attempt.retry_after)
        if delay is None:
            outcome = DeliveryStatus.FAILED
            changes["last_error"] = f"{attempt.error} (gave up after {number} attempts)"[:500]
        else:
            outcome = DeliveryStatus.PENDING
            changes["next_attempt_at"] = now + datetime.timedelta(seconds=delay)
    if outcome == DeliveryStatus.FAILED and attempt.sent and attempt.status_code != 410:
        # However it failed: a dead endpoint answering 404 gives up at once.
        _disable_if_failing(endpoint_id=delivery.endpoint_id, now=now)
    changes["status"] = outcome
    if outcome == DeliveryStatus.SUCCEEDED:
        changes["delivered_at"] = now
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**changes)
    if attempt.status_code == 410:
        _disable_gone(endpoint_id=delivery.endpoint_id, url=attempt.url, now=now)
    if outcome == DeliveryStatus.PENDING:
        wake(delivery.pk, at=changes["next_attempt_at"], retry=True)
    event = delivery.event
    if not attempt.sent and event.type == EventType.CALL_ENDED and delivery.delivered_at is None:
        # The analysis may have waited for this report to carry it: it goes on its own.
        # (The report's body is shared: another endpoint's may have been built. One
        # delivered before, replayed now, carried it.)
        call_analyzed_owed_record(call_id=event.call_id, endpoint_id=delivery.endpoint_id, at=now)
    log = logger.info if outcome != DeliveryStatus.FAILED else logger.warning
    detail = attempt.status_code or attempt.error
    log("webhook delivery %s attempt %s: %s (%s)", delivery.pk, number, outcome, detail)
    return outcome


def _overtaken_attempt_finish(
    delivery: WebhookDelivery, *, attempt: _Attempt, status: str, now: datetime.datetime
) -> str:
    """An attempt that stalled past its lease, and that another attempt took over (and
    maybe finished) meanwhile: it is counted, and a success it brought is kept, but it
    never moves the delivery back (a retry scheduled over a delivered event, or beside
    the attempt in flight: the event sent once more)."""
    changes: dict[str, object] = {"attempt_count": F("attempt_count") + 1, "updated_at": now}
    if attempt.outcome == DeliveryStatus.SUCCEEDED and status != DeliveryStatus.SUCCEEDED:
        changes.update(status=DeliveryStatus.SUCCEEDED, delivered_at=now, next_attempt_at=None)
        status = DeliveryStatus.SUCCEEDED
    WebhookDelivery.objects.filter(pk=delivery.pk).update(**changes)
    detail = attempt.status_code or attempt.error
    logger.info("webhook delivery %s: an overtaken attempt ended (%s)", delivery.pk, detail)
    return status


def _disable_if_failing(*, endpoint_id: UUID, now: datetime.datetime) -> None:
    """Disable an endpoint failing for WEBHOOKS_DISABLE_AFTER_DAYS: nothing delivered
    since an event that much older (a quiet endpoint failing once is not failing for
    days), and not changed by its owner meanwhile (a fixed URL or a re-enabled endpoint
    gets its own days). Called when a delivery fails for good, so it costs nothing while
    deliveries succeed."""
    days = settings.WEBHOOKS_DISABLE_AFTER_DAYS
    since = now - datetime.timedelta(days=days)
    deliveries = WebhookDelivery.objects.filter(endpoint_id=endpoint_id)
    succeeded = deliveries.filter(status=DeliveryStatus.SUCCEEDED)
    if succeeded.filter(delivered_at__gte=since).exists():
        return  # (stops at the first recent one; the latest needs them all)
    # The latest delivery, whatever its event's age (an old event replayed yesterday).
    last_success = succeeded.aggregate(last=Max("delivered_at"))["last"]
    # An event made after the last success and `days` ago, never delivered since.
    failing = deliveries.filter(created_at__lte=since)
    if last_success is not None:
        failing = failing.filter(created_at__gt=last_success)
    if not failing.exists():
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


def _disable_gone(*, endpoint_id: UUID, url: str, now: datetime.datetime) -> None:
    """Disable an endpoint whose receiver answered 410 Gone, if it still has the URL
    that answered: an endpoint its owner moved meanwhile stays enabled."""
    WebhookEndpoint.objects.filter(pk=endpoint_id, url=url).update(
        enabled=False, disabled_reason="The receiver answered 410 Gone.", updated_at=now
    )


class EventErased(Exception):
    """The event's call was erased (docs/privacy.md): it is never sent again."""


class EndpointRefusesEvent(Exception):
    """The delivery's endpoint is disabled, or no longer subscribed to the event's type:
    an attempt would send nothing and fail the delivery."""


class DeliveryPending(Exception):
    """The delivery has not ended: its attempt is in flight or still to come."""


@transaction.atomic
def webhook_delivery_replay(
    *,
    delivery: WebhookDelivery,
    now: datetime.datetime | None = None,
    refuse_pending: bool = False,
) -> None:
    """Send the delivery's event again, with the same event id and body, starting a
    new round of the retry schedule. EventErased when the event's call was erased;
    EndpointRefusesEvent when its endpoint would not be sent it (a delivery that had
    succeeded would read failed, nothing sent).

    An attempt in flight is that send: the new round starts with it, so the event is
    not sent twice at once (nor numbered twice in the log). With `refuse_pending` (the
    API) a delivery that has not ended raises DeliveryPending instead: a customer's
    replay neither skips the retry schedule's waits nor sends an end-of-call report
    before its transcript is complete."""
    now = now or timezone.now()
    erased = Call.objects.filter(pk=delivery.event.call_id, erased_at__isnull=False)
    if delivery.event.call_id is not None and erased.exists():
        raise EventErased()
    enabled, events = WebhookEndpoint.objects.values_list("enabled", "events").get(
        pk=delivery.endpoint_id, deleted_at__isnull=True
    )
    if not enabled or not endpoint_takes(events, delivery.event.type):
        raise EndpointRefusesEvent()
    this = WebhookDelivery.objects.filter(pk=delivery.pk)
    status, started = this.select_for_update().values_list("status", "attempt_started_at").get()
    if refuse_pending and status == DeliveryStatus.PENDING:
        raise DeliveryPending()
    if status == DeliveryStatus.PENDING and started and started > now - attempt_lease():
        this.update(round_attempts=0, updated_at=now)
        return
    this.update(
        status=DeliveryStatus.PENDING, round_attempts=0, next_attempt_at=now, updated_at=now
    )
    wake(delivery.pk, at=now)
