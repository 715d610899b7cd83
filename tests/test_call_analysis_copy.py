"""The call's copy of its analysis's status and verdict (`Call.analysis_status`,
`Call.analysis_success`), which the list filters read: a trigger keeps it whoever
writes the analysis, and migration analysis 0002 fills it for analyses made before."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from analysis.models import AnalysisStatus, CallAnalysis
from calls.models import Call
from privacy.scrub import analysis_erase
from tests.factories import CallFactory


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
