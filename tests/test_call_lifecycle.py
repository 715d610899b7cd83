from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from calls.lifecycle import ALLOWED_FROM, EndReason, call_transition
from calls.models import Call, CallStatus
from tests.factories import CallFactory
from webhooks import services
from webhooks.models import EventType, WebhookEvent

S = CallStatus
ALL = list(S.values)
TERMINAL = [S.COMPLETED, S.FAILED, S.DISCONNECTED, S.TIMEOUT]

LEGAL = [
    (S.PENDING, S.CONNECTING),
    (S.CONNECTING, S.ACTIVE),
    (S.ACTIVE, S.COMPLETED),
    (S.ACTIVE, S.DISCONNECTED),
    (S.ACTIVE, S.TIMEOUT),
    (S.ACTIVE, S.FAILED),
    (S.PENDING, S.COMPLETED),
    (S.PENDING, S.FAILED),
    (S.PENDING, S.TIMEOUT),
    (S.CONNECTING, S.COMPLETED),
    (S.CONNECTING, S.FAILED),
    (S.CONNECTING, S.TIMEOUT),
]
ILLEGAL = [(a, b) for a in ALL for b in ALL if (a, b) not in LEGAL and b != S.PENDING]


def _call(status: str, workflow):
    extra = {}
    if status == S.ACTIVE:
        extra = {
            "started_at": timezone.now(),
            "agent_history": ["greeter-agent"],
            "current_agent": "greeter-agent",
        }
    if status in TERMINAL:
        extra = {"ended_at": timezone.now(), "end_reason": "user_hangup"}
    return CallFactory(
        organization=workflow.organization, workflow=workflow, status=status, **extra
    )


def test_the_diagram_is_the_table():
    assert {(a, b) for b, froms in ALLOWED_FROM.items() for a in froms} == set(LEGAL)


@pytest.mark.parametrize(("from_status", "to_status"), LEGAL)
def test_every_transition_in_the_diagram_is_made(workflow, from_status, to_status):
    call = _call(from_status, workflow)
    reason = None if to_status in (S.CONNECTING, S.ACTIVE) else "user_hangup"
    assert call_transition(call_id=call.pk, to_status=to_status, end_reason=reason)
    call.refresh_from_db()
    assert call.status == to_status
    if to_status in TERMINAL:
        assert call.ended_at is not None
        assert call.end_reason == "user_hangup"
        assert call.current_agent is None


@pytest.mark.parametrize(("from_status", "to_status"), ILLEGAL)
def test_every_illegal_transition_is_refused(workflow, from_status, to_status):
    call = _call(from_status, workflow)
    before = (call.status, call.ended_at, call.end_reason, call.started_at)
    reason = None if to_status in (S.CONNECTING, S.ACTIVE) else "agent_error"
    assert not call_transition(call_id=call.pk, to_status=to_status, end_reason=reason)
    call.refresh_from_db()
    assert (call.status, call.ended_at, call.end_reason, call.started_at) == before


def test_becoming_active_starts_the_call_with_the_start_agent(workflow):
    call = _call(S.CONNECTING, workflow)
    Call.objects.filter(pk=call.pk).update(
        created_at=timezone.now() - datetime.timedelta(seconds=9)
    )
    at = timezone.now() - datetime.timedelta(seconds=5)
    assert call_transition(call_id=call.pk, to_status=S.ACTIVE, at=at)
    call.refresh_from_db()
    assert call.started_at == at
    assert call.agent_history == ["greeter-agent"]
    assert call.current_agent == "greeter-agent"
    assert call.duration_seconds >= 5


def test_a_call_becomes_active_only_within_its_connect_timeout_after_creation(workflow):
    call = _call(S.CONNECTING, workflow)
    created = timezone.now() - datetime.timedelta(seconds=call.connect_timeout_seconds + 1)
    Call.objects.filter(pk=call.pk).update(created_at=created)

    assert not call_transition(call_id=call.pk, to_status=S.ACTIVE)

    call.refresh_from_db()
    assert (call.status, call.started_at, call.current_agent) == (S.CONNECTING, None, None)


def test_a_start_stamped_before_the_call_existed_counts_from_its_creation(workflow):
    call = _call(S.CONNECTING, workflow)

    assert call_transition(
        call_id=call.pk, to_status=S.ACTIVE, at=call.created_at - datetime.timedelta(seconds=3)
    )

    call.refresh_from_db()
    assert call.started_at == call.created_at


def test_an_end_stamped_before_the_start_counts_from_the_start(workflow):
    call = _call(S.CONNECTING, workflow)
    behind = call.created_at - datetime.timedelta(seconds=30)  # another host's clock
    assert call_transition(call_id=call.pk, to_status=S.ACTIVE, at=behind)

    assert call_transition(
        call_id=call.pk,
        to_status=S.COMPLETED,
        end_reason=EndReason.USER_HANGUP,
        at=behind + datetime.timedelta(seconds=5),
    )

    call.refresh_from_db()
    assert call.ended_at == call.started_at == call.created_at


def test_the_status_change_webhook_carries_the_end_as_stored_not_the_skewed_one(workflow):
    services.webhook_endpoint_create(
        organization=workflow.organization,
        url="https://hooks.example.com/calls",
        events=[EventType.CALL_STATUS_CHANGED, EventType.CALL_ENDED],
    )
    call = _call(S.ACTIVE, workflow)
    behind = call.started_at - datetime.timedelta(seconds=30)  # another host's clock

    assert call_transition(
        call_id=call.pk, to_status=S.COMPLETED, end_reason=EndReason.USER_HANGUP, at=behind
    )

    call.refresh_from_db()
    events = WebhookEvent.objects.filter(call_id=call.pk).order_by("type")
    assert [(e.type, e.occurred_at) for e in events] == [
        (EventType.CALL_ENDED, call.started_at),
        (EventType.CALL_STATUS_CHANGED, call.started_at),
    ]
    assert call.ended_at == call.started_at


