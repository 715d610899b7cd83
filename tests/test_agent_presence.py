"""The call's voice agent missing: never joining (a dispatch that failed, no worker, a
worker that crashed before joining) or leaving mid-call without a word (its process
died). Such calls ended `completed`/`user_hangup` once the user gave up: the customer
blamed their user, and nothing said the agent was missing."""

from __future__ import annotations

import datetime
import threading
import time
import uuid

import pytest
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from calls.agent_presence import call_agent_joined, call_agent_overdue
from calls.expiry import calls_expire
from calls.models import Call, CallStatus
from tests.factories import CallFactory
from tests.livekit_samples import send

S = CallStatus


def ago(seconds: float) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(seconds=seconds)


@pytest.fixture
def call(workflow):
    return CallFactory(organization=workflow.organization, workflow=workflow)


def _joined(call: Call, *, seconds_ago: float, agent: bool) -> None:
    """The user joined (a signed webhook) `seconds_ago`; and the agent, if `agent`."""
    assert send("participant_joined", call.pk).json() == {"result": "handled"}
    if agent:
        assert send("participant_joined_agent", call.pk).json() == {"result": "handled"}
    Call.objects.filter(pk=call.pk).update(started_at=ago(seconds_ago))
    call.refresh_from_db()
    assert call.status == S.ACTIVE


def _system_lines(api, call: Call) -> list[str]:
    lines = api.get(f"/api/v1/calls/{call.pk}/transcript").json()
    return [line["content"] for line in lines if line["role"] == "system"]


# -- the agent never joined ------------------------------------------------------------


def test_a_call_no_agent_joined_within_the_bound_fails_and_its_room_is_closed(
    call, workflow, fake_livekit, settings, api
):
    settings.CALL_AGENT_JOIN_TIMEOUT_SECONDS = 30
    _joined(call, seconds_ago=31, agent=False)
    fake_livekit.add_room(call.room_name, [f"user-{call.pk}"])
    waiting = CallFactory(organization=workflow.organization, workflow=workflow)
    _joined(waiting, seconds_ago=10, agent=False)  # the agent may still come

    result = calls_expire()

    assert result.agents_not_joined == 1
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.FAILED, "agent_not_joined")
    assert call.ended_at is not None
    assert [r.body["room"] for r in fake_livekit.calls("DeleteRoom")] == [call.room_name]
    assert _system_lines(api, call) == ["No agent joined the call within 30 seconds."]
    body = api.get(f"/api/v1/calls/{call.pk}").json()
    assert (body["status"], body["end_reason"]) == ("failed", "agent_not_joined")
    waiting.refresh_from_db()
    assert waiting.status == S.ACTIVE


def test_a_call_whose_agent_joined_in_time_is_left_alone(call, fake_livekit):
    _joined(call, seconds_ago=300, agent=True)

    calls_expire()

    call.refresh_from_db()
    assert call.status == S.ACTIVE
    assert call.agent_joined_at is not None
    assert fake_livekit.calls("ListParticipants") == []


def test_an_agent_in_the_room_whose_join_webhook_was_lost_keeps_the_call(call, fake_livekit):
    _joined(call, seconds_ago=60, agent=False)
    fake_livekit.add_room(call.room_name, [f"user-{call.pk}", "agent-AJ_1"])

    assert calls_expire().agents_not_joined == 0
    calls_expire()  # known now: LiveKit is not asked again

    call.refresh_from_db()
    assert call.status == S.ACTIVE
    assert call.agent_joined_at is not None
    assert len(fake_livekit.calls("ListParticipants")) == 1
    assert fake_livekit.calls("DeleteRoom") == []


def test_livekit_failing_leaves_an_agentless_call_to_the_next_pass(call, fake_livekit):
    _joined(call, seconds_ago=60, agent=False)
    fake_livekit.fail("ListParticipants", "503")

    result = calls_expire()

    assert (result.agents_not_joined, result.livekit_errors) == (0, 1)
    call.refresh_from_db()
    assert call.status == S.ACTIVE


