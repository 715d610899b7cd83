"""Webhook history retention: a delivery that ended (delivered, or failed for good) more
than WEBHOOKS_DELIVERY_RETENTION_DAYS ago is deleted with its attempt log, and its event
once no delivery is left to send it (an end-of-call report holds the whole transcript).
Run by `expire_data` (privacy.retention), in batches. An endpoint's deletion takes the
events only it was sent (webhooks.services).

A delivery pending or retrying is never deleted: the window runs from its last change,
which a replay renews. Each batch is its own transaction; on PostgreSQL it skips rows
others hold (an attempt finishing, a replay), so several passes at once split the work.
"""

from __future__ import annotations

import datetime
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEvent

# Deliveries per transaction: bounded IN lists and short row locks.
BATCH_SIZE = 500


def webhook_history_prune(
    *, now: datetime.datetime | None = None, batch_size: int = BATCH_SIZE
) -> tuple[int, int]:
    """Delete the deliveries ended before the window, and the events left with none;
    how many of each went."""
    now = now or timezone.now()
    before = now - datetime.timedelta(days=settings.WEBHOOKS_DELIVERY_RETENTION_DAYS)
    deliveries = events = 0
    while True:
        batch = _batch(before=before, batch_size=batch_size)
        if batch is None:
            return deliveries, events
        deliveries, events = deliveries + batch[0], events + batch[1]
        if batch[0] < batch_size:
            return deliveries, events


def _due(*, before: datetime.datetime) -> QuerySet[WebhookDelivery]:
    """Deliveries that ended before `before`, oldest first (the partial index
    webhook_delivery_ended holds exactly those not pending, by their last change)."""
    return (
        WebhookDelivery.objects.exclude(status=DeliveryStatus.PENDING)
        .filter(updated_at__lt=before)
        .order_by("updated_at")
    )


@transaction.atomic
def _batch(*, before: datetime.datetime, batch_size: int) -> tuple[int, int] | None:
    """Delete one batch of deliveries due; (deliveries, events) deleted, None when none
    was left."""
    rows = list(
        _due(before=before)
        .select_for_update(skip_locked=True)
        .values_list("pk", "event_id")[:batch_size]
    )
    if not rows:
        return None
    ids = [pk for pk, _ in rows]
    # Still ended (the rows are held: a replay waits for this commit, then finds none).
    # Their attempt logs go with them; nothing else of theirs is read.
    deliveries = WebhookDelivery.objects.filter(pk__in=ids).exclude(status=DeliveryStatus.PENDING)
    _, deleted = deliveries.only("pk").delete()
    events = orphaned_events_delete(event_ids=list({event_id for _, event_id in rows}))
    return deleted.get(WebhookDelivery._meta.label, 0), events


def endpoint_events(*, endpoint_id: UUID) -> QuerySet[WebhookDelivery, str]:
    """The ids of the events the endpoint was sent (its kept deliveries'), the
    deliveries locked in id order (call in the deleting transaction): a pruning pass
    holds deliveries, then deletes their attempts; a deletion deleting attempts first
    would wait for it while it waits for them."""
    return (
        WebhookDelivery.objects.filter(endpoint_id=endpoint_id)
        .select_for_update()
        .order_by("pk")
        .values_list("event_id", flat=True)
    )


def orphaned_events_delete(*, event_ids: list[str]) -> int:
    """Delete those of the events left without a delivery (their last one was pruned,
    or went with its endpoint); how many. Deliveries are written with their event, never
    later: one left with none is done. Its body (up to megabytes) is never read. Call it
    in the transaction that deleted the deliveries."""
    event_ids = sorted(event_ids)
    deleted = 0
    for start in range(0, len(event_ids), BATCH_SIZE):
        chunk = event_ids[start : start + BATCH_SIZE]
        # Held first, in id order: another transaction deleting their other deliveries
        # at once waits for this one, then (its next statement seeing this one's) finds
        # none left. Unheld, each saw the other's delivery and both kept the event.
        held = WebhookEvent.objects.select_for_update().filter(pk__in=chunk).order_by("pk")
        list(held.values_list("pk", flat=True))
        orphans = WebhookEvent.objects.filter(pk__in=chunk, deliveries__isnull=True)
        deleted += orphans.only("pk").delete()[1].get(WebhookEvent._meta.label, 0)
    return deleted
