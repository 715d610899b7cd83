from __future__ import annotations

import datetime
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
    attempt_lease,
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
