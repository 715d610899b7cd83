"""An organization's tool signing secret: made and rotated through the API (shown once),
stored encrypted, carried to the voice agent by the call's session only, so that each
tool request is signed the Standard Webhooks way (agent/tests/test_tool_signing.py)."""

from __future__ import annotations

import datetime
import json
import re
import threading
import time

import pytest
import yaml
from django.conf import settings as django_settings
from django.db import connection, connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from standardwebhooks import Webhook, WebhookVerificationError

from accounts.models import Organization
from calls.models import Call
from tests.factories import CallFactory
from webhooks import services
from webhooks.models import ToolSigningSecret
from webhooks.selectors import tool_signing_secrets_live
from webhooks.signing import signed_headers
from workflows.models import Workflow

URL = "/api/v1/tool-signing-secret"
ROTATE = f"{URL}/rotate"
OLD, NEW = "the-old-cryptography-key", "the-new-cryptography-key"


def session_secrets(agent_api: APIClient, call: Call) -> list[str]:
    response = agent_api.get(f"/api/v1/agent/calls/{call.id}/session")
    assert response.status_code == 200
    return response.json()["tool_signing_secrets"]


def iso(value: datetime.datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def status_body(holder: ToolSigningSecret) -> dict:
    return {
        "exists": True,
        "created_at": iso(holder.created_at),
        "updated_at": iso(holder.updated_at),
        "previous_secret_expires_at": iso(holder.previous_secret_expires_at),
    }


@pytest.fixture
def call(organization: Organization, workflow: Workflow) -> Call:
    return CallFactory(organization=organization, workflow=workflow)


def test_an_organization_has_none_until_it_asks_for_one(api: APIClient) -> None:
    response = api.get(URL)

    assert response.status_code == 200
    assert response.json() == {
        "exists": False,
        "created_at": None,
        "updated_at": None,
        "previous_secret_expires_at": None,
    }


def test_the_first_secret_is_created_and_shown_once(api: APIClient) -> None:
    response = api.post(ROTATE)

    assert response.status_code == 201
    holder = ToolSigningSecret.objects.get()
    secret = response.json()["secret"]
    assert secret.startswith("whsec_") and holder.secret == secret
    assert response.json() == {**status_body(holder), "secret": secret}
    shown = api.get(URL)
    assert shown.json() == status_body(holder)
    assert secret not in shown.content.decode()


def test_a_rotation_shows_the_new_secret_once_and_keeps_the_old_one_signing_a_day(
    api: APIClient, agent_api: APIClient, call: Call
) -> None:
    old = api.post(ROTATE).json()["secret"]

    response = api.post(ROTATE)

    assert response.status_code == 200
    new = response.json()["secret"]
    holder = ToolSigningSecret.objects.get()
    assert new != old and holder.live_secrets(timezone.now()) == [new, old]
    assert response.json() == {**status_body(holder), "secret": new}
    expires = holder.previous_secret_expires_at
    assert expires - holder.updated_at == datetime.timedelta(hours=24)
    assert session_secrets(agent_api, call) == [new, old]
    later = expires + datetime.timedelta(seconds=1)
    assert tool_signing_secrets_live(organization=call.organization, now=later) == [new]
    for body in (api.get(URL).content, api.get("/api/v1/organization").content):
        assert new.encode() not in body and old.encode() not in body


def test_a_second_rotation_within_the_day_keeps_every_replaced_secret_signing(
    api: APIClient, agent_api: APIClient, call: Call
) -> None:
    """Each for its own day (tests/test_signing_secret_rotations.py): dropping the first
    would lock out a tool endpoint that never got the second (the answer lost)."""
    first = api.post(ROTATE).json()["secret"]
    second = api.post(ROTATE).json()["secret"]

    third = api.post(ROTATE).json()["secret"]

    assert session_secrets(agent_api, call) == [third, second, first]


def test_the_answers_showing_the_secret_are_never_cached(api: APIClient) -> None:
    created, rotated = api.post(ROTATE), api.post(ROTATE)

    assert (created.status_code, rotated.status_code) == (201, 200)
    for response in (created, rotated):
        assert "no-store" in response["Cache-Control"]


def test_a_session_without_a_secret_asks_for_no_signature(
    agent_api: APIClient, call: Call, outsider: Organization
) -> None:
    services.tool_signing_secret_rotate(organization=outsider)

    assert session_secrets(agent_api, call) == []


def test_another_organizations_secret_is_out_of_reach(
    api: APIClient, outsider_api: APIClient, agent_api: APIClient, call: Call
) -> None:
    mine = api.post(ROTATE).json()["secret"]

    theirs = outsider_api.post(ROTATE)

    assert theirs.status_code == 201  # the outsider's first, not a rotation of ours
    assert outsider_api.get(URL).json()["exists"] is True
    assert session_secrets(agent_api, call) == [mine]


def test_agent_keys_are_forbidden_and_anonymous_callers_unauthorized(
    agent_api: APIClient, anonymous_api: APIClient, organization: Organization
) -> None:
    services.tool_signing_secret_rotate(organization=organization)

    assert agent_api.get(URL).status_code == 403
    assert agent_api.post(ROTATE).status_code == 403
    assert agent_api.delete(URL).status_code == 403
    assert anonymous_api.get(URL).status_code == 401
    assert anonymous_api.post(ROTATE).status_code == 401
    assert anonymous_api.delete(URL).status_code == 401
    assert ToolSigningSecret.objects.get().organization == organization  # nothing changed


def test_get_reads_post_rotates_and_delete_removes_nothing_else(api: APIClient) -> None:
    assert api.post(URL).status_code == 405
    assert api.put(URL).status_code == 405
    assert api.get(ROTATE).status_code == 405
    assert api.delete(ROTATE).status_code == 405


def test_delete_removes_both_secrets_and_tool_requests_go_unsigned_again(
    api: APIClient, agent_api: APIClient, call: Call
) -> None:
    api.post(ROTATE)
    api.post(ROTATE)  # the old secret still signs beside the new one
    assert len(session_secrets(agent_api, call)) == 2

    response = api.delete(URL)

    assert response.status_code == 204
    assert response.content == b""
    assert not ToolSigningSecret.objects.exists()
    assert session_secrets(agent_api, call) == []
    assert api.get(URL).json()["exists"] is False
    assert api.post(ROTATE).status_code == 201  # a new one is a first one again


def test_delete_without_a_secret_is_404(api: APIClient) -> None:
    response = api.delete(URL)

    assert response.status_code == 404
    assert response.json() == {
        "type": "client_error",
        "errors": [
            {
                "code": "not_found",
                "detail": "Your organization has no tool signing secret.",
                "attr": None,
            }
        ],
    }


def test_delete_leaves_another_organizations_secret_alone(
    api: APIClient, outsider_api: APIClient, outsider: Organization
) -> None:
    _, theirs, _ = services.tool_signing_secret_rotate(organization=outsider)
    api.post(ROTATE)

    assert api.delete(URL).status_code == 204
    assert api.delete(URL).status_code == 404  # theirs is not ours to delete

    assert ToolSigningSecret.objects.get().organization == outsider
    assert tool_signing_secrets_live(organization=outsider) == [theirs]
    assert outsider_api.get(URL).json()["exists"] is True


def raw_secrets() -> list[bytes]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret, previous_secrets FROM webhooks_toolsigningsecret")
        return [bytes(value) for row in cursor.fetchall() for value in row if value is not None]


def test_secrets_are_stored_encrypted(api: APIClient) -> None:
    shown = [api.post(ROTATE).json()["secret"] for _ in range(2)]

    stored = raw_secrets()
    assert len(stored) == 2
    for secret in shown:
        assert all(secret.encode() not in value for value in stored)
        assert all(secret.removeprefix("whsec_").encode() not in value for value in stored)


def test_secrets_appear_in_no_log(
    api: APIClient, agent_api: APIClient, call: Call, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("DEBUG"):
        shown = [api.post(ROTATE).json()["secret"] for _ in range(2)]
        session_secrets(agent_api, call)

    for secret in shown:
        assert secret not in caplog.text
        assert secret.removeprefix("whsec_") not in caplog.text


def test_the_schema_gives_no_example_of_a_secret() -> None:
    schema = yaml.safe_load((django_settings.BASE_DIR / "openapi.yaml").read_text())
    text = yaml.safe_dump(schema)

    assert "whsec_" not in text.replace("`whsec_...`", "")
    components = schema["components"]["schemas"]
    assert "secret" not in components["ToolSigningSecret"]["properties"]
    for name in ("ToolSigningSecret", "ToolSigningSecretWithSecret", "AgentSession"):
        assert "example" not in yaml.safe_dump(components[name])


def test_the_admin_never_shows_a_secret(
    api: APIClient, staff_client: Client, organization: Organization
) -> None:
    shown = [api.post(ROTATE).json()["secret"] for _ in range(2)]
    pages = [
        reverse("admin:accounts_organization_change", args=[organization.pk]),
        reverse("admin:accounts_organization_changelist"),
        reverse("admin:index"),
    ]

    for page in pages:
        response = staff_client.get(page)
        assert response.status_code == 200
        for secret in shown:
            assert secret not in response.content.decode()


@pytest.fixture
def secret_under_a_lost_key(organization: Organization, settings: object) -> str:
    """A secret no configured key opens (the old key's fallback removed before
    `rotate_provider_keys` ran, or a key mistyped in the deployment)."""
    settings.CRYPTOGRAPHY_KEY = OLD
    settings.CRYPTOGRAPHY_KEY_FALLBACKS = []
    _, secret, _ = services.tool_signing_secret_rotate(organization=organization)
    settings.CRYPTOGRAPHY_KEY = NEW
    return secret


def test_a_secret_no_key_opens_leaves_the_session_unsigned_not_failing(
    secret_under_a_lost_key: str, api: APIClient, agent_api: APIClient, call: Call, caplog
) -> None:
    assert session_secrets(agent_api, call) == []
    assert "tool signing secret opens with no configured CRYPTOGRAPHY_KEY" in caplog.text
    assert api.get(URL).json()["exists"] is True


def test_a_secret_no_key_opens_is_replaced_by_rotation_without_grace(
    secret_under_a_lost_key: str, api: APIClient, agent_api: APIClient, call: Call
) -> None:
    rotated = api.post(ROTATE)

    assert rotated.status_code == 200
    holder = ToolSigningSecret.objects.get()
    assert (holder.secret, holder.previous_secrets) == (rotated.json()["secret"], None)
    assert holder.previous_secret_expires_at is None
    assert session_secrets(agent_api, call) == [rotated.json()["secret"]]


def test_a_secret_no_key_opens_can_be_deleted(secret_under_a_lost_key: str, api: APIClient) -> None:
    assert api.delete(URL).status_code == 204
    assert not ToolSigningSecret.objects.exists()


def test_the_session_tells_the_secrets_in_one_query(
    organization: Organization, call: Call, django_assert_num_queries
) -> None:
    services.tool_signing_secret_rotate(organization=organization)
    services.tool_signing_secret_rotate(organization=organization)

    with django_assert_num_queries(1):
        found = tool_signing_secrets_live(organization=organization, now=timezone.now())
    assert len(found) == 2
    assert json.dumps(found).count("whsec_") == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_first_requests_at_once_make_one_secret_the_others_rotating_it(
    client_key: str, organization: Organization
) -> None:
    """Without the organization's row locked both would find none and create one: the
    second a 500 (one secret per organization)."""
    threads_count = 4
    barrier = threading.Barrier(threads_count)
    statuses: list[int] = []

    def request() -> None:
        client = APIClient(raise_request_exception=False)  # a 500 is a status here
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {client_key}")
        try:
            barrier.wait(timeout=10)
            statuses.append(client.post(ROTATE).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=request) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(statuses) == [200] * (threads_count - 1) + [201]
    assert ToolSigningSecret.objects.filter(organization=organization).count() == 1


def test_the_docs_check_accepts_the_calls_running_across_a_rotation_and_no_other(
    api: APIClient, agent_api: APIClient, call: Call, workflow: Workflow
) -> None:
    """docs/tools.md's check, run as printed: a call that started before a rotation signs
    its tool requests with the old secret alone until it ends (its session's), so an
    endpoint switched to the new secret alone at once would reject them mid-call. With
    both secrets, the check accepts the calls on either side of the rotation."""
    docs = (django_settings.BASE_DIR / "docs" / "tools.md").read_text()
    code = re.search(r"```python\n(from standardwebhooks import Webhook, .*?)```", docs, re.DOTALL)
    assert code is not None, "tools.md shows no check for a rotation"
    namespace: dict = {}
    exec(code.group(1), namespace)
    old = api.post(ROTATE).json()["secret"]
    started_before = session_secrets(agent_api, call)
    new = api.post(ROTATE).json()["secret"]
    later = CallFactory(organization=call.organization, workflow=workflow)
    started_after = session_secrets(agent_api, later)
    body = json.dumps({"meal_type": "lunch"}).encode()

    def sent(secrets: list[str]) -> dict[str, str]:
        return signed_headers(
            secrets=secrets, msg_id="tool_1", timestamp=int(time.time()), body=body
        )

    assert started_before == [old] and started_after == [new, old]
    with pytest.raises(WebhookVerificationError):  # an endpoint switched at once
        Webhook(new).verify(body, sent(started_before))
    for secrets in (started_before, started_after):
        assert namespace["tool_arguments"](body, sent(secrets), [new, old]) == {
            "meal_type": "lunch"
        }
    with pytest.raises(WebhookVerificationError):
        namespace["tool_arguments"](body, sent(["whsec_" + "A" * 43 + "="]), [new, old])


def test_the_schema_says_a_shown_secret_always_has_its_times() -> None:
    """The rotation's answer has a secret, so its creation and rotation times: typed
    nullable (inherited from the status, null while there is none), SDKs made every
    caller of the rotation handle a missing `created_at`."""
    schema = yaml.safe_load((django_settings.BASE_DIR / "openapi.yaml").read_text())
    shown = schema["components"]["schemas"]["ToolSigningSecretWithSecret"]["properties"]

    assert [name for name, field in shown.items() if field.get("nullable")] == [
        "previous_secret_expires_at"
    ]
