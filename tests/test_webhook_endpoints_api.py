from __future__ import annotations

import datetime
import functools

import pytest
from django.http import Http404
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Organization
from tests.factories import CallFactory
from webhooks import outbox, services
from webhooks.delivery import webhook_delivery_attempt
from webhooks.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from webhooks.recovery import webhook_deliveries_wake_overdue
from webhooks.retention import webhook_history_prune

URL = "/api/v1/webhook-endpoints"
RECEIVER = "https://hooks.example.com/voicecalls"


def endpoint_create(organization: Organization, **kwargs: object) -> tuple[WebhookEndpoint, str]:
    kwargs.setdefault("url", RECEIVER)
    kwargs.setdefault("events", ["call.status_changed", "call.ended"])
    return services.webhook_endpoint_create(organization=organization, **kwargs)


def endpoint_body(endpoint: WebhookEndpoint) -> dict:
    return {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "description": endpoint.description,
        "events": endpoint.events,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "created_at": endpoint.created_at.isoformat().replace("+00:00", "Z"),
        "updated_at": endpoint.updated_at.isoformat().replace("+00:00", "Z"),
    }


def test_create_answers_the_endpoint_with_its_secret_once(api: APIClient) -> None:
    response = api.post(
        URL, {"url": RECEIVER, "events": ["call.ended"], "description": "CRM"}, format="json"
    )

    assert response.status_code == 201
    endpoint = WebhookEndpoint.objects.get()
    assert response.json() == {**endpoint_body(endpoint), "secret": endpoint.secret}
    assert response.json()["secret"].startswith("whsec_")
    assert endpoint.events == ["call.ended"]
    assert endpoint.enabled is True
    assert "secret" not in api.get(f"{URL}/{endpoint.id}").json()
    assert endpoint.secret not in api.get(URL).content.decode()


def test_create_subscribes_to_every_event_by_default(api: APIClient) -> None:
    response = api.post(URL, {"url": RECEIVER}, format="json")

    assert response.status_code == 201
    assert response.json()["events"] == ["call.status_changed", "call.ended", "call.analyzed"]


