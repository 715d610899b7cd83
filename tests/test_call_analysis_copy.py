"""The call's copy of its analysis's status and verdict (`Call.analysis_status`,
`Call.analysis_success`), which the list filters read: a trigger keeps it whoever
writes the analysis, and migration analysis 0002 fills it for analyses made before."""

from __future__ import annotations

import copy
import datetime
import threading
import time

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from analysis.models import AnalysisStatus, CallAnalysis
from analysis.services import call_analysis_attempt, call_analysis_rerun
from calls.models import Call
from privacy.scrub import analysis_erase
from tests.factories import CallFactory, WorkflowFactory
from tests.locks import a_session_waits_for_a_lock
from tests.test_analysis_api import ANALYSIS
from workflows.demo import DEMO_DEFINITION


def _copy(call: Call) -> tuple[str | None, bool | None]:
    return tuple(
        Call.objects.filter(pk=call.pk).values_list("analysis_status", "analysis_success").get()
    )


@pytest.mark.django_db
def test_every_write_of_an_analysis_is_copied_onto_its_call_and_no_other(organization) -> None:
    call, other = CallFactory.create_batch(2, organization=organization, completed=True)
    analysis = CallAnalysis.objects.create(call=call)
    assert _copy(call) == ("pending", None)

    CallAnalysis.objects.filter(call=call).update(status=AnalysisStatus.RUNNING)
    assert _copy(call) == ("running", None)

    analysis.status, analysis.success, analysis.summary = "completed", False, "Ada ate."
    analysis.save()
    assert _copy(call) == ("completed", False)

    analysis_erase(call_ids=[call.pk])  # the summary goes, the verdict stays
    assert _copy(call) == ("completed", False)

    analysis.delete()
    assert _copy(call) == (None, None)
    assert _copy(other) == (None, None)


@pytest.mark.django_db
def test_the_copy_follows_an_analysis_that_changes_only_its_verdict(organization) -> None:
    call = CallFactory(organization=organization, completed=True)
    CallAnalysis.objects.create(call=call, status=AnalysisStatus.COMPLETED, success=True)

    CallAnalysis.objects.filter(call=call).update(success=None)

    assert _copy(call) == ("completed", None)


def _migrate(*targets: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(list(targets) or executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_the_migration_copies_the_analyses_made_before_it_and_its_reverse_stops_copying(
    organization,
) -> None:
    calls = CallFactory.create_batch(3, organization=organization, completed=True)
    try:
        _migrate(("analysis", "0001_initial"))
        CallAnalysis.objects.create(call=calls[0], status="completed", success=True)
        CallAnalysis.objects.create(call=calls[1], status="failed")
        before = [_copy(call) for call in calls]
        _migrate()
        after = [_copy(call) for call in calls]
        CallAnalysis.objects.create(call=calls[2], status="skipped")
        kept = _copy(calls[2])
    finally:
        _migrate()

    assert before == [(None, None)] * 3
    assert after == [("completed", True), ("failed", None), (None, None)]
    assert kept == ("skipped", None)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("change", ["claim", "rerun"])
def test_a_run_changing_an_analysis_waits_for_the_calls_row_before_taking_the_analysiss(
    organization, change: str
) -> None:
    """A finishing run locks the call's row, then its analysis's (analysis.services
    `_finish`), and the trigger makes every change of an analysis's status update its
    call. A claim or a re-run that locked the analysis first would then wait for the
    call while holding it: a deadlock with the finishing run. Here a transaction holds
    the call's row while the other change starts, and must still get the analysis."""
    definition = {**copy.deepcopy(DEMO_DEFINITION), "analysis": ANALYSIS}
    workflow = WorkflowFactory(organization=organization, definition=definition)
    call = CallFactory(organization=organization, workflow=workflow, completed=True)
    due = timezone.now() - datetime.timedelta(minutes=1)
    status = AnalysisStatus.PENDING if change == "claim" else AnalysisStatus.COMPLETED
    CallAnalysis.objects.create(call=call, status=status, next_attempt_at=due)
    outcome: list[object] = []

    def run_the_change() -> None:
        try:
            if change == "claim":
                outcome.append(call_analysis_attempt(call_id=call.pk, run=1))
            else:
                outcome.append(call_analysis_rerun(call=call).status)
        except BaseException as exc:
            outcome.append(exc)
        finally:
            connection.close()

    other = threading.Thread(target=run_the_change)
    with transaction.atomic():
        Call.objects.select_for_update().filter(pk=call.pk).exists()
        other.start()
        deadline = time.monotonic() + 10
        while not a_session_waits_for_a_lock():
            assert time.monotonic() < deadline, "the change never waited"
            time.sleep(0.02)
        # What the finishing run takes next; NOWAIT fails if the change holds it.
        CallAnalysis.objects.select_for_update(nowait=True).filter(call=call).exists()
    other.join(10)

    # A claimed run without the organization's LLM key is skipped.
    assert outcome == (["skipped"] if change == "claim" else ["pending"])
    assert _copy(call) == (("skipped", None) if change == "claim" else ("pending", None))
