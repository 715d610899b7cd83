from __future__ import annotations

import datetime
import threading

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from calls.expiry import calls_expire
from calls.models import CallStatus
from tests.factories import CallFactory
from tests.livekit_samples import send
from tests.tasks import IMMEDIATE_TASKS

S = CallStatus


def ago(seconds: float) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(seconds=seconds)


@pytest.fixture
def make(workflow):
    def make(**kwargs: object):
        return CallFactory(organization=workflow.organization, workflow=workflow, **kwargs)

    return make


def test_a_call_nobody_joined_times_out_and_its_room_is_deleted(make, fake_livekit):
    late = make(created_at=ago(91), connect_timeout_seconds=60)
    pending = make(status=S.PENDING, created_at=ago(100), connect_timeout_seconds=60)
    fresh = make(created_at=ago(30), connect_timeout_seconds=60)
    result = calls_expire()
    assert result.connect_timeouts == 2
    for call in (late, pending):
        call.refresh_from_db()
        assert (call.status, call.end_reason) == (S.TIMEOUT, "connect_timeout")
        assert call.ended_at is not None
        assert call.started_at is None
    fresh.refresh_from_db()
    assert fresh.status == S.CONNECTING
    deleted = {r.body["room"] for r in fake_livekit.calls("DeleteRoom")}
    assert deleted == {late.room_name, pending.room_name}


def test_a_call_times_out_only_once_a_late_join_can_no_longer_arrive_stamped_at_its_timeout(
    make, fake_livekit
):
    created = ago(75)
    call = make(created_at=created, connect_timeout_seconds=60)

    assert calls_expire().connect_timeouts == 0  # a join may still be on its way (30 s)
    # LiveKit retried it: stamped within the connect timeout, it starts the call.
    assert (
        send("participant_joined", call.pk, created_at=created.timestamp() + 58).status_code == 200
    )
    call.refresh_from_db()
    assert call.status == S.ACTIVE

    late = make(created_at=ago(91), connect_timeout_seconds=60)
    assert calls_expire().connect_timeouts == 1
    late.refresh_from_db()
    assert (late.status, late.ended_at) == (
        S.TIMEOUT,
        late.created_at + datetime.timedelta(seconds=60),
    )


def test_a_join_past_the_connect_timeout_times_the_call_out_then_and_closes_its_room(
    make, fake_livekit, settings, django_capture_on_commit_callbacks
):
    """Within expire_calls' grace the call is still open: a user joining then (refused
    as a start) must not leave the agent talking, nor relabel the timeout when they
    hang up."""
    call = make(created_at=ago(65), connect_timeout_seconds=60)
    fake_livekit.add_room(call.room_name, [f"user-{call.pk}", "agent-AJ_1"])
    calls_expire()
    settings.TASKS = IMMEDIATE_TASKS

    with django_capture_on_commit_callbacks(execute=True):
        assert send("participant_joined", call.pk).status_code == 200
    assert send("participant_left", call.pk, reason="CLIENT_INITIATED").status_code == 200

    call.refresh_from_db()
    assert (call.status, call.end_reason, call.started_at) == (S.TIMEOUT, "connect_timeout", None)
    assert call.ended_at == call.created_at + datetime.timedelta(seconds=60)
    assert call.room_name not in fake_livekit.rooms


@pytest.mark.parametrize("ended_by", ["expire_calls", "the user's late join"])
def test_an_agent_joining_past_the_connect_timeout_leaves_the_timeout_at_the_deadline(
    make, fake_livekit, ended_by: str
):
    """The call never started: it timed out at creation + connect timeout, as
    expire_calls says once its grace passed. An agent joining in that grace moved the
    end to its join (the end follows the agent's times), a call outlasting its bound."""
    call = make(created_at=ago(95), connect_timeout_seconds=60)
    # Delivered late, timed by its stamp: 25 s past the timeout, before expire_calls ran.
    joined = ago(10).timestamp()
    assert send("participant_joined_agent", call.pk, created_at=joined).status_code == 200

    if ended_by == "expire_calls":
        assert calls_expire().connect_timeouts == 1
    else:
        assert send("participant_joined", call.pk).status_code == 200

    call.refresh_from_db()
    assert (call.status, call.end_reason, call.started_at) == (S.TIMEOUT, "connect_timeout", None)
    assert call.ended_at == call.created_at + datetime.timedelta(seconds=60)


