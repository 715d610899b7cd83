"""Recordings in retention and erasure: past `recording_retention_days`, or when their
user is erased, recordings are deleted from the storage holding them (moto's S3 server,
through boto3); a storage that fails is tried again later and nothing is half-done."""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import DatabaseError, connection
from django.utils import timezone

from accounts.models import Organization
from accounts.services import api_key_create
from calls.models import Call
from privacy.erasure import LEASE, erasure_create, erasure_run
from privacy.models import Erasure
from privacy.retention import retention_apply
from recordings import storage
from recordings.models import Recording
from tests.factories import CallFactory, RecordingFactory, TranscriptEntryFactory
from tests.recordings import object_keys, run_worker, s3_client

DAY = datetime.timedelta(days=1)
UNREACHABLE = "http://127.0.0.1:9"
# Stored before the API refused hosts an S3 client cannot use: botocore raises ValueError.
UNUSABLE = "https://minio_1.example.com"


@pytest.fixture
def stored(organization, recordings_bucket, s3_server):
    """A completed call of `organization` with its recording's file in the bucket."""

    def make(*, ended_ago: datetime.timedelta, user_id: str = "user-1", org=None) -> Recording:
        ended = timezone.now() - ended_ago
        call = CallFactory(
            organization=org or organization,
            completed=True,
            user_id=user_id,
            started_at=ended - datetime.timedelta(minutes=2),
            ended_at=ended,
        )
        recording = RecordingFactory(call=call, endpoint=s3_server, bucket=recordings_bucket)
        s3_client(s3_server).put_object(
            Bucket=recordings_bucket, Key=recording.object_key, Body=b"audio"
        )
        return recording

    return make


def erasure_of(organization: Organization, user_id: str) -> Erasure:
    api_key, _ = api_key_create(name="privacy", organization=organization)
    return erasure_create(organization=organization, user_id=user_id, api_key=api_key)


def status_of(recording: Recording) -> str:
    recording.refresh_from_db()
    return recording.status


def test_retention_deletes_recordings_of_calls_ended_before_it_and_keeps_the_rest(
    organization, stored, recordings_bucket, s3_server
) -> None:
    Organization.objects.filter(pk=organization.pk).update(recording_retention_days=30)
    old = stored(ended_ago=31 * DAY)
    recent = stored(ended_ago=29 * DAY)

    result = retention_apply()

    assert result.recordings_deleted == 1
    assert (status_of(old), status_of(recent)) == ("deleted", "complete")
    assert object_keys(s3_server, recordings_bucket) == [recent.object_key]


def test_a_recording_an_older_release_wrote_without_its_organization_is_still_deleted(
    organization, stored, recordings_bucket, s3_server
) -> None:
    """The release before recordings 0005 goes on writing recordings while `migrate` and
    the rollout run: without the organization retention reads them by."""
    Organization.objects.filter(pk=organization.pk).update(recording_retention_days=30)
    old = stored(ended_ago=31 * DAY)
    Recording.objects.filter(pk=old.pk).update(organization=None)

    result = retention_apply()

    assert result.recordings_deleted == 1
    old.refresh_from_db()
    assert (old.status, old.organization_id) == ("deleted", organization.id)
    assert object_keys(s3_server, recordings_bucket) == []


def test_retention_without_a_recording_setting_deletes_no_recording(
    organization, stored, recordings_bucket, s3_server
) -> None:
    Organization.objects.filter(pk=organization.pk).update(transcript_retention_days=1)
    old = stored(ended_ago=400 * DAY)

    assert retention_apply().recordings_deleted == 0
    assert status_of(old) == "complete"


def test_retention_goes_through_every_batch_and_a_second_pass_deletes_nothing(
    organization, stored, recordings_bucket, s3_server
) -> None:
    Organization.objects.filter(pk=organization.pk).update(recording_retention_days=1)
    recordings = [stored(ended_ago=(2 + n) * DAY) for n in range(5)]

    first = retention_apply(batch_size=2)
    second = retention_apply(batch_size=2)

    assert (first.recordings_deleted, second.recordings_deleted) == (5, 0)
    assert {status_of(r) for r in recordings} == {"deleted"}
    assert object_keys(s3_server, recordings_bucket) == []


