"""One organization's slow webhook endpoint and the others' deliveries (docs/webhooks.md,
"Fairness"): an endpoint holds at most WEBHOOKS_ENDPOINT_MAX_IN_FLIGHT workers at once."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator

import pytest
from django.utils import timezone

from accounts.models import Organization
from calls.models import CallStatus
from tests.factories import CallFactory
from tests.tasks import run_task_worker
from tests.test_webhook_delivery import attempt, attempt_out, endpoint_create, record, run_worker
from tests.webhook_receiver import Receiver, Reply
from webhooks.delivery import attempt_lease
from webhooks.models import DeliveryStatus, EventType, WebhookDelivery
from webhooks.recovery import webhook_deliveries_wake_overdue

STATUS_CHANGED = [EventType.CALL_STATUS_CHANGED]


@pytest.fixture(autouse=True)
def one_attempt_in_flight(settings: object) -> None:
    """A cap of one, so one attempt held shows it (the default is larger)."""
    settings.WEBHOOKS_ENDPOINT_MAX_IN_FLIGHT = 1


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def answered(organization: Organization, count: int) -> list[WebhookDelivery]:
    """`count` calls of the organization answered: a delivery each to its endpoint."""
    for _ in range(count):
        record(CallFactory(organization=organization), CallStatus.CONNECTING, CallStatus.ACTIVE)
    return list(WebhookDelivery.objects.filter(endpoint__organization=organization).order_by("id"))


@pytest.mark.django_db(transaction=True)
def test_a_slow_endpoint_holds_one_worker_while_other_organizations_deliveries_go_on(
    organization: Organization, outsider: Organization
) -> None:
    """Each of a slow endpoint's deliveries took a worker for the whole of its request (up
    to the 10 s timeout): with hundreds pending, every worker waited on that one customer
    and every other organization's webhooks (and analyses) waited behind them."""
    with Receiver([Reply(200, delay=1.0)] * 2) as slow, Receiver() as fast:
        endpoint_create(organization, slow.url, STATUS_CHANGED)
        endpoint_create(outsider, fast.url, STATUS_CHANGED)
        first, second = answered(organization, 2)
        (theirs,) = answered(outsider, 1)
        out = attempt_out(first, slow)  # a worker waits on the slow endpoint

        started = time.monotonic()
        assert attempt(second) is None  # a second worker is not held by it too
        assert attempt(theirs) == DeliveryStatus.SUCCEEDED
        elapsed = time.monotonic() - started
        sent_meanwhile = len(slow.received)
        out.join()
        run_worker()  # the first one's end woke the second, which waited for it

    assert elapsed < 0.9  # neither waited on the slow receiver
    assert sent_meanwhile == 1
    second.refresh_from_db()
    assert (second.status, second.attempt_count) == (DeliveryStatus.SUCCEEDED, 1)
    assert len(slow.received) == 2


def test_a_delivery_waiting_for_its_endpoint_goes_once_the_attempt_ahead_ends(
    organization: Organization, receiver: Receiver
) -> None:
    endpoint_create(organization, receiver.url, STATUS_CHANGED)
    first, second = answered(organization, 2)
    now = second.next_attempt_at
    # A worker took the first one (and was killed in its request: it never finishes).
    WebhookDelivery.objects.filter(pk=first.pk).update(
        attempt_started_at=now, next_attempt_at=now + attempt_lease()
    )

    assert attempt(second, now=now) is None
    second.refresh_from_db()
    assert (second.next_attempt_at, second.attempt_count) == (None, 0)
    assert receiver.received == []

    # Past its lease the sweep wakes the first; its end wakes the second.
    later = now + 2 * attempt_lease()
    assert webhook_deliveries_wake_overdue(now=later) == 1
    assert attempt(first, now=later) == DeliveryStatus.SUCCEEDED
    second.refresh_from_db()
    assert second.next_attempt_at == later
    assert attempt(second, now=later) == DeliveryStatus.SUCCEEDED
    assert len(receiver.received) == 2


def test_a_delivery_left_waiting_with_nothing_ahead_is_woken_by_the_sweep(
    organization: Organization, receiver: Receiver
) -> None:
    """The attempt ahead ended just as this one began to wait: nothing wakes it but the
    sweep, once it waited longer than an attempt's lease."""
    endpoint_create(organization, receiver.url, STATUS_CHANGED)
    (delivery,) = answered(organization, 1)
    waiting_since = timezone.now()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=None, updated_at=waiting_since
    )

    assert webhook_deliveries_wake_overdue(now=waiting_since + datetime.timedelta(seconds=5)) == 0
    later = waiting_since + 2 * attempt_lease()
    assert webhook_deliveries_wake_overdue(now=later) == 1
    assert attempt(delivery, now=later) == DeliveryStatus.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_a_failing_endpoints_retries_go_after_other_organizations_deliveries(
    organization: Organization, outsider: Organization, settings: object
) -> None:
    """A retry is queued for its time (run_after) and the queue takes those before any
    queued for at once: a failing customer's retries, thousands after an outage of
    theirs, went before every other organization's new deliveries, each holding the
    worker up to the timeout."""
    settings.WEBHOOKS_RETRY_SCHEDULE = [0, 0.2, 5]
    with Receiver(default_status=503) as failing, Receiver() as fast:
        endpoint_create(organization, failing.url, STATUS_CHANGED)
        (retried,) = answered(organization, 1)
        run_worker()  # a 503: again in 0.2 s
        assert len(failing.received) == 1
        time.sleep(0.3)
        endpoint_create(outsider, fast.url, STATUS_CHANGED)
        (theirs,) = answered(outsider, 1)

        run_task_worker("webhooks", "--max-tasks", "1")

        sent = (len(failing.received), len(fast.received))
    assert sent == (1, 1)  # theirs, not the retry
    theirs.refresh_from_db()
    assert theirs.status == DeliveryStatus.SUCCEEDED
