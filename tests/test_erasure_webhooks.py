"""Erasure and the webhook bodies stored for a call's events: a queued delivery sends
the scrubbed body, a receiver's answer quoting the report leaves the delivery log, a
report built after the erasure (or of a call erased while open) holds nothing erased,
and an erased event is not replayed."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.utils import timezone

import tests.privacy
from accounts.models import Organization
from calls.lifecycle import call_transition
from calls.models import (
    ERASED_CONTENT,
    CallStatus,
)
from privacy.erasure import erasure_run
from privacy.models import ErasureStatus
from tests.privacy import (
    CALLER,
    inbound_phone_call,
    personal_call,
)
from tests.test_erasures import erase
from tests.webhook_receiver import Receiver, Reply
from webhooks import outbox, services
from webhooks.delivery import EventErased, webhook_delivery_attempt, webhook_delivery_replay
from webhooks.models import DeliveryStatus, EventType, WebhookAttempt, WebhookDelivery

pytestmark = pytest.mark.django_db

# The shared fixture (tests/privacy.py), bound here for pytest to find.
key = tests.privacy.key


def ended_call_with_report(organization: Organization, receiver: Receiver) -> tuple:
    """A call whose end-of-call report was built (frozen) by a first attempt the
    receiver refused: the delivery waits for its retry."""
    endpoint, secret = services.webhook_endpoint_create(
        organization=organization, url=receiver.url, events=[EventType.CALL_ENDED]
    )
    call = personal_call(organization)
    outbox.call_status_changed_record(
        call_id=call.pk,
        from_status=CallStatus.ACTIVE,
        to_status=CallStatus.COMPLETED,
        end_reason="user_hangup",
        at=call.ended_at,
    )
    delivery = WebhookDelivery.objects.get()
    return call, delivery, secret


def test_a_queued_delivery_sends_the_scrubbed_body(organization, key) -> None:
    with Receiver(replies=[Reply(status=500)]) as receiver:
        call, delivery, secret = ended_call_with_report(organization, receiver)
        delivery.refresh_from_db()
        assert webhook_delivery_attempt(delivery_id=delivery.pk, now=delivery.next_attempt_at)
        assert "John" in receiver.received[0].body.decode()

        erasure = erase(organization, key, "user-123")
        delivery.refresh_from_db()
        status = webhook_delivery_attempt(delivery_id=delivery.pk, now=delivery.next_attempt_at)

    assert erasure.webhook_events_scrubbed == 1
    assert status == DeliveryStatus.SUCCEEDED
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    payload = second.verify(secret)
    assert "John" not in second.body.decode() and "peanut" not in second.body.decode()
    assert payload["data"]["transcript"][0]["content"] == ERASED_CONTENT
    assert payload["data"]["call"]["user_id"] is None
    assert payload["data"]["call"]["analysis"]["summary"] is None
    assert payload["data"]["metrics"] == json.loads(first.body)["data"]["metrics"]


def test_a_receivers_answer_quoting_the_report_leaves_the_delivery_log_with_the_erasure(
    organization, key
) -> None:
    echo = Reply(status=400, body=b'{"error": "bad field", "got": {"user_id": "user-123"}}')
    with Receiver(replies=[echo]) as receiver:
        call, delivery, _secret = ended_call_with_report(organization, receiver)
        delivery.refresh_from_db()
        webhook_delivery_attempt(delivery_id=delivery.pk, now=delivery.next_attempt_at)
    assert "user-123" in WebhookAttempt.objects.get(delivery=delivery).response_excerpt

    erase(organization, key, "user-123")

    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert (attempt.status_code, attempt.response_excerpt) == (400, "")


def test_rebuilding_a_batchs_reports_reads_each_calls_analysis_cost_and_recording_with_it(
    organization,
) -> None:
    """Seven queries a report (the call, then its analysis, cost and recording one by one)
    made 90 % of an erasure's or retention's batch, 3.5 s of 4 s at 500 calls, all that
    time holding the calls' rows: a live call among them had its agent's events wait."""
    from django.test.utils import CaptureQueriesContext

    from webhooks.models import WebhookEvent

    def queries(calls: int) -> int:
        ids = [personal_call(organization).pk for _ in range(calls)]
        for call_id in ids:
            WebhookEvent.objects.create(
                organization=organization,
                call_id=call_id,
                type=EventType.CALL_ENDED,
                occurred_at=timezone.now(),
                body="{}",
            )
        with CaptureQueriesContext(connection) as captured:
            assert outbox.call_event_bodies_rebuild(call_ids=ids) == calls
        return len(captured)

    # Its samples, its transcript and the write: what each report needs of its own.
    assert queries(6) - queries(2) <= 3 * 4


def test_a_report_built_after_the_erasure_has_nothing_erased_in_it(organization, key) -> None:
    with Receiver() as receiver:
        call, delivery, secret = ended_call_with_report(organization, receiver)
        erase(organization, key, "user-123")
        delivery.refresh_from_db()
        webhook_delivery_attempt(delivery_id=delivery.pk, now=delivery.next_attempt_at)

    (received,) = receiver.received
    assert "John" not in received.body.decode()
    assert received.verify(secret)["data"]["call"]["user_data"] == {}


def test_the_report_of_a_call_erased_while_open_never_carries_the_callers_number(
    organization, key
) -> None:
    """The erasure looks at an open call again only a minute after it ends; its
    end-of-call report, built 15 s after the end, must not carry who the caller was."""
    with Receiver() as receiver:
        endpoint, secret = services.webhook_endpoint_create(
            organization=organization, url=receiver.url, events=[EventType.CALL_ENDED]
        )
        call = inbound_phone_call(organization, open_call=True)
        erasure = erase(organization, key, CALLER)
        assert erasure.calls_waiting == 1
        call_transition(call_id=call.pk, to_status=CallStatus.COMPLETED, end_reason="user_hangup")
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        status = webhook_delivery_attempt(delivery_id=delivery.pk, now=delivery.next_attempt_at)

    assert status == DeliveryStatus.SUCCEEDED
    (received,) = receiver.received
    assert CALLER not in received.body.decode()
    reported = received.verify(secret)["data"]["call"]
    assert (reported["user_id"], reported["from_number"]) == (None, None)
    assert erasure_run(erasure_id=erasure.pk) == ErasureStatus.COMPLETED
    call.refresh_from_db()
    assert reported["room_name"] == call.room_name


def test_a_replay_of_an_erased_event_is_refused(organization, key) -> None:
    with Receiver() as receiver:
        call, delivery, secret = ended_call_with_report(organization, receiver)
        delivery.refresh_from_db()
        webhook_delivery_attempt(delivery_id=delivery.pk, now=delivery.next_attempt_at)
        erase(organization, key, "user-123")

        with pytest.raises(EventErased):
            webhook_delivery_replay(delivery=delivery)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.next_attempt_at) == (DeliveryStatus.SUCCEEDED, None)
    assert len(receiver.received) == 1
