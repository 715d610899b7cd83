"""An erasure's runs: one run at a time holds it (a lease), a long run stamps each batch
when it happened, a run cannot be taken over while still erasing, one whose lease was
taken over writes nothing more, and late agent events racing it bring no content back."""

from __future__ import annotations

import datetime
import threading
import uuid

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

import tests.privacy
from accounts.services import api_key_create
from calls.models import (
    ERASED_CONTENT,
    Call,
    TranscriptEntry,
)
from privacy.erasure import erasure_create, erasure_run, erasures_wake_due
from privacy.models import Erasure, ErasureStatus
from tests.conftest import bearer_client
from tests.privacy import (
    personal_call,
)
from tests.test_erasures import erase

pytestmark = pytest.mark.django_db

# The shared fixture (tests/privacy.py), bound here for pytest to find.
key = tests.privacy.key


def test_a_run_holding_the_erasure_keeps_others_out_until_its_lease_ends(
    organization, key, django_capture_on_commit_callbacks
):
    personal_call(organization)
    erasure = erasure_create(organization=organization, user_id="user-123", api_key=key)
    now = timezone.now()
    Erasure.objects.filter(pk=erasure.pk).update(
        status=ErasureStatus.RUNNING, lease_until=now + datetime.timedelta(minutes=5)
    )

    assert erasure_run(erasure_id=erasure.pk, now=now) is None
    assert erasures_wake_due(now=now) == 0
    later = now + datetime.timedelta(minutes=6)
    with django_capture_on_commit_callbacks(execute=True):
        assert erasures_wake_due(now=later) == 1
    (task,) = DBTaskResult.objects.all()
    assert task.args_kwargs == {"args": [str(erasure.pk)], "kwargs": {}}
    assert erasure_run(erasure_id=erasure.pk, now=later) == ErasureStatus.COMPLETED
    assert erasure_run(erasure_id=erasure.pk, now=later) is None


def test_a_run_longer_than_its_lease_stamps_each_batch_and_its_end_when_they_happened(
    organization, key
):
    """A run stamped everything with the time it began: a long one (thousands of
    recordings to delete) said it finished when it began, its calls erased then too."""
    calls = [personal_call(organization) for _ in range(2)]
    began = timezone.now() - datetime.timedelta(minutes=10)
    before = timezone.now()

    erasure = erase(organization, key, "user-123", now=began, batch_size=1)

    assert erasure.status == ErasureStatus.COMPLETED
    assert erasure.started_at == began
    assert erasure.finished_at >= before
    assert all(Call.objects.get(pk=c.pk).erased_at >= before for c in calls)


