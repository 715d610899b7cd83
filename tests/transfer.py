"""The transfer tests' cast: a live inbound phone call (through the fake LiveKit) whose
workflow has a `transfer` tool listing the desk and the PBX, and the agent's transfer
request. The fixtures are bound by name in each module that uses them."""

from __future__ import annotations

import copy

import pytest

from accounts.models import Organization
from calls.models import Call
from telephony.services import phone_number_verify
from tests.factories import PhoneNumberFactory
from tests.phone import INBOUND_NUMBER, inbound_trunk
from workflows.demo import DEMO_DEFINITION
from workflows.services import workflow_create

CALLER = "+12025550177"
DESK = "+14155550188"
PBX = "sip:support@pbx.example.com"


def with_transfer_tool(definition: dict, destinations: list[str]) -> dict:
    definition = copy.deepcopy(definition)
    definition["agents"][0]["tools"].append(
        {
            "name": "hand_to_person",
            "type": "transfer",
            "description": "Hand the caller to a person.",
            "destinations": destinations,
            "message": "Putting you through now.",
        }
    )
    return definition


@pytest.fixture(autouse=True)
def _502_is_a_status(api, agent_api) -> None:
    api.raise_request_exception = agent_api.raise_request_exception = False


@pytest.fixture
def support(organization):
    Organization.objects.filter(pk=organization.pk).update(allowed_destination_countries=["US"])
    organization.refresh_from_db()
    return workflow_create(
        organization=organization,
        slug="support",
        name="Support",
        definition=with_transfer_tool(DEMO_DEFINITION, [DESK, PBX]),
    )


@pytest.fixture
def live_call(organization, support, sip_fake) -> Call:
    """A caller on the line with the support workflow (an answered inbound call)."""
    trunk = inbound_trunk(organization)
    phone_number_verify(
        phone_number=PhoneNumberFactory(trunk=trunk, workflow=support, number=INBOUND_NUMBER)
    )
    from livekit import api as livekit_api

    room, _ = sip_fake.inbound_call(to=INBOUND_NUMBER, caller=CALLER)
    agent = livekit_api.ParticipantInfo(
        identity="agent-AJ_support1", kind=livekit_api.ParticipantInfo.Kind.AGENT
    )
    sip_fake.webhooks_send("participant_joined", room, agent)  # the agent with them
    call = Call.objects.get(room_name=room)
    assert call.status == "active"
    return call


def agent_transfer(agent_api, call: Call, destination: str, tool: str = "hand_to_person"):
    return agent_api.post(
        f"/api/v1/agent/calls/{call.id}/transfer",
        {"tool": tool, "destination": destination},
        format="json",
    )


def transcript(api, call: Call) -> list[tuple[str, str]]:
    lines = api.get(f"/api/v1/calls/{call.id}/transcript").json()
    return [(line["role"], line["content"]) for line in lines]
