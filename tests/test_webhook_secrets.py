"""Webhook signing secrets at rest: encrypted under CRYPTOGRAPHY_KEY, re-encrypted on
rotation of that key."""

from __future__ import annotations

import base64
import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from accounts.models import Organization
from webhooks import services
from webhooks.models import ToolSigningSecret, WebhookEndpoint
from webhooks.retention import webhook_history_prune
from webhooks.selectors import tool_signing_secrets_live

OLD, NEW = "the-old-cryptography-key", "the-new-cryptography-key"


def raw_secrets() -> list[bytes]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret, previous_secrets FROM webhooks_webhookendpoint")
        return [bytes(value) for row in cursor.fetchall() for value in row if value is not None]


def endpoint_create(organization: Organization) -> tuple[WebhookEndpoint, str]:
    return services.webhook_endpoint_create(
        organization=organization, url="https://hooks.example.com/x", events=["call.ended"]
    )


def test_secrets_are_stored_encrypted(organization: Organization) -> None:
    endpoint, old = endpoint_create(organization)
    new = services.webhook_endpoint_rotate_secret(endpoint=endpoint)
    newer = services.webhook_endpoint_rotate_secret(endpoint=endpoint)

    stored = raw_secrets()
    assert len(stored) == 2  # the current secret, and those replaced (one value)
    for secret in (old, new, newer):
        for form in (secret.encode(), base64.b64decode(secret.removeprefix("whsec_"))):
            assert all(form not in value for value in stored)
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.live_secrets(timezone.now()) == [newer, new, old]


@pytest.fixture
def secrets_under_old_key(organization: Organization, settings: object) -> list[str]:
    """Two endpoints written under OLD; the service now runs on NEW with OLD as fallback."""
    settings.CRYPTOGRAPHY_KEY = OLD
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []
    secrets = [endpoint_create(organization)[1] for _ in range(2)]
    settings.CRYPTOGRAPHY_KEY = NEW
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = [OLD]
    return secrets


def test_reencrypt_moves_every_secret_to_the_new_key(
    secrets_under_old_key: list[str], settings: object
) -> None:
    out = io.StringIO()
    call_command("reencrypt_webhook_secrets", stdout=out)

    assert out.getvalue() == (
        "Re-encrypted the signing secrets of 2 webhook endpoints and 0 tool signing secrets.\n"
    )
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []
    stored = sorted(e.secret for e in WebhookEndpoint.objects.all())
    assert stored == sorted(secrets_under_old_key)


def test_reencrypt_moves_the_tool_signing_secrets_too(
    organization: Organization, settings: object
) -> None:
    """The tool signing secret is the same kind of secret, under the same key, but the
    command moved the endpoints' alone: an operator who ran it, then removed the old
    key, left every tool request of the organization unsigned."""
    settings.CRYPTOGRAPHY_KEY = OLD
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []
    endpoint_create(organization)
    _, tool_secret, _ = services.tool_signing_secret_rotate(organization=organization)
    settings.CRYPTOGRAPHY_KEY = NEW
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = [OLD]
    out = io.StringIO()

    call_command("reencrypt_webhook_secrets", stdout=out)

    assert out.getvalue() == (
        "Re-encrypted the signing secrets of 1 webhook endpoints and 1 tool signing secrets.\n"
    )
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []
    assert ToolSigningSecret.objects.get(organization=organization).secret == tool_secret


def test_reencrypt_moves_every_replaced_secret_still_signing_too(
    organization: Organization, settings: object
) -> None:
    """The secrets rotations replaced sign for a day each: left under the old key, they
    would stop every delivery once its fallback goes."""
    settings.CRYPTOGRAPHY_KEY = OLD
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []
    endpoint, first = endpoint_create(organization)
    rotated = [services.webhook_endpoint_rotate_secret(endpoint=endpoint) for _ in range(2)]
    tool = [services.tool_signing_secret_rotate(organization=organization)[1] for _ in range(3)]
    settings.CRYPTOGRAPHY_KEY = NEW
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = [OLD]

    call_command("reencrypt_webhook_secrets", stdout=io.StringIO())

    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []
    now = timezone.now()
    assert WebhookEndpoint.objects.get().live_secrets(now) == [*reversed(rotated), first]
    assert tool_signing_secrets_live(organization=organization) == [*reversed(tool)]


def test_reencrypt_changes_nothing_when_a_secret_cannot_be_opened(
    secrets_under_old_key: list[str], settings: object
) -> None:
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []
    before = raw_secrets()

    with pytest.raises(CommandError, match="Nothing was changed"):
        call_command("reencrypt_webhook_secrets", stdout=io.StringIO())

    assert raw_secrets() == before


@pytest.fixture
def endpoint_under_a_lost_key(organization: Organization, settings: object) -> WebhookEndpoint:
    """An endpoint whose secret no configured key opens: the old key's fallback removed
    before `rotate_provider_keys` ran, or a key mistyped in the deployment."""
    settings.CRYPTOGRAPHY_KEY = OLD
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []
    endpoint, _ = endpoint_create(organization)
    settings.CRYPTOGRAPHY_KEY = NEW
    return endpoint


def test_an_endpoint_whose_secret_no_key_opens_can_still_be_read_and_changed(
    endpoint_under_a_lost_key: WebhookEndpoint, api
) -> None:
    url = f"/api/v1/webhook-endpoints/{endpoint_under_a_lost_key.pk}"

    listed = api.get("/api/v1/webhook-endpoints")
    shown = api.get(url)
    changed = api.patch(url, {"description": "billing"}, format="json")
    deliveries = api.get(f"{url}/deliveries")

    assert [r.status_code for r in (listed, shown, changed, deliveries)] == [200] * 4
    assert changed.json()["description"] == "billing"
    assert raw_secrets()  # left as it was, for the key to come back


def test_an_endpoint_whose_secret_no_key_opens_gets_a_new_one_by_rotation(
    endpoint_under_a_lost_key: WebhookEndpoint, api
) -> None:
    """The customer's way out: a new secret, none kept beside it (the old one signs
    nothing any more)."""
    url = f"/api/v1/webhook-endpoints/{endpoint_under_a_lost_key.pk}"

    rotated = api.post(f"{url}/rotate-secret")

    assert rotated.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.secret, endpoint.previous_secrets) == (rotated.json()["secret"], None)
    assert endpoint.previous_secret_expires_at is None


def test_an_endpoint_whose_secret_no_key_opens_can_be_deleted(
    endpoint_under_a_lost_key: WebhookEndpoint, api
) -> None:
    response = api.delete(f"/api/v1/webhook-endpoints/{endpoint_under_a_lost_key.pk}")

    assert response.status_code == 204
    webhook_history_prune()  # which deletes it, its secrets unread
    assert not WebhookEndpoint.objects.exists()
