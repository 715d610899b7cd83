"""LiveKit's egress webhooks move a call's recording: deduplicated by event id, never
backwards, failures shown with LiveKit's error, the call itself never touched."""

from __future__ import annotations

import json

import pytest

from calls.models import LiveKitWebhookEvent
from recordings.models import Recording
from tests.factories import CallFactory, RecordingFactory
from tests.livekit_samples import post_webhook, sign
from tests.recordings import egress_body, send_egress

EGRESS = "EG_hSjqRk4U3Ztq"


@pytest.fixture
def recording(organization, workflow) -> Recording:
    call = CallFactory(organization=organization, workflow=workflow, active=True)
    return RecordingFactory(
        call=call, status="starting", egress_id=EGRESS, duration_seconds=None, size_bytes=None
    )


def state(recording: Recording) -> tuple:
    recording.refresh_from_db()
    return recording.status, recording.duration_seconds, recording.size_bytes, recording.error


def send(name: str, recording: Recording, **kwargs: object) -> dict:
    response = send_egress(name, call_id=recording.call_id, egress_id=EGRESS, **kwargs)
    assert response.status_code == 200, response.content
    return response.json()


def test_started_updated_ended_move_the_recording_to_complete(api, recording) -> None:
    assert send("egress_started", recording) == {"result": "handled"}
    assert state(recording) == ("recording", None, None, "")
    send("egress_updated", recording)
    assert state(recording) == ("processing", None, None, "")
    send("egress_ended", recording)

    assert state(recording) == ("complete", 181, 1432104, "")
    detail = api.get(f"/api/v1/calls/{recording.call_id}").json()
    assert detail["recording"] == {
        "status": "complete",
        "duration_seconds": 181,
        "size_bytes": 1432104,
    }
    assert detail["status"] == "active"  # the call is the call's own business


def test_a_late_started_after_ended_changes_nothing(recording) -> None:
    send("egress_ended", recording)
    send("egress_updated", recording)
    send("egress_started", recording)

    assert state(recording) == ("complete", 181, 1432104, "")


def test_a_replayed_event_is_acknowledged_and_applied_once(recording) -> None:
    body = egress_body("egress_ended", call_id=recording.call_id, egress_id=EGRESS)
    first = post_webhook(body)
    Recording.objects.filter(pk=recording.pk).update(size_bytes=1)  # would be overwritten

    again = post_webhook(body)

    assert (first.json(), again.json()) == ({"result": "handled"}, {"result": "duplicate"})
    assert LiveKitWebhookEvent.objects.filter(event="egress_ended").count() == 1
    assert state(recording)[2] == 1


@pytest.mark.parametrize(
    ("status", "error", "shown"),
    [
        (
            "EGRESS_FAILED",
            "could not upload file: AccessDenied",
            "could not upload file: AccessDenied",
        ),
        ("EGRESS_ABORTED", "Start signal not received", "Start signal not received"),
    ],
)
def test_a_failed_egress_shows_failed_with_livekits_error(
    api, recording, status: str, error: str, shown: str
) -> None:
    send("egress_started", recording)
    send("egress_ended", recording, status=status, error=error)

    assert state(recording) == ("failed", None, None, shown)
    body = api.get(f"/api/v1/calls/{recording.call_id}/recording").json()
    assert (body["status"], body["url"], body["error"]) == ("failed", None, shown)
    assert api.get(f"/api/v1/calls/{recording.call_id}").json()["status"] == "active"


@pytest.mark.parametrize(
    ("error", "details", "shown"),
    [
        ("Session limit reached", "", "Session limit reached"),
        ("", "Session limit reached", "Session limit reached"),
        ("", "", "EGRESS_LIMIT_REACHED"),
    ],
)
def test_an_egress_ended_at_its_limit_is_complete_with_its_file_saying_why_it_ended(
    api, recording, error: str, details: str, shown: str
) -> None:
    """EGRESS_LIMIT_REACHED: the egress hit its maximum duration and wrote the file
    that far (older LiveKit egresses say so in `error`, newer ones in `details`)."""
    send("egress_started", recording)
    send("egress_ended", recording, status="EGRESS_LIMIT_REACHED", error=error, details=details)

    assert state(recording) == ("complete", 181, 1432104, shown)
    body = api.get(f"/api/v1/calls/{recording.call_id}/recording").json()
    assert (body["status"], body["error"]) == ("complete", shown)


@pytest.mark.parametrize("status", ["EGRESS_COMPLETE", "EGRESS_FAILED"])
def test_an_egress_end_stamped_before_the_recording_existed_counts_from_its_creation(
    recording, status: str
) -> None:
    """A webhook delivered over 2 s late is timed by its whole-second stamp (or LiveKit's
    clock is behind ours): the recording showed `ended_at` (and `updated_at`) before its
    `created_at` in the admin."""
    behind = recording.created_at.timestamp() - 30

    send("egress_ended", recording, status=status, created_at=behind)

    recording.refresh_from_db()
    assert recording.ended_at == recording.created_at
    assert recording.updated_at == recording.created_at


