"""Webhook history retention: a delivery that ended (delivered, or failed for good) more
than WEBHOOKS_DELIVERY_RETENTION_DAYS ago is deleted with its attempt log, and its event
once no delivery is left to send it (an end-of-call report holds the whole transcript).
Run by `expire_data` (privacy.retention), in batches. An endpoint deleted by its owner
(webhooks.services only marks it) goes here too, with every delivery of it, pending or
not, their attempts and the events only it was sent.

A delivery pending or retrying is never deleted (but with its deleted endpoint): the
window runs from its last change, which a replay renews. Each batch is its own
transaction; on PostgreSQL it skips rows others hold (an attempt finishing, a replay),
so several passes at once split the work.
"""

from __future__ import annotations

import datetime
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from webhooks.models import (
    SECRET_COLUMNS,
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

# Deliveries per transaction: bounded IN lists and short row locks.
BATCH_SIZE = 500


def webhook_history_prune(
    *, now: datetime.datetime | None = None, batch_size: int = BATCH_SIZE
) -> tuple[int, int]:
    """Delete the deliveries ended before the window, then the deleted endpoints with
    every delivery of theirs, and the events left with none; how many deliveries and
    events went."""
    now = now or timezone.now()
    before = now - datetime.timedelta(days=settings.WEBHOOKS_DELIVERY_RETENTION_DAYS)
    deliveries, events = _batches(_due(before=before), batch_size=batch_size)
    deleted = WebhookEndpoint.objects.filter(deleted_at__isnull=False).order_by("deleted_at")
    for endpoint_id in deleted.values_list("pk", flat=True):
        theirs = WebhookDelivery.objects.filter(endpoint_id=endpoint_id).order_by("pk")
        went = _batches(theirs, batch_size=batch_size)
        deliveries, events = deliveries + went[0], events + went[1]
        _endpoint_remove(endpoint_id)
    return deliveries, events


def _batches(due: QuerySet[WebhookDelivery], *, batch_size: int) -> tuple[int, int]:
    """Delete the deliveries `due`, batch after batch, until none is left."""
    deliveries = events = 0
    while True:
        batch = _batch(due, batch_size=batch_size)
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
def _batch(due: QuerySet[WebhookDelivery], *, batch_size: int) -> tuple[int, int] | None:
    """Delete one batch of the deliveries `due`; (deliveries, events) deleted, None when
    none was left. Held first, then their attempts deleted: a transaction deleting
    attempts before holding their deliveries would deadlock with this one."""
    rows = list(due.select_for_update(skip_locked=True).values_list("pk", "event_id")[:batch_size])
    if not rows:
        return None
    ids = [pk for pk, _ in rows]
    # Still due (the rows are held: a replay waits for this commit, then finds none).
    # Their attempt logs go with them; nothing else of theirs is read.
    deliveries = due.filter(pk__in=ids).order_by()
    _, deleted = deliveries.only("pk").delete()
    events = orphaned_events_delete(event_ids=list({event_id for _, event_id in rows}))
    return deleted.get(WebhookDelivery._meta.label, 0), events


@transaction.atomic
def _endpoint_remove(endpoint_id: UUID) -> None:
    """Delete the deleted endpoint once none of its deliveries is left (one another pass
    or an attempt held is left to the next pass). None is written after its deletion
    (webhooks.services), so none comes after this check."""
    held = WebhookEndpoint.objects.select_for_update().filter(
        pk=endpoint_id, deleted_at__isnull=False
    )
    if held.values_list("pk", flat=True).first() is None:
        return
    if WebhookDelivery.objects.filter(endpoint_id=endpoint_id).exists():
        return
    # Its secrets unread: one no configured key opens must not keep it.
    held.defer(*SECRET_COLUMNS).delete()


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
