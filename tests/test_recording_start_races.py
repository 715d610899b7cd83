"""A recording deleted while it was starting (its user erased mid-call): whatever egress
its start got from LiveKit is stopped, and its file deleted, even when the worker that
started it died before keeping the egress id and the egress's webhooks were lost. And a
start whose egress another start of the same recording beat is stopped too."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable

import pytest
from django.db import connection
from django.utils import timezone
from livekit import api as lk_api
from livekit.protocol import egress as egress_models
from livekit.protocol.egress import EgressStatus

from calls.expiry import calls_expire
from calls.models import Call
from privacy.keys import room_name_erased
from recordings.deletion import recording_delete
from recordings.models import Recording
from tests.factories import CallFactory, RecordingFactory
from tests.recordings import (
    egress_of_a_start_whose_worker_died,
    join,
    object_keys,
    run_worker,
    s3_client,
    send_egress,
    start_call,
)

pytestmark = pytest.mark.django_db(transaction=True)

HOUR = datetime.timedelta(hours=1)


@pytest.fixture(autouse=True)
def _livekit_waits_for_our_side(request: pytest.FixtureRequest) -> None:
    """The changes `while_livekit_answers` makes (database and storage work) run while
    the start waits for LiveKit: the suite's 1 s client timeout cut one on a loaded CI
    machine, and the start then failed as "LiveKit unreachable" instead of racing."""
    if "fake_livekit" in request.fixturenames:
        request.getfixturevalue("fake_livekit")
        request.getfixturevalue("settings").LIVEKIT_API_TIMEOUT_SECONDS = 10.0


def while_livekit_answers(fake, change: Callable[[], object]) -> None:
    """`change` happens on our side while LiveKit answers the next start (on the fake
    server's thread, with a connection of its own); the egress then waits."""

    def hook(info: object) -> None:
        try:
            change()
        finally:
            connection.close()

    fake.egress_outcome = "manual"
    fake.on_egress_start = hook


def test_the_file_of_a_lost_start_erased_mid_call_is_deleted_once_the_call_ended(
    api, recording_workflow, fake_livekit, recordings_bucket, s3_server
) -> None:
    """The start reached LiveKit and its worker died before the row kept the egress id;
    the user was erased mid-call (the deletion found no egress to stop and no file yet);
    the egress uploaded when the room closed and its webhooks were lost. The file was
    nobody's: the erased caller's voice stayed in the bucket for good."""
    call_id = start_call(api)
    join(call_id)
    egress_of_a_start_whose_worker_died(fake_livekit, call_id=call_id)
    assert recording_delete(call_id=call_id)
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200
    fake_livekit.egress_run()  # the file is uploaded; no webhook arrives
    recording = Recording.objects.get(call_id=call_id)
    assert object_keys(s3_server, recordings_bucket) == [recording.object_key]

    result = calls_expire(now=timezone.now() + HOUR)
    run_worker()

    assert object_keys(s3_server, recordings_bucket) == []
    recording.refresh_from_db()
    assert (recording.status, recording.egress_id) == ("deleted", None)
    assert recording.ended_at is not None  # settled: no later pass looks at it again
    assert result.livekit_errors == 0
    listed = len(fake_livekit.calls("ListEgress"))
    calls_expire(now=timezone.now() + 3 * HOUR)
    assert len(fake_livekit.calls("ListEgress")) == listed


def test_an_egress_of_a_lost_start_still_recording_after_the_call_is_stopped_then_deleted(
    api, recording_workflow, fake_livekit, recordings_bucket, s3_server
) -> None:
    """The room outlived the call: its file is written only once the egress stops, so
    deleting the key first would leave what it writes afterwards."""
    call_id = start_call(api)
    join(call_id)
    orphan = egress_of_a_start_whose_worker_died(fake_livekit, call_id=call_id)
    assert recording_delete(call_id=call_id)
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200

    calls_expire(now=timezone.now() + HOUR)
    run_worker()

    assert [r.body for r in fake_livekit.calls("StopEgress")] == [{"egressId": orphan}]
    assert fake_livekit.egresses[orphan].status == egress_models.EgressStatus.EGRESS_ENDING
    assert Recording.objects.get(call_id=call_id).ended_at is None
    fake_livekit.egress_run()  # it finishes its file; no webhook arrives
    assert object_keys(s3_server, recordings_bucket) != []

    calls_expire(now=timezone.now() + 2 * HOUR)
    run_worker()

    assert object_keys(s3_server, recordings_bucket) == []
    assert Recording.objects.get(call_id=call_id).ended_at is not None


def test_a_recording_deleted_before_its_start_reached_livekit_is_settled_once(
    api, recording_workflow, fake_livekit, recordings_bucket, s3_server
) -> None:
    """Erased before its start ran: no egress, no file; it is looked at once after the
    call, not every minute for good."""
    call_id = start_call(api)
    join(call_id)
    assert recording_delete(call_id=call_id)
    run_worker()
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200

    calls_expire(now=timezone.now() + HOUR)
    run_worker()
    calls_expire(now=timezone.now() + 2 * HOUR)

    assert fake_livekit.calls("StartRoomCompositeEgress") == []
    assert len(fake_livekit.calls("ListEgress")) == 1
    assert Recording.objects.get(call_id=call_id).ended_at is not None


def test_an_egress_whose_webhook_names_it_after_the_recording_was_deleted_is_stopped(
    api, recording_workflow, fake_livekit, recordings_bucket
) -> None:
    """The start's worker died after LiveKit started the egress, and the user was
    erased (the deletion found no egress id to stop): the egress's `egress_started`
    then named it the deleted recording's, and it went on recording the erased caller
    until the call ended."""
    call_id = start_call(api)
    join(call_id)
    orphan = egress_of_a_start_whose_worker_died(fake_livekit, call_id=call_id)
    assert recording_delete(call_id=call_id)

    key = Recording.objects.get(call_id=call_id).object_key
    response = send_egress("egress_started", call_id=call_id, egress_id=orphan, filepath=key)

    assert response.status_code == 200
    assert [r.body for r in fake_livekit.calls("StopEgress")] == [{"egressId": orphan}]
    recording = Recording.objects.get(call_id=call_id)
    assert (recording.status, recording.egress_id) == ("deleted", orphan)


def test_an_egress_livekit_starts_while_the_recording_is_deleted_is_stopped_at_once(
    api, recording_workflow, fake_livekit, recordings_bucket
) -> None:
    """The user was erased while the start's request was with LiveKit: the deletion
    found no egress id to stop, and the start kept the id on the deleted row, so the
    erased caller went on being recorded until the call ended."""

    while_livekit_answers(fake_livekit, lambda: recording_delete(call_id=call_id))
    call_id = start_call(api)
    join(call_id)

    run_worker()

    [egress] = fake_livekit.egresses.values()
    assert [r.body for r in fake_livekit.calls("StopEgress")] == [{"egressId": egress.egress_id}]
    recording = Recording.objects.get(call_id=call_id)
    assert (recording.status, recording.egress_id) == ("deleted", egress.egress_id)


def test_a_start_so_slow_another_kept_its_egress_first_stops_its_own(
    api, recording_workflow, fake_livekit, recordings_bucket
) -> None:
    """A wake-up took the slow start for lost, and the start it woke kept its egress
    first: the slow one's egress, owned by no row, wrote the same file until the call
    ended."""

    def woken_start_keeps_its_egress() -> None:
        Recording.objects.filter(call_id=call_id).update(egress_id="EG_woken")

    while_livekit_answers(fake_livekit, woken_start_keeps_its_egress)
    call_id = start_call(api)
    join(call_id)

    run_worker()

    [slow] = fake_livekit.egresses
    assert [r.body for r in fake_livekit.calls("StopEgress")] == [{"egressId": slow}]
    recording = Recording.objects.get(call_id=call_id)
    assert (recording.status, recording.egress_id) == ("starting", "EG_woken")


@pytest.mark.parametrize(("status", "deleted"), [("deleted", True), ("complete", False)])
def test_a_file_a_duplicate_egress_ends_goes_only_if_the_recording_was_deleted(
    organization, workflow, fake_livekit, recordings_bucket, s3_server, status, deleted
) -> None:
    """The slow start's egress, stopped as a duplicate (above), uploads what it recorded
    to the recording's key; its webhooks name no recording (the row kept the other id,
    and is not unclaimed). Deleted meanwhile, the erased caller's file stayed for good."""
    call = CallFactory(organization=organization, workflow=workflow, completed=True)
    recording = RecordingFactory(
        call=call, status=status, egress_id="EG_kept", endpoint=s3_server, bucket=recordings_bucket
    )
    s3_client(s3_server).put_object(
        Bucket=recordings_bucket, Key=recording.object_key, Body=b"audio"
    )

    response = send_egress(
        "egress_ended", call_id=call.pk, egress_id="EG_slow", filepath=recording.object_key
    )
    run_worker()

    assert response.status_code == 200
    left = [] if deleted else [recording.object_key]
    assert object_keys(s3_server, recordings_bucket) == left
    recording.refresh_from_db()
    assert (recording.status, recording.egress_id) == (status, "EG_kept")


def test_a_duplicate_egress_still_recording_is_stopped_when_its_webhook_comes(
    organization, workflow, fake_livekit
) -> None:
    """Its StopEgress failed (or was never sent: the slow start died after LiveKit's
    answer): it recorded on, and wrote over the kept egress's file at the end."""
    call = CallFactory(organization=organization, workflow=workflow, active=True)
    recording = RecordingFactory(call=call, status="recording", egress_id="EG_kept")

    response = send_egress(
        "egress_started", call_id=call.pk, egress_id="EG_slow", filepath=recording.object_key
    )

    assert response.status_code == 200
    assert [r.body for r in fake_livekit.calls("StopEgress")] == [{"egressId": "EG_slow"}]
    recording.refresh_from_db()
    assert (recording.status, recording.egress_id) == ("recording", "EG_kept")


def test_a_lost_start_of_an_erased_inbound_call_whose_room_outlived_it_is_stopped(
    api, recording_workflow, fake_livekit, recordings_bucket, s3_server
) -> None:
    """Erasure renames a named room once its call ended (it holds the caller's number):
    LiveKit knows no room of the new name, so the egress still recording was found by
    none, the key deleted before it wrote its file, and that file left for good."""
    call_id = start_call(api)
    join(call_id)
    orphan = egress_of_a_start_whose_worker_died(fake_livekit, call_id=call_id)
    assert recording_delete(call_id=call_id)
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200
    call = Call.objects.get(pk=call_id)
    Call.objects.filter(pk=call_id).update(room_name=room_name_erased(call.room_name))

    calls_expire(now=timezone.now() + HOUR)
    run_worker()

    assert [r.body for r in fake_livekit.calls("StopEgress")] == [{"egressId": orphan}]
    assert Recording.objects.get(call_id=call_id).ended_at is None
    fake_livekit.egress_run()  # it finishes its file; no webhook arrives

    calls_expire(now=timezone.now() + 2 * HOUR)
    run_worker()

    assert object_keys(s3_server, recordings_bucket) == []
    assert Recording.objects.get(call_id=call_id).ended_at is not None


@pytest.mark.parametrize("elsewhere", ["other/app.mp4", ""])  # "": a stream, or LiveKit's name
def test_an_egress_of_another_app_in_the_room_neither_takes_the_recording_nor_stops_ours(
    organization, workflow, fake_livekit, elsewhere
) -> None:
    """Its webhook came first and took the recording that had no egress id yet (any
    egress of the room did); the recording's own egress, writing its key, then looked
    like a duplicate and was stopped."""
    call = CallFactory(organization=organization, workflow=workflow, active=True)
    recording = RecordingFactory(call=call, status="starting", egress_id=None)

    foreign = send_egress(
        "egress_started", call_id=call.pk, egress_id="EG_foreign", filepath=elsewhere
    )
    ours = send_egress(
        "egress_started", call_id=call.pk, egress_id="EG_ours", filepath=recording.object_key
    )

    assert (foreign.json(), ours.json()) == ({"result": "unknown_room"}, {"result": "handled"})
    recording.refresh_from_db()
    assert (recording.status, recording.egress_id) == ("recording", "EG_ours")
    assert fake_livekit.calls("StopEgress") == []


def test_an_erased_inbound_calls_egress_is_found_on_any_page_of_running_egresses(
    api, recording_workflow, fake_livekit, recordings_bucket, s3_server
) -> None:
    """Newer LiveKit servers page ListEgress: the first page alone missed it, and its
    key was deleted while it still recorded."""
    for room in ("other-1", "other-2", "other-3"):
        fake_livekit.egresses[f"EG_{room}"] = lk_api.EgressInfo(
            egress_id=f"EG_{room}", room_name=room, status=EgressStatus.EGRESS_ACTIVE
        )
    fake_livekit.egress_page_size = 1
    call_id = start_call(api)
    join(call_id)
    orphan = egress_of_a_start_whose_worker_died(fake_livekit, call_id=call_id)
    assert recording_delete(call_id=call_id)
    assert api.post(f"/api/v1/calls/{call_id}/end").status_code == 200
    call = Call.objects.get(pk=call_id)
    Call.objects.filter(pk=call_id).update(room_name=room_name_erased(call.room_name))

    calls_expire(now=timezone.now() + HOUR)

    assert [r.body for r in fake_livekit.calls("StopEgress")] == [{"egressId": orphan}]
    assert Recording.objects.get(call_id=call_id).ended_at is None


@pytest.mark.parametrize("paging", ["lost", "circles"])
def test_running_egresses_listed_in_part_are_an_error_not_a_shorter_list(
    fake_livekit, paging
) -> None:
    """A missing egress reads as one that ended: the sweep deleted the erased caller's
    key while it still recorded. A server answering in circles is asked a bounded
    number of times."""
    from voicecalls import livekit_egress
    from voicecalls.livekit import LiveKitError

    for room in ("room-1", "room-2", "room-3"):
        fake_livekit.egresses[f"EG_{room}"] = lk_api.EgressInfo(
            egress_id=f"EG_{room}", room_name=room, status=EgressStatus.EGRESS_ACTIVE
        )
    fake_livekit.egress_page_size = 1
    fake_livekit.egress_paging = paging

    with pytest.raises(LiveKitError):
        livekit_egress.active_egresses()

    assert len(fake_livekit.calls("ListEgress")) <= 3


@pytest.mark.parametrize(
    ("info", "filepath"),
    [
        (
            lk_api.EgressInfo(
                room_composite=lk_api.RoomCompositeEgressRequest(
                    file_outputs=[lk_api.EncodedFileOutput(filepath="recordings/a.ogg")]
                )
            ),
            "recordings/a.ogg",
        ),
        (  # LiveKit named it: the file says where it went
            lk_api.EgressInfo(
                room_composite=lk_api.RoomCompositeEgressRequest(
                    file_outputs=[lk_api.EncodedFileOutput(filepath="")]
                ),
                file_results=[lk_api.FileInfo(filename="room-123.ogg")],
            ),
            "room-123.ogg",
        ),
        (  # the newer StartEgress request
            lk_api.EgressInfo(
                egress=lk_api.StartEgressRequest(
                    outputs=[lk_api.Output(file=lk_api.FileOutput(filepath="other/app.mp4"))]
                )
            ),
            "other/app.mp4",
        ),
        (lk_api.EgressInfo(room_composite=lk_api.RoomCompositeEgressRequest()), ""),  # a stream
    ],
)
def test_where_an_egress_writes_is_read_from_its_request_else_its_file(info, filepath) -> None:
    from voicecalls.livekit import egress_update_of

    assert egress_update_of(info).filepath == filepath


@pytest.mark.parametrize(
    ("meanwhile", "status", "stopped"),
    [("refused", "starting", False), ("ended", "failed", True), ("erased", "deleted", True)],
)
def test_a_slow_start_whose_recording_the_woken_start_failed_is_kept_or_stopped(
    api, recording_workflow, fake_livekit, recordings_bucket, meanwhile, status, stopped
) -> None:
    """The woken start failed the recording (LiveKit refused it, the call had ended, its
    user was erased) while the slow one's egress started: the slow one kept its egress
    on the failed row and said "started". An erased caller was recorded on, and no
    sweep followed a failed row's egress (its file was left)."""

    def woken_start_failed_it() -> None:
        recording = Recording.objects.filter(call_id=call_id)
        recording.update(status="failed", error="…", ended_at=timezone.now())
        if meanwhile == "ended":
            Call.objects.filter(pk=call_id).update(status="completed", ended_at=timezone.now())
        if meanwhile == "erased":
            Call.objects.filter(pk=call_id).update(erased_at=timezone.now())

    while_livekit_answers(fake_livekit, woken_start_failed_it)
    call_id = start_call(api)
    join(call_id)

    run_worker()

    [egress] = fake_livekit.egresses
    recording = Recording.objects.get(call_id=call_id)
    assert (recording.status, recording.egress_id) == (status, egress)
    stops = [r.body for r in fake_livekit.calls("StopEgress")]
    assert stops == ([{"egressId": egress}] if stopped else [])
    assert (recording.ended_at is None) == (meanwhile != "ended")


def test_an_egress_whose_webhook_names_another_room_is_claimed_by_the_key_it_writes(
    organization, workflow, fake_livekit
) -> None:
    """The key is the recording's alone (unique, and random); the room was asked too,
    and a name LiveKit said otherwise (an erased room under a retired secret) lost the
    egress for good when the start's answer was lost."""
    call = CallFactory(organization=organization, workflow=workflow, active=True)
    recording = RecordingFactory(call=call, status="starting", egress_id=None)

    response = send_egress(
        "egress_started", call_id=uuid.uuid4(), egress_id="EG_ours", filepath=recording.object_key
    )

    assert response.json() == {"result": "handled"}
    recording.refresh_from_db()
    assert (recording.status, recording.egress_id) == ("recording", "EG_ours")


def test_a_lost_starts_egress_on_a_later_page_of_its_room_is_adopted_not_started_again(
    api, recording_workflow, fake_livekit, recordings_bucket, settings
) -> None:
    """Newer servers page ListEgress by room too: the first page alone held another
    app's egress, and the recording got a second egress into the same key."""
    settings.CALL_RECONCILE_AFTER_SECONDS = 3600  # the call is still going
    call_id = start_call(api)
    join(call_id)
    fake_livekit.egresses["EG_app"] = lk_api.EgressInfo(
        egress_id="EG_app", room_name=f"call-{call_id}", status=EgressStatus.EGRESS_ACTIVE
    )
    orphan = egress_of_a_start_whose_worker_died(fake_livekit, call_id=call_id)
    fake_livekit.egress_page_size = 1

    calls_expire(now=timezone.now() + datetime.timedelta(minutes=3))
    run_worker()

    assert len(fake_livekit.calls("StartRoomCompositeEgress")) == 1
    assert Recording.objects.get(call_id=call_id).egress_id == orphan


def test_a_slow_start_keeps_the_storage_its_egress_writes_to_not_the_one_a_woken_start_chose(
    api, recording_workflow, fake_livekit, recordings_bucket
) -> None:
    """The woken start pointed the row at a storage the organization chose since; the
    slow one's egress, kept, wrote to the old bucket: links read, and retention and
    erasure deleted, the key in a bucket that never had it."""

    def woken_start_pointed_elsewhere() -> None:
        Recording.objects.filter(call_id=call_id).update(bucket="their-new-bucket")

    while_livekit_answers(fake_livekit, woken_start_pointed_elsewhere)
    call_id = start_call(api)
    join(call_id)

    run_worker()

    [request] = [r.body for r in fake_livekit.calls("StartRoomCompositeEgress")]
    written_to = request["fileOutputs"][0]["s3"]["bucket"]
    assert written_to == recordings_bucket
    assert Recording.objects.get(call_id=call_id).bucket == written_to


def test_a_slow_start_whose_recording_was_failed_then_erased_is_stopped_and_followed(
    api, recording_workflow, fake_livekit, recordings_bucket
) -> None:
    """An erasure deletes the recording before it marks the call: the slow start found
    it deleted, stopped its egress, but left the failure's `ended_at`, so no sweep
    followed the egress's file when its webhook was lost."""

    def woken_start_failed_it_then_the_user_was_erased() -> None:
        failed = Recording.objects.filter(call_id=call_id)
        failed.update(status="failed", error="…", ended_at=timezone.now())
        assert recording_delete(call_id=call_id)

    while_livekit_answers(fake_livekit, woken_start_failed_it_then_the_user_was_erased)
    call_id = start_call(api)
    join(call_id)

    run_worker()

    [egress] = fake_livekit.egresses
    assert [r.body for r in fake_livekit.calls("StopEgress")] == [{"egressId": egress}]
    recording = Recording.objects.get(call_id=call_id)
    assert (recording.status, recording.egress_id, recording.ended_at) == (
        "deleted",
        egress,
        None,
    )


def test_a_failure_the_egress_reports_before_its_start_is_kept_stays_a_failure(
    api, recording_workflow, fake_livekit, recordings_bucket
) -> None:
    """Its `egress_ended` (failed) came while LiveKit answered the start: that failure
    is LiveKit's word on the egress, not one a woken start guessed, and no start
    revives it."""

    def egress_failed_at_once(info) -> None:
        try:
            response = send_egress(
                "egress_ended",
                call_id=call_id,
                egress_id=info.egress_id,
                status="EGRESS_FAILED",
                error="Start signal not received",
            )
            assert response.json() == {"result": "handled"}
        finally:
            connection.close()

    fake_livekit.egress_outcome = "manual"
    fake_livekit.on_egress_start = egress_failed_at_once
    call_id = start_call(api)
    join(call_id)

    run_worker()

    recording = Recording.objects.get(call_id=call_id)
    assert (recording.status, recording.error) == ("failed", "Start signal not received")
    assert fake_livekit.calls("StopEgress") == []


def test_a_deletion_whose_recording_a_slow_start_revived_meanwhile_stops_its_egress(
    organization, workflow, fake_livekit, recordings_bucket, s3_server, monkeypatch
) -> None:
    """The deletion read the recording failed (no egress to stop); while it deleted
    the file, a slow start kept its egress and revived the row. The deletion marked it
    all the same, and stopped nothing, as the status it had read said."""
    from recordings import deletion

    call = CallFactory(organization=organization, workflow=workflow, active=True)
    recording = RecordingFactory(
        call=call, status="failed", egress_id=None, endpoint=s3_server, bucket=recordings_bucket
    )
    real_file_delete = deletion._file_delete

    def file_delete_while_a_slow_start_revives_it(row: Recording) -> None:
        real_file_delete(row)
        Recording.objects.filter(pk=row.pk).update(status="starting", egress_id="EG_slow")

    monkeypatch.setattr(deletion, "_file_delete", file_delete_while_a_slow_start_revives_it)

    assert recording_delete(call_id=call.pk)

    assert [r.body for r in fake_livekit.calls("StopEgress")] == [{"egressId": "EG_slow"}]
    assert Recording.objects.get(pk=recording.pk).status == "deleted"
