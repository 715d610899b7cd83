"""Transfer to a human: the agent's transfer tool (`POST /api/v1/agent/calls/{id}/transfer`)
and the customer's system (`POST /api/v1/calls/{id}/transfer`) hand a live phone call's
caller to a destination listed in a `transfer` tool of the call's workflow version,
through the toll-fraud guard, with LiveKit's TransferSIPParticipant (DESIGN.md "Phone
calls", Transfer to a human). A real inbound call through the fake LiveKit, whose
webhooks reach the real webhook view on its own thread, as LiveKit's do."""

from __future__ import annotations

import copy
import datetime
import runpy
import threading
import time
import uuid

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Organization
from calls.models import Call
from calls.services import TRANSFER_LEFT_AFTER
from telephony import guard
from telephony.services import phone_number_verify
from tests import fake_livekit_sip as sip
from tests.factories import CallFactory, PhoneNumberFactory
from tests.locks import a_session_waits_for_a_lock
from tests.phone import INBOUND_NUMBER, inbound_trunk
from voicecalls.livekit_sip import DIAL_TIMEOUT_MARGIN_SECONDS
from workflows.demo import DEMO_DEFINITION
from workflows.services import workflow_create
from workflows.settings import RING_TIMEOUT_BOUNDS

pytestmark = pytest.mark.django_db(transaction=True)

CALLER = "+12025550177"
DESK = "+14155550188"
PBX = "sip:support@pbx.example.com"
UNLISTED = "+14155550199"


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


def test_the_agent_transfers_to_a_listed_number_and_the_call_ends_transferred(
    api, agent_api, live_call, sip_fake
):
    response = agent_transfer(agent_api, live_call, DESK)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "call_id": str(live_call.id),
        "status": "completed",
        "end_reason": "transferred",
        "transfer_destination": DESK,
    }
    (request,) = sip_fake.calls("TransferSIPParticipant")
    assert request.identity_ok
    assert request.body["roomName"] == live_call.room_name
    assert request.body["participantIdentity"] == live_call.participant_identity
    assert request.body["transferTo"] == f"tel:{DESK}"
    detail = api.get(f"/api/v1/calls/{live_call.id}").json()
    assert (detail["status"], detail["end_reason"], detail["transfer_destination"]) == (
        "completed",
        "transferred",
        DESK,
    )
    assert transcript(api, live_call) == [("system", f"Call transferred to {DESK}.")]


@pytest.mark.parametrize("answer", ["empty", "reported"])
def test_a_transfer_livekit_answers_without_an_error_is_a_success_whatever_its_status(
    agent_api, live_call, sip_fake, answer
):
    """Released LiveKit servers answer a transfer that went through with an empty
    message (google.protobuf.Empty; only livekit/livekit 788d4c3, in no release, fills
    TransferSIPParticipantResponse, and LiveKit's SIP bridge reports nothing to fill it
    with): its status reads STS_TRANSFER_ONGOING, and no error means it completed."""
    sip_fake.transfer_answer = answer

    response = agent_transfer(agent_api, live_call, DESK)

    assert response.status_code == 200, response.content
    live_call.refresh_from_db()
    assert (live_call.status, live_call.end_reason) == ("completed", "transferred")


def test_a_transfer_livekit_reports_failed_without_an_error_is_502_and_the_caller_stays(
    agent_api, live_call, sip_fake
):
    sip_fake.transfer_answer = "failed"

    response = agent_transfer(agent_api, live_call, DESK)

    assert response.status_code == 502
    assert response.json()["errors"][0]["code"] == "transfer_failed"
    live_call.refresh_from_db()
    assert (live_call.status, live_call.end_reason) == ("active", None)


def test_the_callers_departure_webhook_arriving_first_still_ends_it_transferred(
    api, agent_api, live_call, sip_fake
):
    """The fake LiveKit posts the caller's participant_left before it answers the
    transfer, as LiveKit may: the webhook finds the transfer recorded on the call."""
    agent_transfer(agent_api, live_call, DESK)

    assert sip_fake.webhook_answers[-1] == 200
    live_call.refresh_from_db()
    assert (live_call.status, live_call.end_reason) == ("completed", "transferred")