@pytest.mark.parametrize("broken", [UNREACHABLE, UNUSABLE])
def test_a_storage_that_fails_is_skipped_this_pass_and_retried_by_the_next(
    organization, stored, recordings_bucket, s3_server, settings, broken
) -> None:
    settings.RECORDINGS_S3_TIMEOUT_SECONDS = 1.0
    Organization.objects.filter(pk=organization.pk).update(recording_retention_days=1)
    recording = stored(ended_ago=2 * DAY)
    Recording.objects.filter(pk=recording.pk).update(endpoint=broken)

    failed = retention_apply()
    Recording.objects.filter(pk=recording.pk).update(endpoint=s3_server)
    retried = retention_apply()

    assert (failed.recordings_deleted, failed.recording_storages_failed) == (0, 1)
    assert (retried.recordings_deleted, retried.recording_storages_failed) == (1, 0)
    assert status_of(recording) == "deleted"


def test_an_erasure_deletes_the_users_recordings_and_counts_them(
    organization, outsider, stored, recordings_bucket, s3_server
) -> None:
    theirs = [stored(ended_ago=DAY, user_id="user-9"), stored(ended_ago=2 * DAY, user_id="user-9")]
    someone_else = stored(ended_ago=DAY, user_id="user-8")
    other_org = stored(ended_ago=DAY, user_id="user-9", org=outsider)
    erasure = erasure_of(organization, "user-9")

    assert erasure_run(erasure_id=erasure.pk) == "completed"

    erasure.refresh_from_db()
    assert (erasure.calls_erased, erasure.recordings_deleted) == (2, 2)
    assert [status_of(r) for r in theirs] == ["deleted", "deleted"]
    assert (status_of(someone_else), status_of(other_org)) == ("complete", "complete")
    assert sorted(object_keys(s3_server, recordings_bucket)) == sorted(
        [someone_else.object_key, other_org.object_key]
    )


@contextmanager
def erasure_counts_refused() -> Iterator[None]:
    """While in it, a statement changing an erasure's `recordings_deleted` fails: a run
    stopping there, as a run whose process is killed between its writes never makes it."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION count_refused() RETURNS trigger LANGUAGE plpgsql"
                " AS $$ BEGIN RAISE EXCEPTION 'killed'; END $$"
            )
            for_each, action = "FOR EACH ROW", "EXECUTE FUNCTION count_refused()"
        else:
            for_each, action = "", "BEGIN SELECT RAISE(ABORT, 'killed'); END"
        cursor.execute(
            "CREATE TRIGGER count_refused BEFORE UPDATE OF recordings_deleted ON privacy_erasure"
            f" {for_each} WHEN (NEW.recordings_deleted <> OLD.recordings_deleted) {action}"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("DROP TRIGGER count_refused ON privacy_erasure")
                cursor.execute("DROP FUNCTION count_refused()")
            else:
                cursor.execute("DROP TRIGGER count_refused")


@pytest.mark.django_db(transaction=True)
def test_an_erasure_killed_between_deleting_recordings_and_counting_them_counts_them_later(
    organization, stored
) -> None:
    """A run marks the recordings it deleted and adds them to the erasure's count
    together: killed between the two, it keeps neither, and the next run deletes (again:
    deleting a file gone is no error) and counts them. The audit record never says fewer
    recordings went than did."""
    theirs = [stored(ended_ago=n * DAY, user_id="user-9") for n in (1, 2)]
    erasure = erasure_of(organization, "user-9")

    with erasure_counts_refused(), pytest.raises(DatabaseError):
        erasure_run(erasure_id=erasure.pk)
    later = timezone.now() + LEASE + datetime.timedelta(seconds=1)
    status = erasure_run(erasure_id=erasure.pk, now=later)

    erasure.refresh_from_db()
    assert (status, erasure.calls_erased, erasure.recordings_deleted) == ("completed", 2, 2)
    assert [status_of(r) for r in theirs] == ["deleted", "deleted"]


@pytest.mark.parametrize("broken", [UNREACHABLE, UNUSABLE])
def test_an_erasure_whose_storage_fails_waits_and_erases_nothing_of_that_batch_yet(
    organization, stored, recordings_bucket, s3_server, settings, broken
) -> None:
    settings.RECORDINGS_S3_TIMEOUT_SECONDS = 1.0
    recording = stored(ended_ago=DAY, user_id="user-9")
    Recording.objects.filter(pk=recording.pk).update(endpoint=broken)
    erasure = erasure_of(organization, "user-9")

    status = erasure_run(erasure_id=erasure.pk)

    erasure.refresh_from_db()
    recording.call.refresh_from_db()
    assert (status, erasure.status, erasure.calls_erased) == ("running", "running", 0)
    assert erasure.next_run_at > timezone.now()
    assert (recording.call.erased_at, recording.call.user_id) == (None, "user-9")

    Recording.objects.filter(pk=recording.pk).update(endpoint=s3_server)
    Erasure.objects.filter(pk=erasure.pk).update(lease_until=None)
    assert erasure_run(erasure_id=erasure.pk) == "completed"
    assert status_of(recording) == "deleted"


def recording_in_a_removed_bucket(organization, *, ended_ago, user_id: str) -> Recording:
    """Recorded into the organization's own bucket, whose setting it removed since; its
    call has the lowest id, so it is read first."""
    ended = timezone.now() - ended_ago
    call = CallFactory(
        id=uuid.UUID(int=1),
        organization=organization,
        completed=True,
        user_id=user_id,
        started_at=ended - datetime.timedelta(minutes=2),
        ended_at=ended,
    )
    return RecordingFactory(
        call=call, storage="organization", endpoint="https://s3.acme.example", bucket="acme-own"
    )


def test_a_recording_in_a_removed_bucket_holds_up_no_other_recordings_retention(
    organization, stored, recordings_bucket, s3_server
) -> None:
    """Its StorageError stopped the organization's pass at the same batch, every pass."""
    Organization.objects.filter(pk=organization.pk).update(recording_retention_days=30)
    removed = recording_in_a_removed_bucket(organization, ended_ago=40 * DAY, user_id="user-1")
    platform = stored(ended_ago=35 * DAY, user_id="user-2")

    retention_apply(batch_size=1)  # a batch of one stands for a batch all out of reach

    assert (status_of(removed), status_of(platform)) == ("deleted", "deleted")
    assert object_keys(s3_server, recordings_bucket) == []


