"""`recordings.deletion.recording_delete`, for retention and erasure: the file goes from
whichever bucket holds it, the recording is marked `deleted`; idempotent."""

from __future__ import annotations

import pytest

from privacy.recordings import recordings_delete
from recordings.deletion import recording_delete
from recordings.models import Recording
from recordings.services import recording_egress_update
from recordings.storage import StorageError
from recordings.tasks import recording_file_delete
from tests.factories import CallFactory, RecordingFactory
from tests.recordings import object_keys, refusing_s3, s3_client, s3_without_multi_delete
from voicecalls.livekit import EgressUpdate

ORG_KEY_ID = "AKIAORGANIZATION0042"
ORG_SECRET = "org-secret-2bq9Vx7LmT4pWz1K"


@pytest.fixture
def platform_recording(organization, recordings_bucket, s3_server) -> Recording:
    recording = RecordingFactory(
        call=CallFactory(organization=organization, completed=True),
        endpoint=s3_server,
        bucket=recordings_bucket,
    )
    s3_client(s3_server).put_object(Bucket=recordings_bucket, Key=recording.object_key, Body=b"x")
    return recording


def test_it_deletes_the_file_and_marks_the_recording_deleted(
    api, platform_recording, recordings_bucket, s3_server
) -> None:
    assert recording_delete(call_id=platform_recording.call_id) is True

    assert object_keys(s3_server, recordings_bucket) == []
    platform_recording.refresh_from_db()
    assert platform_recording.status == "deleted"
    assert platform_recording.deleted_at is not None
    body = api.get(f"/api/v1/calls/{platform_recording.call_id}/recording").json()
    assert (body["status"], body["url"]) == ("deleted", None)


def test_a_store_without_multi_object_delete_has_each_file_deleted_on_its_own(
    settings, organization, recordings_bucket, s3_server
) -> None:
    """S3-compatible stores such as Google Cloud Storage's XML API answer DeleteObjects
    with 501 NotImplemented: every erasure and retention pass over them failed for good."""
    with s3_without_multi_delete() as endpoint:
        settings.RECORDINGS_S3_ENDPOINT = endpoint
        recordings = [
            RecordingFactory(
                call=CallFactory(organization=organization, completed=True),
                endpoint=endpoint,
                bucket=recordings_bucket,
            )
            for _ in range(2)
        ]
        for recording in recordings:
            s3_client(s3_server).put_object(
                Bucket=recordings_bucket, Key=recording.object_key, Body=b"x"
            )

        deleted = recordings_delete(call_ids=[r.call_id for r in recordings])

    assert deleted == 2
    assert object_keys(s3_server, recordings_bucket) == []
    assert {r.status for r in Recording.objects.all()} == {"deleted"}


def test_deleting_again_is_a_no_op_that_still_answers_true(platform_recording) -> None:
    recording_delete(call_id=platform_recording.call_id)

    assert recording_delete(call_id=platform_recording.call_id) is True


def test_a_call_without_a_recording_answers_false(organization) -> None:
    call = CallFactory(organization=organization, completed=True)

    assert recording_delete(call_id=call.pk) is False


def test_a_recording_in_the_organizations_bucket_is_deleted_there(
    api, organization, recordings_bucket, s3_server
) -> None:
    s3_client(s3_server).create_bucket(Bucket="acme-own")
    api.put(
        "/api/v1/organization/recording-storage",
        {
            "endpoint": s3_server,
            "bucket": "acme-own",
            "access_key_id": ORG_KEY_ID,
            "secret_access_key": ORG_SECRET,
        },
        format="json",
    )
    recording = RecordingFactory(
        call=CallFactory(organization=organization, completed=True),
        storage="organization",
        endpoint=s3_server,
        bucket="acme-own",
    )
    s3_client(s3_server).put_object(Bucket="acme-own", Key=recording.object_key, Body=b"x")
    s3_client(s3_server).put_object(Bucket=recordings_bucket, Key=recording.object_key, Body=b"y")

    assert recording_delete(call_id=recording.call_id) is True

    assert object_keys(s3_server, "acme-own") == []
    assert object_keys(s3_server, recordings_bucket) == [recording.object_key]


def test_storage_unreachable_raises_and_leaves_the_recording_as_it_was(
    organization, recordings_bucket, settings
) -> None:
    settings.RECORDINGS_S3_TIMEOUT_SECONDS = 1.0
    recording = RecordingFactory(
        call=CallFactory(organization=organization, completed=True),
        endpoint="http://127.0.0.1:9",
        bucket=recordings_bucket,
    )

    with pytest.raises(StorageError) as raised:
        recording_delete(call_id=recording.call_id)

    assert settings.RECORDINGS_S3_SECRET_ACCESS_KEY not in str(raised.value)
    recording.refresh_from_db()
    assert recording.status == "complete"


def test_a_recording_in_a_bucket_the_organization_removed_is_forgotten_not_a_failure(
    organization,
) -> None:
    """Its file is out of our reach for good: raising held up every later recording's
    retention and the whole erasure of its user, for ever."""
    recording = RecordingFactory(
        call=CallFactory(organization=organization, completed=True), storage="organization"
    )

    assert recording_delete(call_id=recording.call_id) is True

    recording.refresh_from_db()
    assert recording.status == "deleted"


def own_storage_set(api, *, endpoint: str, bucket: str) -> None:
    response = api.put(
        "/api/v1/organization/recording-storage",
        {
            "endpoint": endpoint,
            "bucket": bucket,
            "access_key_id": ORG_KEY_ID,
            "secret_access_key": ORG_SECRET,
        },
        format="json",
    )
    assert response.status_code == 200, response.content


