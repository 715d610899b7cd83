"""A delivery's wake-ups: the sweep that requeues the ones lost or never taken, and an
attempt whose worker died (webhooks/recovery.py, `wake_webhook_deliveries`), wake-ups
that race for one delivery, and one taken early by a worker whose clock is behind."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from accounts.models import Organization
from calls.models import Call, CallStatus
from tests.factories import CallFactory
from tests.test_webhook_delivery import attempt_out, endpoint_create, record, run_worker
from tests.webhook_receiver import Receiver, Reply
from webhooks.delivery import (
    webhook_delivery_attempt,
    webhook_delivery_replay,
)
from webhooks.models import (
    DeliveryStatus,
    EventType,
    WebhookAttempt,
    WebhookDelivery,
)


@pytest.fixture
def call(organization: Organization) -> Call:
    return CallFactory(organization=organization)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.mark.django_db(transaction=True)
def test_wake_webhook_deliveries_requeues_lost_wake_ups(
    organization: Organization, receiver: Receiver
) -> None:
    endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
    call = CallFactory(organization=organization)
    record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
    # The wake-up is lost (e.g. the worker was killed mid-attempt and its lease ran out).
    DBTaskResult.objects.all().delete()
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - datetime.timedelta(minutes=5))

    call_command("wake_webhook_deliveries")
    run_worker()

    assert len(receiver.received) == 1
    assert WebhookDelivery.objects.get().status == DeliveryStatus.SUCCEEDED


# docs/webhooks.md: an attempt whose worker died is sent again by the first overdue sweep
# once the request's timeout and this much more have passed since it was taken.
RESENT_WITHIN_TIMEOUT_AND = datetime.timedelta(seconds=30)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("timeout", [10.0, 60.0])
def test_an_attempt_whose_worker_died_is_sent_again_soon_after_its_timeout(
    organization: Organization, call: Call, settings: object, timeout: float
) -> None:
    """The soak: a `call.ended` whose `db_worker` was killed mid-request went out again
    about four minutes later: its claim held it for 120 s, past which the sweep waited
    120 s more, although no request may take over a minute."""
    settings.WEBHOOKS_TIMEOUT_SECONDS = timeout
    from webhooks.recovery import webhook_deliveries_wake_overdue

    with Receiver([Reply(200, delay=1.0), Reply(200)]) as receiver:
        endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
        record(call, CallStatus.CONNECTING, CallStatus.COMPLETED, "api_request")
        delivery = WebhookDelivery.objects.get()
        taken_at = delivery.next_attempt_at
        # Its worker takes it and dies in the request: nothing comes back from it (this
        # one's answer comes only after the sweep).
        DBTaskResult.objects.update(status="RUNNING")
        first = attempt_out(delivery, receiver)
        swept_at = taken_at + datetime.timedelta(seconds=timeout) + RESENT_WITHIN_TIMEOUT_AND
        woken = webhook_deliveries_wake_overdue(now=swept_at)
        again = webhook_delivery_attempt(delivery_id=delivery.pk, now=swept_at)
        first.join()

    assert (woken, again) == (1, DeliveryStatus.SUCCEEDED)
    assert len(receiver.received) == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("timeout", [10.0, 60.0])
def test_an_attempt_still_within_its_timeout_is_never_sent_again_beside_it(
    organization: Organization, call: Call, settings: object, timeout: float
) -> None:
    """A slow receiver holds the attempt up to the timeout, and its outcome is written
    after: until then neither the sweep nor a stray wake-up sends the event a second
    time while the first request is out."""
    settings.WEBHOOKS_TIMEOUT_SECONDS = timeout
    from webhooks.recovery import webhook_deliveries_wake_overdue

    with Receiver([Reply(200, delay=1.0)]) as receiver:
        endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
        record(call, CallStatus.CONNECTING, CallStatus.COMPLETED, "api_request")
        delivery = WebhookDelivery.objects.get()
        taken_at = delivery.next_attempt_at
        DBTaskResult.objects.update(status="RUNNING")
        first = attempt_out(delivery, receiver)
        still_out = taken_at + datetime.timedelta(seconds=timeout + 10)
        woken = webhook_deliveries_wake_overdue(now=still_out)
        again = webhook_delivery_attempt(delivery_id=delivery.pk, now=still_out)
        first.join()

    assert (woken, again) == (0, None)
    assert len(receiver.received) == 1
    assert WebhookDelivery.objects.get().status == DeliveryStatus.SUCCEEDED


def test_waking_overdue_deliveries_queues_at_most_its_limit_most_overdue_first(
    organization: Organization, django_capture_on_commit_callbacks
) -> None:
    """While the worker is down every run would queue every overdue delivery again."""
    from webhooks.recovery import webhook_deliveries_wake_overdue

    endpoint_create(organization, "https://hooks.example.com/x", [EventType.CALL_STATUS_CHANGED])
    for _ in range(3):
        record(CallFactory(organization=organization), CallStatus.CONNECTING, CallStatus.ACTIVE)
    DBTaskResult.objects.all().delete()
    now = timezone.now()
    deliveries = list(WebhookDelivery.objects.order_by("id"))
    for minutes, delivery in zip([5, 30, 10], deliveries, strict=True):
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            next_attempt_at=now - datetime.timedelta(minutes=minutes)
        )

    with django_capture_on_commit_callbacks(execute=True):
        assert webhook_deliveries_wake_overdue(now=now, limit=2) == 2

    woken = {result.args_kwargs["args"][0] for result in DBTaskResult.objects.all()}
    assert woken == {deliveries[1].pk, deliveries[2].pk}


def test_while_the_worker_is_down_waking_overdue_deliveries_queues_each_once(
    organization: Organization, django_capture_on_commit_callbacks
) -> None:
    """Every pass used to queue every overdue delivery again: a worker down for an hour
    and a sweep each minute left sixty task rows per delivery."""
    from webhooks.recovery import webhook_deliveries_wake_overdue

    endpoint_create(organization, "https://hooks.example.com/x", [EventType.CALL_STATUS_CHANGED])
    for _ in range(2):
        record(CallFactory(organization=organization), CallStatus.CONNECTING, CallStatus.ACTIVE)
    DBTaskResult.objects.all().delete()
    now = timezone.now()
    WebhookDelivery.objects.update(next_attempt_at=now - datetime.timedelta(minutes=5))

    woken = []
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            woken.append(webhook_deliveries_wake_overdue(now=now))

    assert woken == [2, 0, 0]
    queued = sorted(result.args_kwargs["args"] for result in DBTaskResult.objects.all())
    assert queued == sorted([pk] for pk in WebhookDelivery.objects.values_list("pk", flat=True))
    # A wake-up a worker took (and lost) is not waiting: the delivery is woken again.
    DBTaskResult.objects.update(status="RUNNING")
    with django_capture_on_commit_callbacks(execute=True):
        assert webhook_deliveries_wake_overdue(now=now) == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_wake_ups_send_a_delivery_once(organization: Organization) -> None:
    """Two workers woken for the same delivery (a replay racing a retry, a duplicate
    wake-up): the conditional UPDATE lets exactly one of them send."""
    with Receiver([Reply(200, delay=0.3)]) as receiver:
        endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
        call = CallFactory(organization=organization)
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        delivery = WebhookDelivery.objects.get()
        barrier = threading.Barrier(4)
        outcomes = []

        def wake() -> None:
            try:
                barrier.wait()
                outcomes.append(webhook_delivery_attempt(delivery_id=delivery.pk))
            finally:
                connection.close()

        threads = [threading.Thread(target=wake) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted(outcomes, key=str) == [None, None, None, DeliveryStatus.SUCCEEDED]
    assert len(receiver.received) == 1
    assert WebhookAttempt.objects.count() == 1


def test_a_wake_up_queued_for_a_later_time_does_not_count_as_waiting(
    organization: Organization, django_capture_on_commit_callbacks
) -> None:
    """A retry's wake-up queued for in an hour is READY, but it does not wake a
    delivery replayed now whose own wake-up was lost: the sweep must queue it."""
    from webhooks.recovery import webhook_deliveries_wake_overdue
    from webhooks.tasks import deliver_webhook

    endpoint_create(organization, "https://hooks.example.com/x", [EventType.CALL_STATUS_CHANGED])
    record(CallFactory(organization=organization), CallStatus.CONNECTING, CallStatus.ACTIVE)
    DBTaskResult.objects.all().delete()
    delivery = WebhookDelivery.objects.get()
    now = timezone.now()
    later = now + datetime.timedelta(hours=1)
    # Its last attempt failed: the retry is due in an hour, its wake-up queued for then.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.PENDING,
        next_attempt_at=later,
        attempt_started_at=now - datetime.timedelta(minutes=10),
    )
    deliver_webhook.using(run_after=later).enqueue(delivery.pk)
    # Replayed now, and that wake-up is lost (a failed enqueue).
    with django_capture_on_commit_callbacks(execute=False):
        webhook_delivery_replay(delivery=WebhookDelivery.objects.get(), now=now)

    sweep_at = now + datetime.timedelta(minutes=5)
    with django_capture_on_commit_callbacks(execute=True):
        woken = webhook_deliveries_wake_overdue(now=sweep_at)

    assert woken == 1


@pytest.mark.django_db(transaction=True)
def test_a_wake_up_taken_by_a_worker_whose_clock_is_behind_is_not_lost(
    organization: Organization, receiver: Receiver
) -> None:
    """The web host writes a `call.status_changed` delivery due at its own now and
    queues its wake-up for at once. A worker whose clock runs 50 ms behind (hosts agree
    to milliseconds, never exactly) takes it within those 50 ms: the attempt found it
    "not due" and returned, the task ended, and the event waited minutes for the
    overdue sweep (the attempt lease past its time, then the sweep's period)."""
    endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
    record(CallFactory(organization=organization), CallStatus.CONNECTING, CallStatus.ACTIVE)
    delivery = WebhookDelivery.objects.get()
    worker_now = delivery.next_attempt_at - datetime.timedelta(milliseconds=50)

    # The worker takes the task and runs it, by its clock.
    DBTaskResult.objects.update(status="SUCCESSFUL")
    assert webhook_delivery_attempt(delivery_id=delivery.pk, now=worker_now) is None
    run_worker()

    assert len(receiver.received) == 1
    assert WebhookDelivery.objects.get().status == DeliveryStatus.SUCCEEDED
