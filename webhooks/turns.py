"""Fairness between endpoints: an endpoint has at most WEBHOOKS_ENDPOINT_MAX_IN_FLIGHT
attempts in flight, over every worker (docs/webhooks.md, "Fairness").

Each attempt holds a worker for its whole request (up to WEBHOOKS_TIMEOUT_SECONDS): a
customer whose receiver answers slowly, with hundreds of deliveries due, held every
worker, and every other organization's deliveries waited behind it. A delivery woken
while its endpoint is full waits instead (pending, with neither `next_attempt_at` nor
`attempt_started_at`), holding no worker and no task; each attempt of the endpoint that
ends wakes its oldest waiting one. One left waiting with nothing ahead of it (an attempt
that ended just as it began to wait) is woken by the overdue sweep.
"""

from __future__ import annotations

import datetime
from uuid import UUID

from django.conf import settings
from django.db.models import Exists, Min, OuterRef, Q

from webhooks.models import DeliveryStatus, WebhookDelivery
from webhooks.outbox import wake


def _pending(endpoint_id: UUID | OuterRef):
    return WebhookDelivery.objects.filter(endpoint_id=endpoint_id, status=DeliveryStatus.PENDING)


def _in_flight(endpoint_id: UUID, *, now: datetime.datetime, lease: datetime.timedelta):
    """The endpoint's attempts in flight (one past its lease may be taken over)."""
    return _pending(endpoint_id).filter(attempt_started_at__gt=now - lease)


def endpoint_free_slots(
    endpoint_id: UUID,
    *,
    now: datetime.datetime,
    lease: datetime.timedelta,
    besides: int | None = None,
) -> int:
    """How many more attempts the endpoint may start now (besides `besides`' own)."""
    cap = settings.WEBHOOKS_ENDPOINT_MAX_IN_FLIGHT
    held = _in_flight(endpoint_id, now=now, lease=lease).exclude(pk=besides)
    return cap - len(held.values_list("pk", flat=True)[:cap])


def delivery_waits(
    delivery_id: int, *, endpoint_id: UUID, now: datetime.datetime, lease: datetime.timedelta
) -> bool:
    """Whether the delivery, due, is to wait for its endpoint's turn (the endpoint has
    all the attempts in flight it may); it then waits, holding no worker and no task."""
    if endpoint_free_slots(endpoint_id, now=now, lease=lease, besides=delivery_id) > 0:
        return False
    WebhookDelivery.objects.filter(
        pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=None, updated_at=now)
    # The attempt ahead may have ended meanwhile, finding nothing waiting yet.
    endpoint_next_wake(endpoint_id, now=now, lease=lease)
    return True


def endpoint_next_wake(
    endpoint_id: UUID, *, now: datetime.datetime, lease: datetime.timedelta
) -> int:
    """Wake the endpoint's oldest waiting deliveries, as many as it may start now."""
    free = endpoint_free_slots(endpoint_id, now=now, lease=lease)
    if free <= 0:
        return 0
    waiting = _pending(endpoint_id).filter(
        next_attempt_at=None, attempt_started_at=None, endpoint__deleted_at__isnull=True
    )
    woken = 0
    for pk in waiting.order_by("created_at", "id").values_list("pk", flat=True)[:free]:
        turn = WebhookDelivery.objects.filter(
            pk=pk, status=DeliveryStatus.PENDING, next_attempt_at=None, attempt_started_at=None
        )
        if turn.update(next_attempt_at=now, updated_at=now):
            wake(pk, at=now)
            woken += 1
    return woken


def stranded_wake(
    *,
    now: datetime.datetime,
    grace: datetime.timedelta,
    lease: datetime.timedelta,
    limit: int,
) -> int:
    """Wake the oldest waiting delivery of each endpoint nothing is ahead of (no attempt
    held, none due) that waited longer than `grace`: the attempt ahead ended as it
    began to wait. Of the `limit` endpoints waiting longest."""
    ahead = _pending(OuterRef("endpoint_id")).filter(
        Q(attempt_started_at__isnull=False) | Q(next_attempt_at__lte=now)
    )
    stranded = (
        WebhookDelivery.objects.filter(
            status=DeliveryStatus.PENDING,
            next_attempt_at=None,
            attempt_started_at=None,
            updated_at__lte=now - grace,
            endpoint__deleted_at__isnull=True,  # the retention pass deletes those
        )
        .filter(~Exists(ahead))
        .values("endpoint_id")
        .annotate(since=Min("updated_at"))
        .order_by("since")
        .values_list("endpoint_id", flat=True)[:limit]
    )
    return sum(endpoint_next_wake(endpoint_id, now=now, lease=lease) for endpoint_id in stranded)
