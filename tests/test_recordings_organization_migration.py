"""recordings 0005: each recording names its call's organization, filled for the
recordings already there, and `recording_org_live` indexes those not yet deleted."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from recordings.models import Recording
from tests.factories import CallFactory

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = ("recordings", "0004_recording_unclaimed_unended")


def _migrate(target: tuple[str, str] | None = None) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target] if target else executor.loader.graph.leaf_nodes())
    return executor


def test_the_migration_gives_the_recordings_already_there_their_calls_organization() -> None:
    calls = [CallFactory(completed=True) for _ in range(3)]
    try:
        executor = _migrate(BEFORE)
        old = executor.loader.project_state(BEFORE).apps.get_model("recordings", "Recording")
        for n, call in enumerate(calls):
            old.objects.create(call_id=call.pk, storage="platform", bucket="b", object_key=f"k{n}")
    finally:
        _migrate()

    named = dict(Recording.objects.values_list("call_id", "organization_id"))
    assert named == {call.pk: call.organization_id for call in calls}