@pytest.mark.parametrize(
    ("body", "attr"),
    [
        ({}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http://hooks.example.com/x"}, "url"),
        ({"url": "ftp://hooks.example.com/x"}, "url"),
        ({"url": "https://user:pw@hooks.example.com/x"}, "url"),
        ({"url": "https://127.0.0.1/x"}, "url"),
        ({"url": "https://10.0.0.1/x"}, "url"),
        ({"url": "https://169.254.169.254/latest/meta-data"}, "url"),
        ({"url": "https://[::1]/x"}, "url"),
        ({"url": "https://localhost/x"}, "url"),
        ({"url": "https://metadata.google.internal/x"}, "url"),
        ({"url": RECEIVER, "events": []}, "events"),
        ({"url": RECEIVER, "events": ["call.ended", "call.started"]}, "events.1"),
        ({"url": RECEIVER, "events": "call.ended"}, "events"),
        ({"url": RECEIVER, "enabled": "maybe"}, "enabled"),
        ({"url": RECEIVER, "description": "x" * 256}, "description"),
    ],
)
def test_create_refuses_invalid_input(
    api: APIClient, settings: object, body: dict, attr: str
) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False

    response = api.post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json()["type"] == "validation_error"
    assert [error["attr"] for error in response.json()["errors"]] == [attr]
    assert WebhookEndpoint.objects.count() == 0


def test_plain_http_and_loopback_are_allowed_when_private_urls_are(api: APIClient) -> None:
    response = api.post(URL, {"url": "http://127.0.0.1:9000/hooks"}, format="json")

    assert response.status_code == 201


def test_an_organization_has_at_most_20_endpoints(
    api: APIClient, organization: Organization
) -> None:
    for _ in range(services.MAX_ENDPOINTS_PER_ORGANIZATION):
        endpoint_create(organization)

    response = api.post(URL, {"url": RECEIVER}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "limit_reached"


def test_list_is_paginated_newest_first_without_secrets(
    api: APIClient, organization: Organization, outsider: Organization, django_assert_num_queries
) -> None:
    older, _ = endpoint_create(organization, url="https://a.example.com/x")
    older.created_at = timezone.now() - datetime.timedelta(minutes=1)
    older.save()
    newer, _ = endpoint_create(organization, url="https://b.example.com/x")
    endpoint_create(outsider)

    with django_assert_num_queries(2):  # key, page (not full: its length is the total)
        response = api.get(URL)

    assert response.status_code == 200
    assert response.json() == {
        "items": [endpoint_body(newer), endpoint_body(older)],
        "total": 2,
        "page": 1,
        "page_size": 20,
        "pages": 1,
    }


def test_retrieve_answers_the_endpoint(
    api: APIClient, organization: Organization, django_assert_num_queries
) -> None:
    endpoint, _ = endpoint_create(organization)

    with django_assert_num_queries(2):
        response = api.get(f"{URL}/{endpoint.id}")

    assert response.status_code == 200
    assert response.json() == endpoint_body(endpoint)


def test_patch_changes_only_the_fields_given(api: APIClient, organization: Organization) -> None:
    endpoint, secret = endpoint_create(organization, description="CRM")

    response = api.patch(
        f"{URL}/{endpoint.id}", {"events": ["call.ended"], "enabled": False}, format="json"
    )

    assert response.status_code == 200
    endpoint.refresh_from_db()
    assert response.json() == endpoint_body(endpoint)
    assert endpoint.events == ["call.ended"]
    assert endpoint.enabled is False
    assert endpoint.url == RECEIVER
    assert endpoint.description == "CRM"
    assert endpoint.secret == secret


def test_patch_validates_like_create(
    api: APIClient, organization: Organization, settings: object
) -> None:
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
    endpoint, _ = endpoint_create(organization)

    response = api.patch(f"{URL}/{endpoint.id}", {"url": "https://10.1.2.3/x"}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "url"
    endpoint.refresh_from_db()
    assert endpoint.url == RECEIVER


def test_enabling_an_endpoint_disabled_by_a_410_clears_the_reason(
    api: APIClient, organization: Organization
) -> None:
    endpoint, _ = endpoint_create(organization)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=False, disabled_reason="The receiver answered 410 Gone."
    )

    response = api.patch(f"{URL}/{endpoint.id}", {"enabled": True}, format="json")

    assert response.status_code == 200
    assert response.json()["enabled"] is True
    assert response.json()["disabled_reason"] == ""


def test_a_patch_read_before_a_rotation_keeps_the_new_secret(
    api: APIClient, organization: Organization
) -> None:
    """The PATCH saved every column it had read: the secret a rotation had just shown
    (and nowhere else) was put back to the old one."""
    endpoint, _ = endpoint_create(organization)
    read_by_patch = WebhookEndpoint.objects.get(pk=endpoint.pk)
    new_secret = api.post(f"{URL}/{endpoint.pk}/rotate-secret").json()["secret"]

    services.webhook_endpoint_update(endpoint=read_by_patch, description="CRM")

    endpoint.refresh_from_db()
    assert (endpoint.description, endpoint.secret) == ("CRM", new_secret)


def test_a_patch_of_the_description_leaves_an_endpoint_a_410_disabled_meanwhile(
    organization: Organization,
) -> None:
    endpoint, _ = endpoint_create(organization)
    read_by_patch = WebhookEndpoint.objects.get(pk=endpoint.pk)
    gone = "The receiver answered 410 Gone."
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False, disabled_reason=gone)

    services.webhook_endpoint_update(endpoint=read_by_patch, description="CRM")

    endpoint.refresh_from_db()
    assert (endpoint.description, endpoint.enabled, endpoint.disabled_reason) == (
        "CRM",
        False,
        gone,
    )


def test_a_patch_of_an_endpoint_deleted_since_it_was_read_is_not_found(
    organization: Organization,
) -> None:
    """Saving only the changed fields of a row gone meanwhile raised Django's "did not
    affect any rows" (a 500); a whole-row save had silently made it again."""
    endpoint, _ = endpoint_create(organization)
    read_by_patch = WebhookEndpoint.objects.get(pk=endpoint.pk)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()

    with pytest.raises(Http404):
        services.webhook_endpoint_update(endpoint=read_by_patch, description="CRM")

    assert not WebhookEndpoint.objects.exists()


def test_put_is_not_allowed(api: APIClient, organization: Organization) -> None:
    endpoint, _ = endpoint_create(organization)

    response = api.put(f"{URL}/{endpoint.id}", {"url": RECEIVER}, format="json")

    assert response.status_code == 405


def test_delete_removes_the_endpoint(api: APIClient, organization: Organization) -> None:
    endpoint, _ = endpoint_create(organization)

    assert api.delete(f"{URL}/{endpoint.id}").status_code == 204
    assert api.get(URL).json()["items"] == []
    assert api.get(f"{URL}/{endpoint.id}").status_code == 404
    assert api.delete(f"{URL}/{endpoint.id}").status_code == 404
    webhook_history_prune()
    assert WebhookEndpoint.objects.count() == 0


def test_delete_takes_the_events_only_that_endpoint_was_sent(
    api: APIClient, organization: Organization
) -> None:
    """An end-of-call report holds the call's transcript: left without a delivery, its
    event was never pruned (webhooks.retention goes by deliveries). One another endpoint
    was sent stays with that delivery."""
    endpoint, _ = endpoint_create(organization, events=["call.ended"])
    call = CallFactory(organization=organization)
    record = functools.partial(
        outbox.call_status_changed_record,
        from_status="active",
        to_status="completed",
        end_reason="user_hangup",
        at=timezone.now(),
    )
    (its_own,) = record(call_id=call.pk)
    other, _ = endpoint_create(
        organization, url="https://other.example.com/x", events=["call.ended"]
    )
    (shared,) = record(call_id=CallFactory(organization=organization).pk)

    assert api.delete(f"{URL}/{endpoint.id}").status_code == 204
    webhook_history_prune()

    assert list(WebhookEvent.objects.all()) == [shared]
    assert list(shared.deliveries.values_list("endpoint_id", flat=True)) == [other.pk]
    assert its_own.pk != shared.pk


def status_changes(organization: Organization, count: int) -> list[WebhookEvent]:
    """`count` calls answered, each one event to every endpoint taking it."""
    calls = [CallFactory(organization=organization) for _ in range(count)]
    return [
        event
        for call in calls
        for event in outbox.call_status_changed_record(
            call_id=call.pk,
            from_status="queued",
            to_status="ringing",
            end_reason=None,
            at=timezone.now(),
        )
    ]


def test_delete_answers_at_once_and_leaves_the_endpoints_history_to_the_retention_pass(
    api: APIClient, organization: Organization
) -> None:
    """A busy endpoint keeps a month of deliveries (100k+ with their attempts): deleting
    them in the request outlasted its statement timeout, every retry a 503, and the
    endpoint could never be deleted. The DELETE now only marks it; `expire_data` deletes
    its deliveries, their attempts and the events only it was sent, in batches."""
    endpoint, _ = endpoint_create(organization)
    status_changes(organization, 3)
    for delivery in endpoint.deliveries.all():
        WebhookAttempt.objects.create(
            delivery=delivery, number=1, attempted_at=timezone.now(), url=RECEIVER
        )

    assert api.delete(f"{URL}/{endpoint.id}").status_code == 204

    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 3  # not yet
    assert api.get(URL).json()["items"] == []
    for path in ("", "/deliveries", "/rotate-secret", "/test"):
        call = api.post if path in ("/rotate-secret", "/test") else api.get
        assert call(f"{URL}/{endpoint.id}{path}").status_code == 404, path
    assert api.patch(f"{URL}/{endpoint.id}", {"enabled": True}, format="json").status_code == 404
    assert api.delete(f"{URL}/{endpoint.id}").status_code == 404

    assert webhook_history_prune(batch_size=2) == (3, 3)
    assert not WebhookEndpoint.objects.exists()
    assert not WebhookAttempt.objects.exists()


def test_a_deleted_endpoint_is_sent_nothing_more(
    api: APIClient, organization: Organization
) -> None:
    """Until the pass deletes them its pending deliveries are not attempted, nor woken
    by the sweep, and new events make none for it."""
    endpoint, _ = endpoint_create(organization)
    (event,) = status_changes(organization, 1)
    delivery = event.deliveries.get()

    assert api.delete(f"{URL}/{endpoint.id}").status_code == 204
    status_changes(organization, 1)

    later = timezone.now() + datetime.timedelta(hours=1)
    assert webhook_delivery_attempt(delivery_id=delivery.pk, now=later) is None
    assert webhook_deliveries_wake_overdue(now=later) == 0
    assert list(WebhookDelivery.objects.values_list("pk", flat=True)) == [delivery.pk]
    assert not WebhookAttempt.objects.exists()


def test_a_deleted_endpoint_frees_its_place_under_the_cap(
    api: APIClient, organization: Organization
) -> None:
    endpoints = [
        endpoint_create(organization)[0] for _ in range(services.MAX_ENDPOINTS_PER_ORGANIZATION)
    ]

    assert api.delete(f"{URL}/{endpoints[0].id}").status_code == 204

    assert api.post(URL, {"url": RECEIVER}, format="json").status_code == 201


@pytest.mark.parametrize(
    "change",
    [
        lambda endpoint: services.webhook_endpoint_update(endpoint=endpoint, enabled=True),
        lambda endpoint: services.webhook_endpoint_rotate_secret(endpoint=endpoint),
        lambda endpoint: services.webhook_endpoint_test(endpoint=endpoint),
        lambda endpoint: services.webhook_endpoint_delete(endpoint=endpoint),
    ],
    ids=["update", "rotate", "test", "delete"],
)
def test_a_change_to_an_endpoint_deleted_since_it_was_read_is_not_found(
    organization: Organization, change
) -> None:
    endpoint, _ = endpoint_create(organization)
    services.webhook_endpoint_delete(endpoint=WebhookEndpoint.objects.get(pk=endpoint.pk))

    with pytest.raises(Http404):
        change(endpoint)
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).enabled is False