def test_an_agent_joining_just_before_the_failure_is_applied_keeps_the_call(call):
    """expire_calls asked LiveKit (no agent yet); the agent's join committed before the
    failure took the call's row: the failure finds it and changes nothing."""
    _joined(call, seconds_ago=60, agent=False)
    assert send("participant_joined_agent", call.pk).status_code == 200

    assert not call_agent_overdue(
        call_id=call.pk, agent_in_room=False, at=timezone.now(), timeout_seconds=30
    )

    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.ACTIVE, None)


def _agent_says_hello(agent_api, call) -> None:
    """The agent's first report: one transcript line."""
    line = {
        "id": str(uuid.uuid4()),
        "type": "transcript",
        "timestamp": timezone.now().isoformat(),
        "role": "assistant",
        "content": "Hello!",
        "agent_name": "greeter-agent",
    }
    response = agent_api.post(
        f"/api/v1/agent/calls/{call.pk}/events", {"events": [line]}, format="json"
    )
    assert response.status_code == 200


def test_the_agent_reporting_events_counts_as_joined(call, agent_api, fake_livekit):
    """Its join's webhook lost, the agent's own reports say it is there."""
    _joined(call, seconds_ago=60, agent=False)
    _agent_says_hello(agent_api, call)

    calls_expire()
    send("participant_left", call.pk, reason="CLIENT_INITIATED")

    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.COMPLETED, "user_hangup")
    assert fake_livekit.calls("ListParticipants") == []


def test_the_user_hanging_up_before_any_agent_joined_fails_agent_not_joined(call):
    _joined(call, seconds_ago=12, agent=False)

    send("participant_left", call.pk, reason="CLIENT_INITIATED")

    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.FAILED, "agent_not_joined")


def test_the_user_hanging_up_moments_after_joining_no_agent_yet_is_a_hang_up(call):
    """A misdial, a caller still hearing the ring: not a failure of ours."""
    _joined(call, seconds_ago=3, agent=False)

    send("participant_left", call.pk, reason="CLIENT_INITIATED")

    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.COMPLETED, "user_hangup")


def test_the_user_hanging_up_on_their_agent_is_still_a_hang_up(call):
    _joined(call, seconds_ago=8, agent=True)

    send("participant_left", call.pk, reason="CLIENT_INITIATED")

    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.COMPLETED, "user_hangup")


# -- the agent joining as the user hangs up (PostgreSQL: row locks) --------------------


def _in_thread(target) -> threading.Thread:
    def run() -> None:
        try:
            target()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_agent_joining_the_instant_the_user_hangs_up_waits_for_the_hang_up(call):
    """The hang-up reads whether an agent is there, then ends the call by it: an agent
    joining in between, had it got in, would leave a call `agent_not_joined` with an
    agent joined before its end. The webhook holds the call's row from its first
    statement, so the join waits and then finds the call ended."""
    _joined(call, seconds_ago=12, agent=False)
    joins: list[threading.Thread] = []
    waiting: list[bool] = []

    def after_the_presence_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith("SELECT") and "agent_left_at" in sql and not joins:
            joins.append(_in_thread(lambda: send("participant_joined_agent", call.pk)))
            joins[0].join(timeout=1)
            # Seen while the hang-up still runs: once it commits, the join ends at once.
            waiting.append(joins[0].is_alive())
        return result

    with connection.execute_wrapper(after_the_presence_read):
        send("participant_left", call.pk, reason="CLIENT_INITIATED")
    (join,) = joins
    join.join(timeout=10)

    assert waiting == [True]
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.FAILED, "agent_not_joined")
    assert call.agent_joined_at is None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_hang_up_meeting_an_agents_join_in_flight_waits_and_counts_the_agent(call):
    """The agent's join holds the call's row: the user's hang-up waits for it, then is
    a hang-up on an agent that was there, not `agent_not_joined`."""
    _joined(call, seconds_ago=12, agent=False)
    held, release = threading.Event(), threading.Event()

    def join_held() -> None:
        with transaction.atomic():
            call_agent_joined(call_id=call.pk, identity="agent-AJ_x", at=timezone.now())
            held.set()
            release.wait(timeout=10)

    join = _in_thread(join_held)
    assert held.wait(timeout=10)
    releasing = threading.Timer(1, release.set)
    releasing.start()
    started = time.monotonic()
    send("participant_left", call.pk, reason="CLIENT_INITIATED")
    waited = time.monotonic() - started
    releasing.join()
    join.join(timeout=10)

    assert waited >= 0.9
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.COMPLETED, "user_hangup")
    assert call.agent_joined_at is not None


