"""An endpoint that keeps failing is disabled (docs/webhooks.md): no delivery succeeded
for WEBHOOKS_DISABLE_AFTER_DAYS (5) days when one gives up or a 4xx ends it, or the
receiver answered 410 Gone; one that delivered, or that its owner changed, lately stays
enabled."""

from __future__ import annotations

import datetime
import threading
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Organization
from calls.models import Call, CallStatus
from tests.factories import CallFactory
from tests.test_webhook_delivery import attempt, endpoint_create, record
from tests.webhook_receiver import Receiver, Reply
from webhooks import services
from webhooks.delivery import _disable_if_failing
from webhooks.models import (
    DeliveryStatus,
    EventType,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from webhooks.retention import webhook_history_prune


@pytest.fixture
def call(organization: Organization) -> Call:
    return CallFactory(organization=organization)


def _give_up(delivery: WebhookDelivery) -> None:
    """Attempt the delivery at each due time (a frozen clock) until it gives up."""
    while attempt(delivery) == DeliveryStatus.PENDING:
        pass
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED


def _failing_endpoint(organization: Organization, url: str, *, changed_days_ago: float):
    endpoint, _ = endpoint_create(organization, url, [EventType.CALL_STATUS_CHANGED])
    changed = timezone.now() - datetime.timedelta(days=changed_days_ago)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(created_at=changed, updated_at=changed)
    return endpoint


def _failed_days_ago(organization: Organization, days: float) -> WebhookDelivery:
    """An event of another call, made `days` ago, its delivery failed for good."""
    record(CallFactory(organization=organization), CallStatus.CONNECTING, CallStatus.ACTIVE)
    old = WebhookDelivery.objects.order_by("-id").first()
    made = timezone.now() - datetime.timedelta(days=days)
    WebhookDelivery.objects.filter(pk=old.pk).update(
        status=DeliveryStatus.FAILED, created_at=made, next_attempt_at=None
    )
    return old


@pytest.mark.postgres
def test_the_check_for_an_endpoint_failing_for_days_reads_its_successes_by_index(
    organization: Organization,
) -> None:
    """It reads the endpoint's latest success: over every delivery it ever made, until
    a partial index held the successes by time. Seq scans are disallowed so the planner
    shows the path a big table gets."""
    endpoint = _failing_endpoint(organization, "https://d.example.com/x", changed_days_ago=30)
    _failed_days_ago(organization, 6)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE webhooks_webhookdelivery")
    with CaptureQueriesContext(connection) as queries:
        _disable_if_failing(endpoint_id=endpoint.pk, now=timezone.now())

    reads = [q["sql"] for q in queries if "delivered_at" in q["sql"]]
    assert len(reads) == 2  # a recent success, then the latest one
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for sql in reads:
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "webhook_delivery_succeeded" in plan, plan


def test_an_endpoint_failing_for_days_is_disabled_when_a_delivery_gives_up(
    organization: Organization, call: Call
) -> None:
    with Receiver(default_status=500) as receiver:
        endpoint = _failing_endpoint(organization, receiver.url, changed_days_ago=30)
        old = _failed_days_ago(organization, 6)
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        _give_up(WebhookDelivery.objects.exclude(pk=old.pk).get())

        record(call, CallStatus.ACTIVE, CallStatus.COMPLETED, "user_hangup")

    endpoint.refresh_from_db()
    assert endpoint.enabled is False
    assert endpoint.disabled_reason == (
        "No delivery succeeded for 5 days; enable it when it answers."
    )
    # Nothing new is queued for it; what was queued fails without being sent.
    assert WebhookDelivery.objects.count() == 2
    assert len(receiver.received) == 10


def test_a_quiet_endpoint_is_not_disabled_by_its_first_failure(
    organization: Organization, call: Call
) -> None:
    """Delivered fine 8 days ago, then no calls (a holiday): one event answered 400 is
    no 5 days of failing, and must not cost it every later event."""
    with Receiver(default_status=400) as receiver:
        endpoint = _failing_endpoint(organization, receiver.url, changed_days_ago=30)
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        eight_days_ago = timezone.now() - datetime.timedelta(days=8)
        WebhookDelivery.objects.update(
            status=DeliveryStatus.SUCCEEDED,
            created_at=eight_days_ago,
            delivered_at=eight_days_ago,
            next_attempt_at=None,
        )

        record(CallFactory(organization=organization), CallStatus.CONNECTING, CallStatus.ACTIVE)
        assert attempt(WebhookDelivery.objects.get(status=DeliveryStatus.PENDING)) == "failed"

    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason) == (True, "")


@pytest.mark.parametrize("status", [404, 401])
def test_an_endpoint_failing_for_days_is_disabled_when_a_4xx_ends_a_delivery_at_once(
    organization: Organization, call: Call, status: int
) -> None:
    """A 4xx ends the delivery without a schedule to run out: the check ran only when
    one did, so a dead endpoint answering 404 got every event for good."""
    with Receiver(default_status=status) as receiver:
        endpoint = _failing_endpoint(organization, receiver.url, changed_days_ago=6)
        _failed_days_ago(organization, 6)
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        pending = WebhookDelivery.objects.get(status=DeliveryStatus.PENDING)
        assert attempt(pending) == DeliveryStatus.FAILED

    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason) == (
        False,
        "No delivery succeeded for 5 days; enable it when it answers.",
    )


