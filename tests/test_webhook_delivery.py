from __future__ import annotations

import datetime
import email.utils
import io
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from accounts.models import Organization
from calls import representations, selectors
from calls.lifecycle import call_transition
from calls.models import Call, CallStatus
from tests.factories import CallFactory, TranscriptEntryFactory
from tests.tasks import run_task_worker
from tests.webhook_receiver import Receiver, Reply
from webhooks import outbox, services
from webhooks.delivery import (
    _disable_if_failing,
    attempt_lease,
    retry_delay,
    webhook_delivery_attempt,
    webhook_delivery_replay,
)
from webhooks.models import (
    DeliveryStatus,
    EventType,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from webhooks.retention import webhook_history_prune

ALL_EVENTS = [EventType.CALL_STATUS_CHANGED, EventType.CALL_ENDED]


def endpoint_create(
    organization: Organization, url: str, events: list[str] | None = None
) -> tuple[WebhookEndpoint, str]:
    return services.webhook_endpoint_create(
        organization=organization, url=url, events=events or ALL_EVENTS
    )


def record(
    call: Call,
    from_status: str,
    to_status: str,
    end_reason: str | None = None,
    at: datetime.datetime | None = None,
) -> list[WebhookEvent]:
    """A status change as the lifecycle makes it: the UPDATE and the outbox rows in one
    transaction."""
    at = at or timezone.now()
    with transaction.atomic():
        changes: dict[str, object] = {"status": to_status}
        if to_status == CallStatus.ACTIVE:
            changes.update(started_at=at, agent_history=["greeter-agent"])
        if end_reason:
            changes.update(end_reason=end_reason, ended_at=at, current_agent=None)
        Call.objects.filter(pk=call.pk).update(**changes)
        return outbox.call_status_changed_record(
            call_id=call.id,
            from_status=from_status,
            to_status=to_status,
            end_reason=end_reason,
            at=at,
        )


def run_worker() -> None:
    """The real task worker (django-tasks-db): runs every task due now, then exits."""
    run_task_worker("webhooks")


def attempt(delivery: WebhookDelivery, now: datetime.datetime | None = None) -> str | None:
    delivery.refresh_from_db()
    return webhook_delivery_attempt(delivery_id=delivery.pk, now=now or delivery.next_attempt_at)


def attempt_out(delivery: WebhookDelivery, receiver: Receiver) -> threading.Thread:
    """The delivery's attempt, in a thread, once its request has reached the receiver
    (whose reply is held back): join it to let it finish."""
    thread = threading.Thread(target=attempt, args=(delivery,))
    thread.start()
    while not receiver.received:
        time.sleep(0.02)
    return thread


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def call(organization: Organization) -> Call:
    return CallFactory(organization=organization)


# The outbox


def test_a_status_change_writes_one_event_with_a_delivery_per_subscribed_endpoint(
    organization: Organization, outsider: Organization, call: Call
) -> None:
    both, _ = endpoint_create(organization, "https://a.example.com/x")
    status_only, _ = endpoint_create(
        organization, "https://b.example.com/x", [EventType.CALL_STATUS_CHANGED]
    )
    endpoint_create(organization, "https://c.example.com/x", [EventType.CALL_ENDED])
    disabled, _ = endpoint_create(organization, "https://d.example.com/x")
    services.webhook_endpoint_update(endpoint=disabled, enabled=False)
    endpoint_create(outsider, "https://e.example.com/x")

    (event,) = record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)

    assert event.type == EventType.CALL_STATUS_CHANGED
    assert event.id.startswith("evt_") and "." not in event.id
    assert event.organization_id == organization.id
    assert json.loads(event.body) == {
        "id": event.id,
        "type": "call.status_changed",
        "timestamp": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "data": {
            "call_id": str(call.id),
            "from_status": "connecting",
            "to_status": "active",
            "end_reason": None,
        },
    }
    assert {d.endpoint_id for d in event.deliveries.all()} == {both.id, status_only.id}
    assert WebhookEvent.objects.count() == 1


def test_an_ending_change_also_writes_the_end_report_to_be_built_later(
    organization: Organization, call: Call, settings: object
) -> None:
    settings.WEBHOOKS_END_REPORT_DELAY = 15
    endpoint, _ = endpoint_create(organization, "https://a.example.com/x")
    at = timezone.now()

    changed, ended = record(call, CallStatus.CONNECTING, CallStatus.COMPLETED, "api_request", at)

    assert changed.type == EventType.CALL_STATUS_CHANGED
    assert json.loads(changed.body)["data"]["end_reason"] == "api_request"
    assert ended.type == EventType.CALL_ENDED
    assert ended.body is None
    delivery = ended.deliveries.get()
    assert delivery.endpoint == endpoint
    assert at + datetime.timedelta(seconds=15) <= delivery.next_attempt_at
    assert delivery.next_attempt_at <= timezone.now() + datetime.timedelta(seconds=15)


