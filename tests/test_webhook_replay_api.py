"""Customers' own replays and test events: POST /webhook-endpoints/{id}/deliveries/{id}/replay
and POST /webhook-endpoints/{id}/test, delivered by the real task worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Organization
from calls.models import CallStatus
from tests.factories import CallFactory
from tests.tasks import run_task_worker
from tests.webhook_receiver import Receiver, Reply
from webhooks import outbox, services
from webhooks.models import DeliveryStatus, EventType, WebhookDelivery, WebhookEndpoint

URL = "/api/v1/webhook-endpoints"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def endpoint_create(organization: Organization, url: str) -> tuple[WebhookEndpoint, str]:
    return services.webhook_endpoint_create(
        organization=organization, url=url, events=[EventType.CALL_STATUS_CHANGED]
    )


def delivered(organization: Organization, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A `call.status_changed` delivery, sent by the worker (ended, however it went)."""
    call = CallFactory(organization=organization)
    outbox.call_status_changed_record(
        call_id=call.id,
        from_status=CallStatus.CONNECTING,
        to_status=CallStatus.ACTIVE,
        end_reason=None,
        at=timezone.now(),
    )
    run_task_worker("webhooks")
    delivery = endpoint.deliveries.get()
    assert delivery.status != DeliveryStatus.PENDING
    return delivery


def replay_url(endpoint: WebhookEndpoint, delivery_id: object) -> str:
    return f"{URL}/{endpoint.id}/deliveries/{delivery_id}/replay"


@pytest.mark.django_db(transaction=True)
def test_replay_sends_the_same_event_again_with_the_same_webhook_id(
    api: APIClient, organization: Organization, receiver: Receiver
) -> None:
    endpoint, secret = endpoint_create(organization, receiver.url)
    delivery = delivered(organization, endpoint)

    response = api.post(replay_url(endpoint, delivery.pk))

    assert response.status_code == 202
    body = response.json()
    assert body["id"] == delivery.pk
    assert body["event_id"] == delivery.event_id
    assert body["status"] == DeliveryStatus.PENDING
    assert body["attempt_count"] == 1
    run_task_worker("webhooks")
    first, again = receiver.received
    assert again.headers["webhook-id"] == first.headers["webhook-id"] == delivery.event_id
    assert again.body == first.body
    assert again.verify(secret)["type"] == "call.status_changed"
    listed = api.get(f"{URL}/{endpoint.id}/deliveries").json()["items"]
    assert [a["number"] for a in listed[0]["attempts"]] == [1, 2]
    assert listed[0]["status"] == DeliveryStatus.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_a_failed_delivery_replayed_twice_is_sent_each_time_once_it_ended(
    api: APIClient, organization: Organization
) -> None:
    with Receiver([Reply(400)]) as receiver:
        endpoint, _ = endpoint_create(organization, receiver.url)
        delivery = delivered(organization, endpoint)
        assert delivery.status == DeliveryStatus.FAILED

        first = api.post(replay_url(endpoint, delivery.pk))
        # Still pending (its attempt not made yet): a second replay is refused.
        early = api.post(replay_url(endpoint, delivery.pk))
        run_task_worker("webhooks")
        second = api.post(replay_url(endpoint, delivery.pk))
        run_task_worker("webhooks")

    assert (first.status_code, early.status_code, second.status_code) == (202, 409, 202)
    assert early.json()["errors"][0]["code"] == "delivery_pending"
    assert len(receiver.received) == 3
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count) == (DeliveryStatus.SUCCEEDED, 3)


def test_replay_refuses_a_pending_delivery(api: APIClient, organization: Organization) -> None:
    endpoint, _ = endpoint_create(organization, "https://hooks.example.com/x")
    call = CallFactory(organization=organization)
    outbox.call_status_changed_record(
        call_id=call.id, from_status=None, to_status="active", end_reason=None, at=timezone.now()
    )
    delivery = endpoint.deliveries.get()

    response = api.post(replay_url(endpoint, delivery.pk))

    assert response.status_code == 409
    assert response.json()["errors"][0]["code"] == "delivery_pending"
    delivery.refresh_from_db()
    assert delivery.round_attempts == 0 and delivery.attempt_count == 0