def test_rotate_secret_shows_the_new_secret_once(
    api: APIClient, organization: Organization
) -> None:
    endpoint, old = endpoint_create(organization)

    response = api.post(f"{URL}/{endpoint.id}/rotate-secret")

    assert response.status_code == 200
    endpoint.refresh_from_db()
    new = response.json()["secret"]
    assert response.json() == {**endpoint_body(endpoint), "secret": new}
    assert new.startswith("whsec_")
    assert new != old
    assert endpoint.secret == new
    assert endpoint.live_secrets(timezone.now()) == [new, old]
    for body in (api.get(f"{URL}/{endpoint.id}").content, api.get(URL).content):
        assert new.encode() not in body
        assert old.encode() not in body


def test_the_answers_showing_a_secret_are_never_cached(
    api: APIClient, organization: Organization
) -> None:
    created = api.post(URL, {"url": RECEIVER}, format="json")
    rotated = api.post(f"{URL}/{created.json()['id']}/rotate-secret")

    for response in (created, rotated):
        assert "secret" in response.json()
        assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("post", "/rotate-secret"),
        ("get", "/deliveries"),
    ],
)
def test_another_organizations_endpoint_is_not_found(
    outsider_api: APIClient, organization: Organization, method: str, suffix: str
) -> None:
    endpoint, secret = endpoint_create(organization)

    response = getattr(outsider_api, method)(f"{URL}/{endpoint.id}{suffix}", {}, format="json")

    assert response.status_code == 404
    endpoint.refresh_from_db()
    assert endpoint.secret == secret
    assert outsider_api.get(URL).json()["total"] == 0


