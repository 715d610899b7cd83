"""Deliveries nothing else will wake, woken again (`manage.py wake_webhook_deliveries`):
a pending one whose wake-up was lost (a crashed worker, a failed enqueue), and one
waiting for a turn of its endpoint that nothing ahead will pass on.
"""

from __future__ import annotations

import datetime

from django.db import transaction
from django.utils import timezone

from voicecalls.task_queue import CLOCK_SKEW, task_waiting_args
from webhooks import turns
from webhooks.delivery import attempt_lease
from webhooks.models import DeliveryStatus, WebhookDelivery
from webhooks.outbox import wake


def webhook_deliveries_wake_overdue(
    *,
    now: datetime.datetime | None = None,
    grace: datetime.timedelta | None = None,
    limit: int = 1000,
) -> int:
    """Enqueue pending deliveries whose attempt is overdue by more than `grace` (a
    wake-up lost with a crashed worker or a failed enqueue), of the `limit` most
    overdue those with no wake-up already waiting in the queue (while the worker is
    down, each run would otherwise queue every one again). Returns how many it queued.
    Safe to run any time: a duplicate wake-up does nothing.

    An attempt's claim makes its delivery due again only once the attempt's lease is
    over, so it is woken then, not a lease later (a killed worker's event waited four
    minutes); `grace` (CLOCK_SKEW) only spares a host whose clock runs ahead waking
    what is not yet due by the others'."""
    from webhooks.tasks import deliver_webhook

    now = now or timezone.now()
    grace = CLOCK_SKEW if grace is None else grace
    lease = attempt_lease()
    overdue = [
        (pk,)
        for pk in WebhookDelivery.objects.filter(
            status=DeliveryStatus.PENDING,
            next_attempt_at__lte=now - grace,
            endpoint__deleted_at__isnull=True,  # the retention pass deletes those
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    ]
    waiting = task_waiting_args(deliver_webhook, overdue)
    lost = [args for args in overdue if args not in waiting]
    with transaction.atomic():
        for (delivery_id,) in lost:
            wake(delivery_id, at=now)
    # And those waiting for a turn of their endpoint that nothing ahead will pass on.
    # (Once they waited an attempt's lease: the attempt ahead ended as they began to.)
    stranded = turns.stranded_wake(now=now, grace=lease, lease=lease, limit=limit)
    return len(lost) + stranded