def test_without_endpoints_a_change_writes_nothing(call: Call) -> None:
    assert record(call, CallStatus.CONNECTING, CallStatus.COMPLETED, "api_request") == []
    assert WebhookEvent.objects.count() == 0


def test_deliveries_are_enqueued_when_the_change_commits(
    organization: Organization, call: Call, django_capture_on_commit_callbacks
) -> None:
    endpoint_create(organization, "https://a.example.com/x")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        record(call, CallStatus.CONNECTING, CallStatus.COMPLETED, "api_request")

    assert len(callbacks) == 2
    tasks = list(DBTaskResult.objects.all())
    assert [t.queue_name for t in tasks] == ["webhooks", "webhooks"]
    # The end report's task waits for its delay; the status change's runs at once
    # (django-tasks-db stores "no run_after" as the year 9999, ordering it last).
    deferred = sorted(t.run_after.year < 9999 for t in tasks)
    assert deferred == [False, True]
    (report_task,) = [t for t in tasks if t.run_after.year < 9999]
    assert report_task.run_after > timezone.now() + datetime.timedelta(seconds=10)


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_status_change_emits_nothing(
    organization: Organization, receiver: Receiver
) -> None:
    endpoint_create(organization, receiver.url)
    call = CallFactory(organization=organization)

    with pytest.raises(RuntimeError), transaction.atomic():
        record(call, CallStatus.CONNECTING, CallStatus.COMPLETED, "api_request")
        raise RuntimeError("the lifecycle failed after recording")

    run_worker()
    call.refresh_from_db()
    assert call.status == CallStatus.CONNECTING
    assert WebhookEvent.objects.count() == 0
    assert WebhookDelivery.objects.count() == 0
    assert DBTaskResult.objects.count() == 0
    assert receiver.received == []


@pytest.mark.django_db(transaction=True)
def test_a_committed_change_is_delivered_even_if_the_worker_was_down(
    organization: Organization, receiver: Receiver
) -> None:
    endpoint, secret = endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
    call = CallFactory(organization=organization)

    record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
    # No worker yet: the event waits in the outbox and its wake-up in the queue.
    assert receiver.received == []
    assert DBTaskResult.objects.filter(status="READY").count() == 1

    run_worker()

    (received,) = receiver.received
    assert received.verify(secret)["data"]["to_status"] == "active"
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 1
    assert delivery.last_status_code == 200


# End to end


@pytest.mark.django_db(transaction=True)
def test_a_receiver_gets_every_event_of_a_call_signed(
    organization: Organization, receiver: Receiver, settings: object
) -> None:
    settings.WEBHOOKS_END_REPORT_DELAY = 1
    endpoint, secret = endpoint_create(organization, receiver.url)
    call = CallFactory(organization=organization)
    TranscriptEntryFactory(call=call, role="assistant", content="Hello! How are you today?")

    record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
    TranscriptEntryFactory(call=call, role="user", content="Fine, thanks.")
    ended_at = timezone.now()
    record(call, CallStatus.ACTIVE, CallStatus.COMPLETED, "user_hangup", ended_at)
    run_worker()

    # The status changes arrive at once; the end report waits for late transcript lines.
    assert [r.verify(secret)["type"] for r in receiver.received] == [
        "call.status_changed",
        "call.status_changed",
    ]
    TranscriptEntryFactory(call=call, role="assistant", content="Bye!", agent_name="feedback-agent")
    time.sleep(
        max(0.0, (ended_at + datetime.timedelta(seconds=1.1) - timezone.now()).total_seconds())
    )
    run_worker()

    payloads = [r.verify(secret) for r in receiver.received]
    assert [(p["type"], p["data"].get("to_status")) for p in payloads] == [
        ("call.status_changed", "active"),
        ("call.status_changed", "completed"),
        ("call.ended", None),
    ]
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(set(ids)) == 3
    assert [p["id"] for p in payloads] == ids
    report = payloads[2]["data"]
    call.refresh_from_db()
    samples = selectors.call_samples(call=call)
    assert report["call"] == json.loads(
        json.dumps(
            representations.call_detail(
                call,
                samples=samples,
                analysis=selectors.call_analysis(call=call),
                cost=selectors.call_cost(call=call),
                recording=None,
            )
        )
    )
    assert report["call"]["status"] == "completed"
    assert report["metrics"] == json.loads(
        json.dumps(representations.call_metrics(call, samples=samples))
    )
    assert [line["content"] for line in report["transcript"]] == [
        "Hello! How are you today?",
        "Fine, thanks.",
        "Bye!",
    ]
    assert all(r.headers["content-type"] == "application/json" for r in receiver.received)
    assert all(r.headers["user-agent"] == "voicecalls-webhooks/1" for r in receiver.received)
    assert all(r.path == "/hooks/voicecalls" for r in receiver.received)
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"succeeded"}