def test_a_sip_uri_listed_in_the_tool_is_transferred_to_as_it_is(agent_api, live_call, sip_fake):
    response = agent_transfer(agent_api, live_call, PBX)

    assert response.status_code == 200, response.content
    (request,) = sip_fake.calls("TransferSIPParticipant")
    assert request.body["transferTo"] == PBX


def test_a_destination_the_workflow_does_not_list_is_400_and_nothing_is_asked(
    api, agent_api, live_call, sip_fake
):
    response = agent_transfer(agent_api, live_call, UNLISTED)

    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert (error["attr"], error["code"]) == ("destination", "destination_not_listed")
    assert sip_fake.calls("TransferSIPParticipant") == []
    live_call.refresh_from_db()
    assert (live_call.status, live_call.end_reason, live_call.hangup_requested_at) == (
        "active",
        None,
        None,
    )


def test_a_destination_of_another_tool_than_the_one_called_is_400(agent_api, live_call):
    response = agent_transfer(agent_api, live_call, DESK, tool="save_meal")

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "destination_not_listed"


def test_a_listed_number_in_a_country_staff_no_longer_allow_is_refused_by_the_guard(
    organization, agent_api, live_call, sip_fake
):
    Organization.objects.filter(pk=organization.pk).update(allowed_destination_countries=["GB"])

    response = agent_transfer(agent_api, live_call, DESK)

    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert (error["attr"], error["code"]) == ("destination", "destination_not_allowed")
    assert sip_fake.calls("TransferSIPParticipant") == []


def test_a_transfer_to_a_number_over_the_daily_cap_is_429_and_nothing_is_asked(
    agent_api, organization, live_call, sip_fake
):
    """The cap counts the numbers dialed today: the organization's outbound calls and
    its transfers to numbers."""
    Organization.objects.filter(pk=organization.pk).update(max_outbound_calls_per_day=2)
    CallFactory(organization=organization, channel="phone", direction="outbound")
    CallFactory(
        organization=organization,
        completed=True,
        end_reason="transferred",
        transfer_destination=DESK,
        hangup_requested_at=timezone.now(),
    )
    # Neither a transfer of yesterday nor one to a SIP address counts.
    for destination, at in ((DESK, timezone.now() - datetime.timedelta(days=1)), (PBX, None)):
        CallFactory(
            organization=organization,
            completed=True,
            end_reason="transferred",
            transfer_destination=destination,
            hangup_requested_at=at or timezone.now(),
        )

    response = agent_transfer(agent_api, live_call, DESK)

    assert response.status_code == 429, response.content
    assert response.json()["meta"] == {
        "limit": "outbound_calls_per_day",
        "outbound_calls_per_day": 2,
    }
    assert sip_fake.calls("TransferSIPParticipant") == []
    live_call.refresh_from_db()
    assert (live_call.status, live_call.end_reason, live_call.transfer_destination) == (
        "active",
        None,
        None,
    )


def test_a_transfer_to_a_number_within_the_daily_cap_counts_against_it(
    api, agent_api, organization, live_call, sip_fake
):
    """The cap's last place goes to the first transfer; the next caller's transfer to a
    number is refused, to a SIP address goes through."""
    Organization.objects.filter(pk=organization.pk).update(max_outbound_calls_per_day=1)
    transferred = agent_transfer(agent_api, live_call, DESK)
    room, _ = sip_fake.inbound_call(to=INBOUND_NUMBER, caller="+12025550178")
    next_call = Call.objects.get(room_name=room)

    refused = agent_transfer(agent_api, next_call, DESK)
    to_pbx = agent_transfer(agent_api, next_call, PBX)

    assert (transferred.status_code, refused.status_code, to_pbx.status_code) == (200, 429, 200)
    assert [r.body["transferTo"] for r in sip_fake.calls("TransferSIPParticipant")] == [
        f"tel:{DESK}",
        PBX,
    ]