# -- the agent lost mid-call -----------------------------------------------------------


def test_the_agent_leaving_unexpectedly_is_a_system_line_and_the_call_goes_on(call, api):
    _joined(call, seconds_ago=40, agent=True)

    assert send("participant_left_agent", call.pk).json() == {"result": "handled"}

    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.ACTIVE, None)
    assert call.agent_left_at is not None
    assert _system_lines(api, call) == ["The agent left the call unexpectedly (SIGNAL_CLOSE)."]


def test_the_user_hanging_up_after_the_agent_was_lost_fails_agent_lost(call):
    _joined(call, seconds_ago=40, agent=True)
    send("participant_left_agent", call.pk, reason="CONNECTION_TIMEOUT")

    send("participant_left", call.pk, reason="CLIENT_INITIATED")

    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.FAILED, "agent_lost")


def test_an_agent_dispatched_again_takes_the_call_back(call, api):
    _joined(call, seconds_ago=40, agent=True)
    send("participant_left_agent", call.pk)

    send("participant_joined_agent", call.pk, identity="agent-AJ_second")
    send("participant_left", call.pk, reason="CLIENT_INITIATED")

    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.COMPLETED, "user_hangup")
    assert _system_lines(api, call) == [
        "The agent left the call unexpectedly (SIGNAL_CLOSE).",
        "An agent joined the call again.",
    ]


def test_the_old_agent_leaving_after_its_successor_joined_is_no_loss(call, api):
    _joined(call, seconds_ago=40, agent=True)
    send("participant_joined_agent", call.pk, identity="agent-AJ_second")

    send("participant_left_agent", call.pk)  # the first one's departure, late

    call.refresh_from_db()
    assert call.agent_left_at is None
    assert _system_lines(api, call) == []


@pytest.mark.parametrize("reason", ["ROOM_DELETED", "DUPLICATE_IDENTITY", "MIGRATION"])
def test_an_agent_leaving_with_its_room_or_still_there_is_no_loss(call, api, reason):
    _joined(call, seconds_ago=40, agent=True)

    send("participant_left_agent", call.pk, reason=reason)

    call.refresh_from_db()
    assert call.agent_left_at is None
    assert _system_lines(api, call) == []


def test_the_agent_leaving_while_a_transfer_runs_is_no_loss(call, api):
    """After a transfer the agent leaves and the call goes on (DESIGN.md)."""
    _joined(call, seconds_ago=40, agent=True)
    Call.objects.filter(pk=call.pk).update(
        hangup_requested_at=timezone.now(),
        end_reason="transferred",
        transfer_destination="+14155550188",
    )

    send("participant_left_agent", call.pk, reason="CLIENT_INITIATED")

    call.refresh_from_db()
    assert call.agent_left_at is None
    assert _system_lines(api, call) == []


def _presence(api, call: Call) -> tuple:
    """The call detail's agent presence, as datetimes (None when null)."""
    body = api.get(f"/api/v1/calls/{call.pk}").json()
    return tuple(
        None if body[key] is None else parse_datetime(body[key])
        for key in ("agent_joined_at", "agent_left_at")
    )


def test_the_call_detail_shows_when_the_agent_joined_and_left(call, api):
    """What staff see in the admin, a customer debugging the call sees in its detail."""
    _joined(call, seconds_ago=40, agent=False)
    assert _presence(api, call) == (None, None)

    send("participant_joined_agent", call.pk)
    call.refresh_from_db()
    assert call.agent_joined_at is not None
    assert _presence(api, call) == (call.agent_joined_at, None)

    send("participant_left_agent", call.pk)
    call.refresh_from_db()
    assert call.agent_left_at is not None
    assert _presence(api, call) == (call.agent_joined_at, call.agent_left_at)


def test_the_call_detail_shows_the_agent_joined_once_it_reported_events(call, api, agent_api):
    _joined(call, seconds_ago=5, agent=False)
    _agent_says_hello(agent_api, call)

    call.refresh_from_db()
    assert call.agent_joined_at is not None
    assert _presence(api, call) == (call.agent_joined_at, None)


