"""A workflow's phone behaviour: transfer tools and their destinations (checked by the
toll-fraud guard when the workflow is saved), what the agent does on a voicemail, and
what a caller hears when every line is busy; and how the agent's session carries them."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.models import Organization
from tests.factories import CallFactory
from tests.test_workflows_api import body, errors
from workflows.models import Workflow
from workflows.settings import DEFAULT_BUSY_MESSAGE

DESK = "+14155550188"
PBX = "sip:support@pbx.example.com:5060"


@pytest.fixture(autouse=True)
def _us_allowed(organization: Organization) -> None:
    Organization.objects.filter(pk=organization.pk).update(allowed_destination_countries=["US"])


def with_tool(**tool: object) -> dict:
    data = body()
    data["agents"][0]["tools"].append({"name": "hand_to_person", **tool})
    return data


def transfer_tool(**changes: object) -> dict:
    return with_tool(type="transfer", destinations=[DESK, PBX], **changes)


def test_a_transfer_tool_is_stored_and_returned_with_its_destinations(api: APIClient) -> None:
    response = api.post(
        "/api/v1/workflows", transfer_tool(message="One moment, please."), format="json"
    )

    assert response.status_code == 201, response.json()
    assert response.json()["agents"][0]["tools"][1] == {
        "name": "hand_to_person",
        "type": "transfer",
        "description": "",
        "parameters": {"type": "object", "properties": {}},
        "url": None,
        "destinations": [DESK, PBX],
        "message": "One moment, please.",
    }


def test_a_function_tool_is_stored_without_transfer_fields(api: APIClient) -> None:
    api.post("/api/v1/workflows", body(), format="json")

    (tool,) = Workflow.objects.get().current_version.definition["agents"][0]["tools"]
    assert "destinations" not in tool and "message" not in tool
    assert tool["type"] == "function"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (with_tool(type="transfer"), [("agents.0.tools.1.destinations", "required")]),
        (
            with_tool(type="transfer", destinations=[]),
            [("agents.0.tools.1.destinations", "required")],
        ),
        (
            with_tool(type="transfer", destinations=["4155550188"]),
            [("agents.0.tools.1.destinations.0", "invalid")],
        ),
        (
            with_tool(type="transfer", destinations=["sip:no host"]),
            [("agents.0.tools.1.destinations.0", "invalid")],
        ),
        (
            with_tool(type="transfer", destinations=["sip:desk@pbx.example.com\n"]),
            [("agents.0.tools.1.destinations.0", "invalid")],
        ),
        (
            with_tool(type="transfer", destinations=["sip:d\u0085sk@pbx.example.com"]),
            [("agents.0.tools.1.destinations.0", "invalid")],
        ),
        # A port LiveKit cannot dial, or a host no DNS name or address is: every
        # transfer to it would fail on the call, after the caller was told to hold.
        (
            with_tool(type="transfer", destinations=["sip:desk@pbx.example.com:0"]),
            [("agents.0.tools.1.destinations.0", "invalid")],
        ),
        (
            with_tool(type="transfer", destinations=["sip:desk@pbx.example.com:65536"]),
            [("agents.0.tools.1.destinations.0", "invalid")],
        ),
        (
            with_tool(type="transfer", destinations=["sip:desk@-"]),
            [("agents.0.tools.1.destinations.0", "invalid")],
        ),
        (
            with_tool(type="transfer", destinations=["sip:desk@pbx..example.com"]),
            [("agents.0.tools.1.destinations.0", "invalid")],
        ),
        (
            with_tool(type="transfer", destinations=[DESK] * 11),
            [("agents.0.tools.1.destinations", "max_length")],
        ),
        (
            with_tool(type="transfer", destinations=[DESK], url="https://example.com/x"),
            [("agents.0.tools.1.url", "not_allowed")],
        ),
        (with_tool(destinations=[DESK]), [("agents.0.tools.1.destinations", "not_allowed")]),
        (with_tool(message="hello"), [("agents.0.tools.1.message", "not_allowed")]),
        (with_tool(type="forward"), [("agents.0.tools.1.type", "invalid_choice")]),
    ],
)
def test_a_malformed_transfer_tool_is_400_naming_the_field(
    api: APIClient, data: dict, expected: list
) -> None:
    response = api.post("/api/v1/workflows", data, format="json")

    assert response.status_code == 400
    assert errors(response) == expected
    assert not Workflow.objects.exists()


@pytest.mark.parametrize(
    ("destination", "code"),
    [
        ("+442079460000", "destination_not_allowed"),  # staff allowed the US only
        ("+19005550123", "costly_number"),  # premium rate
        ("+1911", "invalid_phone_number"),
    ],
)
def test_a_destination_the_guard_refuses_is_400_when_the_workflow_is_saved(
    api: APIClient, destination: str, code: str
) -> None:
    response = api.post(
        "/api/v1/workflows",
        with_tool(type="transfer", destinations=[DESK, destination]),
        format="json",
    )

    assert response.status_code == 400
    assert errors(response) == [("agents.0.tools.1.destinations.1", code)]


def test_voicemail_and_busy_message_are_stored_and_returned(api: APIClient) -> None:
    settings = {
        "voicemail": {
            "action": "leave_message",
            "message": "Hi {{ user.name }}, please call us back.",
        },
        "busy_message": "Every line is busy.",
    }

    response = api.post("/api/v1/workflows", body(settings=settings), format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["settings"]["voicemail"] == settings["voicemail"]
    assert response.json()["settings"]["busy_message"] == "Every line is busy."


def test_voicemail_defaults_to_hanging_up_and_busy_message_to_a_polite_sentence(
    api: APIClient,
) -> None:
    response = api.post("/api/v1/workflows", body(), format="json")

    settings = response.json()["settings"]
    assert settings["voicemail"] == {"action": "hang_up", "message": ""}
    assert settings["busy_message"] == DEFAULT_BUSY_MESSAGE


@pytest.mark.parametrize(
    ("voicemail", "expected"),
    [
        ({"action": "leave_message"}, [("settings.voicemail.message", "required")]),
        (
            {"action": "leave_message", "message": "  "},
            [("settings.voicemail.message", "required")],
        ),
        (
            {"action": "hang_up", "message": "{{ unclosed"},
            [("settings.voicemail.message", "template_syntax_error")],
        ),
        ({"action": "beep"}, [("settings.voicemail.action", "invalid_choice")]),
        ("hang_up", [("settings.voicemail.non_field_errors", "invalid")]),
    ],
)
def test_a_malformed_voicemail_setting_is_400(
    api: APIClient, voicemail: object, expected: list
) -> None:
    response = api.post("/api/v1/workflows", body(settings={"voicemail": voicemail}), format="json")

    assert response.status_code == 400
    assert errors(response) == expected


def test_the_session_carries_the_voicemail_message_rendered_for_the_call(
    api: APIClient, agent_api: APIClient, organization: Organization
) -> None:
    settings = {"voicemail": {"action": "leave_message", "message": "Hi {{ user.name }}!"}}
    created = api.post("/api/v1/workflows", body(settings=settings), format="json").json()
    workflow = Workflow.objects.get(pk=created["id"])
    call = CallFactory(organization=organization, workflow=workflow, user_data={"name": "Ada"})

    session = agent_api.get(f"/api/v1/agent/calls/{call.id}/session").json()

    assert session["workflow"]["settings"]["voicemail"] == {
        "action": "leave_message",
        "message": "Hi Ada!",
    }
    assert session["workflow"]["settings"]["busy_message"] == DEFAULT_BUSY_MESSAGE
