from __future__ import annotations

import io
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from accounts.models import Organization
from accounts.services import api_key_create
from privacy.erasure import erasure_create
from privacy.models import Erasure
from providerkeys import crypto
from providerkeys.models import ProviderKey
from recordings.models import RecordingStorage
from telephony.models import SipTrunk
from tests.factories import ProviderKeyFactory
from webhooks.models import ToolSigningSecret, WebhookEndpoint
from webhooks.services import tool_signing_secret_rotate, webhook_endpoint_create

pytestmark = pytest.mark.django_db

OLD, NEW = "the-old-cryptography-key", "the-new-cryptography-key"


def raw_columns() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, api_key FROM providerkeys_providerkey")
        return {str(row[0]): bytes(row[1]) for row in cursor.fetchall()}


def rotate(*args: str) -> str:
    out = io.StringIO()
    call_command("rotate_provider_keys", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def old_keys(organization: Organization, settings) -> dict:
    """Three keys written under OLD; the service now runs on NEW with OLD as fallback."""
    settings.CRYPTOGRAPHY_KEY = OLD
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []
    keys = {
        ProviderKeyFactory(organization=organization, api_key=f"sk-live-secret-{n}").pk: (
            f"sk-live-secret-{n}"
        )
        for n in range(3)
    }
    settings.CRYPTOGRAPHY_KEY = NEW
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = [OLD]
    return keys


def test_keys_written_under_the_old_key_read_under_the_new_one_after_rotation(
    old_keys: dict, settings
) -> None:
    output = rotate()

    assert (
        output
        == "Re-encrypted 3 provider keys under CRYPTOGRAPHY_KEY (3 were under a fallback key).\n"
        "Re-encrypted other secrets: 0 (0 were under a fallback key).\n"
    )
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []
    assert {key.pk: key.api_key for key in ProviderKey.objects.all()} == old_keys


def test_without_rotation_the_new_key_alone_cannot_read_them(old_keys: dict, settings) -> None:
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []

    with pytest.raises(crypto.UndecryptableValue):
        list(ProviderKey.objects.all())


def test_the_old_key_no_longer_reads_them_after_rotation(old_keys: dict, settings) -> None:
    rotate()
    settings.CRYPTOGRAPHY_KEY = OLD
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []

    with pytest.raises(crypto.UndecryptableValue):
        list(ProviderKey.objects.all())


def test_a_second_rotation_finds_nothing_under_a_fallback(old_keys: dict) -> None:
    rotate()

    assert rotate("--dry-run") == (
        "3 provider keys; 0 still encrypted under a fallback key. "
        "Nothing was changed (--dry-run).\n"
        "Other secrets: 0 (0 still under a fallback key).\n"
    )


def test_dry_run_changes_nothing(old_keys: dict) -> None:
    before = raw_columns()

    output = rotate("--dry-run")

    assert "3 still encrypted under a fallback key" in output
    assert raw_columns() == before


def test_every_other_stored_secret_moves_to_the_new_key_too(
    organization: Organization, outsider: Organization, settings
) -> None:
    """Trunk passwords, storage credentials, signing secrets and the user id of an
    erasure still running were left under the old key: removing it (step 5) made
    them unreadable."""
    settings.CRYPTOGRAPHY_KEY = OLD
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []
    trunk = SipTrunk.objects.create(
        organization=organization,
        name="carrier",
        direction="outbound",
        auth_username="acme",
        auth_password="trunk-pw",
        livekit_trunk_id="ST_1",
    )
    SipTrunk.objects.create(
        organization=outsider, name="open", direction="inbound", livekit_trunk_id="ST_2"
    )
    RecordingStorage.objects.create(
        organization=organization,
        bucket="b",
        region="us-east-1",
        access_key_id="AKIAEXAMPLE",
        secret_access_key="s3-secret",
        access_key_id_last4="MPLE",
    )
    endpoint, signing_secret = webhook_endpoint_create(
        organization=organization, url="https://example.com/hook", events=["call.ended"]
    )
    _, tool_secret, _ = tool_signing_secret_rotate(organization=organization)
    key, _ = api_key_create(name="privacy-bot", organization=organization)
    erasure = erasure_create(organization=organization, user_id="user-123", api_key=key)
    settings.CRYPTOGRAPHY_KEY = NEW
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = [OLD]

    output = rotate()
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []

    assert output.splitlines()[1] == (
        "Re-encrypted other secrets: 6 (6 were under a fallback key); "
        "webhook endpoint secret: 1, tool signing secret secret: 1, sip trunk auth_password: 1, "
        "recording storage access_key_id: 1, recording storage secret_access_key: 1, "
        "erasure user_id: 1."
    )
    assert SipTrunk.objects.get(pk=trunk.pk).auth_password == "trunk-pw"
    storage = RecordingStorage.objects.get(pk=organization.pk)
    assert (storage.access_key_id, storage.secret_access_key) == ("AKIAEXAMPLE", "s3-secret")
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == signing_secret
    assert ToolSigningSecret.objects.get(organization=organization).secret == tool_secret
    assert Erasure.objects.get(pk=erasure.pk).user_id == "user-123"


def test_a_key_nobody_can_open_aborts_the_whole_rotation(
    old_keys: dict, organization: Organization, settings
) -> None:
    settings.CRYPTOGRAPHY_KEY = "a-key-that-was-lost"
    lost = ProviderKeyFactory(organization=organization, api_key="sk-lost-forever")
    settings.CRYPTOGRAPHY_KEY = NEW
    before = raw_columns()

    with pytest.raises(CommandError) as excinfo:
        rotate()

    assert str(lost.pk) in str(excinfo.value)
    assert "Nothing was changed" in str(excinfo.value)
    assert "sk-lost-forever" not in str(excinfo.value)
    assert raw_columns() == before


@pytest.mark.django_db(transaction=True)
def test_a_rotation_and_a_calls_status_change_do_not_wait_for_each_other(
    organization: Organization, is_postgres: bool, settings
) -> None:
    """A call's status change holds its organization's webhook endpoints until it commits
    (webhooks.outbox: FOR KEY SHARE, so none is deleted under its deliveries). The
    rotation holds every secret's row until it commits; it changes no key, so neither
    must wait for the other: every call's change would stall for the whole rotation."""
    if not is_postgres:
        pytest.skip("SQLite has no row locks")
    settings.CRYPTOGRAPHY_KEY = OLD
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []
    endpoint, signing_secret = webhook_endpoint_create(
        organization=organization, url="https://example.com/hook", events=["call.ended"]
    )
    settings.CRYPTOGRAPHY_KEY = NEW
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = [OLD]
    outcome: list[object] = []

    def rotation() -> None:
        try:
            outcome.append(rotate())
        except BaseException as exc:
            outcome.append(exc)
        finally:
            connection.close()

    rotating = threading.Thread(target=rotation)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM webhooks_webhookendpoint WHERE id = %s FOR KEY SHARE", [endpoint.pk]
        )
        rotating.start()
        rotating.join(10)
        finished_while_held = not rotating.is_alive()
    rotating.join(10)

    assert finished_while_held
    assert not isinstance(outcome[0], BaseException), outcome
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []
    assert WebhookEndpoint.objects.get().secret == signing_secret
