"""A transfer to a human meeting what else happens to the call while the destination
rings: another transfer, the customer's hang-up (recorded, failed, withdrawn), the
agent's end report, LiveKit's webhooks of the caller leaving or the room closing. One
end wins, and it is the one that happened (DESIGN.md "Phone calls", Transfer to a
human). A real inbound call through the fake LiveKit, as in test_call_transfer.py."""

from __future__ import annotations

import datetime
import threading
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from calls.models import Call
from calls.services import TRANSFER_LEFT_AFTER
from tests import fake_livekit_sip as sip
from tests import transfer
from tests.transfer import DESK, agent_transfer, transcript

pytestmark = pytest.mark.django_db(transaction=True)

# The shared fixtures (tests/transfer.py), bound here for pytest to find.
_502_is_a_status = transfer._502_is_a_status
support = transfer.support
live_call = transfer.live_call


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
