"""Outbound phone calls through the API, the real `dial` worker and the fake LiveKit's
SIP service (tests/fake_livekit_sip.py): each scripted outcome ends in its status and
end reason, with the SIP status kept (DESIGN.md "Phone calls"). Hung up while being
dialed: tests/test_phone_call_hang_ups.py."""

from __future__ import annotations

import datetime
import json
import time
import uuid

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone
from livekit import api as livekit_api

from calls.models import Call
from telephony.tasks import phone_call_dial
from tests import fake_livekit_sip as sip
from tests.livekit_samples import send
from tests.phone import CALLEE, CALLER, CALLS, phone_ready, run_dial_worker
from tests.tasks import run_task_worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def phone(organization, workflow, sip_fake):
    """An organization that may call the US from its own trunk, with the demo workflow."""
    return phone_ready(organization)


def create(api, number: str = CALLEE, **extra) -> dict:
    response = api.post(
        CALLS, {"workflow_slug": "daily-call", "phone_number": number, **extra}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def detail(api, call_id: str) -> dict:
    return api.get(f"{CALLS}/{call_id}").json()


def outcome(body: dict) -> tuple:
    return body["status"], body["end_reason"], body["sip_status_code"], body["sip_status"]


def test_a_phone_call_is_placed_when_no_configured_key_opens_its_trunk_password(
    api, phone, settings
) -> None:
    """The password lives on in LiveKit; a fallback removed before `rotate_provider_keys`
    ran (or a mistyped CRYPTOGRAPHY_KEY) must not stop the organization's calls."""
    settings.CRYPTOGRAPHY_KEY = "a-key-the-password-was-not-written-with"

    body = create(api)

    assert body["status"] == "pending"


def test_a_phone_call_is_answered_pending_at_once_with_a_listen_only_token(api, phone) -> None:
    body = create(api)

    call = Call.objects.get(pk=body["call_id"])
    assert body == {
        "call_id": str(call.id),
        "room_name": f"call-{call.id}",
        "livekit_url": settings.LIVEKIT_URL,
        "token": body["token"],
        "status": "pending",
        "channel": "phone",
    }
    claims = livekit_api.TokenVerifier(
        settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET
    ).verify(body["token"])
    assert claims.identity == f"monitor-{call.id}"
    assert claims.video.room == f"call-{call.id}"
    assert claims.video.hidden is True
    assert claims.video.can_subscribe is True
    assert not claims.video.can_publish
    assert not claims.video.can_publish_data
    assert claims.room_config is None
    assert (call.direction, call.phone_number, call.from_number) == ("outbound", CALLEE, CALLER)


def test_a_fresh_token_for_a_phone_call_is_listen_only_too(api, phone) -> None:
    call_id = create(api)["call_id"]

    response = api.post(f"{CALLS}/{call_id}/token")

    assert response.status_code == 200
    assert response.json()["channel"] == "phone"
    claims = livekit_api.TokenVerifier(
        settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET
    ).verify(response.json()["token"])
    assert (claims.identity, claims.video.can_publish) == (f"monitor-{call_id}", False)


def test_web_calls_say_their_channel_is_web(api, workflow) -> None:
    body = api.post(CALLS, {"workflow_slug": "daily-call"}, format="json").json()

    assert body["channel"] == "web"
    assert detail(api, body["call_id"])["channel"] == "web"
    assert detail(api, body["call_id"])["phone_number"] is None


def test_the_dial_job_dispatches_the_agent_then_dials_the_callee_and_answered_is_active(
    api, phone, sip_fake
) -> None:
    call_id = create(api)["call_id"]

    run_dial_worker()

    (dispatch,) = sip_fake.calls("CreateDispatch")
    assert dispatch.identity_ok
    assert dispatch.body["room"] == f"call-{call_id}"
    assert json.loads(dispatch.body["metadata"]) == {"call_id": call_id}
    (dial,) = sip_fake.calls("CreateSIPParticipant")
    assert dial.identity_ok
    assert dial.body == {
        "sipTrunkId": phone.livekit_trunk_id,
        "sipCallTo": CALLEE,
        "sipNumber": CALLER,
        "roomName": f"call-{call_id}",
        "participantIdentity": f"user-{call_id}",
        "ringingTimeout": "30s",
        # A backstop past the call's own 1800 s, counted from the dial (ring + grace).
        "maxCallDuration": "1890s",
        "waitUntilAnswered": True,
    }
    body = detail(api, call_id)
    assert outcome(body) == ("active", None, None, None)
    assert (body["channel"], body["direction"]) == ("phone", "outbound")
    assert (body["phone_number"], body["from_number"]) == (CALLEE, CALLER)
    assert sip_fake.webhook_answers == [200]  # participant_joined while ringing


@pytest.mark.parametrize(
    ("scripted", "end_reason"),
    [
        (sip.BUSY, "busy"),
        (sip.NO_ANSWER, "no_answer"),
        (sip.REJECT, "rejected"),
        (sip.INVALID, "invalid_number"),
        (sip.CARRIER_ERROR, "sip_error"),
    ],
    ids=["busy-486", "no-answer-480", "reject-603", "invalid-404", "carrier-503"],
)
def test_a_failed_dial_ends_failed_with_the_reason_of_its_sip_status(
    api, phone, sip_fake, scripted, end_reason
) -> None:
    sip_fake.sip_outcomes[CALLEE] = scripted
    call_id = create(api)["call_id"]

    run_dial_worker()

    body = detail(api, call_id)
    assert outcome(body) == ("failed", end_reason, scripted.sip_code, scripted.sip_status)
    assert body["end_reason_detail"] is None  # the SIP status says it
    # The SIP participant joined while ringing and left: both webhooks accepted, and
    # its departure did not change the dial's reason.
    assert sip_fake.webhook_answers == [200, 200]


def test_a_failed_dial_whose_sip_reason_phrase_holds_a_nul_ends_failed_with_it_shown(
    api, phone, sip_fake
) -> None:
    """The reason phrase is the carrier's text: with a NUL in it, PostgreSQL refused the
    call's update, and the call stayed `connecting` (its room open) until it timed out."""
    sip_fake.sip_outcomes[CALLEE] = sip.SipOutcome(486, "Busy\x00Here")
    call_id = create(api)["call_id"]

    run_dial_worker()

    assert outcome(detail(api, call_id)) == ("failed", "busy", 486, "Busy\ufffdHere")


def test_the_phone_ringing_is_connecting_and_only_the_answer_makes_it_active(
    api, phone, sip_fake
) -> None:
    sip_fake.sip_outcomes[CALLEE] = sip.answer_after(0.5)
    seen: list[str] = []

    def on_ringing(room: str) -> None:
        from django.db import connection

        try:
            seen.append(Call.objects.get(pk=room.removeprefix("call-")).status)
        finally:
            connection.close()

    sip_fake.on_ringing = on_ringing
    call_id = create(api)["call_id"]

    run_dial_worker()

    assert seen == ["connecting"]
    assert detail(api, call_id)["status"] == "active"


def test_a_phone_nobody_answers_within_the_ringing_timeout_is_no_answer(
    api, phone, sip_fake, workflow
) -> None:
    version = workflow.current_version
    definition = {**version.definition, "settings": {**version.settings, "ring_timeout_seconds": 5}}
    type(version).objects.filter(pk=version.pk).update(definition=definition)
    sip_fake.sip_outcomes[CALLEE] = sip.answer_after(8)
    call_id = create(api)["call_id"]

    run_dial_worker()

    (dial,) = sip_fake.calls("CreateSIPParticipant")
    assert dial.body["ringingTimeout"] == "5s"
    # LiveKit says no SIP status for it: its SIP bridge gave up the INVITE itself.
    assert outcome(detail(api, call_id)) == ("failed", "no_answer", None, None)


def test_a_dial_starting_late_rings_only_for_what_is_left_of_the_start_delay(
    api, phone, sip_fake
) -> None:
    """An answer after the start delay could not make the call active: the callee talked
    to the agent on a call shown `connecting`, until expire_calls cut them off."""
    sip_fake.sip_outcomes[CALLEE] = sip.answer_after(0.2)
    call_id = create(api)["call_id"]
    call = Call.objects.get(pk=call_id)
    # The dial queue was behind: 80 of the 105 s (dial deadline 60 + ringing 30 + 15)
    # have gone, and the dial deadline is not past yet.
    assert call.connect_timeout_seconds == 105
    Call.objects.filter(pk=call_id).update(
        created_at=call.created_at - datetime.timedelta(seconds=80)
    )

    run_dial_worker()

    (dial,) = sip_fake.calls("CreateSIPParticipant")
    ringing = int(dial.body["ringingTimeout"].removesuffix("s"))
    assert 18 <= ringing <= 20  # the 25 s left, less 5 for the answer to reach us
    assert detail(api, call_id)["status"] == "active"


def test_a_dial_with_too_little_of_its_start_delay_left_is_not_dialed(api, phone, sip_fake) -> None:
    call_id = create(api)["call_id"]
    call = Call.objects.get(pk=call_id)
    Call.objects.filter(pk=call_id).update(
        created_at=call.created_at - datetime.timedelta(seconds=97)
    )

    run_dial_worker()

    assert sip_fake.calls("CreateSIPParticipant") == []
    assert outcome(detail(api, call_id)) == ("failed", "dial_timeout", None, None)


def test_a_callee_who_answers_and_hangs_up_before_the_dial_returns_ends_the_call(
    api, phone, sip_fake
) -> None:
    """LiveKit's participant_left (the callee hung up) reached us before the dial's
    answer: it was taken for a failed dial's departure and dropped, and the answer then
    made the call `active` with nobody on the line."""
    create_participant = sip_fake._CreateSIPParticipant

    def answered_then_hung_up(message, response_class):
        answer = create_participant(message, response_class)
        callee = livekit_api.ParticipantInfo(
            identity=message.participant_identity,
            kind=livekit_api.ParticipantInfo.Kind.SIP,
            attributes={"sip.callStatus": "hangup"},
            disconnect_reason=livekit_api.DisconnectReason.CLIENT_INITIATED,
        )
        sip_fake.webhooks_send("participant_left", message.room_name, callee)
        return answer

    sip_fake._CreateSIPParticipant = answered_then_hung_up
    call_id = create(api)["call_id"]
    send("participant_joined_agent", call_id)  # dispatched before the dial

    run_dial_worker()

    assert sip_fake.webhook_answers[-1] == 200
    body = detail(api, call_id)
    assert outcome(body) == ("completed", "user_hangup", None, None)
    assert body["started_at"] is not None


@pytest.mark.parametrize(
    ("event", "reason", "ended"),
    [
        ("room_finished", None, ("completed", "room_closed")),
        ("participant_left", "SIGNAL_CLOSE", ("disconnected", "connection_lost")),
        ("participant_left", "ROOM_DELETED", ("completed", "agent_hangup")),
    ],
)
def test_a_room_end_or_callee_departure_heard_before_the_answer_ends_the_answered_call(
    api, phone, sip_fake, event: str, reason: str | None, ended: tuple[str, str]
) -> None:
    """LiveKit told of the room's end (or the callee dropping) while the dial ran: left
    to the dial's result, it was lost when the dial answered, and the call stayed
    `active` in a room that was gone."""
    create_participant = sip_fake._CreateSIPParticipant
    answers: list[int] = []

    def answered_then_gone(message, response_class):
        answer = create_participant(message, response_class)
        call_id = message.room_name.removeprefix("call-")
        answers.append(send(event, call_id, reason=reason).status_code)
        return answer

    sip_fake._CreateSIPParticipant = answered_then_gone
    call_id = create(api)["call_id"]
    send("participant_joined_agent", call_id)  # dispatched before the dial

    run_dial_worker()

    assert answers == [200]
    body = detail(api, call_id)
    assert outcome(body) == (*ended, None, None)
    assert body["started_at"] is not None and body["ended_at"] is not None


def test_a_room_end_stamped_before_the_dial_but_delivered_during_it_does_not_end_the_call(
    api, phone, sip_fake
) -> None:
    """A room a monitor opened closed before the dial started; LiveKit retried its
    room_finished (stamped then) and delivered it while the phone rang."""
    create_participant = sip_fake._CreateSIPParticipant
    answers: list[int] = []
    before_the_dial = time.time() - 10

    def answered(message, response_class):
        call_id = message.room_name.removeprefix("call-")
        answers.append(send("room_finished", call_id, created_at=before_the_dial).status_code)
        return create_participant(message, response_class)

    sip_fake._CreateSIPParticipant = answered
    call_id = create(api)["call_id"]
    Call.objects.filter(pk=call_id).update(
        created_at=timezone.now() - datetime.timedelta(seconds=30)
    )

    run_dial_worker()

    assert answers == [200]
    assert outcome(detail(api, call_id)) == ("active", None, None, None)


def test_a_room_that_finished_before_the_dial_started_does_not_end_the_answered_call(
    api, phone, sip_fake
) -> None:
    call_id = create(api)["call_id"]
    assert send("room_finished", call_id).status_code == 200  # pending: the dial makes it again

    run_dial_worker()

    assert outcome(detail(api, call_id)) == ("active", None, None, None)


def test_a_retried_dial_job_never_dials_twice(api, phone, sip_fake) -> None:
    call_id = create(api)["call_id"]
    run_dial_worker()

    phone_call_dial.enqueue(call_id)
    run_dial_worker()

    assert len(sip_fake.calls("CreateSIPParticipant")) == 1
    assert detail(api, call_id)["status"] == "active"


@pytest.mark.postgres
def test_a_dial_worker_with_threads_rings_as_many_phones_at_once(api, phone, sip_fake) -> None:
    """A dial job holds its worker while the phone rings: one worker rang every
    organization's phones one after the other, and calls queued behind them failed
    `dial_timeout`. (Workers in threads claim jobs with SKIP LOCKED: PostgreSQL.)"""
    callees = ["+14155550124", "+14155550125", "+14155550126"]
    for callee in callees:
        sip_fake.sip_outcomes[callee] = sip.answer_after(2)
    call_ids = [create(api, callee)["call_id"] for callee in callees]

    started = time.monotonic()
    run_task_worker("dial", "--threads", "3")

    assert time.monotonic() - started < 4  # one after the other: 6 s
    assert [detail(api, call_id)["status"] for call_id in call_ids] == ["active"] * 3
    assert len(sip_fake.calls("CreateSIPParticipant")) == 3


def test_a_call_not_dialed_within_its_dial_deadline_fails_dial_timeout(
    api, phone, sip_fake
) -> None:
    call_id = create(api)["call_id"]
    Call.objects.filter(pk=call_id).update(
        dial_deadline_at=timezone.now() - datetime.timedelta(seconds=1)
    )

    call_command("expire_calls", verbosity=0)
    run_dial_worker()

    assert outcome(detail(api, call_id)) == ("failed", "dial_timeout", None, None)
    assert sip_fake.calls("CreateSIPParticipant") == []


def test_a_dial_job_that_starts_after_the_deadline_dials_nothing(api, phone, sip_fake) -> None:
    call_id = create(api)["call_id"]
    Call.objects.filter(pk=call_id).update(
        dial_deadline_at=timezone.now() - datetime.timedelta(seconds=1)
    )

    run_dial_worker()

    assert outcome(detail(api, call_id)) == ("failed", "dial_timeout", None, None)
    assert sip_fake.calls("CreateSIPParticipant") == []


def test_livekit_failing_while_dialing_fails_the_call_sip_error_without_a_second_dial(
    api, phone, sip_fake
) -> None:
    """Documented choice: LiveKit failing (not the carrier) is not retried, which could
    ring the phone twice; the call ends `failed`/`sip_error`."""
    sip_fake.fail("CreateSIPParticipant", "500")
    call_id = create(api)["call_id"]

    run_dial_worker()
    phone_call_dial.enqueue(call_id)
    run_dial_worker()

    body = detail(api, call_id)
    assert outcome(body) == ("failed", "sip_error", None, None)
    # The cause, short and safe (the method and Twirp code, not LiveKit's message).
    assert body["end_reason_detail"] == "LiveKit refused CreateSIPParticipant: internal"
    assert len(sip_fake.calls("CreateSIPParticipant")) == 1


def test_livekit_unreachable_while_dialing_says_so_on_the_call(
    api, phone, sip_fake, settings
) -> None:
    """Its address and the connection's error stay in the log."""
    call_id = create(api)["call_id"]
    settings.LIVEKIT_URL = "http://127.0.0.1:9"  # discard port: nothing listens

    run_dial_worker()

    body = detail(api, call_id)
    assert outcome(body) == ("failed", "sip_error", None, None)
    assert body["end_reason_detail"] == "LiveKit unreachable"


def test_the_same_idempotency_key_makes_one_phone_call_and_one_dial(api, phone, sip_fake) -> None:
    headers = {"HTTP_IDEMPOTENCY_KEY": "phone-once-1"}
    body = {"workflow_slug": "daily-call", "phone_number": CALLEE}

    first = api.post(CALLS, body, format="json", **headers)
    again = api.post(CALLS, body, format="json", **headers)
    run_dial_worker()

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json()["call_id"] == first.json()["call_id"]
    assert Call.objects.count() == 1
    assert len(sip_fake.calls("CreateSIPParticipant")) == 1


def test_a_monitor_joining_or_the_sip_participant_ringing_never_changes_the_call(
    api, phone, sip_fake
) -> None:
    call_id = create(api)["call_id"]
    room = f"call-{call_id}"

    kinds = livekit_api.ParticipantInfo.Kind
    for identity, kind, attributes in [
        (f"monitor-{call_id}", kinds.STANDARD, {}),
        (f"user-{call_id}", kinds.SIP, {"sip.callStatus": "ringing"}),
    ]:
        participant = livekit_api.ParticipantInfo(
            identity=identity, kind=kind, attributes=attributes
        )
        sip_fake.webhooks_send("participant_joined", room, participant)

    assert sip_fake.webhook_answers == [200, 200]
    assert detail(api, call_id)["status"] == "pending"


def test_a_sip_participant_joining_answered_makes_the_call_active(api, phone, sip_fake) -> None:
    call_id = create(api)["call_id"]
    Call.objects.filter(pk=call_id).update(status="connecting")
    participant = livekit_api.ParticipantInfo(
        identity=f"user-{call_id}",
        kind=livekit_api.ParticipantInfo.Kind.SIP,
        attributes={"sip.callStatus": "active"},
    )

    sip_fake.webhooks_send("participant_joined", f"call-{call_id}", participant)

    assert detail(api, call_id)["status"] == "active"


def test_phone_number_with_direction_inbound_is_400(api, phone) -> None:
    response = api.post(
        CALLS,
        {"workflow_slug": "daily-call", "phone_number": CALLEE, "direction": "inbound"},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "direction"
    assert Call.objects.count() == 0


def test_a_dial_job_that_died_while_dialing_leaves_no_call_open_forever(
    api, phone, sip_fake
) -> None:
    call_id = create(api)["call_id"]
    call = Call.objects.get(pk=call_id)
    bound = call.connect_timeout_seconds
    Call.objects.filter(pk=call_id).update(
        status="connecting",
        dial_attempted_at=timezone.now(),
        created_at=timezone.now() - datetime.timedelta(seconds=bound + 31),
    )

    call_command("expire_calls", verbosity=0)

    assert outcome(detail(api, call_id)) == ("timeout", "connect_timeout", None, None)
    assert bound >= 60 + 30  # the dial deadline and the ringing, at least


def test_a_departure_heard_while_dialing_ends_the_call_though_a_retried_join_started_it(
    api, phone, sip_fake
) -> None:
    """LiveKit delivered the callee's departure (a dropped line) during the dial, and
    its participant_joined (answered) after it (a retried delivery): the join makes the
    call active, the dial's answer then moves nothing, and the departure heard while
    dialing is never applied: the call stays active with nobody on the line."""
    create_participant = sip_fake._CreateSIPParticipant
    kinds = livekit_api.ParticipantInfo.Kind

    def answered_dropped_join_retried(message, response_class):
        answer = create_participant(message, response_class)
        identity = message.participant_identity
        left = livekit_api.ParticipantInfo(
            identity=identity,
            kind=kinds.SIP,
            attributes={"sip.callStatus": "hangup"},
            disconnect_reason=livekit_api.DisconnectReason.SIGNAL_CLOSE,
        )
        sip_fake.webhooks_send("participant_left", message.room_name, left)
        joined = livekit_api.ParticipantInfo(
            identity=identity, kind=kinds.SIP, attributes={"sip.callStatus": "active"}
        )
        sip_fake.webhooks_send("participant_joined", message.room_name, joined)
        return answer

    sip_fake._CreateSIPParticipant = answered_dropped_join_retried
    call_id = create(api)["call_id"]

    run_dial_worker()

    assert sip_fake.webhook_answers[-2:] == [200, 200]
    body = detail(api, call_id)
    assert outcome(body) == ("disconnected", "connection_lost", None, None)


def test_a_departure_heard_while_dialing_ends_the_call_though_the_agent_started_it_first(
    api, agent_api, phone, sip_fake
) -> None:
    """The callee answered and dropped while the dial's answer was on its way; the agent
    saw the answer and reported the call started (status active) before the dial job
    got its answer: the departure heard while dialing is never applied."""
    create_participant = sip_fake._CreateSIPParticipant
    answers: list[int] = []

    def answered_dropped_agent_started(message, response_class):
        from django.db import connection

        answer = create_participant(message, response_class)
        call_id = message.room_name.removeprefix("call-")
        answers.append(send("participant_left", call_id, reason="SIGNAL_CLOSE").status_code)
        try:
            answers.append(
                agent_api.post(
                    f"/api/v1/agent/calls/{call_id}/events",
                    {
                        "events": [
                            {
                                "id": str(uuid.uuid4()),
                                "type": "status",
                                "timestamp": timezone.now().isoformat(),
                                "status": "active",
                            }
                        ]
                    },
                    format="json",
                ).status_code
            )
        finally:
            connection.close()
        return answer

    sip_fake._CreateSIPParticipant = answered_dropped_agent_started
    call_id = create(api)["call_id"]

    run_dial_worker()

    assert answers == [200, 200]
    body = detail(api, call_id)
    assert outcome(body) == ("disconnected", "connection_lost", None, None)
