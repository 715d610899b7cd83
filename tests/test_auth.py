"""Bearer API keys: 401 without a valid one, 403 for the wrong kind, 404 across tenants."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.models import APIKey, KeyKind
from accounts.services import api_key_create
from tests.conftest import bearer_client

pytestmark = pytest.mark.django_db

CLIENT_ENDPOINTS = [
    ("get", "/api/v1/calls"),
    ("get", "/api/v1/calls/active"),
    ("post", "/api/v1/calls"),
    ("get", "/api/v1/calls/7d3f3a0e-1b7c-4a57-9d0e-0d6f1b2c3a4e"),
]


@pytest.mark.parametrize(("method", "path"), CLIENT_ENDPOINTS)
def test_no_key_is_401_with_a_bearer_challenge(
    anonymous_api: APIClient, method: str, path: str
) -> None:
    response = getattr(anonymous_api, method)(path)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json() == {
        "type": "client_error",
        "errors": [
            {
                "code": "not_authenticated",
                "detail": "Authentication credentials were not provided.",
                "attr": None,
            }
        ],
    }


@pytest.mark.parametrize(
    "header",
    [
        "Bearer nope",
        "Bearer abcdefgh.wrongsecret",
        "Bearer ",
        "Bearer a b",
        "Bearer \u00e9\u00e9\u00e9",
        "Basic dXNlcjpwYXNz",
        "Token abc",
    ],
)
def test_invalid_credentials_are_401(db: None, header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get("/api/v1/calls")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "raw_key",
    ["ab\x00cdefg.secret", "abcdefgh.sec\x00ret", "abcdefgh.", ".secret", "a.b.c", "ab-cd.x"],
)
def test_a_key_not_shaped_prefix_dot_secret_is_401_before_any_query(
    db: None, raw_key: str, django_assert_num_queries
) -> None:
    # A NUL reaching PostgreSQL as a parameter is a 500 there, not a "no such key".
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")

    with django_assert_num_queries(0):
        response = client.get("/api/v1/calls")

    assert response.status_code == 401
    assert response.json()["errors"][0]["detail"] == "Invalid API key."


def test_a_key_at_its_expiry_instant_has_expired(organization, monkeypatch) -> None:
    import datetime

    from django.utils import timezone

    now = datetime.datetime(2026, 12, 6, 3, 0, tzinfo=datetime.UTC)
    key, plaintext = api_key_create(name="ends", organization=organization)
    APIKey.objects.filter(pk=key.pk).update(expiry_date=now)
    monkeypatch.setattr(timezone, "now", lambda: now)

    response = bearer_client(plaintext).get("/api/v1/calls")

    assert response.status_code == 401
    assert response.json()["errors"][0]["detail"] == "API key has expired."


def test_a_key_with_the_right_prefix_but_wrong_secret_is_401(client_key: str) -> None:
    prefix = client_key.split(".")[0]

    response = bearer_client(f"{prefix}.{'x' * 32}").get("/api/v1/calls")

    assert response.status_code == 401


def test_a_revoked_key_is_401(organization, client_key: str) -> None:
    APIKey.objects.filter(organization=organization).update(revoked=True)

    assert bearer_client(client_key).get("/api/v1/calls").status_code == 401


def test_an_expired_key_is_401(organization) -> None:
    import datetime

    from django.utils import timezone

    key, plaintext = api_key_create(name="old", organization=organization)
    APIKey.objects.filter(pk=key.pk).update(expiry_date=timezone.now() - datetime.timedelta(days=1))

    assert bearer_client(plaintext).get("/api/v1/calls").status_code == 401


@pytest.mark.parametrize(("method", "path"), CLIENT_ENDPOINTS)
def test_agent_keys_are_403_on_client_endpoints(
    agent_api: APIClient, method: str, path: str
) -> None:
    response = getattr(agent_api, method)(path)

    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "permission_denied"


def test_organization_agent_keys_are_403_on_client_endpoints(org_agent_api: APIClient) -> None:
    assert org_agent_api.get("/api/v1/calls").status_code == 403


def test_keys_are_stored_hashed_with_a_visible_prefix(organization) -> None:
    key, plaintext = api_key_create(name="ci", organization=organization)

    stored = APIKey.objects.get(pk=key.pk)
    assert plaintext.startswith(stored.prefix + ".")
    assert plaintext.split(".", 1)[1] not in stored.hashed_key
    assert stored.hashed_key.startswith("sha512$$")


def test_a_client_key_must_belong_to_an_organization(db: None) -> None:
    with pytest.raises(ValueError):
        api_key_create(name="orphan", kind=KeyKind.CLIENT, organization=None)


def test_the_key_never_appears_in_any_response(api: APIClient, client_key: str, workflow) -> None:
    responses = [
        api.get("/api/v1/calls"),
        api.post("/api/v1/calls", {"workflow_slug": "daily-call"}, format="json"),
        api.post("/api/v1/calls", {"workflow_slug": "nope"}, format="json"),
        bearer_client(client_key + "x").get("/api/v1/calls"),
    ]

    secret = client_key.split(".", 1)[1]
    for response in responses:
        assert secret not in response.content.decode()