def test_a_recording_in_a_removed_bucket_holds_up_no_erasure(
    organization, stored, recordings_bucket, s3_server
) -> None:
    """The erasure waited and retried for ever, erasing nothing of the user."""
    recording_in_a_removed_bucket(organization, ended_ago=2 * DAY, user_id="user-9")
    platform = stored(ended_ago=DAY, user_id="user-9")
    TranscriptEntryFactory(call=platform.call, role="user", content="I am Jane, 12 Elm Street")

    assert erasure_run(erasure_id=erasure_of(organization, "user-9").pk) == "completed"

    call = Call.objects.get(pk=platform.call_id)
    words = list(call.transcript.values_list("content", flat=True))
    assert (call.erased_at is not None, call.user_id, words) == (True, None, ["[erased]"])
    assert status_of(platform) == "deleted"
    assert object_keys(s3_server, recordings_bucket) == []


def test_an_erasure_counts_no_recording_left_in_a_removed_bucket_as_deleted(
    organization, stored, recordings_bucket, s3_server
) -> None:
    """`recordings_deleted` says how many went from their storage: a file left in the
    bucket the organization removed from its settings (its own to delete) is not one."""
    recording_in_a_removed_bucket(organization, ended_ago=2 * DAY, user_id="user-9")
    stored(ended_ago=DAY, user_id="user-9")
    erasure = erasure_of(organization, "user-9")

    assert erasure_run(erasure_id=erasure.pk) == "completed"

    erasure.refresh_from_db()
    assert (erasure.calls_erased, erasure.recordings_deleted) == (2, 1)


def test_retention_counts_no_recording_left_in_a_removed_bucket_as_deleted(
    organization, stored, recordings_bucket, s3_server
) -> None:
    Organization.objects.filter(pk=organization.pk).update(recording_retention_days=30)
    removed = recording_in_a_removed_bucket(organization, ended_ago=40 * DAY, user_id="user-1")
    stored(ended_ago=35 * DAY, user_id="user-2")

    result = retention_apply()

    assert status_of(removed) == "deleted"
    assert (result.recordings_deleted, result.recording_storages_failed) == (1, 0)


