"""An outbound phone call hung up while it is being dialed (through the API, the real
`dial` worker and the fake LiveKit's SIP service): before the dial job runs, as it
claims the call, while the phone rings, or as the callee answers, the call ends as
requested, no phone rings after, and none is left in its room; a hang-up that failed
or was withdrawn lets the call be dialed."""

from __future__ import annotations

import datetime
import threading
import time
import uuid

import pytest
from django.utils import timezone

from calls.models import Call
from telephony import dialing
from tests import fake_livekit
from tests import fake_livekit_sip as sip
from tests.phone import CALLEE, CALLS, phone_ready, run_dial_worker
from tests.tasks import run_task_worker
from tests.test_phone_calls import create, detail, outcome

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def phone(organization, workflow, sip_fake):
    """An organization that may call the US from its own trunk, with the demo workflow."""
    return phone_ready(organization)


def test_ending_a_ringing_call_cancels_it_and_it_ends_as_requested(
    api, phone, sip_fake, client_key
) -> None:
    sip_fake.sip_outcomes[CALLEE] = sip.answer_after(10)
    answers: list[int] = []

    def on_ringing(room: str) -> None:
        from django.db import connection

        from tests.conftest import bearer_client

        try:
            call = Call.objects.get(pk=room.removeprefix("call-"))
            answers.append(bearer_client(client_key).post(f"{CALLS}/{call.id}/end").status_code)
        finally:
            connection.close()

    sip_fake.on_ringing = on_ringing
    call_id = create(api)["call_id"]
    started = timezone.now()

    run_dial_worker()

    assert answers == [200]
    assert timezone.now() - started < datetime.timedelta(seconds=8)
    assert outcome(detail(api, call_id)) == ("completed", "api_request", None, None)


def test_a_hang_up_while_ringing_ends_as_requested_when_the_cancelled_dial_answers_first(
    api, phone, sip_fake, client_key
) -> None:
    """LiveKit cancels the ringing as it deletes the room; its dial may fail
    before its DeleteRoom does, so the dial job sees the failure before the hang-up
    ends the call."""
    sip_fake.sip_outcomes[CALLEE] = sip.answer_after(10)
    delete_room = sip_fake._DeleteRoom

    def delete_room_answering_late(message, response_class):
        answer = delete_room(message, response_class)  # the ringing is cancelled now
        time.sleep(0.6)
        return answer

    sip_fake._DeleteRoom = delete_room_answering_late
    answers: list[int] = []
    threads: list[threading.Thread] = []

    def hang_up(call_id: str) -> None:
        from django.db import connection

        from tests.conftest import bearer_client

        try:
            answers.append(bearer_client(client_key).post(f"{CALLS}/{call_id}/end").status_code)
        finally:
            connection.close()

    def on_ringing(room: str) -> None:
        threads.append(threading.Thread(target=hang_up, args=(room.removeprefix("call-"),)))
        threads[-1].start()
        time.sleep(0.2)  # the hang-up is recorded and LiveKit asked

    sip_fake.on_ringing = on_ringing
    call_id = create(api)["call_id"]

    run_dial_worker()
    for thread in threads:
        thread.join()

    assert answers == [200]
    assert outcome(detail(api, call_id)) == ("completed", "api_request", None, None)


def test_a_call_ended_before_its_dial_job_ran_is_never_dialed(api, phone, sip_fake) -> None:
    call_id = create(api)["call_id"]
    assert api.post(f"{CALLS}/{call_id}/end").status_code == 200

    run_dial_worker()

    assert sip_fake.calls("CreateSIPParticipant") == []
    assert sip_fake.calls("CreateDispatch") == []
    assert outcome(detail(api, call_id)) == ("completed", "api_request", None, None)


def hang_up_meeting_the_dial_job(sip_fake, call_id: str, *, livekit_fails: bool) -> None:
    """The dial job starts while the hang-up of the pending call asks LiveKit to delete
    its room (recorded, not yet ended)."""
    delete_room = sip_fake._DeleteRoom

    def delete_room_while_the_dial_job_starts(message, response_class):
        from django.db import connection

        try:
            dialing.phone_call_dial(call_id=uuid.UUID(call_id))
        finally:
            connection.close()
        if livekit_fails:
            return fake_livekit._error(503, "unavailable", "LiveKit is unavailable")
        return delete_room(message, response_class)

    sip_fake._DeleteRoom = delete_room_while_the_dial_job_starts


def test_a_phone_hung_up_while_its_dial_job_starts_is_never_dialed(api, phone, sip_fake) -> None:
    """The job saw the call still `pending` and dialed it: the callee answered into a
    call that had just ended, in a room nobody closed."""
    call_id = create(api)["call_id"]
    hang_up_meeting_the_dial_job(sip_fake, call_id, livekit_fails=False)

    assert api.post(f"{CALLS}/{call_id}/end").status_code == 200
    time.sleep(dialing.HANGUP_RECHECK_SECONDS + 0.1)
    run_dial_worker()  # the job looks again once the hang-up went one way or the other

    assert sip_fake.calls("CreateSIPParticipant") == []
    assert outcome(detail(api, call_id)) == ("completed", "api_request", None, None)