def test_a_join_stamped_within_the_connect_timeout_but_arriving_just_after_starts_the_call(
    make, fake_livekit
):
    """LiveKit stamps whole seconds: a join made just before the timeout, delivered at
    once, arrives just after it; its stamp says it may well have been in time."""
    import time

    call = make(created_at=ago(60.3), connect_timeout_seconds=60)

    assert send("participant_joined", call.pk, created_at=int(time.time() - 0.5)).status_code == 200

    call.refresh_from_db()
    assert call.status == S.ACTIVE
    assert call.created_at <= call.started_at <= call.created_at + datetime.timedelta(seconds=60)


def test_a_call_past_its_max_duration_times_out(make, fake_livekit):
    long = make(active=True, started_at=ago(1801), max_duration_seconds=1800)
    fake_livekit.add_room(long.room_name, [f"user-{long.pk}"])
    ok = make(active=True, started_at=ago(100), max_duration_seconds=1800)
    assert calls_expire().max_durations == 1
    long.refresh_from_db()
    assert (long.status, long.end_reason, long.current_agent) == (S.TIMEOUT, "max_duration", None)
    assert long.room_name not in fake_livekit.rooms
    ok.refresh_from_db()
    assert ok.status == S.ACTIVE


def test_the_rooms_own_webhooks_cannot_relabel_a_timed_out_call(make, fake_livekit):
    call = make(active=True, started_at=ago(1801), max_duration_seconds=1800)
    calls_expire()
    send("participant_left", call.pk, reason="ROOM_DELETED")
    send("room_finished", call.pk)
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (S.TIMEOUT, "max_duration")


def test_the_room_is_deleted_only_after_the_call_timed_out(make, fake_livekit, monkeypatch):
    from voicecalls import livekit

    call = make(created_at=ago(91))
    seen = []

    def delete(*, room_name: str) -> bool:
        call.refresh_from_db()
        seen.append(call.status)
        return True

    monkeypatch.setattr(livekit, "room_delete", delete)
    calls_expire()
    assert seen == [S.TIMEOUT]


def test_livekit_failures_are_logged_not_fatal(
    make, fake_livekit, caplog, django_capture_on_commit_callbacks
):
    fake_livekit.fail("DeleteRoom", "500")
    call = make(created_at=ago(91))
    with django_capture_on_commit_callbacks(execute=True):
        result = calls_expire()
    assert (result.connect_timeouts, result.livekit_errors) == (1, 1)
    call.refresh_from_db()
    assert call.status == S.TIMEOUT
    assert "could not delete the room" in caplog.text
    # ... and the close is tried again in the task queue.
    retry = DBTaskResult.objects.get(task_path__endswith="call_room_close")
    assert retry.args_kwargs["args"] == [str(call.pk)]


@pytest.mark.parametrize(
    ("room", "identities", "ended"),
    [
        (False, None, True),  # the room is gone
        (True, ["agent-AJ_1"], True),  # only the agent is left
        (True, ["USER", "agent-AJ_1"], False),  # the user is still there
    ],
)
def test_a_silent_active_call_is_reconciled_against_livekit(
    make, fake_livekit, settings, room, identities, ended
):
    settings.CALL_RECONCILE_AFTER_SECONDS = 120
    heard = ago(121)
    call = make(active=True, started_at=ago(600), last_event_at=heard)
    if room:
        fake_livekit.add_room(
            call.room_name, [f"user-{call.pk}" if i == "USER" else i for i in identities]
        )
    result = calls_expire()
    call.refresh_from_db()
    if ended:
        assert result.reconciled == 1
        assert (call.status, call.end_reason) == (S.COMPLETED, "reconciled")
        # It ended when it was last heard of, not when the silence was noticed.
        assert call.ended_at == heard
        assert call.room_name not in fake_livekit.rooms
    else:
        assert result.reconciled == 0
        assert call.status == S.ACTIVE
        assert call.last_event_at > ago(5)  # checked: quiet again for a while
    assert len(fake_livekit.calls("ListRooms")) == 1


def test_recently_heard_calls_are_not_checked(make, fake_livekit):
    make(active=True, started_at=ago(600), last_event_at=ago(10))
    assert calls_expire().reconciled == 0
    assert fake_livekit.requests == []