def test_livekit_down_is_502_and_the_call_goes_on_unchanged(api, agent_api, live_call, sip_fake):
    sip_fake.fail("TransferSIPParticipant", "500")

    response = agent_transfer(agent_api, live_call, DESK)

    assert response.status_code == 502
    live_call.refresh_from_db()
    assert (
        live_call.status,
        live_call.end_reason,
        live_call.hangup_requested_at,
        live_call.transfer_destination,
    ) == ("active", None, None, None)
    assert transcript(api, live_call) == []


def test_a_destination_that_does_not_take_the_call_is_502_transfer_failed_and_the_caller_stays(
    agent_api, live_call, sip_fake
):
    sip_fake.transfer_outcomes[f"tel:{DESK}"] = sip.BUSY

    response = agent_transfer(agent_api, live_call, DESK)

    assert response.status_code == 502
    assert response.json()["errors"][0]["code"] == "transfer_failed"
    live_call.refresh_from_db()
    assert (live_call.status, live_call.end_reason) == ("active", None)
    assert live_call.participant_identity in sip_fake.rooms[live_call.room_name]


def test_a_failed_transfer_can_be_tried_again(agent_api, live_call, sip_fake):
    sip_fake.fail("TransferSIPParticipant", "500")
    assert agent_transfer(agent_api, live_call, DESK).status_code == 502
    sip_fake.failures.clear()

    assert agent_transfer(agent_api, live_call, DESK).status_code == 200


def test_an_ended_call_is_409(agent_api, live_call):
    assert agent_transfer(agent_api, live_call, DESK).status_code == 200

    response = agent_transfer(agent_api, live_call, DESK)

    assert response.status_code == 409
    assert response.json()["errors"][0]["code"] == "call_ended"


def test_the_customers_system_transfers_a_live_phone_call_to_a_listed_destination(api, live_call):
    response = api.post(
        f"/api/v1/calls/{live_call.id}/transfer", {"destination": PBX}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["status"], body["end_reason"], body["transfer_destination"]) == (
        str(live_call.id),
        "completed",
        "transferred",
        PBX,
    )