def test_agent_keys_are_forbidden_and_anonymous_callers_unauthorized(
    agent_api: APIClient, anonymous_api: APIClient
) -> None:
    assert agent_api.get(URL).status_code == 403
    response = anonymous_api.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_deliveries_lists_the_log_newest_first_with_attempts(
    api: APIClient, organization: Organization, django_assert_num_queries
) -> None:
    endpoint, secret = endpoint_create(organization)
    call = CallFactory(organization=organization, workflow__organization=organization)
    at = timezone.now()
    outbox.call_status_changed_record(
        call_id=call.id, from_status="connecting", to_status="active", end_reason=None, at=at
    )
    outbox.call_status_changed_record(
        call_id=call.id,
        from_status="active",
        to_status="completed",
        end_reason="user_hangup",
        at=at,
    )
    first = endpoint.deliveries.order_by("id").first()
    WebhookAttempt.objects.create(
        delivery=first,
        number=1,
        attempted_at=at,
        url=endpoint.url,
        status_code=500,
        duration_ms=12,
        error="HTTP 500",
        response_excerpt="oops",
    )

    with django_assert_num_queries(4):  # key, endpoint, page (not full), attempts
        response = api.get(f"{URL}/{endpoint.id}/deliveries")

    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 3
    assert [d["event_type"] for d in body["items"]] == [
        "call.ended",
        "call.status_changed",
        "call.status_changed",
    ]
    oldest = body["items"][-1]
    assert oldest == {
        "id": first.id,
        "event_id": first.event_id,
        "event_type": "call.status_changed",
        "call_id": str(call.id),
        "status": DeliveryStatus.PENDING,
        "attempt_count": 0,
        "next_attempt_at": first.next_attempt_at.isoformat().replace("+00:00", "Z"),
        "last_status_code": None,
        "last_error": "",
        "delivered_at": None,
        "created_at": first.created_at.isoformat().replace("+00:00", "Z"),
        "attempts": [
            {
                "number": 1,
                "attempted_at": at.isoformat().replace("+00:00", "Z"),
                "status_code": 500,
                "duration_ms": 12,
                "error": "HTTP 500",
                "response_excerpt": "oops",
            }
        ],
    }
    assert secret not in response.content.decode()


