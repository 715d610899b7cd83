"""`expire_calls`' passes mend recordings that the egress webhooks or the workers left
behind (recordings/reconcile.py): a recording whose webhooks were lost is read from
LiveKit, an egress running long after its call is stopped, a start whose task died is
started again or its egress adopted (never a second egress, never another recording's),
a late file whose deletion task died is deleted, an egress LiveKit forgot fails its
recording."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone
from livekit.protocol import egress as egress_models

from recordings.models import Recording
from tests.factories import RecordingFactory
from tests.livekit_samples import send
from tests.recordings import (
    download,
    egress_of_a_start_whose_worker_died,
    join,
    object_keys,
    run_worker,
    start_call,
    started_egresses,
    worker_killed_mid_start,
)

pytestmark = pytest.mark.django_db(transaction=True)


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
