"""A recording whose start failed or whose answer was lost: LiveKit down or unreachable
fails the recording, never the call; an egress LiveKit ran after our client gave up on
its answer (its webhooks overtaking it, or lost with it) is found and completed, not
failed, and an erased user's file from such a start is deleted."""

from __future__ import annotations

import datetime
import time

import pytest
from django.conf import settings
from django.utils import timezone
from livekit.protocol import egress as egress_models

from calls.models import Call
from recordings.models import Recording
from tests.recordings import (
    download,
    join,
    object_keys,
    run_worker,
    start_call,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_livekit_down_at_the_start_fails_the_recording_not_the_call(
    api, recording_workflow, egress_fake, recordings_bucket
) -> None:
    egress_fake.fail("StartRoomCompositeEgress", "500")
    call_id = start_call(api)
    join(call_id)

    run_worker()

    assert Call.objects.get(pk=call_id).status == "active"
    body = api.get(f"/api/v1/calls/{call_id}/recording").json()
    assert body == {
        "status": "failed",
        "url": None,
        "expires_at": None,
        "duration_seconds": None,
        "size_bytes": None,
        "error": "LiveKit could not start the recording: "
        "LiveKit refused StartRoomCompositeEgress: internal",
    }
    assert settings.RECORDINGS_S3_SECRET_ACCESS_KEY not in body["error"]


def test_livekit_unreachable_at_the_start_fails_the_recording(
    api, recording_workflow, recordings_bucket, settings
) -> None:
    settings.LIVEKIT_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    settings.LIVEKIT_API_TIMEOUT_SECONDS = 1.0
    call_id = start_call(api)
    join(call_id)

    run_worker()

    recording = Recording.objects.get(call_id=call_id)
    assert recording.status == "failed"
    # Not the connection's details (aiohttp's "Cannot connect to host <address>"): the
    # customer reads this error, and the platform's LiveKit address is not theirs to see.
    error = api.get(f"/api/v1/calls/{call_id}/recording").json()["error"]
    assert error == recording.error == "LiveKit could not start the recording: LiveKit unreachable"
    assert Call.objects.get(pk=call_id).status == "active"


def answer_lost(egress_fake, *, then=None) -> None:
    """LiveKit starts the egress but its answer comes after our client gave up; `then`
    runs with the egress before that (e.g. its webhook overtaking the answer)."""
    start = egress_fake._StartRoomCompositeEgress

    def start_answering_late(message, response_class):
        info = start(message, response_class)
        if then is not None:
            then(info)
        time.sleep(1.5)  # beyond the 1 s of livekit_gives_up_fast
        return info

    egress_fake._StartRoomCompositeEgress = start_answering_late


def test_an_egress_that_ran_after_its_start_answer_was_lost_is_complete_not_failed(
    api, recording_workflow, egress_fake, recordings_bucket, s3_server, livekit_gives_up_fast
) -> None:
    answer_lost(egress_fake)
    call_id = start_call(api)
    join(call_id)

    run_worker()
    assert Recording.objects.get(call_id=call_id).status == "failed"  # our guess, for now
    egress_fake.egress_run()

    recording = Recording.objects.get(call_id=call_id)
    assert (recording.status, recording.duration_seconds, recording.error) == ("complete", 2, "")
    assert object_keys(s3_server, recordings_bucket) == [recording.object_key]
    assert api.get(f"/api/v1/calls/{call_id}/recording").json()["url"] is not None


def test_an_egress_whose_start_answer_and_webhooks_were_lost_is_found_once_the_call_ended(
    api, recording_workflow, fake_livekit, recordings_bucket, s3_server, livekit_gives_up_fast
) -> None:
    """LiveKit started the egress but its answer came too late, and its webhooks were
    lost too (a deploy): the recording said `failed` for good, with no link, while its
    file was in the bucket. `expire_calls` asks LiveKit for the room's egresses."""
    from calls.expiry import calls_expire

    answer_lost(fake_livekit)
    call_id = start_call(api)
    join(call_id)
    run_worker()
    assert Recording.objects.get(call_id=call_id).status == "failed"  # our guess, for now
    fake_livekit.egress_run()  # the file is uploaded; LiveKit's webhooks never arrive
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200

    calls_expire(now=timezone.now() + datetime.timedelta(hours=1))

    recording = Recording.objects.get(call_id=call_id)
    assert (recording.status, recording.duration_seconds, recording.error) == ("complete", 2, "")
    assert recording.egress_id in fake_livekit.egresses
    body = api.get(f"/api/v1/calls/{call_id}/recording").json()
    assert download(body["url"]) == fake_livekit.egress_file


def test_a_failed_start_livekit_never_received_is_asked_about_once(
    api, recording_workflow, fake_livekit, recordings_bucket
) -> None:
    from calls.expiry import calls_expire

    fake_livekit.fail("StartRoomCompositeEgress", "503")
    call_id = start_call(api)
    join(call_id)
    run_worker()
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200

    calls_expire(now=timezone.now() + datetime.timedelta(hours=1))
    calls_expire(now=timezone.now() + datetime.timedelta(hours=2))

    recording = Recording.objects.get(call_id=call_id)
    assert (recording.status, recording.egress_id) == ("failed", None)
    assert recording.error.startswith("LiveKit could not start the recording")
    assert recording.ended_at is not None
    assert len(fake_livekit.calls("ListEgress")) == 1


def test_the_file_of_an_erased_users_start_whose_answer_and_webhooks_were_lost_is_deleted(
    api, recording_workflow, fake_livekit, recordings_bucket, s3_server, livekit_gives_up_fast
) -> None:
    """The same start, its recording deleted mid-call (the user erased): the deletion
    found no file yet and no egress to stop, and the file the egress wrote afterwards
    stayed in the bucket for good (the row, `deleted`, was never looked at again)."""
    from calls.expiry import calls_expire
    from recordings.deletion import recording_delete

    answer_lost(fake_livekit)
    call_id = start_call(api)
    join(call_id)
    run_worker()
    assert recording_delete(call_id=call_id)
    fake_livekit.egress_run()  # the egress uploads after it; its webhooks are lost
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200
    key = Recording.objects.get(call_id=call_id).object_key
    assert object_keys(s3_server, recordings_bucket) == [key]

    calls_expire(now=timezone.now() + datetime.timedelta(hours=1))
    run_worker()

    assert object_keys(s3_server, recordings_bucket) == []
    assert Recording.objects.get(call_id=call_id).status == "deleted"


def test_an_egress_whose_webhook_overtook_a_lost_answer_is_not_failed_by_it(
    api, recording_workflow, egress_fake, recordings_bucket, s3_server, livekit_gives_up_fast
) -> None:
    def started(info) -> None:
        info.status = egress_models.EgressStatus.EGRESS_ACTIVE
        egress_fake.egress_webhook_send("egress_started", info)

    answer_lost(egress_fake, then=started)
    call_id = start_call(api)
    join(call_id)

    run_worker()

    recording = Recording.objects.get(call_id=call_id)
    assert (recording.status, recording.error) == ("recording", "")
    assert recording.egress_id in egress_fake.egresses