def test_the_call_list_does_not_show_the_agent_presence(call, api):
    _joined(call, seconds_ago=40, agent=True)

    (item,) = api.get("/api/v1/calls").json()["items"]

    assert "agent_joined_at" not in item and "agent_left_at" not in item


def test_staff_see_when_the_agent_joined_and_left(call, admin_client: Client):
    _joined(call, seconds_ago=40, agent=True)
    send("participant_left_agent", call.pk)

    html = admin_client.get(f"/admin/calls/call/{call.pk}/change/").content.decode()

    assert "Agent joined at" in html and "Agent left at" in html
    assert "The agent left the call unexpectedly (SIGNAL_CLOSE)." in html


# -- the agent's times in order (LiveKit's clock, whole seconds, late deliveries) --------


def test_an_agent_join_stamped_before_the_call_existed_counts_from_its_creation(call, api):
    """LiveKit's clock behind ours: a join delivered more than 2 s after its stamp is
    timed by the stamp, which may be before the call was created."""
    behind = call.created_at.timestamp() - 30

    send("participant_joined_agent", call.pk, created_at=behind)

    call.refresh_from_db()
    assert call.agent_joined_at == call.created_at
    assert _presence(api, call) == (call.created_at, None)


def test_an_agent_departure_stamped_before_its_join_counts_from_the_join(call, api):
    """The join timed by its arrival (to the microsecond), the departure delivered late
    and timed by its whole-second stamp (or a clock behind): it never precedes the join,
    nor does its system line."""
    _joined(call, seconds_ago=40, agent=True)
    call.refresh_from_db()
    joined_at = call.agent_joined_at

    send("participant_left_agent", call.pk, created_at=joined_at.timestamp() - 5)

    call.refresh_from_db()
    assert call.agent_left_at == joined_at
    assert _presence(api, call) == (joined_at, joined_at)
    (line,) = [e for e in api.get(f"/api/v1/calls/{call.pk}/transcript").json()]
    assert parse_datetime(line["timestamp"]) == joined_at


def test_an_agent_joining_again_stamped_before_the_loss_counts_from_the_loss(call, api):
    """The transcript says the agent came back after it says it left, not before."""
    _joined(call, seconds_ago=40, agent=True)
    send("participant_left_agent", call.pk)
    call.refresh_from_db()
    left_at = call.agent_left_at

    send(
        "participant_joined_agent",
        call.pk,
        identity="agent-AJ_second",
        created_at=left_at.timestamp() - 5,
    )

    lines = api.get(f"/api/v1/calls/{call.pk}/transcript").json()
    assert [line["content"] for line in lines] == [
        "The agent left the call unexpectedly (SIGNAL_CLOSE).",
        "An agent joined the call again.",
    ]
    assert [parse_datetime(line["timestamp"]) for line in lines] == [left_at, left_at]


def test_a_call_never_ends_before_its_agent_was_lost(call, api):
    """The agent's departure heard on time, the user's hang-up on the silence delivered
    late (timed by its stamp): the call does not end before the agent it ended for left."""
    _joined(call, seconds_ago=40, agent=True)
    send("participant_left_agent", call.pk, reason="CONNECTION_TIMEOUT")
    call.refresh_from_db()
    left_at = call.agent_left_at

    send("participant_left", call.pk, reason="CLIENT_INITIATED", created_at=left_at.timestamp() - 3)

    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.FAILED, "agent_lost")
    assert call.ended_at == left_at
    body = api.get(f"/api/v1/calls/{call.pk}").json()
    assert parse_datetime(body["agent_left_at"]) <= parse_datetime(body["ended_at"])


def test_a_call_never_ends_before_its_agent_joined(call, agent_api):
    """The agent known from its first report (our clock), the room's end stamped by a
    LiveKit clock behind ours: the end follows the join."""
    _joined(call, seconds_ago=40, agent=False)
    _agent_says_hello(agent_api, call)
    call.refresh_from_db()
    joined_at = call.agent_joined_at

    send("room_finished", call.pk, created_at=joined_at.timestamp() - 20)

    call.refresh_from_db()
    assert call.status in (S.COMPLETED, S.FAILED)
    assert call.ended_at == joined_at
