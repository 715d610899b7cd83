"""The join token is a real LiveKit JWT scoped to one room, with no secrets in it."""

from __future__ import annotations

import base64
import datetime

import pytest
from django.conf import settings
from livekit import api as livekit_api
from rest_framework.test import APIClient

from calls.models import Call

pytestmark = pytest.mark.django_db


def create_call(api: APIClient, **body: object) -> tuple[Call, livekit_api.Claims]:
    response = api.post("/api/v1/calls", {"workflow_slug": "daily-call", **body}, format="json")
    assert response.status_code == 201
    verifier = livekit_api.TokenVerifier(settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET)
    return Call.objects.get(pk=response.json()["call_id"]), verifier.verify(
        response.json()["token"]
    )


def jwt_payload(token: str) -> str:
    return base64.urlsafe_b64decode(token.split(".")[1] + "==").decode()


def test_the_token_lets_the_user_join_exactly_the_calls_room(api: APIClient, workflow) -> None:
    call, claims = create_call(api)

    assert claims.identity == f"user-{call.id}"
    assert claims.video.room_join is True
    assert claims.video.room == f"call-{call.id}"
    assert not claims.video.room_create
    assert not claims.video.room_admin
    assert not claims.video.room_list


def test_the_token_dispatches_our_agent_with_only_the_call_id(api: APIClient, workflow) -> None:
    call, claims = create_call(api, user_data={"name": "John"}, metadata={"secret": "s3"})

    agents = claims.room_config.agents
    assert [a.agent_name for a in agents] == ["voicecalls-agent"]
    assert agents[0].metadata == f'{{"call_id": "{call.id}"}}'
    assert claims.room_config.departure_timeout == settings.LIVEKIT_DEPARTURE_TIMEOUT


def test_the_token_carries_the_display_name_and_no_other_user_data(
    api: APIClient, workflow
) -> None:
    response = api.post(
        "/api/v1/calls",
        {
            "workflow_slug": "daily-call",
            "user_data": {"name": "John Doe", "diagnosis": "private-detail"},
            "metadata": {"internal": "metadata-detail"},
        },
        format="json",
    )
    token = response.json()["token"]
    claims = livekit_api.TokenVerifier(
        settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET
    ).verify(token)

    assert claims.name == "John Doe"
    payload = jwt_payload(token)
    assert "private-detail" not in payload
    assert "metadata-detail" not in payload
    assert not claims.metadata


@pytest.mark.parametrize(
    "name", [{"first": "John", "diagnosis": "private-detail"}, ["John", "private-detail"], True]
)
def test_a_name_that_is_not_text_is_no_display_name(api: APIClient, workflow, name) -> None:
    """Printed, `{"first": ..., "diagnosis": ...}` put the rest of it in a token every
    participant of the room reads."""
    response = api.post(
        "/api/v1/calls",
        {"workflow_slug": "daily-call", "user_data": {"name": name}},
        format="json",
    )
    token = response.json()["token"]
    claims = livekit_api.TokenVerifier(
        settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET
    ).verify(token)

    assert not claims.name
    assert "private-detail" not in jwt_payload(token)


def test_the_token_lives_at_most_15_minutes(api: APIClient, workflow) -> None:
    import jwt

    response = api.post("/api/v1/calls", {"workflow_slug": "daily-call"}, format="json")
    payload = jwt.decode(response.json()["token"], options={"verify_signature": False})

    assert 0 < payload["exp"] - payload["nbf"] <= datetime.timedelta(minutes=15).total_seconds()


def test_a_token_signed_with_another_secret_does_not_verify(api: APIClient, workflow) -> None:
    response = api.post("/api/v1/calls", {"workflow_slug": "daily-call"}, format="json")

    with pytest.raises(Exception):  # noqa: B017 - any verification error
        livekit_api.TokenVerifier(settings.LIVEKIT_API_KEY, "another-secret-x" * 3).verify(
            response.json()["token"]
        )


def test_creating_a_call_works_with_livekit_down(api: APIClient, workflow, settings) -> None:
    settings.LIVEKIT_URL = "ws://127.0.0.1:9"  # nothing listens there

    response = api.post("/api/v1/calls", {"workflow_slug": "daily-call"}, format="json")

    assert response.status_code == 201
    assert response.json()["livekit_url"] == "ws://127.0.0.1:9"