def test_a_never_started_call_ends_no_earlier_than_its_creation(workflow):
    call = _call(S.CONNECTING, workflow)

    assert call_transition(
        call_id=call.pk,
        to_status=S.TIMEOUT,
        end_reason=EndReason.CONNECT_TIMEOUT,
        at=call.created_at - datetime.timedelta(seconds=1),
    )

    call.refresh_from_db()
    assert call.ended_at == call.created_at


def test_ended_at_is_set_exactly_once(workflow):
    call = _call(S.ACTIVE, workflow)
    first = timezone.now()
    assert call_transition(
        call_id=call.pk, to_status=S.COMPLETED, end_reason=EndReason.USER_HANGUP, at=first
    )
    for status in TERMINAL:
        assert not call_transition(
            call_id=call.pk,
            to_status=status,
            end_reason="other",
            at=first + datetime.timedelta(minutes=1),
        )
    call.refresh_from_db()
    assert (call.status, call.ended_at, call.end_reason) == (S.COMPLETED, first, "user_hangup")
    assert call.current_agent is None


def test_duration_is_ended_minus_started_in_whole_seconds(workflow):
    call = _call(S.CONNECTING, workflow)
    start = timezone.now() - datetime.timedelta(minutes=3)
    Call.objects.filter(pk=call.pk).update(created_at=start - datetime.timedelta(seconds=1))
    call_transition(call_id=call.pk, to_status=S.ACTIVE, at=start)
    call_transition(
        call_id=call.pk,
        to_status=S.COMPLETED,
        end_reason="agent_hangup",
        at=start + datetime.timedelta(seconds=180.9),
    )
    call.refresh_from_db()
    assert call.duration_seconds == 180
    assert call.metrics()["duration_seconds"] == 180


def test_only_from_narrows_the_allowed_states(workflow):
    call = _call(S.ACTIVE, workflow)
    assert not call_transition(
        call_id=call.pk,
        to_status=S.TIMEOUT,
        end_reason="connect_timeout",
        only_from=[S.PENDING, S.CONNECTING],
    )
    call.refresh_from_db()
    assert call.status == S.ACTIVE


def test_ending_without_a_reason_is_a_programming_error(workflow):
    call = _call(S.ACTIVE, workflow)
    with pytest.raises(ValueError, match="end_reason"):
        call_transition(call_id=call.pk, to_status=S.COMPLETED)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_racing_enders_leave_one_terminal_state(workflow, agent_key, fake_livekit):
    """A hang-up, the user's departure, the agent's error and expire_calls, all at once."""
    import threading

    from django.db import connection

    from calls import services
    from calls.expiry import calls_expire
    from tests.conftest import bearer_client
    from tests.livekit_samples import send

    call = _call(S.ACTIVE, workflow)
    type(call).objects.filter(pk=call.pk).update(
        started_at=timezone.now() - datetime.timedelta(hours=1), max_duration_seconds=60
    )
    fake_livekit.add_room(call.room_name, [f"user-{call.pk}"])
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def hang_up() -> None:
        services.call_end(call=call)

    def user_leaves() -> None:
        send("participant_left", call.pk, reason="CONNECTION_TIMEOUT")

    def agent_fails() -> None:
        bearer_client(agent_key).post(
            f"/api/v1/agent/calls/{call.pk}/events",
            {
                "events": [
                    {
                        "id": "6f1c2e0a-4b7d-4c1e-9a51-0f3b2d7c8e91",
                        "type": "status",
                        "timestamp": "2026-01-17T10:30:00Z",
                        "status": "failed",
                    }
                ]
            },
        )

    def expire() -> None:
        calls_expire()

    def run(target) -> None:
        try:
            barrier.wait()
            target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(t,)) for t in (hang_up, user_leaves, agent_fails, expire)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    call.refresh_from_db()
    expected = {
        (S.COMPLETED, "api_request"),
        (S.DISCONNECTED, "connection_lost"),
        (S.FAILED, "agent_error"),
        (S.TIMEOUT, "max_duration"),
    }
    assert (call.status, call.end_reason) in expected
    assert call.ended_at is not None
    assert call.current_agent is None


def test_a_phone_answer_stamped_before_its_dial_counts_from_the_dial(workflow):
    """A phone call created long before its dial (the dial queue), its answer's webhook
    stamped by a LiveKit clock behind ours (or delivered late, by its whole second): it
    was not answered before it was dialed, nor does `call.status_changed` say so."""
    services.webhook_endpoint_create(
        organization=workflow.organization,
        url="https://hooks.example.com/calls",
        events=[EventType.CALL_STATUS_CHANGED],
    )
    now = timezone.now()
    dialed = now - datetime.timedelta(seconds=10)
    call = CallFactory(
        organization=workflow.organization,
        workflow=workflow,
        channel="phone",
        status=S.PENDING,
        created_at=now - datetime.timedelta(seconds=60),
        connect_timeout_seconds=120,
        dial_attempted_at=dialed,
    )
    assert call_transition(call_id=call.pk, to_status=S.CONNECTING, at=dialed)

    assert call_transition(
        call_id=call.pk, to_status=S.ACTIVE, at=dialed - datetime.timedelta(seconds=5)
    )

    call.refresh_from_db()
    assert call.started_at == dialed
    events = WebhookEvent.objects.filter(call_id=call.pk)  # connecting, then active
    assert list(events.values_list("occurred_at", flat=True)) == [dialed, dialed]