def test_an_endpoint_that_delivered_recently_stays_enabled(
    organization: Organization, call: Call
) -> None:
    with Receiver(default_status=500) as receiver:
        endpoint = _failing_endpoint(organization, receiver.url, changed_days_ago=30)
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        delivered = WebhookDelivery.objects.get()
        WebhookDelivery.objects.filter(pk=delivered.pk).update(
            status=DeliveryStatus.SUCCEEDED, delivered_at=timezone.now()
        )
        record(call, CallStatus.ACTIVE, CallStatus.COMPLETED, "user_hangup")
        _give_up(WebhookDelivery.objects.exclude(pk=delivered.pk).get())

    endpoint.refresh_from_db()
    assert endpoint.enabled is True


def test_an_endpoint_its_owner_changed_recently_stays_enabled(
    organization: Organization, call: Call
) -> None:
    with Receiver(default_status=500) as receiver:
        endpoint = _failing_endpoint(organization, receiver.url, changed_days_ago=1)
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        _give_up(WebhookDelivery.objects.get())

    endpoint.refresh_from_db()
    assert endpoint.enabled is True
    assert endpoint.disabled_reason == ""


def test_an_endpoint_a_replay_reached_yesterday_is_not_disabled_by_a_failure(
    organization: Organization, call: Call
) -> None:
    """The last success is the latest delivery, not the success of the latest event:
    an old event replayed and delivered yesterday proves the endpoint works."""
    day = datetime.timedelta(days=1)
    now = timezone.now()
    with Receiver(default_status=404) as receiver:
        endpoint = _failing_endpoint(organization, receiver.url, changed_days_ago=30)
        replayed = _failed_days_ago(organization, 10)
        WebhookDelivery.objects.filter(pk=replayed.pk).update(
            status=DeliveryStatus.SUCCEEDED, delivered_at=now - day
        )
        older = _failed_days_ago(organization, 9)
        WebhookDelivery.objects.filter(pk=older.pk).update(
            status=DeliveryStatus.SUCCEEDED, delivered_at=now - 9 * day
        )
        _failed_days_ago(organization, 7)

        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        assert attempt(WebhookDelivery.objects.get(status=DeliveryStatus.PENDING)) == "failed"

    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason) == (True, "")


def test_a_410_disables_the_endpoint(organization: Organization, call: Call) -> None:
    with Receiver([Reply(410)]) as receiver:
        endpoint, _ = endpoint_create(organization, receiver.url)
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)

        assert attempt(WebhookDelivery.objects.get()) == DeliveryStatus.FAILED
        record(call, CallStatus.ACTIVE, CallStatus.COMPLETED, "user_hangup")

    endpoint.refresh_from_db()
    assert endpoint.enabled is False
    assert endpoint.disabled_reason == "The receiver answered 410 Gone."
    delivery = WebhookDelivery.objects.get()
    assert delivery.next_attempt_at is None
    assert delivery.last_error == "HTTP 410 Gone: endpoint disabled"
    # A disabled endpoint gets no new deliveries.
    assert WebhookEvent.objects.count() == 1
    assert len(receiver.received) == 1


def test_a_410_from_the_old_url_leaves_an_endpoint_moved_meanwhile_enabled(
    organization: Organization, call: Call
) -> None:
    """The owner moved the endpoint while an attempt at the old URL was in flight, and
    the old URL answered 410 Gone: the endpoint at its new URL stays enabled."""
    from webhooks import delivery as delivery_module

    with Receiver([Reply(410)]) as old, Receiver() as new:
        endpoint, _ = endpoint_create(organization, old.url, [EventType.CALL_STATUS_CHANGED])
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        delivery = WebhookDelivery.objects.select_related("event", "endpoint").get()
        now = timezone.now()
        answer = delivery_module._send(delivery, endpoint=delivery.endpoint, now=now)
        services.webhook_endpoint_update(
            endpoint=WebhookEndpoint.objects.get(pk=endpoint.pk), url=new.url
        )
        delivery_module._attempt_finish(delivery, attempt=answer, now=now)

    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.enabled, endpoint.disabled_reason) == (new.url, True, "")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_deleting_an_endpoint_while_a_delivery_to_it_fails_for_good_deadlocks_neither(
    organization: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker finishing an attempt holds the delivery's row, then writes the endpoint
    (disabling it); a deletion holding the endpoint first would wait for the delivery:
    each waiting for the other."""
    from webhooks import delivery as delivery_module

    errors: list[Exception] = []
    disable = delivery_module._disable_if_failing

    def delete_endpoint(pk: object) -> None:
        try:
            services.webhook_endpoint_delete(endpoint=WebhookEndpoint.objects.get(pk=pk))
        except Exception as exc:  # what the test reports
            errors.append(exc)
        finally:
            connection.close()

    with Receiver(default_status=404) as receiver:
        endpoint = _failing_endpoint(organization, receiver.url, changed_days_ago=30)
        _failed_days_ago(organization, 6)
        record(CallFactory(organization=organization), CallStatus.CONNECTING, CallStatus.ACTIVE)
        pending = WebhookDelivery.objects.get(status=DeliveryStatus.PENDING)
        deleter = threading.Thread(target=delete_endpoint, args=(endpoint.pk,))

        def disable_while_deleted(**kwargs: object) -> None:
            deleter.start()
            time.sleep(1)  # the deleter is at work, waiting for this delivery's row
            disable(**kwargs)

        monkeypatch.setattr(delivery_module, "_disable_if_failing", disable_while_deleted)
        attempt(pending)
        deleter.join(timeout=10)

    assert errors == []
    webhook_history_prune()
    assert not WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()
