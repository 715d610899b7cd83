from __future__ import annotations

import time

import pytest

from calls.lifecycle import call_transition
from calls.models import CallStatus
from tests.factories import CallFactory
from tests.livekit_samples import send

S = CallStatus


def end(api, call):
    # A 5xx answer is also reported as an exception (for error trackers); the test
    # client would re-raise it instead of returning the response.
    api.raise_request_exception = False
    return api.post(f"/api/v1/calls/{call.pk}/end")


@pytest.fixture
def call(workflow, fake_livekit):
    call = CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    fake_livekit.add_room(call.room_name, [f"user-{call.pk}", "agent-AJ_1"])
    return call


def test_ending_a_call_deletes_the_room_and_completes_it(api, call, fake_livekit):
    response = end(api, call)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(call.pk)
    assert body["status"] == "completed"
    assert body["end_reason"] == "api_request"
    assert body["current_agent"] is None
    assert body["ended_at"] is not None
    assert "latency" in body["metrics"]
    deletes = fake_livekit.calls("DeleteRoom")
    assert [(r.body, r.identity_ok) for r in deletes] == [({"room": call.room_name}, True)]
    assert call.room_name not in fake_livekit.rooms
    call.refresh_from_db()
    assert call.hangup_requested_at is not None


def test_a_room_livekit_does_not_know_is_already_gone(api, workflow, fake_livekit):
    call = CallFactory(organization=workflow.organization, workflow=workflow)
    response = end(api, call)
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["end_reason"]) == (
        "completed",
        "api_request",
    )
    assert len(fake_livekit.calls("DeleteRoom")) == 1


@pytest.mark.parametrize("ended", ["completed", "failed", "disconnected", "timeout"])
def test_an_ended_call_is_200_without_asking_livekit(api, workflow, fake_livekit, ended):
    call = CallFactory(
        organization=workflow.organization, workflow=workflow, completed=True, status=ended
    )
    before = api.get(f"/api/v1/calls/{call.pk}").json()
    response = end(api, call)
    assert response.status_code == 200
    assert response.json() == before
    assert fake_livekit.requests == []


@pytest.mark.parametrize("mode", ["500", "hang"])
def test_livekit_failing_is_502_and_the_call_is_unchanged(
    api, call, fake_livekit, livekit_gives_up_fast, mode
):
    fake_livekit.fail("DeleteRoom", mode)
    before = api.get(f"/api/v1/calls/{call.pk}").json()
    started = time.monotonic()
    response = end(api, call)
    assert time.monotonic() - started < 3  # the 1 s timeout, not the 5 s hang
    assert response.status_code == 502
    assert response.json() == {
        "type": "server_error",
        "errors": [
            {
                "code": "bad_gateway",
                "detail": "LiveKit could not close the room; the call is unchanged.",
                "attr": None,
            }
        ],
    }
    after = api.get(f"/api/v1/calls/{call.pk}").json()
    after["duration_seconds"] = before["duration_seconds"]
    after["metrics"]["duration_seconds"] = before["metrics"]["duration_seconds"]
    assert after == before
    call.refresh_from_db()
    assert call.hangup_requested_at is None
    assert call.end_reason is None


@pytest.mark.django_db(transaction=True)  # the hang-up commits on LiveKit's thread
def test_livekit_failing_after_the_user_hung_up_meanwhile_answers_the_ended_call(
    api, call, fake_livekit
):
    """The 502 said "the call is unchanged" of a call the user's hang-up had ended."""
    fake_livekit.fail("DeleteRoom", "500")

    def user_hangs_up(method: str) -> None:
        from django.db import connection

        try:
            if method == "DeleteRoom":
                call_transition(call_id=call.pk, to_status=S.COMPLETED, end_reason="user_hangup")
        finally:
            connection.close()

    fake_livekit.on_request = user_hangs_up

    response = end(api, call)

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["end_reason"]) == (
        "completed",
        "user_hangup",
    )


def test_livekit_unreachable_is_502(api, workflow, settings, db):
    settings.LIVEKIT_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    call = CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    assert end(api, call).status_code == 502
    call.refresh_from_db()
    assert (call.status, call.hangup_requested_at) == (S.ACTIVE, None)


def test_the_rooms_own_webhooks_after_a_hangup_say_api_request(api, call, fake_livekit):
    """LiveKit's ROOM_DELETED departure may arrive before the API marks the call."""
    from calls import services
    from voicecalls import livekit

    original = livekit.room_delete

    def delete_then_webhook(*, room_name: str) -> bool:
        result = original(room_name=room_name)
        send("participant_left", call.pk, reason="ROOM_DELETED")
        return result

    livekit.room_delete = delete_then_webhook
    try:
        services.call_end(call=call)
    finally:
        livekit.room_delete = original
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.COMPLETED, "api_request")


def test_another_organizations_call_is_404(api, outsider_workflow, fake_livekit):
    call = CallFactory(organization=outsider_workflow.organization, workflow=outsider_workflow)
    assert end(api, call).status_code == 404
    assert fake_livekit.requests == []


def test_an_agent_key_is_403(agent_api, call):
    assert end(agent_api, call).status_code == 403


def test_livekit_refusing_our_credentials_is_502(api, call, fake_livekit, settings):
    settings.LIVEKIT_API_SECRET = "not-the-secret-livekit-knows"
    assert end(api, call).status_code == 502
    assert [r.identity_ok for r in fake_livekit.calls("DeleteRoom")] == [False]
    assert call.room_name in fake_livekit.rooms


def test_twirp_not_found_counts_as_already_gone(api, call, fake_livekit):
    fake_livekit.fail("DeleteRoom", "not_found")
    response = end(api, call)
    assert response.status_code == 200
    assert response.json()["status"] == "completed"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_hang_up_as_a_transfer_in_flight_fails_ends_the_call(api, call, fake_livekit):
    """The hang-up found a transfer recorded, then read the call's end reason to say so:
    the transfer, refused by its destination in between, had withdrawn its record, and
    the call with no end reason was taken for ended: a 200 showing it `active`, nothing
    hung up. (The transfer's failure commits from the database driver's hook, just
    before the read that follows the hang-up's update.)"""
    import threading

    from django.db import connection
    from django.utils import timezone

    from calls.models import Call

    Call.objects.filter(pk=call.pk).update(
        hangup_requested_at=timezone.now(), end_reason="transferred", transfer_destination="+1"
    )

    def transfer_fails_elsewhere() -> None:
        from django.db import connection as own

        try:
            Call.objects.filter(pk=call.pk).update(
                hangup_requested_at=None, end_reason=None, transfer_destination=None
            )
        finally:
            own.close()

    def before_the_read(execute, sql, params, many, context):
        if sql.startswith('UPDATE "calls_call" SET "hangup_requested_at"'):
            recording.set()
        elif recording.is_set() and sql.startswith("SELECT") and not withdrawn.is_set():
            withdrawn.set()
            thread = threading.Thread(target=transfer_fails_elsewhere)
            thread.start()
            thread.join()
        return execute(sql, params, many, context)

    recording, withdrawn = threading.Event(), threading.Event()
    with connection.execute_wrapper(before_the_read):
        response = end(api, call)

    assert withdrawn.is_set()
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["end_reason"]) == (
        "completed",
        "api_request",
    )
    assert len(fake_livekit.calls("DeleteRoom")) == 1