# Retries


@pytest.mark.django_db(transaction=True)
def test_a_receiver_failing_twice_gets_the_same_event_three_times(
    organization: Organization, settings: object
) -> None:
    # Waits shrunk to zero so the real worker runs the retries now; the schedule
    # itself is checked with a frozen clock below.
    settings.WEBHOOKS_RETRY_SCHEDULE = (0,) * 10
    with Receiver([Reply(500), Reply(503)]) as receiver:
        endpoint, secret = endpoint_create(
            organization, receiver.url, [EventType.CALL_STATUS_CHANGED]
        )
        call = CallFactory(organization=organization)
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)

        run_worker()

    assert len(receiver.received) == 3
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert len({r.body for r in receiver.received}) == 1
    for received in receiver.received:
        received.verify(secret)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert delivery.attempt_count == 3
    assert list(delivery.attempts.values_list("number", "status_code")) == [
        (1, 500),
        (2, 503),
        (3, 200),
    ]
    assert DBTaskResult.objects.filter(status="SUCCESSFUL").count() == 3


def test_retries_follow_the_schedule_then_give_up(organization: Organization, call: Call) -> None:
    with Receiver(default_status=500) as receiver:
        endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        delivery = WebhookDelivery.objects.get()

        waits = []
        for number in range(1, 11):
            delivery.refresh_from_db()
            now = delivery.next_attempt_at  # a frozen clock, moved to each due time
            outcome = attempt(delivery, now)
            delivery.refresh_from_db()
            if delivery.next_attempt_at is not None:
                waits.append((delivery.next_attempt_at - now).total_seconds())
            assert outcome == (DeliveryStatus.PENDING if number < 10 else DeliveryStatus.FAILED)

    expected = [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]
    assert len(waits) == len(expected)
    for wait, base in zip(waits, expected, strict=True):
        assert base <= wait <= base * 1.1
    assert sum(waits) > 2.9 * 86400  # about three days
    assert len(receiver.received) == 10
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempt_count == 10
    assert delivery.last_error == "HTTP 500 (gave up after 10 attempts)"
    assert attempt(delivery, timezone.now() + datetime.timedelta(days=30)) is None


# --- Endpoints that keep failing are disabled ------------------------------------------


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


@pytest.mark.parametrize(
    ("round_attempts", "low", "high"),
    [(0, 0, 0), (1, 5, 5.5), (2, 300, 330), (5, 18000, 19800), (9, 86400, 95040)],
)
def test_retry_delay_is_the_schedule_plus_up_to_ten_percent_jitter(
    round_attempts: int, low: float, high: float
) -> None:
    delays = [retry_delay(round_attempts=round_attempts) for _ in range(200)]
    assert all(low <= d <= high for d in delays)
    if high > low:
        assert len(set(delays)) > 1


def test_the_retry_schedule_is_a_setting(settings: object) -> None:
    settings.WEBHOOKS_RETRY_SCHEDULE = (0.0, 2.0, 4.0)
    assert retry_delay(round_attempts=0) == 0
    assert 2 <= retry_delay(round_attempts=1) <= 2.2
    assert 4 <= retry_delay(round_attempts=2) <= 4.4
    assert retry_delay(round_attempts=3) is None


def test_retry_delay_gives_up_after_ten_attempts_and_honours_retry_after() -> None:
    assert retry_delay(round_attempts=10) is None
    assert retry_delay(round_attempts=1, retry_after=120) == 120
    assert retry_delay(round_attempts=9, retry_after=10) >= 86400
    assert retry_delay(round_attempts=1, retry_after=10**9) == 86400


def answered_once(
    organization: Organization, call: Call, reply: Reply
) -> tuple[WebhookDelivery, datetime.datetime]:
    """A status change's delivery after one attempt `reply` answered (to be retried),
    and when it was made."""
    with Receiver([reply]) as receiver:
        endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        delivery = WebhookDelivery.objects.get()
        now = timezone.now()
        assert attempt(delivery, now) == DeliveryStatus.PENDING
    delivery.refresh_from_db()
    return delivery, now


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_a_429_is_retried_after_its_retry_after(
    organization: Organization, call: Call, form: str
) -> None:
    in_an_hour = timezone.now() + datetime.timedelta(hours=1, seconds=30)
    retry_after = "3600" if form == "seconds" else email.utils.format_datetime(in_an_hour, True)
    delivery, now = answered_once(organization, call, Reply(429, {"Retry-After": retry_after}))

    assert delivery.last_status_code == 429
    assert delivery.next_attempt_at >= now + datetime.timedelta(seconds=3590)