def test_deliveries_refuses_bad_paging(api: APIClient, organization: Organization) -> None:
    endpoint, _ = endpoint_create(organization)

    response = api.get(f"{URL}/{endpoint.id}/deliveries", {"page_size": 1000})

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "page_size"


def test_deliveries_filter_by_status(api: APIClient, organization: Organization) -> None:
    endpoint, _ = endpoint_create(organization)
    call = CallFactory(organization=organization)
    outbox.call_status_changed_record(
        call_id=call.id,
        from_status="active",
        to_status="failed",
        end_reason="agent_error",
        at=timezone.now(),
    )
    failed = endpoint.deliveries.order_by("id").first()
    failed.status = DeliveryStatus.FAILED
    failed.save()

    body = api.get(f"{URL}/{endpoint.id}/deliveries", {"status": "failed"}).json()
    assert [item["id"] for item in body["items"]] == [failed.id]
    assert body["total"] == 1
    assert api.get(f"{URL}/{endpoint.id}/deliveries", {"status": "pending"}).json()["total"] == 1

    response = api.get(f"{URL}/{endpoint.id}/deliveries", {"status": "lost"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "status"


def test_deliveries_filter_by_call(
    api: APIClient, organization: Organization, django_assert_num_queries
) -> None:
    """What was sent about one call, without paging through every call's deliveries."""
    endpoint, _ = endpoint_create(organization)
    mine, other = CallFactory(organization=organization), CallFactory(organization=organization)
    for call in (mine, other, mine):
        outbox.call_status_changed_record(
            call_id=call.id,
            from_status="connecting",
            to_status="active",
            end_reason=None,
            at=timezone.now(),
        )
    wanted = list(endpoint.deliveries.filter(event__call=mine).order_by("-id"))

    with django_assert_num_queries(4):  # key, endpoint, page (not full), attempts
        body = api.get(f"{URL}/{endpoint.id}/deliveries", {"call_id": str(mine.id)}).json()

    assert [item["id"] for item in body["items"]] == [d.id for d in wanted]
    assert {item["call_id"] for item in body["items"]} == {str(mine.id)}
    assert body["total"] == 2
    response = api.get(f"{URL}/{endpoint.id}/deliveries", {"call_id": "not-a-call"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "call_id"
