"""Transfer to a human: the agent's transfer tool (`POST /api/v1/agent/calls/{id}/transfer`)
and the customer's system (`POST /api/v1/calls/{id}/transfer`) hand a live phone call's
caller to a destination listed in a `transfer` tool of the call's workflow version,
through the toll-fraud guard, with LiveKit's TransferSIPParticipant (DESIGN.md "Phone
calls", Transfer to a human). A real inbound call through the fake LiveKit, whose
webhooks reach the real webhook view on its own thread, as LiveKit's do."""

from __future__ import annotations

import datetime
import runpy
import threading
import time

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Organization
from calls.models import Call
from telephony import guard
from tests import fake_livekit_sip as sip
from tests import transfer
from tests.factories import CallFactory
from tests.locks import a_session_waits_for_a_lock
from tests.phone import INBOUND_NUMBER
from tests.transfer import DESK, PBX, agent_transfer, transcript
from voicecalls.livekit_sip import DIAL_TIMEOUT_MARGIN_SECONDS
from workflows.settings import RING_TIMEOUT_BOUNDS

pytestmark = pytest.mark.django_db(transaction=True)

UNLISTED = "+14155550199"

# The shared fixtures (tests/transfer.py), bound here for pytest to find.
_502_is_a_status = transfer._502_is_a_status
support = transfer.support
live_call = transfer.live_call


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