def ended_delivery(organization: Organization, endpoint: WebhookEndpoint) -> WebhookDelivery:
    call = CallFactory(organization=organization)
    outbox.call_status_changed_record(
        call_id=call.id, from_status=None, to_status="active", end_reason=None, at=timezone.now()
    )
    delivery = endpoint.deliveries.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.FAILED, next_attempt_at=None
    )
    return delivery


def test_replay_to_a_disabled_endpoint_is_a_conflict(
    api: APIClient, organization: Organization
) -> None:
    endpoint, _ = endpoint_create(organization, "https://hooks.example.com/x")
    delivery = ended_delivery(organization, endpoint)
    services.webhook_endpoint_update(endpoint=endpoint, enabled=False)

    response = api.post(replay_url(endpoint, delivery.pk))

    assert response.status_code == 409
    assert response.json()["type"] == "client_error"
    assert response.json()["errors"][0]["code"] == "endpoint_disabled"
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED


def test_replay_of_an_event_type_no_longer_subscribed_is_a_conflict(
    api: APIClient, organization: Organization
) -> None:
    endpoint, _ = endpoint_create(organization, "https://hooks.example.com/x")
    delivery = ended_delivery(organization, endpoint)
    services.webhook_endpoint_update(endpoint=endpoint, events=[EventType.CALL_ENDED])

    response = api.post(replay_url(endpoint, delivery.pk))

    assert response.status_code == 409
    assert response.json()["errors"][0]["code"] == "event_not_subscribed"


def test_replay_of_an_erased_calls_event_is_a_conflict(
    api: APIClient, organization: Organization
) -> None:
    endpoint, _ = endpoint_create(organization, "https://hooks.example.com/x")
    delivery = ended_delivery(organization, endpoint)
    type(delivery.event.call).objects.filter(pk=delivery.event.call_id).update(
        erased_at=timezone.now()
    )

    response = api.post(replay_url(endpoint, delivery.pk))

    assert response.status_code == 409
    assert response.json()["errors"][0]["code"] == "event_erased"


def test_replay_of_another_organizations_delivery_is_not_found(
    api: APIClient, outsider_api: APIClient, organization: Organization, outsider: Organization
) -> None:
    endpoint, _ = endpoint_create(organization, "https://hooks.example.com/x")
    delivery = ended_delivery(organization, endpoint)
    theirs, _ = endpoint_create(outsider, "https://hooks.example.com/y")
    their_delivery = ended_delivery(outsider, theirs)

    answers = [
        outsider_api.post(replay_url(endpoint, delivery.pk)),
        # Their own endpoint, our delivery: no delivery of theirs.
        outsider_api.post(replay_url(theirs, delivery.pk)),
        # Our endpoint, another endpoint's delivery.
        api.post(replay_url(endpoint, their_delivery.pk)),
        outsider_api.post(f"{URL}/{endpoint.id}/test"),
    ]

    assert [a.status_code for a in answers] == [404, 404, 404, 404]
    assert all(a.json()["errors"][0]["code"] == "not_found" for a in answers)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert not WebhookDelivery.objects.filter(event__type="webhook.test").exists()


@pytest.mark.parametrize(
    "path",
    [
        "not-a-uuid/deliveries/1/replay",
        "{endpoint}/deliveries/abc/replay",
        "{endpoint}/deliveries/-1/replay",
        "{endpoint}/deliveries/99999999999999999999999/replay",
        "{endpoint}/deliveries/123456789012345678/replay",
        "00000000-0000-0000-0000-000000000000/test",
        "not-a-uuid/test",
    ],
)
def test_bad_or_unknown_ids_are_not_found(
    api: APIClient, organization: Organization, path: str
) -> None:
    endpoint, _ = endpoint_create(organization, "https://hooks.example.com/x")

    response = api.post(f"{URL}/{path.format(endpoint=endpoint.id)}")

    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"


