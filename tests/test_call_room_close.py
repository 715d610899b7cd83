"""When the API ends a call, whatever the cause, it closes the call's LiveKit room
itself (DeleteRoom in the task queue after the change commits), instead of leaving a
caller or an agent in it until LiveKit's departure timeout."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from calls.models import CallChannel, CallStatus
from calls.tasks import call_room_close
from tests.factories import CallFactory
from tests.livekit_samples import send
from tests.tasks import IMMEDIATE_TASKS

S = CallStatus


@pytest.fixture
def call(workflow):
    return CallFactory(organization=workflow.organization, workflow=workflow, active=True)


@pytest.fixture
def tasks_run_at_once(settings):
    settings.TASKS = IMMEDIATE_TASKS


def status_event(value: str, reason: str | None = None) -> dict:
    event = {
        "id": str(uuid.uuid4()),
        "type": "status",
        "timestamp": "2026-01-17T10:30:00Z",
        "status": value,
    }
    if reason:
        event["reason"] = reason
    return event


def report(agent_api, call, *events: dict):
    return agent_api.post(f"/api/v1/agent/calls/{call.pk}/events", {"events": list(events)})


def phone_call(workflow, **fields):
    return CallFactory(
        organization=workflow.organization, workflow=workflow, channel=CallChannel.PHONE, **fields
    )


def deleted_rooms(fake_livekit) -> list[str]:
    return [request.body["room"] for request in fake_livekit.calls("DeleteRoom")]


@pytest.mark.parametrize(
    ("status", "reason"),
    [("failed", "agent_error"), ("completed", "agent_hangup"), ("completed", "silence_timeout")],
)
def test_the_agent_ending_the_call_closes_its_room(
    agent_api,
    call,
    fake_livekit,
    tasks_run_at_once,
    django_capture_on_commit_callbacks,
    status,
    reason,
):
    with django_capture_on_commit_callbacks(execute=True):
        response = report(agent_api, call, status_event(status, reason))

    assert response.status_code == 200
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (status, reason)
    assert deleted_rooms(fake_livekit) == [f"call-{call.pk}"]


def test_the_events_request_itself_makes_no_livekit_request(
    agent_api, call, fake_livekit, django_capture_on_commit_callbacks
):
    """The default (database) task queue: the request only enqueues the deletion."""
    with django_capture_on_commit_callbacks(execute=True):
        response = report(agent_api, call, status_event("failed", "agent_error"))

    assert response.status_code == 200
    assert fake_livekit.requests == []
    assert DBTaskResult.objects.filter(task_path="calls.tasks.call_room_close").count() == 1


def test_the_deletion_is_enqueued_only_when_the_change_commits(
    agent_api, call, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        report(agent_api, call, status_event("failed", "agent_error"))
    assert DBTaskResult.objects.count() == 0

    for callback in callbacks:
        callback()

    task = DBTaskResult.objects.get()
    assert task.task_path == "calls.tasks.call_room_close"
    assert task.args_kwargs["args"] == [str(call.pk)]


def test_a_call_that_does_not_end_keeps_its_room(
    agent_api, call, fake_livekit, tasks_run_at_once, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        report(agent_api, call, status_event("active"))

    assert fake_livekit.requests == []


def test_a_second_end_report_deletes_nothing_again(
    agent_api, call, fake_livekit, tasks_run_at_once, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        report(agent_api, call, status_event("completed", "agent_hangup"))
    with django_capture_on_commit_callbacks(execute=True):
        report(agent_api, call, status_event("failed", "agent_error"))

    assert deleted_rooms(fake_livekit) == [f"call-{call.pk}"]
    call.refresh_from_db()
    assert call.end_reason == "agent_hangup"


def test_the_user_leaving_closes_the_room_the_agent_is_still_in(
    call, fake_livekit, tasks_run_at_once, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = send("participant_left", call.pk, reason="CLIENT_INITIATED")

    assert response.status_code == 200
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.COMPLETED, "user_hangup")
    assert deleted_rooms(fake_livekit) == [f"call-{call.pk}"]


@pytest.mark.parametrize(
    ("sample", "identity"),
    [("participant_left", "agent-AJ_x1"), ("room_finished", None)],
)
def test_no_deletion_when_the_agent_leaves_or_the_room_is_already_gone(
    call, fake_livekit, tasks_run_at_once, django_capture_on_commit_callbacks, sample, identity
):
    with django_capture_on_commit_callbacks(execute=True):
        send(sample, call.pk, **({"identity": identity} if identity else {}))

    assert fake_livekit.requests == []


def test_livekit_failing_is_logged_and_leaves_the_call_as_it_ended(
    call, fake_livekit, caplog: pytest.LogCaptureFixture
):
    fake_livekit.fail("DeleteRoom", "500")

    result = call_room_close.call(str(call.pk))

    assert result is False
    assert f"could not delete the room of ended call {call.pk}" in caplog.text


def test_a_close_livekit_failed_is_tried_again_later_a_bounded_number_of_times(call, fake_livekit):
    """Nothing else closes the room of a call already ended: until it goes, the user
    and the agent may still talk in it."""
    from calls.tasks import ROOM_CLOSE_RETRIES

    fake_livekit.fail("DeleteRoom", "503")
    before = timezone.now()

    call_room_close.call(str(call.pk))
    call_room_close.call(str(call.pk), attempt=ROOM_CLOSE_RETRIES)

    retries = list(DBTaskResult.objects.filter(task_path__endswith="call_room_close"))
    assert [(retry.args_kwargs["args"], retry.args_kwargs["kwargs"]) for retry in retries] == [
        ([str(call.pk)], {"attempt": 1})
    ]
    assert before + datetime.timedelta(minutes=1) <= retries[0].run_after
    fake_livekit.failures.clear()
    assert call_room_close.call(str(call.pk), attempt=1) is True
    assert deleted_rooms(fake_livekit)[-1] == f"call-{call.pk}"
    assert DBTaskResult.objects.count() == 1  # closed: not tried again


def test_a_room_livekit_does_not_know_counts_as_closed(call, fake_livekit):
    fake_livekit.fail("DeleteRoom", "not_found")

    assert call_room_close.call(str(call.pk)) is True


@pytest.mark.parametrize(
    ("status", "end_reason"),
    [
        (S.TIMEOUT, "connect_timeout"),
        (S.COMPLETED, "api_request"),
        (S.DISCONNECTED, "connection_lost"),
    ],
)
def test_the_user_joining_a_web_call_that_has_ended_closes_the_room_again(
    workflow,
    fake_livekit,
    tasks_run_at_once,
    django_capture_on_commit_callbacks,
    status,
    end_reason,
):
    """The user's token outlives the call (15 minutes): a client joining (or its SDK
    reconnecting) after the call ended makes LiveKit open the room anew, and the agent
    dispatched there leaves at once (the session is 409): the user would wait alone."""
    ended = CallFactory(
        organization=workflow.organization, workflow=workflow, status=status, end_reason=end_reason
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = send("participant_joined", ended.pk)

    assert response.status_code == 200
    assert deleted_rooms(fake_livekit) == [f"call-{ended.pk}"]
    ended.refresh_from_db()
    assert (ended.status, ended.end_reason) == (status, end_reason)


def test_the_user_joining_again_a_call_in_progress_keeps_its_room(
    call, fake_livekit, tasks_run_at_once, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        send("participant_joined", call.pk)

    assert fake_livekit.requests == []
    call.refresh_from_db()
    assert call.status == S.ACTIVE


def test_a_join_to_a_phone_call_that_has_ended_leaves_its_room_to_its_own_close(
    workflow, fake_livekit, tasks_run_at_once, django_capture_on_commit_callbacks
):
    """A phone call's room may still play an answer after its end (an inbound call over
    the concurrency limit hears the busy message, its room closed a minute later)."""
    refused = phone_call(workflow, status=S.FAILED, end_reason="concurrency_limit")
    with django_capture_on_commit_callbacks(execute=True):
        send("participant_joined", refused.pk)

    assert fake_livekit.requests == []


def test_a_listener_joining_a_phone_call_that_has_ended_closes_the_room_it_reopened(
    workflow, fake_livekit, tasks_run_at_once, django_capture_on_commit_callbacks
):
    """The monitor token (15 minutes) outlives the call: a listener joining after the
    end makes LiveKit open an empty room that nobody else would close."""
    ended = phone_call(workflow, status=S.COMPLETED, end_reason="user_hangup")
    fake_livekit.add_room(f"call-{ended.pk}", [f"monitor-{ended.pk}"])
    with django_capture_on_commit_callbacks(execute=True):
        response = send("participant_joined", ended.pk, identity=f"monitor-{ended.pk}")

    assert response.status_code == 200
    assert deleted_rooms(fake_livekit) == [f"call-{ended.pk}"]


def test_a_listener_joining_an_ended_phone_call_still_playing_its_answer_keeps_the_room(
    workflow, fake_livekit, tasks_run_at_once, django_capture_on_commit_callbacks
):
    """The caller of an inbound call over the limit is still hearing the busy message."""
    refused = phone_call(workflow, status=S.FAILED, end_reason="concurrency_limit")
    room = f"call-{refused.pk}"
    fake_livekit.add_room(room, ["sip_+15550100", f"monitor-{refused.pk}"])
    with django_capture_on_commit_callbacks(execute=True):
        send("participant_joined", refused.pk, identity=f"monitor-{refused.pk}")

    assert [request.method for request in fake_livekit.requests] == ["ListParticipants"]
    assert room in fake_livekit.rooms


def test_a_listener_joining_a_phone_call_in_progress_keeps_its_room(
    workflow, fake_livekit, tasks_run_at_once, django_capture_on_commit_callbacks
):
    call = phone_call(workflow, active=True)
    with django_capture_on_commit_callbacks(execute=True):
        send("participant_joined", call.pk, identity=f"monitor-{call.pk}")

    assert fake_livekit.requests == []
