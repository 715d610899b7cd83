"""Recording calls (DESIGN.md "Recordings and data retention"): a call of a recording
workflow that becomes active gets an audio-only OGG room composite egress, started by
the task worker; the fake LiveKit's egress uploads a real file to the S3 stand-in (moto)
and sends the egress webhooks; the client downloads it through a presigned link."""

from __future__ import annotations

import base64
import datetime
import json
import logging
import time
import urllib.request

import pytest
from django.conf import settings
from django.utils import timezone
from livekit.protocol import egress as egress_models

from calls.models import Call
from recordings.models import Recording
from tests.factories import CallFactory, RecordingFactory
from tests.livekit_samples import send
from tests.ogg import ogg_opus_silence
from tests.recordings import (
    egress_of_a_start_whose_worker_died,
    join,
    object_keys,
    run_worker,
    s3_client,
    start_call,
    worker_killed_mid_start,
)

pytestmark = pytest.mark.django_db(transaction=True)

ORG_KEY_ID = "AKIAORGANIZATION0042"
ORG_SECRET = "org-secret-2bq9Vx7LmT4pWz1K"


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return response.read()


def started_egresses(fake) -> list[dict]:
    return [r.body for r in fake.calls("StartRoomCompositeEgress")]


def test_a_recorded_call_is_uploaded_and_downloadable_through_a_presigned_link(
    api, recording_workflow, egress_fake, recordings_bucket, s3_server
) -> None:
    call_id = start_call(api)
    join(call_id)
    assert started_egresses(egress_fake) == []  # never on the request that made it active

    run_worker()
    egress_fake.egress_run()

    recording = Recording.objects.get(call_id=call_id)
    [request] = started_egresses(egress_fake)
    assert request == {
        "roomName": f"call-{call_id}",
        "audioOnly": True,
        "fileOutputs": [
            {
                "fileType": "OGG",
                "filepath": recording.object_key,
                "disableManifest": True,
                "s3": {
                    "accessKey": settings.RECORDINGS_S3_ACCESS_KEY_ID,
                    "secret": settings.RECORDINGS_S3_SECRET_ACCESS_KEY,
                    "region": "us-east-1",
                    "endpoint": s3_server,
                    "bucket": recordings_bucket,
                    "forcePathStyle": True,
                },
            }
        ],
    }
    organization_id = Call.objects.get(pk=call_id).organization_id
    prefix = f"recordings/{organization_id}/{call_id}/"
    assert recording.object_key.startswith(prefix)
    assert len(recording.object_key.removeprefix(prefix).removesuffix(".ogg")) >= 24
    assert object_keys(s3_server, recordings_bucket) == [recording.object_key]
    assert egress_fake.webhook_answers == [200, 200, 200, 200]

    detail = api.get(f"/api/v1/calls/{call_id}").json()
    assert detail["recording"] == {"status": "complete", "duration_seconds": 2, "size_bytes": 561}
    body = api.get(f"/api/v1/calls/{call_id}/recording").json()
    assert body == {
        "status": "complete",
        "url": body["url"],
        "expires_at": body["expires_at"],
        "duration_seconds": 2,
        "size_bytes": 561,
        "error": None,
    }
    assert body["url"].startswith(f"{s3_server}/{recordings_bucket}/{prefix}")
    assert "X-Amz-Expires=900" in body["url"]
    assert settings.RECORDINGS_S3_SECRET_ACCESS_KEY not in json.dumps(body)
    assert download(body["url"]) == ogg_opus_silence(2.0) == egress_fake.egress_file


def test_a_recording_on_an_endpoint_no_s3_client_accepts_has_no_link_and_no_error(
    api, organization, recordings_bucket, s3_server
) -> None:
    """Stored before the API refused such hosts: the answer says complete, without a link."""
    call = CallFactory(organization=organization, completed=True)
    RecordingFactory(call=call, endpoint="https://minio_1.example.com", bucket="acme")

    response = api.get(f"/api/v1/calls/{call.id}/recording")

    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["url"]) == ("complete", None)
    assert api.get(f"/api/v1/calls/{call.id}").status_code == 200