@pytest.mark.parametrize("retry_after", ["\u00b2", "soon", "12 seconds"])
def test_a_retry_after_neither_seconds_nor_a_date_leaves_the_schedule_as_it_is(
    organization: Organization, call: Call, retry_after: str
) -> None:
    """ "²" is a digit to str.isdigit() and not to float(): it was a ValueError out of
    the attempt, which then logged nothing and crashed at every wake-up."""
    delivery, now = answered_once(organization, call, Reply(503, {"Retry-After": retry_after}))

    assert (delivery.last_status_code, delivery.attempts.count()) == (503, 1)
    assert delivery.next_attempt_at < now + datetime.timedelta(minutes=5)


def test_a_timeout_is_retried(organization: Organization, call: Call, settings: object) -> None:
    settings.WEBHOOKS_TIMEOUT_SECONDS = 0.3
    with Receiver([Reply(200, delay=1.5)]) as receiver:
        endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        delivery = WebhookDelivery.objects.get()

        started = time.monotonic()
        assert attempt(delivery) == DeliveryStatus.PENDING
        assert time.monotonic() - started < 1.2
        assert attempt(delivery) == DeliveryStatus.SUCCEEDED

    first, second = delivery.attempts.order_by("number")
    assert first.status_code is None
    assert first.error == "timeout after 0.3 s"
    assert 250 <= first.duration_ms < 1200
    assert second.status_code == 200
    assert len(receiver.received) == 2
    assert receiver.received[0].headers["webhook-id"] == receiver.received[1].headers["webhook-id"]


def dripping_receiver(drip: str, stop: threading.Event) -> int:
    """A receiver answering a byte every 0.2 s, forever, in its headers or its body;
    its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve() -> None:
        connection, _ = server.accept()
        try:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            if drip == "body":
                connection.sendall(b"Content-Length: 100000\r\n\r\n")
            while not stop.is_set():
                connection.sendall(b"x" if drip == "body" else b"X")
                time.sleep(0.2)
        except OSError:
            pass
        finally:
            connection.close()
            server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]


@pytest.mark.parametrize("drip", ["headers", "body"])
def test_a_receiver_dripping_its_answer_is_cut_off_at_the_timeout(drip: str) -> None:
    """The timeout bounds the whole request, not each read: else a receiver sending a
    byte at a time holds a worker for hours, past its lease, when another worker sends
    the event a second time."""
    from webhooks import transport

    stop = threading.Event()
    port = dripping_receiver(drip, stop)
    started = time.monotonic()
    try:
        with pytest.raises(transport.DeliveryError, match=r"^timeout after 1 s$") as raised:
            transport.post(
                f"http://127.0.0.1:{port}/hook",
                body=b"{}",
                headers={},
                timeout=1.0,
                allow_private=True,
            )
    finally:
        stop.set()

    assert time.monotonic() - started < 3
    assert 900 <= raised.value.duration_ms < 3000


def test_a_slow_lookup_leaves_the_connection_only_what_is_left_of_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lookup and the request share the timeout: a connection the receiver never
    accepted was given a whole timeout of its own after a lookup that took most of one,
    so an attempt could outlast its hold on the delivery (attempt_lease) and the event
    be sent beside it."""
    from webhooks import transport

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    queued = socket.create_connection(("127.0.0.1", port))  # fills its queue: no more
    real_getaddrinfo = socket.getaddrinfo

    def slow_name_server(host: str, *args: object, **kwargs: object) -> list:
        if host != "hooks.example.com":
            return real_getaddrinfo(host, *args, **kwargs)
        time.sleep(0.8)
        return real_getaddrinfo("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_name_server)
    started = time.monotonic()
    try:
        with pytest.raises(transport.DeliveryError, match=r"^timeout after 1 s$"):
            transport.post(
                f"http://hooks.example.com:{port}/hook",
                body=b"{}",
                headers={},
                timeout=1.0,
                allow_private=True,
            )
    finally:
        queued.close()
        server.close()

    assert time.monotonic() - started < 1.5  # not 1.8: 0.8 s looking up, then 1 s


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


def test_an_event_type_unsubscribed_meanwhile_is_not_sent_any_more(
    organization: Organization, call: Call
) -> None:
    """Like a disabled endpoint's, what was queued of an event type its owner dropped
    fails without being sent (a retry could come days later)."""
    with Receiver(default_status=200) as receiver:
        endpoint, _ = endpoint_create(organization, receiver.url)
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        record(call, CallStatus.ACTIVE, CallStatus.COMPLETED, "user_hangup")
        services.webhook_endpoint_update(endpoint=endpoint, events=[EventType.CALL_STATUS_CHANGED])
        ended = WebhookDelivery.objects.get(event__type=EventType.CALL_ENDED)

        assert attempt(ended) == DeliveryStatus.FAILED

    assert receiver.received == []
    ended.refresh_from_db()
    assert ended.last_error == "endpoint no longer subscribed to call.ended."
    endpoint.refresh_from_db()
    assert endpoint.enabled is True


def test_a_refused_connection_is_retried(organization: Organization, call: Call) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint_create(organization, f"http://127.0.0.1:{port}/x", [EventType.CALL_STATUS_CHANGED])
    record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
    delivery = WebhookDelivery.objects.get()

    assert attempt(delivery) == DeliveryStatus.PENDING

    delivery.refresh_from_db()
    assert delivery.last_status_code is None
    assert delivery.last_error.startswith("connection failed")
    assert delivery.next_attempt_at is not None


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


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_4xx_end_the_delivery_as_failed(
    organization: Organization, call: Call, status: int
) -> None:
    with Receiver([Reply(status)]) as receiver:
        endpoint, _ = endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        delivery = WebhookDelivery.objects.get()

        assert attempt(delivery) == DeliveryStatus.FAILED
        assert attempt(delivery, timezone.now() + datetime.timedelta(days=1)) is None

    delivery.refresh_from_db()
    assert delivery.last_status_code == status
    assert delivery.next_attempt_at is None
    endpoint.refresh_from_db()
    assert endpoint.enabled is True
    assert len(receiver.received) == 1


def test_redirects_are_not_followed_and_count_as_failures(
    organization: Organization, call: Call
) -> None:
    with Receiver([Reply(302, headers={"Location": "/elsewhere"})]) as receiver:
        endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)

        assert attempt(WebhookDelivery.objects.get()) == DeliveryStatus.PENDING

    assert [r.path for r in receiver.received] == ["/hooks/voicecalls"]
    assert WebhookDelivery.objects.get().last_status_code == 302