def test_a_hang_up_livekit_fails_while_the_dial_job_waits_lets_the_call_be_dialed(
    api, phone, sip_fake
) -> None:
    """The hang-up answered 502, the call unchanged: it is dialed after all."""
    api.raise_request_exception = False
    call_id = create(api)["call_id"]
    hang_up_meeting_the_dial_job(sip_fake, call_id, livekit_fails=True)

    assert api.post(f"{CALLS}/{call_id}/end").status_code == 502
    assert sip_fake.calls("CreateSIPParticipant") == []
    time.sleep(dialing.HANGUP_RECHECK_SECONDS + 0.1)
    run_dial_worker()

    assert len(sip_fake.calls("CreateSIPParticipant")) == 1
    assert detail(api, call_id)["status"] == "active"


def test_a_hang_up_left_half_way_ends_its_pending_call_when_the_dial_job_comes(
    api, phone, sip_fake
) -> None:
    """Recorded, never carried out (its process died): the job ends the call as asked."""
    call_id = create(api)["call_id"]
    long_ago = timezone.now() - datetime.timedelta(seconds=dialing.HANGUP_STALE_SECONDS + 1)
    Call.objects.filter(pk=call_id).update(hangup_requested_at=long_ago, end_reason="api_request")

    run_dial_worker()

    assert sip_fake.calls("CreateSIPParticipant") == []
    assert outcome(detail(api, call_id)) == ("completed", "api_request", None, None)


def test_a_hang_up_after_the_dial_job_claimed_the_call_rings_no_phone(
    api, client_key, phone, sip_fake
) -> None:
    """The customer hung up just after the dial job claimed the call (it is
    `connecting`) and before it dialed: the room did not exist yet, so deleting it was
    "already gone", and the call ended completed/api_request. The job went on, created
    the room and dialed: the phone rang and was answered in a room nobody closes."""
    from django.db import connection

    from tests.conftest import bearer_client

    dispatch = sip_fake._CreateDispatch
    ends: list[int] = []

    def hang_up_then_dispatch(message, response_class):
        try:
            client = bearer_client(client_key)
            ends.append(
                client.post(f"{CALLS}/{message.room.removeprefix('call-')}/end").status_code
            )
        finally:
            connection.close()
        return dispatch(message, response_class)

    sip_fake._CreateDispatch = hang_up_then_dispatch
    call_id = create(api)["call_id"]

    run_dial_worker()

    assert ends == [200]
    assert outcome(detail(api, call_id)) == ("completed", "api_request", None, None)
    rang = bool(sip_fake.calls("CreateSIPParticipant"))
    callee_left_in_room = f"user-{call_id}" in sip_fake.rooms.get(f"call-{call_id}", [])
    assert (rang, callee_left_in_room) == (False, False)


def test_a_callee_who_answers_a_call_hung_up_while_dialing_is_not_left_in_its_room(
    api, client_key, phone, sip_fake
) -> None:
    """The hang-up came after the last check before dialing, with no room yet to
    delete; the dial then made the room and the callee answered into a call already
    `completed`. The answer closes the room."""
    from django.db import connection

    from tests.conftest import bearer_client

    dial = sip_fake._CreateSIPParticipant
    ends: list[int] = []

    def hang_up_then_dial(message, response_class):
        try:
            client = bearer_client(client_key)
            call_id = message.room_name.removeprefix("call-")
            ends.append(client.post(f"{CALLS}/{call_id}/end").status_code)
        finally:
            connection.close()
        return dial(message, response_class)

    sip_fake._CreateSIPParticipant = hang_up_then_dial
    call_id = create(api)["call_id"]

    run_dial_worker()
    answered_into = list(sip_fake.rooms.get(f"call-{call_id}", []))
    run_task_worker("default")  # where rooms are closed

    assert ends == [200]
    assert outcome(detail(api, call_id)) == ("completed", "api_request", None, None)
    assert answered_into == [f"user-{call_id}"]
    assert f"call-{call_id}" not in sip_fake.rooms