@pytest.mark.django_db(transaction=True)
def test_an_egress_ending_after_an_erasure_renamed_an_inbound_calls_room_deletes_its_file(
    organization, recordings_bucket, s3_server
) -> None:
    """LiveKit's answer to the start was lost (the recording failed without an egress
    id) but the egress ran. The caller is erased: the recording is deleted and the
    inbound room renamed `erased-<hash>`. LiveKit's egress_ended, about the room by its
    real name, comes next with the file uploaded: the file must go, as it does for any
    other call (recording_egress_update finds recordings by the room name)."""
    import json

    from accounts.services import api_key_create
    from privacy.erasure import erasure_create, erasure_run
    from tests.livekit_samples import post_webhook
    from tests.privacy import CALLER, inbound_phone_call
    from tests.recordings import egress_body

    call = inbound_phone_call(organization)
    room = call.room_name
    recording = RecordingFactory(
        call=call,
        status="failed",
        egress_id=None,
        object_key=f"recordings/{organization.pk}/{call.pk}/tokLost.ogg",
        error="LiveKit could not start the recording: timed out",
        endpoint=s3_server,
        bucket=recordings_bucket,
        duration_seconds=None,
        size_bytes=None,
    )
    api_key, _ = api_key_create(name="privacy", organization=organization)
    erasure = erasure_create(organization=organization, user_id=CALLER, api_key=api_key)
    assert erasure_run(erasure_id=erasure.pk) == "completed"
    recording.refresh_from_db()
    assert recording.status == "deleted"

    # The egress finishes its upload, and LiveKit reports it about the room it recorded.
    s3_client(s3_server).put_object(Bucket=recordings_bucket, Key=recording.object_key, Body=b"o")
    payload = json.loads(egress_body("egress_ended", call_id=call.pk, egress_id="EG_lostanswer1"))
    payload["egressInfo"]["roomName"] = room
    payload["egressInfo"]["roomComposite"]["roomName"] = room
    assert post_webhook(json.dumps(payload)).json() == {"result": "handled"}
    run_worker()

    assert object_keys(s3_server, recordings_bucket) == []


def test_no_download_link_for_a_recording_past_its_retention(
    api, organization, recordings_bucket, s3_server, settings
) -> None:
    """Retention of 30 days; the call ended 31 days ago. The pass that should have
    deleted the file met an S3 outage (it tries again next pass). Meanwhile the API
    must not hand out fresh 15-minute links to a recording past its retention."""
    Organization.objects.filter(pk=organization.pk).update(recording_retention_days=30)
    ended = timezone.now() - 31 * DAY
    call = CallFactory(
        organization=organization,
        completed=True,
        started_at=ended - datetime.timedelta(minutes=3),
        ended_at=ended,
    )
    recording = RecordingFactory(call=call, endpoint=s3_server, bucket=recordings_bucket)
    s3_client(s3_server).put_object(Bucket=recordings_bucket, Key=recording.object_key, Body=b"o")

    settings.RECORDINGS_S3_TIMEOUT_SECONDS = 1.0
    Recording.objects.filter(pk=recording.pk).update(endpoint=UNREACHABLE)  # an outage
    assert retention_apply().recording_storages_failed == 1
    Recording.objects.filter(pk=recording.pk).update(endpoint=s3_server)  # S3 is back

    body = api.get(f"/api/v1/calls/{call.pk}/recording").json()
    assert body["url"] is None, body