def test_the_answer_with_a_download_link_is_never_cached(
    api, organization, recordings_bucket, s3_server
) -> None:
    call = CallFactory(organization=organization, completed=True)
    RecordingFactory(call=call, bucket=recordings_bucket)

    response = api.get(f"/api/v1/calls/{call.id}/recording")

    assert response.status_code == 200, response.content
    assert response.json()["url"] is not None
    assert "no-store" in response["Cache-Control"]


def test_storage_credentials_reach_no_client_and_no_log(
    api, recording_workflow, egress_fake, recordings_bucket, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        call_id = start_call(api)
        join(call_id)
        run_worker()
        egress_fake.egress_run()
        token = api.post(f"/api/v1/calls/{call_id}/token").json()["token"]
        seen = [
            base64.urlsafe_b64decode(token.split(".")[1] + "==").decode(),  # the JWT's claims
            api.get(f"/api/v1/calls/{call_id}").content.decode(),
            api.get(f"/api/v1/calls/{call_id}/recording").content.decode(),
            api.get("/api/v1/workflows").content.decode(),
        ]

    secret = settings.RECORDINGS_S3_SECRET_ACCESS_KEY
    assert all(secret not in text for text in seen)
    assert settings.RECORDINGS_S3_ACCESS_KEY_ID not in "".join(seen[:2])
    assert recordings_bucket not in "".join(seen[:2])
    assert secret not in caplog.text
    assert Recording.objects.get(call_id=call_id).status == "complete"


def test_a_workflow_without_the_setting_records_nothing(
    api, workflow, egress_fake, recordings_bucket, s3_server
) -> None:
    call_id = start_call(api)
    join(call_id)
    run_worker()

    assert started_egresses(egress_fake) == []
    assert Recording.objects.count() == 0
    assert api.get(f"/api/v1/calls/{call_id}").json()["recording"] is None
    response = api.get(f"/api/v1/calls/{call_id}/recording")
    assert response.status_code == 404
    assert response.json()["errors"][0]["detail"] == "This call has no recording."


def test_without_any_storage_the_call_runs_unrecorded_and_it_is_logged(
    api, recording_workflow, egress_fake, caplog: pytest.LogCaptureFixture
) -> None:
    call_id = start_call(api)
    with caplog.at_level(logging.WARNING, logger="recordings.services"):
        join(call_id)
    run_worker()

    assert Call.objects.get(pk=call_id).status == "active"
    assert Recording.objects.count() == 0
    assert started_egresses(egress_fake) == []
    assert f"call {call_id} is not recorded" in caplog.text
    assert api.get(f"/api/v1/calls/{call_id}/recording").status_code == 404


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


def test_a_failed_egress_shows_livekits_error_and_leaves_the_call_alone(
    api, recording_workflow, egress_fake, recordings_bucket, s3_server
) -> None:
    egress_fake.egress_outcome = "failed"
    egress_fake.egress_error = "Start signal not received"
    call_id = start_call(api)
    join(call_id)

    run_worker()
    egress_fake.egress_run()

    body = api.get(f"/api/v1/calls/{call_id}/recording").json()
    assert (body["status"], body["url"], body["error"]) == (
        "failed",
        None,
        "Start signal not received",
    )
    assert Call.objects.get(pk=call_id).status == "active"
    assert object_keys(s3_server, recordings_bucket) == []


def test_an_egress_that_hit_its_time_limit_is_complete_with_its_file_and_says_it_was_cut(
    api, recording_workflow, egress_fake, recordings_bucket, s3_server
) -> None:
    """LiveKit's egress ends at its maximum duration with EGRESS_LIMIT_REACHED, having
    written and uploaded the file up to there (its own tests check that file): read as
    a failure, a recording whose file was in the bucket had no link."""
    egress_fake.egress_outcome = "limit_reached"
    call_id = start_call(api)
    join(call_id)

    run_worker()
    egress_fake.egress_run()

    body = api.get(f"/api/v1/calls/{call_id}/recording").json()
    assert (body["status"], body["duration_seconds"], body["size_bytes"], body["error"]) == (
        "complete",
        2,
        561,
        "Session limit reached",
    )
    assert download(body["url"]) == egress_fake.egress_file
    assert Recording.objects.get(call_id=call_id).ended_at is not None


def test_an_egress_that_hit_its_time_limit_with_its_webhooks_lost_is_reconciled_complete(
    api, recording_workflow, fake_livekit, recordings_bucket, s3_server
) -> None:
    from calls.expiry import calls_expire

    fake_livekit.egress_outcome = "limit_reached"
    call_id = start_call(api)
    join(call_id)
    run_worker()
    fake_livekit.egress_run()  # uploaded; its webhooks are lost
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200

    calls_expire(now=timezone.now() + datetime.timedelta(hours=1))

    recording = Recording.objects.get(call_id=call_id)
    assert (recording.status, recording.duration_seconds, recording.error) == (
        "complete",
        2,
        "Session limit reached",
    )
    body = api.get(f"/api/v1/calls/{call_id}/recording").json()
    assert download(body["url"]) == fake_livekit.egress_file


def test_an_organization_bucket_is_used_and_its_credentials_reach_only_the_egress(
    api, recording_workflow, egress_fake, recordings_bucket, s3_server
) -> None:
    own_bucket = "acme-own-recordings"
    s3_client(s3_server).create_bucket(Bucket=own_bucket)
    response = api.put(
        "/api/v1/organization/recording-storage",
        {
            "endpoint": s3_server,
            "bucket": own_bucket,
            "region": "us-east-1",
            "access_key_id": ORG_KEY_ID,
            "secret_access_key": ORG_SECRET,
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    call_id = start_call(api)
    join(call_id)

    run_worker()
    egress_fake.egress_run()

    [request] = started_egresses(egress_fake)
    assert request["fileOutputs"][0]["s3"]["bucket"] == own_bucket
    assert request["fileOutputs"][0]["s3"]["accessKey"] == ORG_KEY_ID
    assert request["fileOutputs"][0]["s3"]["secret"] == ORG_SECRET
    assert [u["access_key"] for u in egress_fake.egress_uploads] == [ORG_KEY_ID]
    recording = Recording.objects.get(call_id=call_id)
    assert (recording.storage, recording.bucket) == ("organization", own_bucket)
    assert object_keys(s3_server, own_bucket) == [recording.object_key]
    assert object_keys(s3_server, recordings_bucket) == []
    body = api.get(f"/api/v1/calls/{call_id}/recording").json()
    assert body["url"].startswith(f"{s3_server}/{own_bucket}/")
    assert ORG_SECRET not in json.dumps(body)
    assert download(body["url"]) == egress_fake.egress_file


def test_another_organizations_recording_is_never_issued(
    api, outsider_api, recording_workflow, egress_fake, recordings_bucket
) -> None:
    call_id = start_call(api)
    join(call_id)
    run_worker()
    egress_fake.egress_run()

    response = outsider_api.get(f"/api/v1/calls/{call_id}/recording")

    assert response.status_code == 404
    assert "X-Amz" not in response.content.decode()
    assert recordings_bucket not in response.content.decode()


def test_organization_credentials_no_key_opens_leave_the_call_unrecorded_not_broken(
    api, recording_workflow, egress_fake, settings, caplog: pytest.LogCaptureFixture
) -> None:
    api.put(
        "/api/v1/organization/recording-storage",
        {"bucket": "acme-own", "access_key_id": ORG_KEY_ID, "secret_access_key": ORG_SECRET},
        format="json",
    )
    settings.CRYPTOGRAPHY_KEY = "a-new-key-without-the-old-one-as-fallback"
    call_id = start_call(api)

    with caplog.at_level(logging.WARNING, logger="recordings.services"):
        join(call_id)
    run_worker()

    assert Call.objects.get(pk=call_id).status == "active"
    assert Recording.objects.count() == 0
    assert started_egresses(egress_fake) == []
    assert "cannot be decrypted" in caplog.text


def test_a_recording_whose_egress_webhooks_were_lost_is_reconciled_with_livekit(
    api, recording_workflow, fake_livekit, recordings_bucket, s3_server
) -> None:
    """LiveKit drops a webhook it could not deliver within 30 s (DESIGN.md): with its
    `egress_ended` lost, a recording whose file is in the bucket said `starting` for
    ever, with no link. `expire_calls` asks LiveKit (ListEgress) about the egresses of
    calls ended a while ago whose end it never heard of, as it does for silent calls."""
    from calls.expiry import calls_expire

    assert fake_livekit.webhook_sink is None  # every egress webhook is lost
    call_id = start_call(api)
    join(call_id)
    run_worker()
    fake_livekit.egress_run()  # the file is uploaded; LiveKit's webhooks never arrive
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200
    assert Recording.objects.get(call_id=call_id).status == "starting"

    calls_expire(now=timezone.now() + datetime.timedelta(hours=1))

    recording = Recording.objects.get(call_id=call_id)
    assert (recording.status, recording.duration_seconds, recording.size_bytes) == (
        "complete",
        2,
        561,
    )
    body = api.get(f"/api/v1/calls/{call_id}/recording").json()
    assert download(body["url"]) == fake_livekit.egress_file


def test_a_file_an_egress_finished_after_its_deletion_goes_even_when_its_webhook_was_lost(
    api, recording_workflow, fake_livekit, recordings_bucket, s3_server
) -> None:
    """Deleted (an erasure, retention) while the egress still wrote, a recording's file
    went only when `egress_ended` came: lost, the erased caller's voice stayed in the
    bucket for good, with no row left to find it by."""
    from calls.expiry import calls_expire
    from recordings.deletion import recording_delete

    call_id = start_call(api)
    join(call_id)
    run_worker()
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200
    assert recording_delete(call_id=call_id)  # nothing in the bucket yet
    fake_livekit.egress_run()  # the egress uploads after it; its webhooks are lost
    recording = Recording.objects.get(call_id=call_id)
    assert object_keys(s3_server, recordings_bucket) == [recording.object_key]

    calls_expire(now=timezone.now() + datetime.timedelta(hours=1))
    run_worker()

    assert object_keys(s3_server, recordings_bucket) == []
    assert Recording.objects.get(call_id=call_id).status == "deleted"


def test_an_egress_still_running_long_after_its_call_ended_is_stopped(
    api, recording_workflow, egress_fake, recordings_bucket
) -> None:
    """The room outlived the call (its DeleteRoom failed, a caller rejoined with a token
    still valid): the egress went on recording whoever was in it, with nothing ever
    stopping it. `expire_calls` stops it (StopEgress); it then finishes its file."""
    from calls.expiry import calls_expire

    egress_fake.egress_outcome = "manual"  # it runs until told otherwise
    call_id = start_call(api)
    join(call_id)
    run_worker()
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200
    egress_id = Recording.objects.get(call_id=call_id).egress_id

    calls_expire(now=timezone.now() + datetime.timedelta(hours=1))

    assert [r.body for r in egress_fake.calls("StopEgress")] == [{"egressId": egress_id}]
    assert egress_fake.egresses[egress_id].status == egress_models.EgressStatus.EGRESS_ENDING


def test_erasing_the_user_of_a_call_being_recorded_stops_its_egress(
    api, recording_workflow, egress_fake, recordings_bucket, organization
) -> None:
    """A call is not recorded once its user is erased (recording_schedule, and
    recording_start, refuse it); one already recording went on recording the erased
    user until the call ended, into a file deleted only afterwards."""
    from accounts.services import api_key_create
    from privacy.erasure import erasure_create, erasure_run

    egress_fake.egress_outcome = "manual"  # it runs until the room closes or it is stopped
    body = {"workflow_slug": "daily-call", "user_id": "user-9"}
    call_id = api.post("/api/v1/calls", body, format="json").json()["call_id"]
    join(call_id)
    run_worker()
    egress_id = Recording.objects.get(call_id=call_id).egress_id
    key, _ = api_key_create(name="privacy", organization=organization)

    erasure = erasure_create(organization=organization, user_id="user-9", api_key=key)
    erasure_run(erasure_id=erasure.pk)

    assert Recording.objects.get(call_id=call_id).status == "deleted"
    assert [r.body for r in egress_fake.calls("StopEgress")] == [{"egressId": egress_id}]


def test_a_recording_whose_start_task_died_with_its_worker_is_started_by_expire_calls(
    api, recording_workflow, egress_fake, recordings_bucket, settings
) -> None:
    """A call of a recording workflow became active, and the worker that took its
    `recording_start` was killed (a deploy, the OOM killer): the recording said
    `starting` for ever, the call went on unrecorded, and nothing looked at it again
    (`recordings_reconcile` only asks LiveKit about recordings with an egress id).
    `expire_calls` wakes a start nobody ran, as the webhook and analysis sweeps do."""
    from calls.expiry import calls_expire

    settings.CALL_RECONCILE_AFTER_SECONDS = 3600  # the call is still going
    egress_fake.egress_outcome = "manual"
    call_id = start_call(api)
    join(call_id)
    send("participant_joined_agent", call_id)  # the agent with them
    worker_killed_mid_start()
    run_worker()
    assert started_egresses(egress_fake) == []

    calls_expire(now=timezone.now() + datetime.timedelta(minutes=3))
    run_worker()

    assert len(started_egresses(egress_fake)) == 1
    recording = Recording.objects.get(call_id=call_id)
    assert recording.egress_id in egress_fake.egresses
    assert recording.status != "failed"


def test_a_recording_whose_start_was_lost_is_not_starting_for_ever_once_its_call_ended(
    api, recording_workflow, egress_fake, recordings_bucket
) -> None:
    """The same lost start, found only after the call ended: the recording ends
    `failed` with a reason, not `starting` for ever."""
    from calls.expiry import calls_expire

    call_id = start_call(api)
    join(call_id)
    worker_killed_mid_start()
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200

    calls_expire(now=timezone.now() + datetime.timedelta(hours=1))
    run_worker()

    recording = Recording.objects.get(call_id=call_id)
    assert recording.status == "failed"
    assert recording.error == "The call ended before the recording could start."
    assert started_egresses(egress_fake) == []


def test_an_egress_whose_start_died_before_its_id_was_kept_is_adopted_not_started_twice(
    api, recording_workflow, fake_livekit, recordings_bucket, settings
) -> None:
    """The recording said `starting` with no egress while LiveKit recorded the call, and
    `expire_calls` woke its start: a second egress into the same key, the first owned by
    no row (never stopped, never reconciled). LiveKit is asked for the room's egresses
    (ListEgress by room name) and the running one is the recording's."""
    from calls.expiry import calls_expire

    settings.CALL_RECONCILE_AFTER_SECONDS = 3600  # the call is still going
    fake_livekit.egress_outcome = "manual"
    call_id = start_call(api)
    join(call_id)
    orphan = egress_of_a_start_whose_worker_died(fake_livekit, call_id=call_id)

    result = calls_expire(now=timezone.now() + datetime.timedelta(minutes=3))
    run_worker()

    assert len(started_egresses(fake_livekit)) == 1
    recording = Recording.objects.get(call_id=call_id)
    assert (recording.egress_id, recording.status) == (orphan, "recording")
    assert {"roomName": f"call-{call_id}"} in [r.body for r in fake_livekit.calls("ListEgress")]
    assert fake_livekit.calls("StopEgress") == []
    assert result.livekit_errors == 0


def test_a_lost_start_is_not_woken_while_livekit_cannot_say_whether_it_reached_it(
    api, recording_workflow, fake_livekit, recordings_bucket, settings
) -> None:
    """Started again without knowing, it could be a second egress: the next pass asks."""
    from calls.expiry import calls_expire

    settings.CALL_RECONCILE_AFTER_SECONDS = 3600
    call_id = start_call(api)
    join(call_id)
    worker_killed_mid_start()
    fake_livekit.fail("ListEgress", "500")

    result = calls_expire(now=timezone.now() + datetime.timedelta(minutes=3))
    run_worker()

    assert result.livekit_errors == 1
    assert started_egresses(fake_livekit) == []
    assert Recording.objects.get(call_id=call_id).status == "starting"


def test_an_adopted_egress_of_a_call_that_ended_is_stopped_by_a_later_pass(
    api, recording_workflow, fake_livekit, recordings_bucket
) -> None:
    """Adopted, the orphan is a recording's egress like any: one still running long
    after its call ended is stopped (it was left recording the room for good)."""
    from calls.expiry import calls_expire

    fake_livekit.egress_outcome = "manual"
    call_id = start_call(api)
    join(call_id)
    orphan = egress_of_a_start_whose_worker_died(fake_livekit, call_id=call_id)
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200

    calls_expire(now=timezone.now() + datetime.timedelta(hours=1))
    run_worker()
    calls_expire(now=timezone.now() + datetime.timedelta(hours=2))

    recording = Recording.objects.get(call_id=call_id)
    assert (recording.egress_id, recording.status) == (orphan, "recording")
    assert [r.body for r in fake_livekit.calls("StopEgress")] == [{"egressId": orphan}]
    assert fake_livekit.egresses[orphan].status == egress_models.EgressStatus.EGRESS_ENDING


def test_a_late_file_whose_deletion_task_died_with_its_worker_is_deleted_by_a_later_pass(
    api, recording_workflow, fake_livekit, recordings_bucket, s3_server
) -> None:
    """`expire_calls` found the file an egress finished after its recording's deletion
    (an erasure) and queued its deletion, marking the recording as settled in the same
    commit. The worker that took that task was killed: nothing ever looked again, and
    the erased caller's voice stayed in the bucket for good."""
    from django_tasks_db.models import DBTaskResult

    from calls.expiry import calls_expire
    from recordings.deletion import recording_delete

    call_id = start_call(api)
    join(call_id)
    run_worker()
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200
    assert recording_delete(call_id=call_id)
    fake_livekit.egress_run()  # the egress uploads after the deletion; webhooks lost
    recording = Recording.objects.get(call_id=call_id)
    calls_expire(now=timezone.now() + datetime.timedelta(hours=1))
    deletion = DBTaskResult.objects.filter(task_path="recordings.tasks.recording_file_delete")
    assert deletion.update(status="RUNNING", started_at=timezone.now()) == 1  # killed
    run_worker()
    assert object_keys(s3_server, recordings_bucket) == [recording.object_key]

    calls_expire(now=timezone.now() + datetime.timedelta(hours=2))
    run_worker()

    assert object_keys(s3_server, recordings_bucket) == []
    assert Recording.objects.get(call_id=call_id).status == "deleted"


def test_an_egress_livekit_forgot_fails_its_recording_and_holds_up_no_other(
    api, recording_workflow, fake_livekit, recordings_bucket, s3_server
) -> None:
    """LiveKit keeps an ended egress a while only (its store drops it; a LiveKit
    restart with a fresh Redis loses them all), and ListEgress by an id it no longer
    knows is NOT_FOUND, not an empty list. Read as a LiveKit error, it stopped every
    pass at the oldest such recording: `starting` for ever, with every recording after
    it never reconciled, and the same ListEgress sent every minute for good."""
    from calls.expiry import calls_expire

    forgotten = start_call(api)
    join(forgotten)
    run_worker()
    assert api.post(f"/api/v1/calls/{forgotten}/end").status_code == 200
    del fake_livekit.egresses[Recording.objects.get(call_id=forgotten).egress_id]
    fake_livekit._egress_jobs.clear()
    lost = start_call(api)
    join(lost)
    run_worker()
    fake_livekit.egress_run()  # uploaded; its webhooks are lost
    assert api.post(f"/api/v1/calls/{lost}/end").status_code == 200

    result = calls_expire(now=timezone.now() + datetime.timedelta(hours=1))

    assert result.livekit_errors == 0
    assert Recording.objects.get(call_id=forgotten).status == "failed"
    assert Recording.objects.get(call_id=lost).status == "complete"


def test_an_egress_still_ending_is_asked_about_once_per_reconcile_interval_not_every_pass(
    api, recording_workflow, egress_fake, recordings_bucket
) -> None:
    """An egress LiveKit still reports running or ending (stopped, its upload slow or
    stuck, or a StopEgress refused) was asked about by every `expire_calls` pass, every
    minute and on every host, with a StopEgress each time: as a deleted recording's
    egress is, it is looked at again RECONCILE_AFTER on, not before."""
    from calls.expiry import calls_expire

    egress_fake.egress_outcome = "manual"  # stopped, it stays ENDING (its upload hangs)
    call_id = start_call(api)
    join(call_id)
    run_worker()
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200
    egress_id = Recording.objects.get(call_id=call_id).egress_id
    later = timezone.now() + datetime.timedelta(hours=1)

    for minute in range(5):  # one pass a minute
        calls_expire(now=later + datetime.timedelta(minutes=minute))

    asked = [r for r in egress_fake.calls("ListEgress") if r.body.get("egressId") == egress_id]
    assert len(asked) == 1
    assert len(egress_fake.calls("StopEgress")) == 1


def test_a_start_a_live_worker_just_took_is_not_woken_again_and_started_twice(
    api, recording_workflow, egress_fake, recordings_bucket, settings, monkeypatch
) -> None:
    """A backlog held the start task queued for over START_LOST_AFTER; a worker has just
    taken it (RUNNING) when `expire_calls` passes: only READY tasks count as waiting, so
    the start was woken again. The woken run read the row after the first run's claim
    (its LiveKit request in flight), so the claim, by `updated_at` as read, let it
    through: two egresses recorded the call into one key, one of them unowned."""
    from django_tasks_db.models import DBTaskResult

    from recordings import services
    from recordings.reconcile import recordings_wake_lost_starts
    from voicecalls import livekit_egress

    settings.CALL_RECONCILE_AFTER_SECONDS = 3600
    egress_fake.egress_outcome = "manual"
    call_id = start_call(api)
    join(call_id)
    recording = Recording.objects.get(call_id=call_id)
    Recording.objects.filter(pk=recording.pk).update(
        updated_at=timezone.now() - datetime.timedelta(minutes=3)  # queued 3 minutes
    )
    taken = DBTaskResult.objects.filter(task_path="recordings.tasks.recording_start")
    assert taken.update(status="RUNNING", started_at=timezone.now()) == 1  # just taken

    recordings_wake_lost_starts(now=timezone.now())
    real_start = livekit_egress.room_audio_recording_start
    in_flight = []

    def start_meanwhile(**kwargs):
        if not in_flight:
            in_flight.append(True)
            run_worker()  # any woken run goes while this request is in flight
        return real_start(**kwargs)

    monkeypatch.setattr(livekit_egress, "room_audio_recording_start", start_meanwhile)
    assert services.recording_start(recording_id=recording.pk) == "started"  # the taken run

    assert len(started_egresses(egress_fake)) == 1


def test_a_lost_start_adopts_the_rooms_complete_egress_not_a_failed_one_listed_first(
    api, recording_workflow, fake_livekit, recordings_bucket, settings
) -> None:
    """The room's egresses have all ended: one failed (an earlier try), one complete
    (the lost start's, its file written). ListEgress gives them in no set order; the
    first listed was adopted, so the recording said `failed` while its file sat in the
    bucket (never shown, never deleted with the recording)."""
    from calls.expiry import calls_expire

    settings.CALL_RECONCILE_AFTER_SECONDS = 3600
    fake_livekit.egress_outcome = "manual"
    call_id = start_call(api)
    join(call_id)
    failed = egress_of_a_start_whose_worker_died(fake_livekit, call_id=call_id)
    fake_livekit.egresses[failed].status = egress_models.EgressStatus.EGRESS_FAILED
    fake_livekit.egresses[failed].error = "upload failed"
    complete = egress_of_a_start_whose_worker_died(fake_livekit, call_id=call_id)
    fake_livekit.egresses[complete].status = egress_models.EgressStatus.EGRESS_COMPLETE

    calls_expire(now=timezone.now() + datetime.timedelta(minutes=3))

    recording = Recording.objects.get(call_id=call_id)
    assert (recording.egress_id, recording.status) == (complete, "complete")


def test_a_lost_start_adopts_no_egress_another_recording_owns(
    api, recording_workflow, fake_livekit, recordings_bucket, settings
) -> None:
    """ListEgress by room name lists every egress the room's name had (an erased call's
    name is free again; LiveKit keeps ended egresses a while). One a recording of ours
    owns already is not this start's: adopted, it went to its owner (found by its id),
    this recording stayed `starting` unstarted, and every pass asked again."""
    from calls.expiry import calls_expire

    settings.CALL_RECONCILE_AFTER_SECONDS = 3600
    fake_livekit.egress_outcome = "manual"
    call_id = start_call(api)
    join(call_id)
    send("participant_joined_agent", call_id)  # the agent with them
    earlier = egress_of_a_start_whose_worker_died(fake_livekit, call_id=call_id)
    fake_livekit.egresses[earlier].status = egress_models.EgressStatus.EGRESS_COMPLETE
    RecordingFactory(egress_id=earlier)  # the earlier call's, in the same-named room

    calls_expire(now=timezone.now() + datetime.timedelta(minutes=3))
    run_worker()

    recording = Recording.objects.get(call_id=call_id)
    assert recording.egress_id not in (None, earlier)
    assert len(started_egresses(fake_livekit)) == 2