def test_a_recording_in_a_bucket_the_organization_replaced_and_no_longer_reaches_is_forgotten(
    api, organization, s3_server
) -> None:
    """The organization moved to a new bucket whose credentials the old bucket refuses:
    retrying held up every later recording's retention and the whole erasure of its
    user, for ever (as with a storage setting removed)."""
    s3_client(s3_server).create_bucket(Bucket="acme-new")
    own_storage_set(api, endpoint=s3_server, bucket="acme-new")
    with refusing_s3() as old_endpoint:
        recording = RecordingFactory(
            call=CallFactory(organization=organization, completed=True),
            storage="organization",
            endpoint=old_endpoint,
            bucket="acme-old",
        )

        assert recording_delete(call_id=recording.call_id) is True

    recording.refresh_from_db()
    assert recording.status == "deleted"


def test_a_recording_in_the_bucket_the_organization_uses_now_is_retried_when_refused(
    api, organization
) -> None:
    """Its credentials may be fixed (a policy changed by mistake): not given up."""
    with refusing_s3() as endpoint:
        own_storage_set(api, endpoint=endpoint, bucket="acme-own")
        recording = RecordingFactory(
            call=CallFactory(organization=organization, completed=True),
            storage="organization",
            endpoint=endpoint,
            bucket="acme-own",
        )

        with pytest.raises(StorageError, match="AccessDenied"):
            recording_delete(call_id=recording.call_id)

    recording.refresh_from_db()
    assert recording.status == "complete"


def test_the_platforms_bucket_unconfigured_raises_and_leaves_the_recording(
    organization, settings
) -> None:
    settings.RECORDINGS_S3_BUCKET = ""
    recording = RecordingFactory(call=CallFactory(organization=organization, completed=True))

    with pytest.raises(StorageError, match="platform's bucket"):
        recording_delete(call_id=recording.call_id)

    recording.refresh_from_db()
    assert recording.status == "complete"


@pytest.mark.parametrize("ended", ["EGRESS_COMPLETE", "EGRESS_LIMIT_REACHED", "EGRESS_FAILED"])
def test_a_file_the_egress_finishes_after_the_deletion_is_deleted_too(
    organization, recordings_bucket, s3_server, django_capture_on_commit_callbacks, ended
) -> None:
    """A limit or a failure ends a file early: a file all the same, which stayed."""
    recording = RecordingFactory(
        call=CallFactory(organization=organization, active=True),
        status="recording",
        endpoint=s3_server,
        bucket=recordings_bucket,
        duration_seconds=None,
        size_bytes=None,
    )
    recording_delete(call_id=recording.call_id)
    s3_client(s3_server).put_object(Bucket=recordings_bucket, Key=recording.object_key, Body=b"x")

    with django_capture_on_commit_callbacks() as callbacks:
        recording_egress_update(
            egress=EgressUpdate(recording.egress_id, ended, "", 2_000_000_000, 1),
            at=recording.created_at,
        )
    assert len(callbacks) == 1
    assert recording_file_delete.call(str(recording.pk)) is True

    assert object_keys(s3_server, recordings_bucket) == []
    recording.refresh_from_db()
    assert recording.status == "deleted"


@pytest.mark.django_db(transaction=True)
def test_a_late_files_deletion_that_meets_a_storage_failure_is_retried_later(
    organization, recordings_bucket, s3_server, monkeypatch
) -> None:
    """Nothing else looks at a `deleted` recording's file again: the task ended FAILED
    on one S3 blip, and the erased (or expired) person's audio stayed for good."""
    import datetime

    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult

    from recordings import storage
    from tests.recordings import run_worker, send_egress

    call = CallFactory(organization=organization, completed=True)
    recording = RecordingFactory(
        call=call, status="processing", endpoint=s3_server, bucket=recordings_bucket,
        duration_seconds=None, size_bytes=None,
    )  # fmt: skip
    assert recording_delete(call_id=call.pk) is True
    s3_client(s3_server).put_object(Bucket=recordings_bucket, Key=recording.object_key, Body=b"o")
    real_delete = storage.object_delete
    outage = {"on": True}

    def flaky_delete(target, *, key):
        if outage["on"]:
            raise StorageError("The storage refused or could not be reached: timeout")
        return real_delete(target, key=key)

    monkeypatch.setattr(storage, "object_delete", flaky_delete)
    assert send_egress("egress_ended", call_id=call.pk, egress_id=recording.egress_id).json() == {
        "result": "handled"
    }
    run_worker()  # the file's deletion meets the outage

    (retry,) = DBTaskResult.objects.filter(status="READY", task_path__endswith="file_delete")
    assert retry.args_kwargs["args"] == [str(recording.pk), 1]
    assert retry.run_after > timezone.now()
    outage["on"] = False  # S3 is back; the retry comes due
    DBTaskResult.objects.filter(pk=retry.pk).update(
        run_after=timezone.now() - datetime.timedelta(seconds=1)
    )
    run_worker()

    assert object_keys(s3_server, recordings_bucket) == []


def test_a_late_file_in_a_bucket_the_organization_removed_is_not_retried(organization) -> None:
    """Out of reach for good (the organization removed its storage): retrying it would
    warn 64 times over two weeks."""
    from django_tasks_db.models import DBTaskResult

    recording = RecordingFactory(
        call=CallFactory(organization=organization, completed=True),
        storage="organization",
        status="deleted",
        ended_at=None,
    )

    assert recording_file_delete.call(str(recording.pk)) is False

    assert not DBTaskResult.objects.filter(task_path__endswith="file_delete").exists()
    recording.refresh_from_db()
    assert recording.ended_at is not None  # settled: recordings_reconcile looks no more