def test_a_complete_after_a_failure_changes_nothing(recording) -> None:
    send("egress_ended", recording, status="EGRESS_FAILED", error="boom")
    send("egress_ended", recording)

    assert state(recording) == ("failed", None, None, "boom")


def test_an_egress_webhook_overtaking_livekits_answer_claims_the_calls_recording(
    organization, workflow
) -> None:
    call = CallFactory(organization=organization, workflow=workflow, active=True)
    recording = RecordingFactory(
        call=call, status="starting", egress_id=None, duration_seconds=None, size_bytes=None
    )

    send("egress_started", recording)

    recording.refresh_from_db()
    assert (recording.egress_id, recording.status) == (EGRESS, "recording")


def test_an_egress_of_no_recording_of_ours_changes_nothing(recording) -> None:
    other = CallFactory(organization=recording.call.organization, active=True)

    response = send_egress("egress_ended", call_id=other.pk, egress_id="EG_someone_else")

    assert response.json() == {"result": "unknown_room"}
    assert state(recording) == ("starting", None, None, "")


def test_an_unsigned_egress_webhook_is_401_and_changes_nothing(recording) -> None:
    body = egress_body("egress_ended", call_id=recording.call_id, egress_id=EGRESS)

    response = post_webhook(body, authorization=sign(body, secret="not-our-secret-at-all"))

    assert response.status_code == 401
    assert state(recording) == ("starting", None, None, "")


def test_the_call_detail_reads_the_recording_in_the_calls_own_query(
    api, recording, django_assert_num_queries
) -> None:
    with django_assert_num_queries(3):  # API key + call (analysis, cost, recording) + samples
        response = api.get(f"/api/v1/calls/{recording.call_id}")

    assert response.json()["recording"] == {
        "status": "starting",
        "duration_seconds": None,
        "size_bytes": None,
    }


def test_the_recording_endpoint_takes_two_queries(
    api, recording, recordings_bucket, django_assert_num_queries
) -> None:
    send("egress_ended", recording)

    with django_assert_num_queries(2):  # API key + call with its recording; signed locally
        response = api.get(f"/api/v1/calls/{recording.call_id}/recording")

    assert response.json()["url"] is not None


def test_the_duration_is_whole_seconds_rounded_down(recording) -> None:
    """DESIGN.md: `duration_seconds` everywhere is whole seconds, rounded down; a file of
    2.6 s is 2, as a call of 2.6 s is (it said 3, a second that was never recorded)."""
    payload = json.loads(egress_body("egress_ended", call_id=recording.call_id, egress_id=EGRESS))
    payload["egressInfo"]["fileResults"][0]["duration"] = "2600000000"

    assert post_webhook(json.dumps(payload)).status_code == 200

    assert state(recording) == ("complete", 2, 1432104, "")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_started_racing_the_ended_that_claims_the_egress_does_not_reopen_it(
    organization, workflow
) -> None:
    """LiveKit's answer to the start not in yet (or lost), `egress_ended` (failed) and a
    late `egress_started` arrive together: the first claims the recording for the
    egress and fails it; the second, whose claim found it already taken, counted itself
    the claimer too and so moved the final `failed` back to `recording`, for good."""
    import threading
    import time

    from django.db import connection, transaction
    from django.utils import timezone

    from recordings.services import recording_egress_update
    from voicecalls.livekit import EgressUpdate

    call = CallFactory(organization=organization, workflow=workflow, active=True)
    recording = RecordingFactory(
        call=call, status="starting", egress_id=None, duration_seconds=None, size_bytes=None
    )
    claimed = threading.Event()

    def ended_failed() -> None:
        try:
            with transaction.atomic():  # as livekit_webhook_handle
                recording_egress_update(
                    egress=EgressUpdate(
                        EGRESS,
                        "EGRESS_FAILED",
                        "Start signal not received",
                        filepath=recording.object_key,
                    ),
                    at=timezone.now(),
                )
                claimed.set()
                time.sleep(1.0)  # committing while the other event is handled
        finally:
            connection.close()

    thread = threading.Thread(target=ended_failed)
    thread.start()
    assert claimed.wait(10)
    send("egress_started", recording)
    thread.join(10)

    assert state(recording) == ("failed", None, None, "Start signal not received")


def test_an_egress_failure_whose_error_holds_a_nul_fails_the_recording(recording) -> None:
    """LiveKit's error may quote what the storage answered: one with a NUL was a 400
    (PostgreSQL cannot store it) and the event lost, the recording `recording` for good."""
    send("egress_started", recording)
    send("egress_ended", recording, status="EGRESS_FAILED", error="upload: \x00 bad")

    assert state(recording) == ("failed", None, None, "upload: \ufffd bad")


@pytest.mark.parametrize("bad", ["nul \x00 inside", "lone \ud800 surrogate"])
def test_an_egress_webhook_whose_file_path_the_database_cannot_take_is_400(recording, bad) -> None:
    """The path is looked up among the recordings' keys (a duplicate egress's): on
    PostgreSQL a NUL in a query parameter was a 500."""
    response = send_egress(
        "egress_ended", call_id=recording.call_id, egress_id="EG_other", filepath=f"k{bad}"
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "parse_error"
    assert state(recording) == ("starting", None, None, "")
