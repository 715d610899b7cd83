"""Signing secrets rotated in a row (a webhook endpoint's, an organization's tool signing
secret): each secret a rotation replaces keeps signing for its own 24 hours, so a
rotation retried after its answer was lost locks no receiver out; at most
MAX_PREVIOUS_SECRETS sign beside the current one, a rotation past them is refused."""

from __future__ import annotations

import datetime

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from standardwebhooks import Webhook

from accounts.models import Organization
from calls.models import Call
from tests.factories import CallFactory
from tests.webhook_receiver import Received, Receiver
from webhooks import services
from webhooks.delivery import webhook_delivery_attempt
from webhooks.models import MAX_PREVIOUS_SECRETS, ToolSigningSecret, WebhookDelivery
from webhooks.services import SECRET_ROTATION_GRACE, RotationLimitReached
from workflows.models import Workflow

ENDPOINTS = "/api/v1/webhook-endpoints"
TOOL_SECRET = "/api/v1/tool-signing-secret"
HOUR = datetime.timedelta(hours=1)


@pytest.fixture
def receiver() -> Receiver:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def call(organization: Organization, workflow: Workflow) -> Call:
    return CallFactory(organization=organization, workflow=workflow)


def endpoint_create(api: APIClient, url: str) -> tuple[str, str]:
    created = api.post(ENDPOINTS, {"url": url, "events": ["call.ended"]}, format="json")
    assert created.status_code == 201
    return created.json()["id"], created.json()["secret"]


def send_test_event(
    api: APIClient, endpoint_id: str, *, now: datetime.datetime | None = None
) -> None:
    """A test event to the endpoint, attempted (at `now`) and answered 200 by its receiver."""
    sent = api.post(f"{ENDPOINTS}/{endpoint_id}/test")
    assert sent.status_code == 202
    delivery = WebhookDelivery.objects.get(pk=sent.json()["id"])
    webhook_delivery_attempt(delivery_id=delivery.pk, now=now or delivery.next_attempt_at)
    delivery.refresh_from_db()
    assert delivery.last_status_code == 200


def signers(received: Received, candidates: list[str]) -> list[str]:
    """The candidates whose signature the request carries, computed by the
    `standardwebhooks` library (whatever the request's age)."""
    headers = received.headers
    at = datetime.datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=datetime.UTC)
    carried = headers["webhook-signature"].split()
    return [
        secret
        for secret in candidates
        if Webhook(secret).sign(headers["webhook-id"], at, received.body.decode()) in carried
    ]


def test_a_retried_rotation_leaves_the_original_secret_signing_deliveries(
    api: APIClient, receiver: Receiver
) -> None:
    """The first rotation's answer was lost (a timeout): the customer never saw its
    secret and retries. Its receiver still holds the original secret only."""
    endpoint_id, original = endpoint_create(api, receiver.url)
    lost = api.post(f"{ENDPOINTS}/{endpoint_id}/rotate-secret")

    retried = api.post(f"{ENDPOINTS}/{endpoint_id}/rotate-secret")

    assert (lost.status_code, retried.status_code) == (200, 200)
    send_test_event(api, endpoint_id)
    (received,) = receiver.received
    received.verify(original)  # raises unless a signature is the original's
    received.verify(retried.json()["secret"])
    unseen = lost.json()["secret"]
    assert signers(received, [retried.json()["secret"], unseen, original]) == [
        retried.json()["secret"],
        unseen,
        original,
    ]
    assert len(received.headers["webhook-signature"].split()) == 3


def test_each_replaced_secret_stops_signing_at_its_own_time(
    api: APIClient, organization: Organization, receiver: Receiver
) -> None:
    endpoint_id, first = endpoint_create(api, receiver.url)
    endpoint = organization.webhook_endpoints.get()
    start = timezone.now()
    second = services.webhook_endpoint_rotate_secret(endpoint=endpoint, now=start)
    third = services.webhook_endpoint_rotate_secret(endpoint=endpoint, now=start + 10 * HOUR)
    secrets = [third, second, first]

    for at, signing in [
        (start + 23 * HOUR, [third, second, first]),
        (start + SECRET_ROTATION_GRACE, [third, second]),  # first's grace ends then
        (start + 33 * HOUR, [third, second]),
        (start + 10 * HOUR + SECRET_ROTATION_GRACE, [third]),
    ]:
        send_test_event(api, endpoint_id, now=at)
        assert signers(receiver.received[-1], secrets) == signing, at - start
        assert len(receiver.received[-1].headers["webhook-signature"].split()) == len(signing)


def rotate_at(holder: object, at: datetime.datetime) -> str:
    if isinstance(holder, ToolSigningSecret):
        return services.tool_signing_secret_rotate(organization=holder.organization, now=at)[1]
    return services.webhook_endpoint_rotate_secret(endpoint=holder, now=at)


@pytest.fixture(params=["webhook endpoint", "tool signing secret"])
def holder_and_url(request, api: APIClient, organization: Organization) -> tuple[object, str]:
    """A signing secret's holder, and the URL rotating it."""
    if request.param == "webhook endpoint":
        endpoint_id, _ = endpoint_create(api, "https://hooks.example.com/x")
        return organization.webhook_endpoints.get(), f"{ENDPOINTS}/{endpoint_id}/rotate-secret"
    assert api.post(f"{TOOL_SECRET}/rotate").status_code == 201
    return ToolSigningSecret.objects.get(), f"{TOOL_SECRET}/rotate"


def live(holder: object, at: datetime.datetime) -> list[str]:
    return type(holder).objects.get(pk=holder.pk).live_secrets(at)


