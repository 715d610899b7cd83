"""webhooks 0011: the secret the last rotation replaced, kept in `previous_secret` with
its end, is carried into `previous_secrets` (where every replaced secret still signing
is kept), its end unchanged; `previous_secret` stays for the release before."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from accounts.models import Organization
from webhooks import services
from webhooks.models import ToolSigningSecret, WebhookEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = ("webhooks", "0010_endpoint_deleted_at")
OLD, NEW = "the-old-cryptography-key", "the-new-cryptography-key"
HOUR = datetime.timedelta(hours=1)


def _migrate(target: tuple[str, str] | None = None) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target] if target else executor.loader.graph.leaf_nodes())
    return executor


def test_the_previous_secret_keeps_signing_until_its_own_end(organization: Organization) -> None:
    now = timezone.now()
    ends = {
        "endpoint": now + datetime.timedelta(hours=5),
        "tool": now + datetime.timedelta(hours=9),
    }
    try:
        state = _migrate(BEFORE).loader.project_state(BEFORE).apps
        old_endpoint = state.get_model("webhooks", "WebhookEndpoint")
        old_tool = state.get_model("webhooks", "ToolSigningSecret")
        endpoint = old_endpoint.objects.create(
            organization_id=organization.pk,
            url="https://hooks.example.com/x",
            secret="whsec_new",
            previous_secret="whsec_old",
            previous_secret_expires_at=ends["endpoint"],
        )
        unrotated = old_endpoint.objects.create(
            organization_id=organization.pk, url="https://hooks.example.com/y", secret="whsec_1"
        )
        old_tool.objects.create(
            organization_id=organization.pk,
            secret="whsec_tool_new",
            previous_secret="whsec_tool_old",
            previous_secret_expires_at=ends["tool"],
        )
    finally:
        _migrate()

    endpoint = WebhookEndpoint.objects.get(pk=endpoint.pk)
    tool = ToolSigningSecret.objects.get()
    assert (endpoint.previous_secret_expires_at, tool.previous_secret_expires_at) == (
        ends["endpoint"],
        ends["tool"],
    )
    assert endpoint.live_secrets(ends["endpoint"] - datetime.timedelta(seconds=1)) == [
        "whsec_new",
        "whsec_old",
    ]
    assert endpoint.live_secrets(ends["endpoint"]) == ["whsec_new"]
    assert tool.live_secrets(now) == ["whsec_tool_new", "whsec_tool_old"]
    assert tool.live_secrets(ends["tool"]) == ["whsec_tool_new"]
    unrotated = WebhookEndpoint.objects.get(pk=unrotated.pk)
    assert (unrotated.previous_secrets, unrotated.previous_secret_expires_at) == (None, None)


def test_a_previous_secret_no_key_opens_is_dropped(
    organization: Organization, settings: object
) -> None:
    """As a rotation drops one: it could sign nothing, and the migration must not stop."""
    settings.CRYPTOGRAPHY_KEY = OLD
    try:
        state = _migrate(BEFORE).loader.project_state(BEFORE).apps
        endpoint = state.get_model("webhooks", "WebhookEndpoint").objects.create(
            organization_id=organization.pk,
            url="https://hooks.example.com/x",
            secret="whsec_new",
            previous_secret="whsec_old",
            previous_secret_expires_at=timezone.now() + 5 * HOUR,
        )
        settings.CRYPTOGRAPHY_KEY = NEW
    finally:
        _migrate()

    settings.CRYPTOGRAPHY_KEY = OLD
    endpoint = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert (endpoint.previous_secrets, endpoint.previous_secret_expires_at) == (None, None)
    assert endpoint.live_secrets(timezone.now()) == ["whsec_new"]


def test_migrating_back_keeps_the_newest_replaced_secret(organization: Organization) -> None:
    endpoint, _ = services.webhook_endpoint_create(
        organization=organization, url="https://hooks.example.com/x", events=["call.ended"]
    )
    second = services.webhook_endpoint_rotate_secret(endpoint=endpoint)
    third = services.webhook_endpoint_rotate_secret(endpoint=endpoint)
    ends = WebhookEndpoint.objects.get().previous_secret_expires_at
    try:
        state = _migrate(BEFORE).loader.project_state(BEFORE).apps
        old = state.get_model("webhooks", "WebhookEndpoint").objects.get()
        assert (old.secret, old.previous_secret) == (third, second)
        assert old.previous_secret_expires_at == ends
    finally:
        _migrate()
    assert WebhookEndpoint.objects.get().live_secrets(timezone.now()) == [third, second]