def test_agent_keys_are_forbidden(
    agent_api: APIClient, org_agent_api: APIClient, organization: Organization
) -> None:
    endpoint, _ = endpoint_create(organization, "https://hooks.example.com/x")
    delivery = ended_delivery(organization, endpoint)

    for client in (agent_api, org_agent_api):
        assert client.post(replay_url(endpoint, delivery.pk)).status_code == 403
        assert client.post(f"{URL}/{endpoint.id}/test").status_code == 403
    assert endpoint.deliveries.count() == 1


@pytest.mark.django_db(transaction=True)
def test_test_event_is_signed_delivered_and_logged_like_any_event(
    api: APIClient, organization: Organization, receiver: Receiver
) -> None:
    # Subscribed to call.ended only: a test event goes all the same.
    endpoint, secret = services.webhook_endpoint_create(
        organization=organization, url=receiver.url, events=[EventType.CALL_ENDED]
    )

    response = api.post(f"{URL}/{endpoint.id}/test")

    assert response.status_code == 202
    body = response.json()
    assert body["event_type"] == "webhook.test"
    assert body["call_id"] is None
    assert body["status"] == DeliveryStatus.PENDING
    assert body["attempts"] == []
    run_task_worker("webhooks")
    (received,) = receiver.received
    assert received.headers["webhook-id"] == body["event_id"]
    payload = received.verify(secret)
    assert payload["type"] == "webhook.test"
    assert payload["id"] == body["event_id"]
    assert payload["data"] == {"endpoint_id": str(endpoint.id)}
    (listed,) = api.get(f"{URL}/{endpoint.id}/deliveries").json()["items"]
    assert listed["id"] == body["id"]
    assert listed["status"] == DeliveryStatus.SUCCEEDED
    assert [a["status_code"] for a in listed["attempts"]] == [200]


@pytest.mark.django_db(transaction=True)
def test_test_event_is_retried_and_can_be_replayed(
    api: APIClient, organization: Organization, settings
) -> None:
    settings.WEBHOOKS_RETRY_SCHEDULE = [0, 0]
    with Receiver([Reply(503), Reply(503)]) as receiver:
        endpoint, _ = endpoint_create(organization, receiver.url)
        delivery_id = api.post(f"{URL}/{endpoint.id}/test").json()["id"]
        run_task_worker("webhooks")
        run_task_worker("webhooks")
        delivery = WebhookDelivery.objects.get(pk=delivery_id)
        assert (delivery.status, delivery.attempt_count) == (DeliveryStatus.FAILED, 2)

        replayed = api.post(replay_url(endpoint, delivery_id))
        run_task_worker("webhooks")

    assert replayed.status_code == 202
    assert len(receiver.received) == 3
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED


def test_test_event_to_a_disabled_endpoint_is_a_conflict(
    api: APIClient, organization: Organization
) -> None:
    endpoint, _ = endpoint_create(organization, "https://hooks.example.com/x")
    services.webhook_endpoint_update(endpoint=endpoint, enabled=False)

    response = api.post(f"{URL}/{endpoint.id}/test")

    assert response.status_code == 409
    assert response.json()["errors"][0]["code"] == "endpoint_disabled"
    assert not WebhookDelivery.objects.exists()


def test_test_events_are_throttled_as_creates(
    api: APIClient, organization: Organization, settings
) -> None:
    settings.API_CREATE_RATE = "2/minute"
    endpoint, _ = endpoint_create(organization, "https://hooks.example.com/x")
    delivery = ended_delivery(organization, endpoint)

    answers = [api.post(f"{URL}/{endpoint.id}/test") for _ in range(2)]
    refused = [api.post(f"{URL}/{endpoint.id}/test"), api.post(replay_url(endpoint, delivery.pk))]

    assert [a.status_code for a in answers] == [202, 202]
    assert [a.status_code for a in refused] == [429, 429]
    assert "Retry-After" in refused[0]
    assert endpoint.deliveries.count() == 3