def test_the_customers_system_cannot_transfer_to_an_unlisted_destination(api, live_call):
    response = api.post(
        f"/api/v1/calls/{live_call.id}/transfer", {"destination": UNLISTED}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "destination_not_listed"


def test_a_web_call_is_409(api, organization, support):
    call = CallFactory(organization=organization, workflow=support, active=True)

    response = api.post(f"/api/v1/calls/{call.id}/transfer", {"destination": DESK}, format="json")

    assert response.status_code == 409
    assert response.json()["errors"][0]["code"] == "not_phone_call"


def test_another_organizations_call_is_404(outsider_api, live_call, sip_fake):
    response = outsider_api.post(
        f"/api/v1/calls/{live_call.id}/transfer", {"destination": DESK}, format="json"
    )

    assert response.status_code == 404
    assert sip_fake.calls("TransferSIPParticipant") == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"destination": 5},
        {"destination": "14155550188"},
        {"destination": "x" * 300},
        {"destination": f"{PBX}\n"},
    ],
)
def test_a_malformed_destination_is_400(api, live_call, body):
    response = api.post(f"/api/v1/calls/{live_call.id}/transfer", body, format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "destination"


@pytest.mark.postgres
def test_transfers_racing_on_one_call_transfer_it_once(client_key, live_call, sip_fake):
    """Five requests at once (the destination takes a moment to answer): one transfer
    reaches LiveKit, the others find it under way (409)."""
    from tests.test_phone_races import in_parallel

    sip_fake.transfer_outcomes[f"tel:{DESK}"] = sip.answer_after(0.5)
    url = f"/api/v1/calls/{live_call.id}/transfer"

    answers = in_parallel(
        5, client_key, lambda c: c.post(url, {"destination": DESK}, format="json")
    )

    assert sorted(a.status_code for a in answers) == [200] + [409] * 4
    codes = {a.json()["errors"][0]["code"] for a in answers if a.status_code == 409}
    assert codes <= {"call_ending", "call_ended"}
    assert len(sip_fake.calls("TransferSIPParticipant")) == 1
    live_call.refresh_from_db()
    assert (live_call.status, live_call.end_reason) == ("completed", "transferred")


@pytest.mark.postgres
def test_a_hang_up_racing_a_transfer_leaves_one_end(api, client_key, live_call, sip_fake):
    from tests.test_phone_races import in_parallel

    sip_fake.transfer_outcomes[f"tel:{DESK}"] = sip.answer_after(0.3)
    base = f"/api/v1/calls/{live_call.id}"

    requests = [
        lambda c: c.post(f"{base}/transfer", {"destination": DESK}, format="json"),
        lambda c: c.post(f"{base}/end"),
    ]

    answers = in_parallel(2, client_key, lambda c: requests.pop()(c))

    assert all(a.status_code in (200, 409, 502) for a in answers), [a.content for a in answers]
    live_call.refresh_from_db()
    assert live_call.status == "completed"
    assert live_call.end_reason in ("transferred", "api_request")
    lines = api.get(f"{base}/transcript").json()
    assert (live_call.end_reason == "transferred") == bool(lines)


def hang_up_during_the_transfer(sip_fake, client_key: str, call: Call) -> list:
    """LiveKit's transfer hook: the customer's POST /calls/{id}/end arrives while the
    destination rings (the transfer recorded, LiveKit asked)."""
    from django.db import connection

    from tests.conftest import bearer_client

    transfer = sip_fake._TransferSIPParticipant
    answers: list = []

    def hang_up_then_transfer(message, response_class):
        try:
            client = bearer_client(client_key)
            client.raise_request_exception = False
            answers.append(client.post(f"/api/v1/calls/{call.id}/end"))
        finally:
            connection.close()
        return transfer(message, response_class)

    sip_fake._TransferSIPParticipant = hang_up_then_transfer
    return answers


@pytest.mark.parametrize("delete_room", ["answers", "fails"])
def test_a_hang_up_during_a_transfer_is_409_and_the_transfer_ends_the_call(
    api, client_key, live_call, sip_fake, delete_room
):
    """The hang-up overwrote the transfer's record: a successful hang-up left a
    completed/api_request call naming the desk it was never transferred to, and a
    failing one (502) withdrew the transfer's record with its own, so the transfer's
    success ended the call user_hangup."""
    if delete_room == "fails":
        sip_fake.fail("DeleteRoom", "503")
    answers = hang_up_during_the_transfer(sip_fake, client_key, live_call)

    response = api.post(f"/api/v1/calls/{live_call.id}/transfer", {"destination": DESK})

    (hang_up,) = answers
    assert (hang_up.status_code, hang_up.json()["errors"][0]["code"]) == (
        409,
        "call_transferring",
    )
    assert sip_fake.calls("DeleteRoom") == []
    assert response.status_code == 200, response.content
    live_call.refresh_from_db()
    assert (live_call.status, live_call.end_reason, live_call.transfer_destination) == (
        "completed",
        "transferred",
        DESK,
    )


def test_a_transfer_left_half_way_gives_way_to_a_hang_up(api, live_call, sip_fake):
    """Its process died with the transfer recorded: every hang-up was 409 for as long as
    the call lasted (the record older than any transfer takes is left, not live)."""
    long_ago = timezone.now() - TRANSFER_LEFT_AFTER - datetime.timedelta(seconds=1)
    Call.objects.filter(pk=live_call.pk).update(
        hangup_requested_at=long_ago, end_reason="transferred", transfer_destination=DESK
    )

    response = api.post(f"/api/v1/calls/{live_call.id}/end")

    assert response.status_code == 200, response.content
    live_call.refresh_from_db()
    assert (live_call.status, live_call.end_reason, live_call.transfer_destination) == (
        "completed",
        "api_request",
        None,
    )
    assert len(sip_fake.calls("DeleteRoom")) == 1


@pytest.mark.parametrize(
    ("heard", "ended"),
    [
        ("participant_left", ("completed", "user_hangup")),
        ("room_finished", ("completed", "room_closed")),
    ],
)
def test_what_was_heard_while_a_transfer_failed_ends_the_call_as_what_it_was(
    api, agent_api, live_call, sip_fake, heard, ended
):
    """The caller hung up (or the room closed) while the desk rang; LiveKit then failed
    the transfer and the API answered 502, "the call unchanged". The webhook was taken
    for the transfer's end: the call read completed / transferred to the desk."""
    from livekit import api as livekit_api

    transfer = sip_fake._TransferSIPParticipant

    def heard_then_transfer(message, response_class):
        with sip_fake._lock:
            sip_fake.rooms[message.room_name].remove(message.participant_identity)
        caller = livekit_api.ParticipantInfo(
            identity=message.participant_identity,
            kind=livekit_api.ParticipantInfo.Kind.SIP,
            attributes={"sip.callStatus": "hangup"},
            disconnect_reason=livekit_api.DisconnectReason.CLIENT_INITIATED,
        )
        sip_fake.webhooks_send(heard, message.room_name, caller)
        return transfer(message, response_class)

    sip_fake._TransferSIPParticipant = heard_then_transfer

    response = agent_transfer(agent_api, live_call, DESK)

    assert response.status_code == 502
    assert sip_fake.webhook_answers[-1] == 200
    live_call.refresh_from_db()
    assert (live_call.status, live_call.end_reason, live_call.transfer_destination) == (
        *ended,
        None,
    )
    assert transcript(api, live_call) == []


def agent_reports_during_the_transfer(sip_fake, agent_key: str, call: Call, status: dict) -> list:
    """LiveKit's transfer hook: the agent's end report arrives while the desk rings."""
    from django.db import connection

    from tests.conftest import bearer_client

    transfer = sip_fake._TransferSIPParticipant
    answers: list = []

    def report_then_transfer(message, response_class):
        event = {"id": str(uuid.uuid4()), "type": "status", "timestamp": "2026-01-01T00:00:00Z"}
        try:
            client = bearer_client(agent_key)
            client.raise_request_exception = False
            answers.append(
                client.post(
                    f"/api/v1/agent/calls/{call.id}/events",
                    {"events": [event | status]},
                    format="json",
                )
            )
        finally:
            connection.close()
        return transfer(message, response_class)

    sip_fake._TransferSIPParticipant = report_then_transfer
    return answers


@pytest.mark.parametrize(
    ("status", "desk_answers", "ended"),
    [
        # The transfer failed: the call ends as the agent said, not transferred.
        ({"status": "completed"}, False, ("completed", "agent_hangup", None)),
        ({"status": "failed", "reason": "agent_error"}, False, ("failed", "agent_error", None)),
        # It succeeded: the agent's report does not take the transfer's place.
        ({"status": "failed", "reason": "agent_error"}, True, ("completed", "transferred", DESK)),
    ],
)
def test_the_agents_end_report_during_a_transfer_waits_for_the_transfers_result(
    agent_api, agent_key, live_call, sip_fake, status, desk_answers, ended
):
    if not desk_answers:
        sip_fake.transfer_outcomes[f"tel:{DESK}"] = sip.BUSY
    answers = agent_reports_during_the_transfer(sip_fake, agent_key, live_call, status)

    response = agent_transfer(agent_api, live_call, DESK)

    assert response.status_code == (200 if desk_answers else 502), response.content
    assert [answer.json() for answer in answers] == [{"accepted": 1, "duplicates": 0}]
    live_call.refresh_from_db()
    assert (live_call.status, live_call.end_reason, live_call.transfer_destination) == ended


def test_a_failed_transfer_ends_the_call_as_what_happened_first(
    agent_api, agent_key, live_call, sip_fake
):
    """While the desk rings the agent fails (its report arrives first), then the caller,
    left in silence, hangs up. Without a transfer the agent's report ends the call
    failed / agent_error (the first end wins); LiveKit's departures were applied before
    the agent's held reports whatever their order: completed / user_hangup."""
    from django.db import connection
    from livekit import api as livekit_api

    from tests.conftest import bearer_client

    sip_fake.transfer_outcomes[f"tel:{DESK}"] = sip.BUSY
    transfer = sip_fake._TransferSIPParticipant
    answers: list = []

    def agent_fails_then_caller_leaves(message, response_class):
        event = {
            "id": str(uuid.uuid4()),
            "type": "status",
            "timestamp": "2026-01-01T00:00:00Z",
            "status": "failed",
            "reason": "agent_error",
        }
        try:
            client = bearer_client(agent_key)
            client.raise_request_exception = False
            answers.append(
                client.post(
                    f"/api/v1/agent/calls/{live_call.id}/events", {"events": [event]}, format="json"
                )
            )
        finally:
            connection.close()
        with sip_fake._lock:
            sip_fake.rooms[message.room_name].remove(message.participant_identity)
        caller = livekit_api.ParticipantInfo(
            identity=message.participant_identity,
            kind=livekit_api.ParticipantInfo.Kind.SIP,
            attributes={"sip.callStatus": "hangup"},
            disconnect_reason=livekit_api.DisconnectReason.CLIENT_INITIATED,
        )
        sip_fake.webhooks_send("participant_left", message.room_name, caller)
        return transfer(message, response_class)

    sip_fake._TransferSIPParticipant = agent_fails_then_caller_leaves

    response = agent_transfer(agent_api, live_call, DESK)

    assert response.status_code == 502, response.content
    assert [a.json() for a in answers] == [{"accepted": 1, "duplicates": 0}]
    assert sip_fake.webhook_answers[-1] == 200
    live_call.refresh_from_db()
    assert (live_call.status, live_call.end_reason) == ("failed", "agent_error")


def test_a_transfer_the_destination_refused_counts_against_the_daily_cap(
    agent_api, organization, live_call, sip_fake
):
    """The carrier dialed the desk (busy): a number dialed that day, as a busy outbound
    call's is. Uncounted, a model (or a prompt injection) could ring numbers all day at
    the per-minute rate."""
    Organization.objects.filter(pk=organization.pk).update(max_outbound_calls_per_day=1)
    sip_fake.transfer_outcomes[f"tel:{DESK}"] = sip.BUSY

    first = agent_transfer(agent_api, live_call, DESK)
    second = agent_transfer(agent_api, live_call, DESK)

    assert (first.status_code, first.json()["errors"][0]["code"]) == (502, "transfer_failed")
    assert second.status_code == 429, second.content
    assert len(sip_fake.calls("TransferSIPParticipant")) == 1


def test_a_transfer_nobody_answers_is_transfer_failed_and_counts_against_the_daily_cap(
    agent_api, organization, live_call, sip_fake
):
    """LiveKit gives up a transfer that rang out with no SIP status: its wait for the
    SIP bridge runs out (Twirp deadline_exceeded, "request timed out"). The desk's
    phone rang: a number dialed that day, and a destination that did not take it."""
    version = live_call.workflow_version
    settings_ = {**version.settings, "ring_timeout_seconds": 5}
    type(version).objects.filter(pk=version.pk).update(
        definition={**version.definition, "settings": settings_}
    )
    Organization.objects.filter(pk=organization.pk).update(max_outbound_calls_per_day=1)
    sip_fake.transfer_outcomes[f"tel:{DESK}"] = sip.answer_after(8)

    first = agent_transfer(agent_api, live_call, DESK)
    second = agent_transfer(agent_api, live_call, DESK)

    assert (first.status_code, first.json()["errors"][0]["code"]) == (502, "transfer_failed")
    assert second.status_code == 429, second.content
    (request,) = sip_fake.calls("TransferSIPParticipant")
    assert request.body["ringingTimeout"] == "5s"
    live_call.refresh_from_db()
    assert (live_call.status, live_call.end_reason) == ("active", None)


def test_a_transfer_livekit_never_tried_does_not_count_against_the_daily_cap(
    agent_api, organization, live_call, sip_fake
):
    Organization.objects.filter(pk=organization.pk).update(max_outbound_calls_per_day=1)
    sip_fake.fail("TransferSIPParticipant", "500")
    assert agent_transfer(agent_api, live_call, DESK).status_code == 502
    sip_fake.fail("TransferSIPParticipant", None)

    assert agent_transfer(agent_api, live_call, DESK).status_code == 200


def test_a_transfer_refused_by_the_daily_cap_does_not_take_the_per_minute_rate(
    agent_api, organization, live_call, sip_fake
):
    """A 429 over the daily cap dials nothing: it must not also use up the
    organization's outbound calls per minute."""
    Organization.objects.filter(pk=organization.pk).update(
        max_outbound_calls_per_minute=1, max_outbound_calls_per_day=1
    )
    CallFactory(organization=organization, channel="phone", direction="outbound")
    CallFactory(organization=organization, channel="phone", direction="outbound")

    refused = agent_transfer(agent_api, live_call, DESK)
    assert refused.status_code == 429, refused.content
    assert refused.json()["meta"]["limit"] == "outbound_calls_per_day"

    Organization.objects.filter(pk=organization.pk).update(max_outbound_calls_per_day=10)
    response = agent_transfer(agent_api, live_call, DESK)

    assert response.status_code == 200, response.content


def test_a_transfer_refused_409_while_the_call_is_ending_does_not_take_the_per_minute_rate(
    agent_api, organization, live_call, sip_fake, support
):
    Organization.objects.filter(pk=organization.pk).update(max_outbound_calls_per_minute=1)
    Call.objects.filter(pk=live_call.pk).update(hangup_requested_at=timezone.now())

    refused = agent_transfer(agent_api, live_call, DESK)
    assert refused.status_code == 409, refused.content

    room, _ = sip_fake.inbound_call(to=INBOUND_NUMBER, caller="+14155550123")
    other = Call.objects.get(room_name=room)
    response = agent_transfer(agent_api, other, DESK)

    assert response.status_code == 200, response.content


@pytest.mark.postgres
def test_a_transfer_waits_for_the_minutes_rate_before_taking_the_organizations_row(
    agent_api, organization, live_call, sip_fake
):
    """A phone call created with an Idempotency-Key runs in one transaction: it takes
    the organization's per-minute rate (its row), then, inserting the call, the
    organization's row. A transfer that took the organization's row before the rate's
    deadlocked with it (one of them a 500). Here a transaction holds the rate while the
    transfer starts, and must still get the organization's row."""
    answers: list[object] = []

    def transfer() -> None:
        try:
            answers.append(agent_transfer(agent_api, live_call, DESK))
        except BaseException as exc:
            answers.append(exc)
        finally:
            connection.close()

    other = threading.Thread(target=transfer)
    with transaction.atomic():
        guard.outbound_rate_take(organization=organization)
        other.start()
        deadline = time.monotonic() + 10
        while not a_session_waits_for_a_lock():
            assert time.monotonic() < deadline, "the transfer never waited"
            time.sleep(0.02)
        # What the create takes next; NOWAIT fails if the transfer holds it.
        Organization.objects.select_for_update(nowait=True).filter(pk=organization.pk).exists()
    other.join(30)

    (answer,) = answers
    assert answer.status_code == 200, answer.content


def test_a_web_worker_outlives_the_longest_transfer_wait(monkeypatch):
    """A transfer waits for LiveKit within its request while the destination rings. A
    sync gunicorn worker (the default: one thread) silent past `timeout` is killed,
    leaving the transfer recorded half-way: the caller's departure and the agent's end
    held, a hang-up 409 `call_transferring`, for minutes."""
    monkeypatch.delenv("GUNICORN_TIMEOUT", raising=False)
    monkeypatch.delenv("GUNICORN_GRACEFUL_TIMEOUT", raising=False)
    config = runpy.run_path(str(settings.BASE_DIR / "gunicorn.conf.py"))

    assert config["timeout"] > RING_TIMEOUT_BOUNDS[1] + DIAL_TIMEOUT_MARGIN_SECONDS
    # A restart (a deploy) waits for it as long.
    assert config["graceful_timeout"] > RING_TIMEOUT_BOUNDS[1] + DIAL_TIMEOUT_MARGIN_SECONDS


@pytest.mark.postgres
def test_a_transfer_meeting_a_hang_up_withdrawn_meanwhile_transfers_the_caller(
    api, agent_api, live_call, sip_fake
):
    """The transfer found a hang-up recorded, which LiveKit then failed (withdrawn, a
    502, "the call stays as it was"): the call went on, yet the agent was told 409
    `call_ending` and the caller never reached the person. (The hang-up is recorded,
    then withdrawn, from the database driver's hook around the transfer's record.)"""

    def elsewhere(**changes) -> None:
        def run() -> None:
            from django.db import connection as own

            try:
                Call.objects.filter(pk=live_call.pk).update(**changes)
            finally:
                own.close()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()

    def around_the_record(execute, sql, params, many, context):
        record = sql.startswith('UPDATE "calls_call" SET "hangup_requested_at"')
        if record and not met.is_set():
            met.set()
            elsewhere(hangup_requested_at=timezone.now(), end_reason="api_request")
            result = execute(sql, params, many, context)
            elsewhere(hangup_requested_at=None, end_reason=None)
            return result
        return execute(sql, params, many, context)

    met = threading.Event()
    with connection.execute_wrapper(around_the_record):
        response = agent_transfer(agent_api, live_call, DESK)

    assert met.is_set()
    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["end_reason"]) == (
        "completed",
        "transferred",
    )
    assert len(sip_fake.calls("TransferSIPParticipant")) == 1