def test_the_log_keeps_only_a_short_excerpt_of_the_response(
    organization: Organization, call: Call
) -> None:
    with Receiver([Reply(500, body=b"x" * 100_000)]) as receiver:
        endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        attempt(WebhookDelivery.objects.get())

    assert WebhookAttempt.objects.get().response_excerpt == "x" * 200


# The end-of-call report


def test_the_end_report_is_built_at_its_first_attempt_and_frozen_for_retries(
    organization: Organization, call: Call, settings: object
) -> None:
    settings.WEBHOOKS_END_REPORT_DELAY = 15
    with Receiver([Reply(500)]) as receiver:
        endpoint, secret = endpoint_create(organization, receiver.url, [EventType.CALL_ENDED])
        ended_at = timezone.now()
        (event,) = record(
            call, CallStatus.CONNECTING, CallStatus.COMPLETED, "api_request", ended_at
        )
        delivery = event.deliveries.get()

        # Not before the delay: nothing is built or sent.
        assert attempt(delivery, ended_at + datetime.timedelta(seconds=14)) is None
        event.refresh_from_db()
        assert event.body is None

        TranscriptEntryFactory(call=call, content="a late line")
        assert attempt(delivery) == DeliveryStatus.PENDING
        event.refresh_from_db()
        frozen = event.body
        assert json.loads(frozen)["data"]["transcript"][0]["content"] == "a late line"

        TranscriptEntryFactory(call=call, content="too late for the report")
        assert attempt(delivery) == DeliveryStatus.SUCCEEDED

    assert [r.body.decode() for r in receiver.received] == [frozen, frozen]
    event.refresh_from_db()
    assert event.body == frozen


def test_a_delivery_to_a_disabled_endpoint_fails_without_sending(
    organization: Organization, call: Call, receiver: Receiver
) -> None:
    endpoint, _ = endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
    record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
    services.webhook_endpoint_update(endpoint=endpoint, enabled=False)

    assert attempt(WebhookDelivery.objects.get()) == DeliveryStatus.FAILED

    assert receiver.received == []
    assert WebhookDelivery.objects.get().last_error == "endpoint disabled."