def test_reconciling_survives_livekit_being_down(make, fake_livekit):
    fake_livekit.fail("ListRooms", "500")
    call = make(active=True, started_at=ago(600), last_event_at=ago(500))
    assert calls_expire().livekit_errors == 1
    call.refresh_from_db()
    assert call.status == S.ACTIVE


def test_the_command_runs_one_pass(make, fake_livekit, capsys):
    call = make(created_at=ago(91))
    call_command("expire_calls")
    call.refresh_from_db()
    assert call.status == S.TIMEOUT
    assert "connect_timeout=1" in capsys.readouterr().out


def test_every_must_be_positive(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("expire_calls", "--every", "0")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_end_each_call_once(workflow, fake_livekit):
    calls = [
        CallFactory(organization=workflow.organization, workflow=workflow, created_at=ago(91))
        for _ in range(20)
    ]
    results = []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            barrier.wait()
            results.append(calls_expire())
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.connect_timeouts for r in results) == 20
    assert len(fake_livekit.calls("DeleteRoom")) == 20
    for call in calls:
        call.refresh_from_db()
        assert (call.status, call.end_reason) == (S.TIMEOUT, "connect_timeout")


def test_old_webhook_ids_are_pruned(db, fake_livekit):
    from calls.models import LiveKitWebhookEvent

    LiveKitWebhookEvent.objects.create(
        event_id="EV_old", event="room_finished", received_at=ago(86_401)
    )
    LiveKitWebhookEvent.objects.create(
        event_id="EV_new", event="room_finished", received_at=ago(60)
    )
    assert calls_expire().webhook_ids_pruned == 1
    assert list(LiveKitWebhookEvent.objects.values_list("event_id", flat=True)) == ["EV_new"]


def test_refused_transfers_past_any_days_cap_are_pruned(organization, fake_livekit):
    from telephony.models import RefusedTransfer

    RefusedTransfer.objects.create(organization=organization, attempted_at=ago(2 * 86_400 + 1))
    kept = RefusedTransfer.objects.create(organization=organization, attempted_at=ago(86_400))

    assert calls_expire().refused_transfers_pruned == 1
    assert list(RefusedTransfer.objects.values_list("pk", flat=True)) == [kept.pk]


def test_roomservice_calls_work_while_an_event_loop_runs_in_the_thread(fake_livekit):
    """Sync code called from async code (or a harness driving a loop, like Playwright)."""
    import asyncio
    import concurrent.futures

    from voicecalls import livekit

    fake_livekit.add_room("call-x", ["user-x"])

    async def from_async() -> set[str] | None:
        return livekit.room_participant_identities(room_name="call-x")

    # In a fresh thread: this one may already run a loop (the browser tests leave one).
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(asyncio.run, from_async()).result() == {"user-x"}


@pytest.mark.parametrize(("caller_there", "ended"), [(True, False), (False, True)])
def test_an_inbound_call_is_reconciled_by_its_stored_room_and_caller(
    make, fake_livekit, settings, caller_there, ended
):
    settings.CALL_RECONCILE_AFTER_SECONDS = 120
    call = make(
        active=True,
        started_at=ago(600),
        last_event_at=ago(121),
        channel="phone",
        room_name="inbound-_+12025550177_ab12cd34ef56",
        participant_identity="sip_+12025550177",
    )
    fake_livekit.add_room(
        call.room_name, ["agent-AJ_1", *(["sip_+12025550177"] if caller_there else [])]
    )

    result = calls_expire()

    call.refresh_from_db()
    assert (result.reconciled == 1) is ended
    assert (call.status == S.COMPLETED) is ended
    assert fake_livekit.calls("ListRooms")[0].body == {"names": [call.room_name]}
    if ended:
        assert fake_livekit.calls("DeleteRoom")[0].body == {"room": call.room_name}


def test_an_inbound_call_nobody_answered_times_out_and_its_own_room_is_deleted(make, fake_livekit):
    make(created_at=ago(91), connect_timeout_seconds=60, room_name="inbound-_x_1")

    assert calls_expire().connect_timeouts == 1

    assert fake_livekit.calls("DeleteRoom")[0].body == {"room": "inbound-_x_1"}