@pytest.mark.django_db(transaction=True)
def test_a_call_erased_before_it_became_active_is_not_recorded_afterwards(
    api, organization, workflow, egress_fake, recordings_bucket, s3_server
) -> None:
    """The user is erased while their call is still connecting (the erasure waits for
    it to end). When the user then joins, no recording of the erased person's voice
    may be started: lines reported after an erasure are stored `[erased]`, and a link
    to a fresh recording of an erased call must never be handed out."""
    from accounts.services import api_key_create
    from privacy.erasure import erasure_create, erasure_run
    from tests.livekit_samples import send
    from tests.recordings import recording_on

    recording_on(workflow)
    created = api.post(
        "/api/v1/calls", {"workflow_slug": workflow.slug, "user_id": "user-77"}, format="json"
    )
    assert created.status_code == 201, created.content
    call_id = created.json()["call_id"]
    api_key, _ = api_key_create(name="privacy", organization=organization)
    erasure = erasure_create(organization=organization, user_id="user-77", api_key=api_key)
    assert erasure_run(erasure_id=erasure.pk) == "running"  # waits for the call's end

    assert send("participant_joined", call_id).status_code == 200  # the user joins
    run_worker()

    assert egress_fake.calls("StartRoomCompositeEgress") == []
    assert not Recording.objects.filter(call_id=call_id).exclude(status="deleted").exists()


@pytest.mark.django_db(transaction=True)
def test_a_call_that_ends_between_the_erasures_recording_step_and_its_batch_keeps_no_recording(
    api, organization, workflow, egress_fake, recordings_bucket, s3_server, monkeypatch
) -> None:
    """An erased call still open (it waits for its end) has a recording not yet deleted
    (it became active after the erasure). It ends right after the erasure's run listed
    the calls whose recordings to delete, before the batch locks the calls: the batch
    takes it, clears its user id (it no longer matches) and the erasure completes,
    leaving the erased user's recording complete and downloadable for good."""
    from accounts.services import api_key_create
    from calls.lifecycle import call_transition
    from privacy import erasure as erasure_module
    from privacy.erasure import erasure_create, erasure_run
    from tests.livekit_samples import send
    from tests.recordings import recording_on

    recording_on(workflow)
    created = api.post(
        "/api/v1/calls", {"workflow_slug": workflow.slug, "user_id": "user-77"}, format="json"
    )
    call_id = created.json()["call_id"]
    assert send("participant_joined", call_id).status_code == 200
    run_worker()  # recording
    api_key, _ = api_key_create(name="privacy", organization=organization)
    erasure = erasure_create(organization=organization, user_id="user-77", api_key=api_key)
    assert erasure_run(erasure_id=erasure.pk) == "running"  # waits for the call's end
    Recording.objects.filter(call_id=call_id).update(status="complete")  # egress done

    real = erasure_module.recordings_delete

    def then_the_call_ends(*, call_ids, **counting):
        deleted = real(call_ids=call_ids, **counting)
        call_transition(call_id=call_id, to_status="completed", end_reason="user_hangup")
        return deleted

    monkeypatch.setattr(erasure_module, "recordings_delete", then_the_call_ends)
    later = timezone.now() + datetime.timedelta(minutes=2)
    assert erasure_run(erasure_id=erasure.pk, now=later) == "completed"

    assert Recording.objects.get(call_id=call_id).status == "deleted"


def test_two_erasures_of_one_user_at_once_count_one_recording_deleted_once(
    organization, recordings_bucket, s3_server
) -> None:
    """Two erasures of one user run at once (docs: each call is erased once). Both
    find the recording not yet deleted; both recording_delete calls answer True, and
    both audit records count it: two `recordings_deleted` for one file."""
    from accounts.services import api_key_create
    from privacy.erasure import erasure_create, erasure_run
    from privacy.models import Erasure

    call = CallFactory(organization=organization, completed=True, user_id="user-9")
    recording = RecordingFactory(call=call, endpoint=s3_server, bucket=recordings_bucket)
    api_key, _ = api_key_create(name="privacy", organization=organization)
    first = erasure_create(organization=organization, user_id="user-9", api_key=api_key)
    second = erasure_create(organization=organization, user_id="user-9", api_key=api_key)
    client = storage._client(storage.target_of(recording, organization_id=organization.pk))
    ran: list[str | None] = []
    started: list[bool] = []

    def the_other_runs_meanwhile(**_: object) -> None:
        if not started:
            started.append(True)
            ran.append(erasure_run(erasure_id=second.pk))

    client.meta.events.register_first("after-call.s3.DeleteObjects", the_other_runs_meanwhile)
    try:
        assert erasure_run(erasure_id=first.pk) == "completed"
    finally:
        client.meta.events.unregister("after-call.s3.DeleteObjects", the_other_runs_meanwhile)

    assert ran == ["completed"]
    counts = sorted(Erasure.objects.values_list("recordings_deleted", flat=True))
    assert sum(counts) == 1, counts


