"""Hostile or unusual receiver answers end in a logged attempt, never in an exception
out of the attempt (which left the delivery claimed, unlogged, and sent again at every
wake-up)."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.utils import timezone

from accounts.models import Organization
from calls.models import Call, CallStatus
from tests.factories import CallFactory
from tests.webhook_receiver import Receiver, Reply
from webhooks import outbox, services
from webhooks.delivery import webhook_delivery_attempt
from webhooks.models import DeliveryStatus, EventType, WebhookDelivery


def call_status_changed(call: Call) -> None:
    with transaction.atomic():
        Call.objects.filter(pk=call.pk).update(status=CallStatus.ACTIVE)
        outbox.call_status_changed_record(
            call_id=call.id,
            from_status=CallStatus.CONNECTING,
            to_status=CallStatus.ACTIVE,
            end_reason=None,
            at=timezone.now(),
        )


def _attempt_once(organization: Organization, reply: Reply) -> tuple[str | None, Receiver]:
    with Receiver([reply]) as receiver:
        services.webhook_endpoint_create(
            organization=organization, url=receiver.url, events=[EventType.CALL_STATUS_CHANGED]
        )
        call_status_changed(CallFactory(organization=organization))
        delivery = WebhookDelivery.objects.get()
        result = webhook_delivery_attempt(delivery_id=delivery.pk, now=delivery.next_attempt_at)
    return result, receiver


@pytest.mark.parametrize("status", [200, 503])
def test_a_retry_after_date_with_a_huge_number_does_not_crash_the_attempt(
    organization: Organization, status: int
) -> None:
    """email.utils.parsedate_to_datetime raises OverflowError (not ValueError) for a date
    with a huge field; transport._retry_after lets it out of transport.post after the
    receiver already got the event."""
    retry_after = "Mon, 01 Jan 2026 99999999999999999999:00:00 GMT"
    result, receiver = _attempt_once(organization, Reply(status, {"Retry-After": retry_after}))

    assert len(receiver.received) == 1
    delivery = WebhookDelivery.objects.get()
    assert delivery.attempts.count() == 1
    expected = DeliveryStatus.SUCCEEDED if status == 200 else DeliveryStatus.PENDING
    assert (result, delivery.status) == (expected, expected)


def test_after_such_an_answer_the_event_is_not_sent_again(organization: Organization) -> None:
    """The crash leaves the delivery `pending` under its claim; once the lease is over,
    the next wake-up (wake_webhook_deliveries) sends the already-delivered event again,
    and again at every later wake-up."""
    import contextlib
    import datetime

    retry_after = "Mon, 01 Jan 2026 99999999999999999999:00:00 GMT"
    with Receiver(
        [Reply(200, {"Retry-After": retry_after}), Reply(200, {"Retry-After": retry_after})]
    ) as receiver:
        services.webhook_endpoint_create(
            organization=organization, url=receiver.url, events=[EventType.CALL_STATUS_CHANGED]
        )
        call_status_changed(CallFactory(organization=organization))
        delivery = WebhookDelivery.objects.get()
        now = delivery.next_attempt_at
        with contextlib.suppress(Exception):
            webhook_delivery_attempt(delivery_id=delivery.pk, now=now)
        with contextlib.suppress(Exception):
            webhook_delivery_attempt(
                delivery_id=delivery.pk, now=now + datetime.timedelta(minutes=5)
            )

    assert len(receiver.received) == 1, "a delivered event was sent again"


@pytest.mark.postgres
@pytest.mark.parametrize("status", [200, 500])
def test_a_response_body_with_a_nul_byte_is_logged(organization: Organization, status: int) -> None:
    """The excerpt of the answer goes into WebhookAttempt.response_excerpt as decoded;
    PostgreSQL refuses NUL in text, so the attempt's transaction fails, the delivery
    stays claimed and unlogged, and every later wake-up sends the event again."""
    body = b'{"ok":true}\x00' if status == 200 else b"\x1f\x8b\x08\x00\x00\x00\x00\x00"
    result, receiver = _attempt_once(organization, Reply(status, body=body))

    assert len(receiver.received) == 1
    delivery = WebhookDelivery.objects.get()
    assert delivery.attempts.count() == 1
    expected = DeliveryStatus.SUCCEEDED if status == 200 else DeliveryStatus.PENDING
    assert (result, delivery.status) == (expected, expected)
