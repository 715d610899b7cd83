"""Recordings under faults: egress webhooks with numbers or ids out of the columns' range,
an egress that ends while its recording is deleted, a storage changed before the egress
starts, an organization's endpoint that resolves inside, a platform bucket whose
credentials cannot be found."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.utils import timezone

from recordings import storage
from recordings.deletion import recording_delete
from recordings.models import Recording
from tests.factories import CallFactory, RecordingFactory
from tests.livekit_samples import post_webhook
from tests.recordings import egress_body, object_keys, run_worker, s3_client

EGRESS = "EG_review0001"


@pytest.fixture
def recording(organization, workflow) -> Recording:
    call = CallFactory(organization=organization, workflow=workflow, active=True)
    return RecordingFactory(
        call=call, status="recording", egress_id=EGRESS, duration_seconds=None, size_bytes=None
    )


def ended_with_file(recording: Recording, **file: object) -> str:
    payload = json.loads(egress_body("egress_ended", call_id=recording.call_id, egress_id=EGRESS))
    payload["egressInfo"]["fileResults"][0].update(file)
    return json.dumps(payload)


@pytest.mark.parametrize(
    "file",
    [
        {"size": "-1"},  # int64 in LiveKit's FileInfo
        {"duration": "-5000000000"},
        {"duration": str(2**63 - 1)},  # ~292 years: past a PositiveIntegerField
    ],
    ids=["negative-size", "negative-duration", "huge-duration"],
)
def test_an_egress_ended_with_out_of_range_file_numbers_is_not_a_500(recording, file) -> None:
    response = post_webhook(
        ended_with_file(recording, **file), client=Client(raise_request_exception=False)
    )

    assert response.status_code == 200, response.content
    recording.refresh_from_db()
    assert recording.status == "complete"
    field = "size_bytes" if "size" in file else "duration_seconds"
    assert getattr(recording, field) is None  # out of what LiveKit can mean: not kept


@pytest.mark.django_db(transaction=True)
def test_a_file_the_egress_finishes_while_the_deletion_runs_is_deleted_too(
    organization, recordings_bucket, s3_server
) -> None:
    from recordings import storage
    from recordings.deletion import recording_delete
    from tests.recordings import object_keys, run_worker, s3_client

    recording = RecordingFactory(
        call=CallFactory(organization=organization, active=True),
        status="recording",
        endpoint=s3_server,
        bucket=recordings_bucket,
        duration_seconds=None,
        size_bytes=None,
    )
    # S3 side: the egress uploads and LiveKit reports egress_ended right after our DeleteObject.
    client = storage._client(storage.target_of(recording, organization_id=organization.pk))

    def egress_finishes(**_: object) -> None:
        s3_client(s3_server).put_object(
            Bucket=recordings_bucket, Key=recording.object_key, Body=b"ogg"
        )
        body = egress_body("egress_ended", call_id=recording.call_id, egress_id=recording.egress_id)
        assert post_webhook(body).json() == {"result": "handled"}

    client.meta.events.register_first("after-call.s3.DeleteObject", egress_finishes)
    try:
        assert recording_delete(call_id=recording.call_id) is True
    finally:
        client.meta.events.unregister("after-call.s3.DeleteObject", egress_finishes)

    run_worker()  # a file deletion queued for it, if any

    recording.refresh_from_db()
    assert recording.status == "deleted"
    assert object_keys(s3_server, recordings_bucket) == []  # the file goes too


def test_no_credentials_for_the_platforms_bucket_answers_no_link_not_a_500(
    api, organization, recordings_bucket, settings, monkeypatch
) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    settings.RECORDINGS_S3_ACCESS_KEY_ID = ""
    settings.RECORDINGS_S3_SECRET_ACCESS_KEY = ""
    recording = RecordingFactory(
        call=CallFactory(organization=organization, completed=True), bucket=recordings_bucket
    )
    api.raise_request_exception = False

    response = api.get(f"/api/v1/calls/{recording.call_id}/recording")

    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["url"]) == ("complete", None)


def test_an_egress_id_longer_than_the_column_overtaking_the_answer_is_not_a_500(
    organization, workflow
) -> None:
    call = CallFactory(organization=organization, workflow=workflow, active=True)
    recording = RecordingFactory(
        call=call, status="starting", egress_id=None, duration_seconds=None, size_bytes=None
    )
    body = egress_body("egress_started", call_id=recording.call_id, egress_id="EG_" + "x" * 120)

    response = post_webhook(body, client=Client(raise_request_exception=False))

    assert response.status_code == 200, response.content
    recording.refresh_from_db()
    assert (recording.status, recording.egress_id) == ("starting", None)


def test_an_organization_endpoint_resolving_inside_is_not_handed_to_the_egress(
    api, organization, egress_fake, settings, monkeypatch
) -> None:
    import socket

    from recordings.services import recording_start

    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "s3.attacker.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
    egress_fake.egress_outcome = "manual"
    response = api.put(
        "/api/v1/organization/recording-storage",
        {
            "endpoint": "https://s3.attacker.example",
            "bucket": "acme-own",
            "access_key_id": "AKIAORGANIZATION0042",
            "secret_access_key": "org-secret-2bq9Vx7LmT4pWz1K",
        },
        format="json",
    )
    assert response.status_code == 200, response.content  # a name: accepted at save time
    recording = RecordingFactory(
        call=CallFactory(organization=organization, active=True),
        status="starting",
        egress_id=None,
        storage="organization",
        endpoint="https://s3.attacker.example",
        bucket="acme-own",
        duration_seconds=None,
        size_bytes=None,
    )

    recording_start(recording_id=recording.pk)

    assert egress_fake.calls("StartRoomCompositeEgress") == []
    recording.refresh_from_db()
    assert recording.status == "failed"


def test_a_storage_change_before_the_egress_starts_never_mixes_buckets_and_keys(
    api, organization, egress_fake, s3_server
) -> None:
    from recordings.services import recording_start
    from tests.recordings import s3_client

    egress_fake.egress_outcome = "manual"
    for bucket in ("acme-a", "acme-b"):
        s3_client(s3_server).create_bucket(Bucket=bucket)
    storage = {"endpoint": s3_server, "secret_access_key": "org-secret-2bq9Vx7LmT4pWz1K"}
    api.put(
        "/api/v1/organization/recording-storage",
        {**storage, "bucket": "acme-a", "access_key_id": "AKIAORGKEYAAAA"},
        format="json",
    )
    recording = RecordingFactory(
        call=CallFactory(organization=organization, active=True),
        status="starting",
        egress_id=None,
        storage="organization",
        endpoint=s3_server,
        bucket="acme-a",
        duration_seconds=None,
        size_bytes=None,
    )
    response = api.put(
        "/api/v1/organization/recording-storage",
        {**storage, "bucket": "acme-b", "access_key_id": "AKIAORGKEYBBBB"},
        format="json",
    )
    assert response.status_code == 200

    recording_start(recording_id=recording.pk)

    [request] = [r.body for r in egress_fake.calls("StartRoomCompositeEgress")]
    s3 = request["fileOutputs"][0]["s3"]
    assert (s3["bucket"], s3["accessKey"]) == ("acme-b", "AKIAORGKEYBBBB")  # where new ones go
    recording.refresh_from_db()
    assert recording.bucket == "acme-b"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_egress_ended_read_before_the_deletion_marks_the_row_still_deletes_the_late_file(
    organization, recordings_bucket, s3_server, monkeypatch
) -> None:
    """recording_delete asks S3 to delete (no file yet); the egress then uploads and its
    egress_ended is handled concurrently: it reads the recording as `recording` before
    recording_delete marks it `deleted`, and updates after. Neither side deletes the
    file: recording_delete's mark matched the status it read (no later deletion), and
    the webhook's decision uses the status it read before its UPDATE (stale)."""
    import threading

    from django.db import connection, transaction

    from recordings import services
    from voicecalls.livekit import EgressUpdate

    recording = RecordingFactory(
        call=CallFactory(organization=organization, completed=True),
        status="recording",
        endpoint=s3_server,
        bucket=recordings_bucket,
        duration_seconds=None,
        size_bytes=None,
    )
    read_done, delete_done = threading.Event(), threading.Event()
    real_find = services._recording_of_egress

    def find_then_pause(**kwargs):
        found = real_find(**kwargs)
        read_done.set()
        delete_done.wait(10)  # the deletion's UPDATE commits meanwhile
        return found

    monkeypatch.setattr(services, "_recording_of_egress", find_then_pause)
    errors: list[BaseException] = []

    def webhook() -> None:
        try:
            with transaction.atomic():  # as livekit_webhook_handle
                services.recording_egress_update(
                    egress=EgressUpdate(
                        recording.egress_id, "EGRESS_COMPLETE", "", 2_000_000_000, 9
                    ),
                    at=timezone.now(),
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=webhook)
    client = storage._client(storage.target_of(recording, organization_id=organization.pk))

    def egress_uploads_and_reports(**_: object) -> None:
        s3_client(s3_server).put_object(
            Bucket=recordings_bucket, Key=recording.object_key, Body=b"o"
        )
        thread.start()
        assert read_done.wait(10)

    client.meta.events.register_first("after-call.s3.DeleteObject", egress_uploads_and_reports)
    try:
        assert recording_delete(call_id=recording.call_id) is True
    finally:
        client.meta.events.unregister("after-call.s3.DeleteObject", egress_uploads_and_reports)
        delete_done.set()
        thread.join(10)
    assert errors == []
    run_worker()  # any file deletion queued

    recording.refresh_from_db()
    assert recording.status == "deleted"
    assert object_keys(s3_server, recordings_bucket) == []
