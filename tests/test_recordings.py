"""Recording calls (DESIGN.md "Recordings and data retention"): a call of a recording
workflow that becomes active gets an audio-only OGG room composite egress, started by
the task worker; the fake LiveKit's egress uploads a real file to the S3 stand-in (moto)
and sends the egress webhooks; the client downloads it through a presigned link."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from django.conf import settings

from calls.models import Call
from recordings.models import Recording
from tests.factories import CallFactory, RecordingFactory
from tests.ogg import ogg_opus_silence
from tests.recordings import (
    download,
    join,
    object_keys,
    run_worker,
    s3_client,
    start_call,
    started_egresses,
)

pytestmark = pytest.mark.django_db(transaction=True)

ORG_KEY_ID = "AKIAORGANIZATION0042"
ORG_SECRET = "org-secret-2bq9Vx7LmT4pWz1K"


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