def test_a_replay_resends_the_same_event(
    organization: Organization, call: Call, receiver: Receiver
) -> None:
    endpoint, secret = endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
    record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
    delivery = WebhookDelivery.objects.get()
    assert attempt(delivery) == DeliveryStatus.SUCCEEDED

    webhook_delivery_replay(delivery=delivery)
    assert attempt(delivery) == DeliveryStatus.SUCCEEDED

    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.event_id
    assert first.body == second.body
    second.verify(secret)
    delivery.refresh_from_db()
    assert delivery.attempt_count == 2
    assert list(delivery.attempts.values_list("number", flat=True)) == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_a_replay_while_an_attempt_is_in_flight_leaves_it_the_one_send(
    organization: Organization, call: Call
) -> None:
    """The replay made the delivery due at once over the attempt's claim: a second
    worker sent the event again while the first request was out, and the first then
    failed to log itself (both numbered 1)."""
    with Receiver([Reply(500, delay=1.0)]) as receiver:
        endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        delivery = WebhookDelivery.objects.get()
        first = attempt_out(delivery, receiver)

        webhook_delivery_replay(delivery=WebhookDelivery.objects.get())
        second = webhook_delivery_attempt(delivery_id=delivery.pk)
        first.join()
        sent = len(receiver.received)

    delivery.refresh_from_db()
    assert (sent, second) == (1, None)
    assert list(delivery.attempts.values_list("number", "status_code")) == [(1, 500)]
    # The failed attempt is the first of the replay's round: its retry is 5 s later.
    assert (delivery.status, delivery.round_attempts) == (DeliveryStatus.PENDING, 1)


@pytest.mark.django_db(transaction=True)
def test_an_attempt_that_stalled_past_its_lease_never_undoes_the_one_that_took_over(
    organization: Organization, call: Call
) -> None:
    """The first request stalled past the lease; the overdue sweep's attempt delivered
    the event. The first one's late 500 scheduled a retry over the delivered event,
    which then went out once more, and the delivery read `pending`."""
    with Receiver([Reply(500, delay=1.0), Reply(200)]) as receiver:
        endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        delivery = WebhookDelivery.objects.get()
        first = attempt_out(delivery, receiver)

        past_the_lease = timezone.now() + attempt_lease() + datetime.timedelta(seconds=1)
        second = webhook_delivery_attempt(delivery_id=delivery.pk, now=past_the_lease)
        first.join()

    delivery.refresh_from_db()
    assert second == DeliveryStatus.SUCCEEDED
    assert (delivery.status, delivery.next_attempt_at) == (DeliveryStatus.SUCCEEDED, None)
    assert sorted(delivery.attempts.values_list("status_code", flat=True)) == [200, 500]
    assert delivery.attempt_count == 2


def test_after_a_rotation_deliveries_carry_both_signatures_for_a_day(
    organization: Organization, call: Call, receiver: Receiver
) -> None:
    endpoint, old = endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
    new = services.webhook_endpoint_rotate_secret(endpoint=endpoint)
    record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
    attempt(WebhookDelivery.objects.get())

    (received,) = receiver.received
    assert len(received.headers["webhook-signature"].split()) == 2
    received.verify(old)
    received.verify(new)
    endpoint.refresh_from_db()
    assert endpoint.live_secrets(timezone.now() + datetime.timedelta(hours=25)) == [new]