@pytest.mark.parametrize("settled", ["withdrawn", "left half-way"])
def test_a_hang_up_in_flight_when_the_dial_job_would_dial_is_waited_for(
    api, phone, sip_fake, livekit_gives_up_fast, monkeypatch, settled
) -> None:
    """A hang-up recorded while the job dispatched the agent, whose room deletion
    LiveKit then failed (withdrawn, a 502: "the call stays as it was"): the job gave up
    for good and closed the room, and the call never rang. It waits for the hang-up,
    then dials; one never settled (its process died) ends the call as it asked."""
    from django.db import connection

    # The wait is the longer of these and LiveKit's timeout + 5 s (livekit_gives_up_fast).
    monkeypatch.setattr(dialing, "HANGUP_SETTLE_SECONDS", 1.0, raising=False)
    dispatch = sip_fake._CreateDispatch

    def withdraw(call_id: str) -> None:
        try:
            Call.objects.filter(pk=call_id).update(hangup_requested_at=None, end_reason=None)
        finally:
            connection.close()

    def hang_up_in_flight_then_dispatch(message, response_class):
        call_id = message.room.removeprefix("call-")
        try:
            Call.objects.filter(pk=call_id).update(
                hangup_requested_at=timezone.now(), end_reason="api_request"
            )
        finally:
            connection.close()
        if settled == "withdrawn":
            threading.Timer(0.3, withdraw, args=[call_id]).start()
        return dispatch(message, response_class)

    sip_fake._CreateDispatch = hang_up_in_flight_then_dispatch
    call_id = create(api)["call_id"]

    run_dial_worker()

    rang = bool(sip_fake.calls("CreateSIPParticipant"))
    if settled == "withdrawn":
        assert (rang, detail(api, call_id)["status"]) == (True, "active")
    else:
        ended = outcome(detail(api, call_id))[:2]
        assert (rang, ended) == (False, ("completed", "api_request"))


def test_a_hang_up_withdrawn_just_as_the_settle_wait_runs_out_is_not_applied(
    api, phone, sip_fake, monkeypatch
) -> None:
    """The dial job read the hang-up still recorded, then (before it ended the call) the
    hang-up's LiveKit request failed and withdrew it: the customer was told the call
    stays as it was (502). The job must not end the call as that withdrawn hang-up asked."""
    from django.db import connection

    dispatch = sip_fake._CreateDispatch
    ids: list[str] = []

    def hang_up_in_flight_then_dispatch(message, response_class):
        call_id = message.room.removeprefix("call-")
        ids.append(call_id)
        try:
            Call.objects.filter(pk=call_id).update(
                hangup_requested_at=timezone.now(), end_reason="api_request"
            )
        finally:
            connection.close()
        return dispatch(message, response_class)

    class Clock:
        """time for dialing: the deadline check right after a read finds the hang-up
        still recorded is where call_end's except branch withdraws it."""

        calls = 0

        def monotonic(self) -> float:
            Clock.calls += 1
            if Clock.calls == 1:
                return 0.0  # the deadline is computed
            # (call_end: LiveKit failed, the hang-up is withdrawn, 502 to the customer)
            Call.objects.filter(pk=ids[0]).update(hangup_requested_at=None, end_reason=None)
            return 1e9  # ... just as the wait ran out

        def sleep(self, seconds: float) -> None:
            time.sleep(seconds)

    monkeypatch.setattr(dialing, "time", Clock())
    sip_fake._CreateDispatch = hang_up_in_flight_then_dispatch
    call_id = create(api)["call_id"]

    run_dial_worker()

    call = Call.objects.get(pk=call_id)
    assert call.hangup_requested_at is None  # withdrawn
    rang = bool(sip_fake.calls("CreateSIPParticipant"))
    assert (rang, call.status, call.end_reason) == (True, "active", None)


def test_a_hang_up_recorded_and_withdrawn_as_the_dial_job_claims_the_call_lets_it_be_dialed(
    api, phone, sip_fake
) -> None:
    """The job's claim found a hang-up recorded (after the job read the call), then
    looked whether it still was: LiveKit had failed it meanwhile (withdrawn, a 502, "the
    call stays as it was"), so the job gave up without looking again, and the call was
    never dialed: it failed `dial_timeout` at its deadline. (The hang-up is recorded,
    then withdrawn, from the database driver's hook around the claim.)"""
    from django.db import connection

    call_id = create(api)["call_id"]

    def elsewhere(**changes) -> None:
        def run() -> None:
            from django.db import connection as own

            try:
                Call.objects.filter(pk=call_id).update(**changes)
            finally:
                own.close()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()

    def around_the_claim(execute, sql, params, many, context):
        claim = sql.startswith('UPDATE "calls_call" SET "dial_attempted_at"')
        if claim:
            elsewhere(hangup_requested_at=timezone.now(), end_reason="api_request")
        result = execute(sql, params, many, context)
        if claim:
            elsewhere(hangup_requested_at=None, end_reason=None)
        return result

    with connection.execute_wrapper(around_the_claim):
        run_dial_worker()
    assert sip_fake.calls("CreateSIPParticipant") == []
    time.sleep(dialing.HANGUP_RECHECK_SECONDS + 0.1)
    run_dial_worker()

    assert len(sip_fake.calls("CreateSIPParticipant")) == 1
    assert detail(api, call_id)["status"] == "active"