def test_retained_identities_of_recordings_deleted_in_a_pass_that_then_failed_are_released(
    organization, recordings_bucket, s3_server, settings
) -> None:
    """Transcript and user data expired (the caller kept as a keyed hash because the
    recording was kept longer). Recording retention then deletes A's recording, and
    B's (same batch) meets an outage: the pass stops before releasing A's hash. The
    next pass deletes B and releases B's hash, but A is no longer looked at: its hash
    (personal data, pseudonymous) is kept for ever, contrary to docs/privacy.md."""
    from privacy.models import RetainedIdentity

    settings.RECORDINGS_S3_TIMEOUT_SECONDS = 1.0
    Organization.objects.filter(pk=organization.pk).update(
        transcript_retention_days=1, user_data_retention_days=1, recording_retention_days=30
    )
    recordings = []
    for n, user in enumerate(["user-a", "user-b"]):
        ended = timezone.now() - (41 - n) * DAY
        call = CallFactory(
            organization=organization,
            completed=True,
            user_id=user,
            started_at=ended - datetime.timedelta(minutes=3),
            ended_at=ended,
        )
        recordings.append(RecordingFactory(call=call, endpoint=s3_server, bucket=recordings_bucket))
    a, b = recordings
    Recording.objects.filter(pk=b.pk).update(endpoint="http://127.0.0.1:9")  # an outage

    first = retention_apply()
    assert first.recording_storages_failed == 1
    assert Recording.objects.get(pk=a.pk).status == "deleted"  # A went before B failed
    Recording.objects.filter(pk=b.pk).update(endpoint=s3_server)  # S3 is back
    second = retention_apply()
    assert second.recordings_deleted == 1

    kept = list(RetainedIdentity.objects.values_list("call_id", flat=True))
    assert kept == [], "A's hash kept" if kept == [a.call_id] else kept


def test_a_recording_in_a_bucket_that_no_longer_exists_holds_up_no_retention_or_erasure(
    organization, stored, recordings_bucket, s3_server
) -> None:
    """A customer moving to a new bucket (PUT recording-storage) and deleting the old one
    leaves recordings naming a bucket S3 answers NoSuchBucket for: their files are gone
    with it. Taken as a failure to retry, it stopped the organization's retention at the
    same recording every pass (no later recording ever expired) and made every erasure
    of its user wait for ever."""
    from recordings.services import recording_storage_set

    Organization.objects.filter(pk=organization.pk).update(recording_retention_days=30)
    recording_storage_set(
        organization_id=organization.pk,
        endpoint=s3_server,
        bucket=recordings_bucket,
        region="us-east-1",
        access_key_id="AKIAORGANIZATION0042",
        secret_access_key="org-secret-2bq9Vx7LmT4pWz1K",
    )
    gone = stored(ended_ago=40 * DAY, user_id="user-1")
    Recording.objects.filter(pk=gone.pk).update(storage="organization", bucket="old-bucket-gone")
    later = stored(ended_ago=35 * DAY, user_id="user-2")
    erased = stored(ended_ago=DAY, user_id="user-9")
    Recording.objects.filter(pk=erased.pk).update(storage="organization", bucket="old-bucket-gone")

    retention_apply(batch_size=1)
    retention_apply(batch_size=1)

    assert (status_of(gone), status_of(later)) == ("deleted", "deleted")
    assert erasure_run(erasure_id=erasure_of(organization, "user-9").pk) == "completed"
    assert status_of(erased) == "deleted"
    assert later.object_key not in object_keys(s3_server, recordings_bucket)


def s3_requests(recording: Recording, organization) -> list[str]:
    """The names of the requests our S3 client makes from now on (DeleteObject, ...)."""
    client = storage._client(storage.target_of(recording, organization_id=organization.pk))
    made: list[str] = []
    client.meta.events.register("before-call.s3", lambda model, **_: made.append(model.name))
    return made