def test_query_counts(
    api: APIClient, organization: Organization, django_assert_num_queries
) -> None:
    endpoint, _ = endpoint_create(organization, "https://hooks.example.com/x")
    delivery = ended_delivery(organization, endpoint)

    # key, rate, endpoint, delivery, [savepoint, erased?, endpoint's events, locked
    # delivery, update, release], delivery, attempts (the wake-up's task row is written on
    # commit, which this test's transaction never reaches)
    with django_assert_num_queries(12):
        assert api.post(replay_url(endpoint, delivery.pk)).status_code == 202
    # key, rate, endpoint, [savepoint, locked endpoint, event, delivery, release],
    # delivery, attempts
    with django_assert_num_queries(10):
        assert api.post(f"{URL}/{endpoint.id}/test").status_code == 202


def test_a_test_event_retried_with_its_idempotency_key_is_sent_once(
    api: APIClient, organization: Organization
) -> None:
    """The client lost the first answer and asks again: the same answer, no second event."""
    endpoint, _ = endpoint_create(organization, "https://hooks.example.com/x")
    test_url = f"{URL}/{endpoint.id}/test"

    first = api.post(test_url, HTTP_IDEMPOTENCY_KEY="test-1")
    retry = api.post(test_url, HTTP_IDEMPOTENCY_KEY="test-1")
    other = api.post(test_url, HTTP_IDEMPOTENCY_KEY="test-2")

    assert first.status_code == retry.status_code == other.status_code == 202
    assert retry.content == first.content
    assert other.json()["id"] != first.json()["id"]
    assert endpoint.deliveries.count() == 2


def test_a_test_events_idempotency_key_reused_with_another_request_is_422(
    api: APIClient, organization: Organization
) -> None:
    """Another body, or the same key on another endpoint, is not the request it answered."""
    endpoint, _ = endpoint_create(organization, "https://hooks.example.com/x")
    another, _ = endpoint_create(organization, "https://hooks.example.com/y")
    assert api.post(f"{URL}/{endpoint.id}/test", HTTP_IDEMPOTENCY_KEY="k").status_code == 202

    answers = [
        api.post(f"{URL}/{endpoint.id}/test", {"x": 1}, format="json", HTTP_IDEMPOTENCY_KEY="k"),
        api.post(f"{URL}/{another.id}/test", HTTP_IDEMPOTENCY_KEY="k"),
    ]

    assert [a.status_code for a in answers] == [422, 422]
    # The detail names no body: the second request sent none, it went to another endpoint.
    assert [a.json() for a in answers] == [
        {
            "type": "client_error",
            "errors": [
                {
                    "code": "idempotency_key_reused",
                    "detail": "This Idempotency-Key was used for a different request.",
                    "attr": None,
                }
            ],
        }
    ] * 2
    assert WebhookDelivery.objects.count() == 1


def test_a_retried_test_event_over_the_create_rate_gets_its_first_answer(
    api: APIClient, organization: Organization, settings
) -> None:
    """It sends nothing: the create throttle lets it through, as a retried POST /calls."""
    settings.API_CREATE_RATE = "1/minute"
    endpoint, _ = endpoint_create(organization, "https://hooks.example.com/x")
    first = api.post(f"{URL}/{endpoint.id}/test", HTTP_IDEMPOTENCY_KEY="k")

    retry = api.post(f"{URL}/{endpoint.id}/test", HTTP_IDEMPOTENCY_KEY="k")
    new_key = api.post(f"{URL}/{endpoint.id}/test", HTTP_IDEMPOTENCY_KEY="k-2")

    assert (retry.status_code, retry.content) == (202, first.content)
    assert new_key.status_code == 429
    assert endpoint.deliveries.count() == 1