@pytest.mark.postgres
def test_an_end_report_that_waited_for_the_transfers_record_still_ends_a_failed_transfer(
    agent_key, agent_api, live_call, sip_fake
):
    """The agent's report was stamped when its request began, then reached the call's
    row after the transfer had recorded itself there (waiting for the row the record
    held): held for the transfer's result, yet stamped before the transfer began, and
    the failed transfer, applying what arrived since it began, never applied it: the
    call the agent had ended stayed `active`. (The transfer starts from the database
    driver's hook, as the report is about to lock the call.)"""
    from tests.conftest import bearer_client

    sip_fake.transfer_outcomes[f"tel:{DESK}"] = sip.BUSY
    transfer = sip_fake._TransferSIPParticipant
    recorded, reported = threading.Event(), threading.Event()
    answers: list = []

    def transfer_after_the_report(message, response_class):
        recorded.set()
        reported.wait(10)
        return transfer(message, response_class)

    sip_fake._TransferSIPParticipant = transfer_after_the_report

    def transfer_elsewhere() -> None:
        client = bearer_client(agent_key)
        client.raise_request_exception = False
        try:
            answers.append(agent_transfer(client, live_call, DESK).status_code)
        finally:
            connection.close()

    thread = threading.Thread(target=transfer_elsewhere)

    def before_the_lock(execute, sql, params, many, context):
        if sql.startswith('UPDATE "calls_call" SET "last_event_at"') and not thread.is_alive():
            thread.start()
            assert recorded.wait(10)
        return execute(sql, params, many, context)

    event = {"id": str(uuid.uuid4()), "type": "status", "timestamp": "2026-01-01T00:00:00Z"}
    with connection.execute_wrapper(before_the_lock):
        response = agent_api.post(
            f"/api/v1/agent/calls/{live_call.id}/events",
            {"events": [event | {"status": "completed"}]},
            format="json",
        )
    reported.set()
    thread.join(20)

    assert response.json() == {"accepted": 1, "duplicates": 0}
    assert answers == [502]
    live_call.refresh_from_db()
    assert (live_call.status, live_call.end_reason) == ("completed", "agent_hangup")