def test_retention_deletes_a_batch_of_recordings_in_one_request_to_their_storage(
    organization, stored, recordings_bucket, s3_server
) -> None:
    """500 recordings past retention took 500 DeleteObject requests (5 s on a nearby
    S3, each pass): S3's DeleteObjects takes up to 1,000 keys in one."""
    Organization.objects.filter(pk=organization.pk).update(recording_retention_days=1)
    recordings = [stored(ended_ago=(2 + n) * DAY) for n in range(3)]
    made = s3_requests(recordings[0], organization)

    assert retention_apply().recordings_deleted == 3

    assert made == ["DeleteObjects"]
    assert {status_of(r) for r in recordings} == {"deleted"}
    assert object_keys(s3_server, recordings_bucket) == []


def deletion_refused(bucket: str, key: str) -> str:
    """A bucket policy refusing the deletion of one key (S3 answers it in DeleteObjects'
    `Errors`, AccessDenied, the other keys deleted)."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:DeleteObject",
                    "Resource": f"arn:aws:s3:::{bucket}/{key}",
                }
            ],
        }
    )


def test_a_recording_whose_deletion_the_storage_refuses_stays_and_is_retried(
    organization, stored, recordings_bucket, s3_server
) -> None:
    Organization.objects.filter(pk=organization.pk).update(recording_retention_days=1)
    refused, other = stored(ended_ago=3 * DAY), stored(ended_ago=2 * DAY)
    s3 = s3_client(s3_server)
    s3.put_bucket_policy(
        Bucket=recordings_bucket, Policy=deletion_refused(recordings_bucket, refused.object_key)
    )

    first = retention_apply()

    assert (first.recordings_deleted, first.recording_storages_failed) == (1, 1)
    assert (status_of(refused), status_of(other)) == ("complete", "deleted")
    assert object_keys(s3_server, recordings_bucket) == [refused.object_key]
    s3.delete_bucket_policy(Bucket=recordings_bucket)
    second = retention_apply()
    assert (second.recordings_deleted, second.recording_storages_failed) == (1, 0)
    assert status_of(refused) == "deleted"
    assert object_keys(s3_server, recordings_bucket) == []


@pytest.mark.postgres
def test_retention_reads_only_the_recordings_not_yet_deleted_of_its_organization(
    organization, recordings_bucket
) -> None:
    """Every minute, recording retention looked for an organization's due recordings
    through all its calls ended before the cutoff, skipping the recordings it deleted
    before one by one (38 ms a pass at 45k calls, growing for ever): it walks the
    organization's recordings not yet deleted, started before the cutoff, instead."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from privacy.recordings import recordings_expire

    Organization.objects.filter(pk=organization.pk).update(recording_retention_days=30)
    ended = timezone.now() - 400 * DAY
    calls = Call.objects.bulk_create(
        CallFactory.build(
            organization=organization,
            status="completed",
            end_reason="user_hangup",
            created_at=ended + n * datetime.timedelta(minutes=10),
            started_at=ended + n * datetime.timedelta(minutes=10),
            ended_at=ended + n * datetime.timedelta(minutes=10, seconds=30),
        )
        for n in range(3000)
    )
    Recording.objects.bulk_create(RecordingFactory.build(call=c, status="deleted") for c in calls)
    for _ in range(5):  # kept: within the retention
        RecordingFactory(call=CallFactory(organization=organization, completed=True))
    with CaptureQueriesContext(connection) as queries:
        assert recordings_expire(now=timezone.now(), batch_size=500) == (0, 0)
    # The recordings an older release left without an organization, mended first; then
    # the organization's due ones.
    fill, due = [q["sql"] for q in queries.captured_queries if "recordings_recording" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE recordings_recording")
        cursor.execute("ANALYZE calls_call")
        for method in ("seqscan", "bitmapscan", "sort"):
            cursor.execute(f"SET LOCAL enable_{method} = off")
        cursor.execute("EXPLAIN " + due)
        plan = "\n".join(line for (line,) in cursor.fetchall())
        cursor.execute("EXPLAIN " + fill)
        fill_plan = "\n".join(line for (line,) in cursor.fetchall())

    assert "Index Scan using recording_org_live on recordings_recording" in plan, plan
    assert "Index Scan using calls_call_pkey on calls_call" in plan, plan
    assert fill.startswith("UPDATE"), fill
    assert "Index Scan using recording_org_live on recordings_recording" in fill_plan, fill_plan
