"""What a failed attempt leads to: the retry schedule (with its jitter, a setting) and
its end, a 429's Retry-After, a timeout over the whole request (its lookup included), a
refused connection, a 4xx that ends the delivery, a redirect not followed."""

from __future__ import annotations

import datetime
import email.utils
import socket
import threading
import time

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from accounts.models import Organization
from calls.models import Call, CallStatus
from tests.factories import CallFactory
from tests.test_webhook_delivery import attempt, endpoint_create, record, run_worker
from tests.webhook_receiver import Receiver, Reply
from webhooks.delivery import retry_delay
from webhooks.models import (
    DeliveryStatus,
    EventType,
    WebhookDelivery,
)


@pytest.fixture
def call(organization: Organization) -> Call:
    return CallFactory(organization=organization)


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