def call_lock_hold(call: Call, locked: threading.Event, release: threading.Event) -> None:
    """Hold the call's row lock (in a thread) from `locked` until `release`."""
    try:
        with transaction.atomic():
            Call.objects.select_for_update().get(pk=call.pk)
            locked.set()
            release.wait(timeout=20)
    finally:
        connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_second_run_cannot_take_over_a_long_run_that_is_still_erasing(organization, key):
    """Its lease ran from when the run began: after five minutes of work another run
    took it over, found the batch the first was erasing done, and marked the erasure
    completed while the first still had calls to erase (lost, were it stopped then)."""
    first, second = sorted((personal_call(organization) for _ in range(2)), key=lambda c: c.pk)
    erasure = erasure_create(organization=organization, user_id="user-123", api_key=key)
    locked, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def run(name: str, **kwargs: object) -> None:
        try:
            results[name] = erasure_run(erasure_id=erasure.pk, batch_size=1, **kwargs)
        finally:
            connection.close()

    # The run's second batch waits for this lock.
    holder = threading.Thread(target=call_lock_hold, args=(second, locked, release))
    holder.start()
    assert locked.wait(timeout=10)
    # Begun ten minutes ago: as a run that has been deleting recordings for that long.
    began = timezone.now() - datetime.timedelta(minutes=10)
    long_run = threading.Thread(target=run, args=("long",), kwargs={"now": began})
    long_run.start()
    for _ in range(200):
        if Erasure.objects.get(pk=erasure.pk).batches == 1:
            break
        threading.Event().wait(0.05)
    other = threading.Thread(target=run, args=("other",))
    other.start()
    other.join(timeout=3)
    release.set()
    for thread in (holder, long_run, other):
        thread.join(timeout=20)

    assert results == {"long": ErasureStatus.COMPLETED, "other": None}
    assert Call.objects.filter(pk__in=[first.pk, second.pk], erased_at__isnull=True).count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_run_whose_lease_another_run_took_over_mid_batch_writes_nothing_more(organization, key):
    """A batch that outlasted its lease (its recordings took minutes to delete) while
    another run took the erasure over went on as if it still held it: it erased and
    counted, and marked the erasure completed under the other run."""
    first, second = sorted((personal_call(organization) for _ in range(2)), key=lambda c: c.pk)
    erasure = erasure_create(organization=organization, user_id="user-123", api_key=key)
    locked, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def run() -> None:
        try:
            results["run"] = erasure_run(erasure_id=erasure.pk, batch_size=1)
        finally:
            connection.close()

    # The run's second batch waits for this lock.
    holder = threading.Thread(target=call_lock_hold, args=(second, locked, release))
    holder.start()
    assert locked.wait(timeout=10)
    stalled = threading.Thread(target=run)
    stalled.start()
    for _ in range(200):
        if Erasure.objects.get(pk=erasure.pk).batches == 1:
            break
        threading.Event().wait(0.05)
    # Meanwhile its lease ran out and another run claimed the erasure.
    other_lease = timezone.now() + datetime.timedelta(minutes=20)
    Erasure.objects.filter(pk=erasure.pk).update(lease_until=other_lease)
    release.set()
    for thread in (holder, stalled):
        thread.join(timeout=20)

    assert results == {"run": None}
    erasure.refresh_from_db()
    assert (erasure.status, erasure.batches, erasure.calls_erased) == (ErasureStatus.RUNNING, 1, 1)
    assert erasure.lease_until == other_lease
    assert Call.objects.get(pk=first.pk).erased_at is not None
    assert Call.objects.get(pk=second.pk).erased_at is None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_late_agent_events_racing_the_erasure_never_bring_content_back(
    organization, agent_key
) -> None:
    key, _ = api_key_create(name="privacy-bot", organization=organization)
    calls = [personal_call(organization) for _ in range(3)]
    barrier = threading.Barrier(len(calls) + 1)
    posted: list[int] = []

    def agent(call: Call) -> None:
        client = bearer_client(agent_key)
        try:
            barrier.wait(timeout=10)
            for n in range(15):
                events = [
                    {
                        "id": str(uuid.uuid4()),
                        "type": "transcript",
                        "timestamp": timezone.now().isoformat(),
                        "role": "user",
                        "content": f"secret words {n}.{i}",
                        "tool_call": {"name": "save_meal", "arguments": {"n": n}},
                    }
                    for i in range(5)
                ]
                answer = client.post(
                    f"/api/v1/agent/calls/{call.pk}/events", {"events": events}, format="json"
                )
                posted.append(answer.status_code)
        finally:
            connection.close()

    def erasure() -> None:
        try:
            barrier.wait(timeout=10)
            erase(organization, key, "user-123", batch_size=1)
        finally:
            connection.close()

    threads = [threading.Thread(target=agent, args=(call,)) for call in calls]
    threads.append(threading.Thread(target=erasure))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert posted == [200] * 45
    lines = TranscriptEntry.objects.filter(call__in=calls)
    assert lines.count() == 3 * (2 + 75)
    assert set(lines.values_list("content", flat=True)) == {ERASED_CONTENT}
    assert not lines.filter(tool_call__isnull=False).exists()
    assert Erasure.objects.get().status == ErasureStatus.COMPLETED