def test_secrets_and_signatures_never_reach_the_delivery_log(
    organization: Organization, call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    with Receiver([Reply(500), Reply(200)]) as receiver:
        endpoint, secret = endpoint_create(organization, receiver.url)
        record(call, CallStatus.CONNECTING, CallStatus.COMPLETED, "api_request")
        for delivery in WebhookDelivery.objects.all():
            attempt(delivery)
            attempt(delivery)

    signatures = [r.headers["webhook-signature"].removeprefix("v1,") for r in receiver.received]
    logged = json.dumps(
        [
            list(WebhookAttempt.objects.values()),
            list(WebhookDelivery.objects.values()),
            list(WebhookEvent.objects.values()),
        ],
        default=str,
    )
    key = secret.removeprefix("whsec_")
    for needle in [key, *signatures]:
        assert needle not in logged
        assert needle not in caplog.text
    assert WebhookAttempt.objects.count() >= 3


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


# HTTPS: the request goes to the resolved address, TLS still checks the name.


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for hooks.example.com: (certfile, keyfile)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", key, "-out", cert, "-subj", "/CN=hooks.example.com",
            "-addext", "subjectAltName=DNS:hooks.example.com",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def resolve_to_loopback(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list:
        return real("127.0.0.1" if host in names else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(
    ("host", "trusted", "outcome"),
    [
        ("hooks.example.com", True, DeliveryStatus.SUCCEEDED),
        ("other.example.com", True, DeliveryStatus.PENDING),  # the certificate's name differs
        ("hooks.example.com", False, DeliveryStatus.PENDING),  # an untrusted certificate
    ],
)
def test_https_checks_the_certificate_against_the_host_name(
    organization: Organization,
    call: Call,
    certificate: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    trusted: bool,
    outcome: str,
) -> None:
    resolve_to_loopback(monkeypatch, "hooks.example.com", "other.example.com")
    if trusted:
        monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    with Receiver(tls=certificate) as receiver:
        endpoint_create(
            organization, f"https://{host}:{receiver.port}/x", [EventType.CALL_STATUS_CHANGED]
        )
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        delivery = WebhookDelivery.objects.get()

        assert attempt(delivery) == outcome

    delivery.refresh_from_db()
    if outcome == DeliveryStatus.SUCCEEDED:
        (received,) = receiver.received
        assert received.headers["host"] == f"hooks.example.com:{receiver.port}"
    else:
        assert receiver.received == []
        assert delivery.last_error.startswith("connection error: SSLError")


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


@pytest.mark.parametrize("endpoints", [1, 5])
def test_recording_costs_the_same_queries_for_any_number_of_endpoints(
    organization: Organization, call: Call, django_assert_num_queries, endpoints: int
) -> None:
    for n in range(endpoints):
        endpoint_create(organization, f"https://hooks{n}.example.com/x")

    # endpoints, 2 × (event, deliveries)
    with django_assert_num_queries(5):
        events = outbox.call_status_changed_record(
            call_id=call.id,
            from_status=CallStatus.ACTIVE,
            to_status=CallStatus.COMPLETED,
            end_reason="user_hangup",
            at=timezone.now(),
        )

    assert [e.deliveries.count() for e in events] == [endpoints, endpoints]


def test_recording_without_endpoints_is_one_query(call: Call, django_assert_num_queries) -> None:
    with django_assert_num_queries(1):  # the organization's endpoints
        outbox.call_status_changed_record(
            call_id=call.id,
            from_status=CallStatus.CONNECTING,
            to_status=CallStatus.ACTIVE,
            end_reason=None,
            at=timezone.now(),
        )


# Through the call lifecycle


@pytest.mark.django_db(transaction=True)
def test_a_simulated_call_reaches_the_receiver_signed_with_its_end_report(
    organization: Organization, workflow: object, api: object, settings: object
) -> None:
    """simulate_call drives a whole call through signed LiveKit webhooks and agent event
    batches; the receiver gets every status change and the end-of-call report, each
    verified with `standardwebhooks`, and the report is what the API shows."""
    settings.WEBHOOKS_END_REPORT_DELAY = 0.5
    with Receiver() as receiver:
        endpoint, secret = endpoint_create(organization, receiver.url)
        out = io.StringIO()
        call_command("simulate_call", "--org", organization.slug, stdout=out)
        call_id = out.getvalue().split()[-1]
        run_worker()
        time.sleep(0.6)
        run_worker()

    payloads = [r.verify(secret) for r in receiver.received]
    assert [
        (p["type"], p["data"].get("from_status"), p["data"].get("to_status")) for p in payloads
    ] == [
        ("call.status_changed", "connecting", "active"),
        ("call.status_changed", "active", "completed"),
        ("call.ended", None, None),
    ]
    assert payloads[1]["data"]["end_reason"] == "user_hangup"
    assert {p["data"].get("call_id", call_id) for p in payloads} == {call_id}
    report = payloads[2]["data"]
    assert report["call"] == api.get(f"/api/v1/calls/{call_id}").json()
    assert report["metrics"] == api.get(f"/api/v1/calls/{call_id}/metrics").json()
    assert report["transcript"] == api.get(f"/api/v1/calls/{call_id}/transcript").json()
    assert report["call"]["agent_history"] == ["greeter-agent", "meal-agent", "feedback-agent"]
    assert len(report["transcript"]) == 10


@pytest.mark.django_db(transaction=True)
def test_a_transition_rolled_back_with_its_transaction_emits_nothing(
    organization: Organization, receiver: Receiver
) -> None:
    endpoint_create(organization, receiver.url)
    call = CallFactory(organization=organization)

    with pytest.raises(RuntimeError), transaction.atomic():
        assert call_transition(
            call_id=call.id, to_status=CallStatus.FAILED, end_reason="agent_error"
        )
        raise RuntimeError("whatever made the change failed after it")

    run_worker()
    call.refresh_from_db()
    assert call.status == CallStatus.CONNECTING
    assert WebhookEvent.objects.count() == DBTaskResult.objects.count() == 0
    assert receiver.received == []


def test_an_ending_transition_reports_the_state_it_left(
    organization: Organization, call: Call
) -> None:
    endpoint_create(organization, "https://hooks.example.com/x", [EventType.CALL_STATUS_CHANGED])

    assert call_transition(call_id=call.id, to_status=CallStatus.ACTIVE)
    assert call_transition(call_id=call.id, to_status=CallStatus.TIMEOUT, end_reason="max_duration")
    assert not call_transition(call_id=call.id, to_status=CallStatus.COMPLETED, end_reason="x")

    changes = [json.loads(e.body)["data"] for e in WebhookEvent.objects.order_by("created_at")]
    assert [(c["from_status"], c["to_status"], c["end_reason"]) for c in changes] == [
        ("connecting", "active", None),
        ("active", "timeout", "max_duration"),
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_endings_emit_one_end_report(organization: Organization) -> None:
    """A hang-up, a timeout and an agent error racing on an active call: one wins, and
    exactly one `call.status_changed` to an ended state and one `call.ended` exist."""
    endpoint_create(organization, "https://hooks.example.com/x")
    call = CallFactory(organization=organization)
    assert call_transition(call_id=call.id, to_status=CallStatus.ACTIVE)
    endings = [
        (CallStatus.COMPLETED, "api_request"),
        (CallStatus.TIMEOUT, "max_duration"),
        (CallStatus.FAILED, "agent_error"),
        (CallStatus.COMPLETED, "user_hangup"),
    ]
    barrier = threading.Barrier(len(endings))
    won = []

    def end(to_status: str, reason: str) -> None:
        try:
            barrier.wait()
            if call_transition(call_id=call.id, to_status=to_status, end_reason=reason):
                won.append((to_status, reason))
        finally:
            connection.close()

    threads = [threading.Thread(target=end, args=ending) for ending in endings]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(won) == 1
    changes = [
        json.loads(e.body)["data"]
        for e in WebhookEvent.objects.filter(type=EventType.CALL_STATUS_CHANGED).order_by(
            "created_at"
        )
    ]
    assert [(c["from_status"], c["to_status"], c["end_reason"]) for c in changes] == [
        ("connecting", "active", None),
        ("active", *won[0]),
    ]
    assert WebhookEvent.objects.filter(type=EventType.CALL_ENDED).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["api", "admin"])
def test_deleting_an_endpoint_while_a_call_changes_status_fails_neither(
    organization: Organization, where: str
) -> None:
    """The endpoint was read, its deletion committed before the change did: the
    change's delivery then referenced a gone row, and PostgreSQL's deferred foreign key
    failed the call's own change at commit. Now the deletion waits for the change, and
    the retention pass takes its delivery with it, from the API's service and the admin
    alike."""
    from django.contrib import admin as django_admin

    endpoint, _ = endpoint_create(organization, "https://hooks.example.com/x")
    call = CallFactory(organization=organization)
    deleted: list[bool] = []

    def delete_endpoint() -> None:
        try:
            found = WebhookEndpoint.objects.get(pk=endpoint.pk)
            if where == "admin":
                django_admin.site._registry[WebhookEndpoint].delete_model(None, found)
            else:
                services.webhook_endpoint_delete(endpoint=found)
            deleted.append(True)
        finally:
            connection.close()

    deleter = threading.Thread(target=delete_endpoint)
    with transaction.atomic():
        record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)
        deleter.start()
        deleter.join(timeout=1)
        assert deleter.is_alive()  # waiting for this change to commit
    deleter.join(timeout=10)

    call.refresh_from_db()
    assert (call.status, deleted) == (CallStatus.ACTIVE, [True])
    webhook_history_prune()
    assert not WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()
    assert not WebhookDelivery.objects.exists()


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


@pytest.mark.django_db(transaction=True)
def test_an_endpoint_deleted_while_its_delivery_is_on_the_wire_ends_the_attempt_quietly(
    organization: Organization,
) -> None:
    """The deletion leaves the delivery to the retention pass: the attempt coming back
    logs what it sent, its task ends without an error, and the pass deletes them."""

    def delete_endpoint() -> None:
        try:
            services.webhook_endpoint_delete(endpoint=WebhookEndpoint.objects.get())
        finally:
            connection.close()

    with Receiver(replies=[Reply(status=200, delay=1.0)]) as receiver:
        endpoint_create(organization, receiver.url, [EventType.CALL_STATUS_CHANGED])
        record(CallFactory(organization=organization), CallStatus.CONNECTING, CallStatus.ACTIVE)
        delivery = WebhookDelivery.objects.get()
        deleter = threading.Timer(0.3, delete_endpoint)
        deleter.start()
        status = attempt(delivery)
        deleter.join()

    assert status == DeliveryStatus.SUCCEEDED
    assert len(receiver.received) == 1
    webhook_history_prune()
    assert not WebhookDelivery.objects.exists() and not WebhookAttempt.objects.exists()