def test_a_rotation_past_the_bound_is_refused_and_changes_nothing(
    api: APIClient, holder_and_url: tuple[object, str]
) -> None:
    holder, url = holder_and_url
    start = timezone.now() - HOUR
    for n in range(MAX_PREVIOUS_SECRETS):
        rotate_at(holder, start + n * datetime.timedelta(minutes=1))
    before = live(holder, timezone.now())

    refused = api.post(url)

    assert refused.status_code == 429
    assert refused.json() == {
        "type": "client_error",
        "errors": [
            {
                "code": "rotation_limit_reached",
                "detail": f"This secret was rotated {MAX_PREVIOUS_SECRETS} times in the "
                "last 24 hours and every secret those rotations replaced still signs: "
                "rotate it again once the oldest of them stops signing (Retry-After).",
                "attr": None,
            }
        ],
        "meta": {
            "previous_secrets": MAX_PREVIOUS_SECRETS,
            "max_previous_secrets": MAX_PREVIOUS_SECRETS,
            "next_rotation_at": (start + SECRET_ROTATION_GRACE).isoformat().replace("+00:00", "Z"),
        },
    }
    assert 22 * 3600 < int(refused["Retry-After"]) <= 23 * 3600
    assert "whsec_" not in refused.content.decode()
    assert live(holder, timezone.now()) == before
    assert len(before) == MAX_PREVIOUS_SECRETS + 1


def test_a_rotation_is_allowed_again_once_the_oldest_replaced_secret_stops_signing(
    holder_and_url: tuple[object, str],
) -> None:
    holder, _ = holder_and_url
    start = timezone.now()
    for n in range(MAX_PREVIOUS_SECRETS):
        rotate_at(holder, start + n * HOUR)
    with pytest.raises(RotationLimitReached):
        rotate_at(holder, start + 23 * HOUR)

    after = start + SECRET_ROTATION_GRACE + datetime.timedelta(seconds=1)
    newest = rotate_at(holder, after)

    signing = live(holder, after)
    assert signing[0] == newest and len(signing) == MAX_PREVIOUS_SECRETS + 1


def test_the_release_before_reads_the_newest_replaced_secret_where_it_did(
    holder_and_url: tuple[object, str],
) -> None:
    """During a rolling deploy, or after a rollback, the release before signs with
    `previous_secret` until `previous_secret_expires_at` (README "Upgrading")."""
    holder, _ = holder_and_url
    start = timezone.now()
    second = rotate_at(holder, start)
    rotate_at(holder, start + HOUR)

    stored = type(holder).objects.filter(pk=holder.pk)
    assert stored.values_list("previous_secret", "previous_secret_expires_at").get() == (
        second,
        start + HOUR + SECRET_ROTATION_GRACE,
    )


def test_a_retried_tool_secret_rotation_leaves_the_original_signing_tool_requests(
    api: APIClient, agent_api: APIClient, call: Call
) -> None:
    original = api.post(f"{TOOL_SECRET}/rotate").json()["secret"]
    unseen = api.post(f"{TOOL_SECRET}/rotate").json()["secret"]

    retried = api.post(f"{TOOL_SECRET}/rotate")

    assert retried.status_code == 200
    session = agent_api.get(f"/api/v1/agent/calls/{call.id}/session").json()
    assert session["tool_signing_secrets"] == [retried.json()["secret"], unseen, original]
    holder = ToolSigningSecret.objects.get()
    # The newest replaced secret's end: the last to stop signing.
    assert retried.json()["previous_secret_expires_at"] == (
        (holder.updated_at + SECRET_ROTATION_GRACE).isoformat().replace("+00:00", "Z")
    )


def test_the_tool_secret_at_its_bound_can_still_be_deleted(api: APIClient) -> None:
    """The way out of the bound: no secret (tool requests unsigned), then a new one."""
    for _ in range(MAX_PREVIOUS_SECRETS + 1):
        api.post(f"{TOOL_SECRET}/rotate")
    assert api.post(f"{TOOL_SECRET}/rotate").status_code == 429

    assert api.delete(TOOL_SECRET).status_code == 204
    created = api.post(f"{TOOL_SECRET}/rotate")

    assert created.status_code == 201
    assert ToolSigningSecret.objects.get().live_secrets(timezone.now()) == [
        created.json()["secret"]
    ]


def test_no_other_answer_or_admin_page_shows_any_of_the_secrets(
    api: APIClient, staff_client: Client, organization: Organization, receiver: Receiver
) -> None:
    endpoint_id, first = endpoint_create(api, receiver.url)
    rotated = [api.post(f"{ENDPOINTS}/{endpoint_id}/rotate-secret") for _ in range(3)]
    tool = [api.post(f"{TOOL_SECRET}/rotate") for _ in range(4)]
    secrets = [first, *(r.json()["secret"] for r in rotated + tool)]
    send_test_event(api, endpoint_id)
    pages = [
        api.get(ENDPOINTS),
        api.get(f"{ENDPOINTS}/{endpoint_id}"),
        api.get(f"{ENDPOINTS}/{endpoint_id}/deliveries"),
        api.get(TOOL_SECRET),
        api.get("/api/v1/organization"),
        staff_client.get(reverse("admin:webhooks_webhookendpoint_changelist")),
        staff_client.get(reverse("admin:webhooks_webhookendpoint_change", args=[endpoint_id])),
        staff_client.get(reverse("admin:accounts_organization_change", args=[organization.pk])),
        staff_client.get(reverse("admin:webhooks_webhookdelivery_changelist")),
    ]

    assert [page.status_code for page in pages] == [200] * len(pages)
    for page in pages:
        for secret in secrets:
            assert secret.removeprefix("whsec_") not in page.content.decode()
