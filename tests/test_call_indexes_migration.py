"""calls 0018: the list indexes are widened and narrowed again by the migration, on
PostgreSQL built concurrently under a temporary name that takes the old one's place;
calls 0020: the daily cap's index swapped for one of outbound calls, and back; calls 0024:
the number indexes reordered, and back; calls 0027: a workflow's verdict index added,
and removed."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = ("calls", "0017_list_indexes_carry_window_columns")
AFTER = ("calls", "0018_list_indexes_carry_filter_columns")
NAMES = ("call_org_status", "call_org_user", "call_org_workflow")


def _migrate(target: tuple[str, str] | None = None) -> None:
    """To `target`, or with None to the latest migration of every app (later
    migrations of other apps depend on these)."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target] if target else executor.loader.graph.leaf_nodes())


def _indexes() -> dict[str, str]:
    """The three list indexes' columns as the database describes them, and any index
    left under a temporary name."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid"
                " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE i.indrelid = 'calls_call'::regclass"
            )
            rows = [(name, sql if valid else "INVALID") for name, sql, valid in cursor]
        else:
            cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'calls_call'"
                " AND type = 'index'"
            )
            rows = cursor.fetchall()
    found = {name: sql for name, sql in rows if name in NAMES or name.endswith("_building")}
    return {name: sql[sql.index("(") :].replace('"', "") for name, sql in found.items()}


def test_the_migration_widens_the_list_indexes_and_its_reverse_narrows_them() -> None:
    try:
        _migrate(BEFORE)
        narrowed = _indexes()
        _migrate(AFTER)
        widened = _indexes()
    finally:
        _migrate()

    assert narrowed == {
        "call_org_status": "(organization_id, status, created_at DESC, id DESC)",
        "call_org_user": "(organization_id, user_id, created_at DESC, id DESC)",
        "call_org_workflow": "(organization_id, workflow_id, created_at DESC, id DESC)",
    }
    assert widened == {
        "call_org_status": "(organization_id, status, created_at DESC, id DESC, started_at)",
        "call_org_user": (
            "(organization_id, user_id, created_at DESC, id DESC, status, started_at)"
        ),
        "call_org_workflow": (
            "(organization_id, workflow_id, created_at DESC, id DESC, status, started_at)"
        ),
    }


def _daily_cap_indexes() -> set[str]:
    names = connection.introspection.get_constraints(connection.cursor(), "calls_call")
    return {
        name for name in names if name in ("call_org_phone_created", "call_org_outbound_created")
    }


def test_the_daily_cap_index_holds_outbound_calls_after_the_migration_and_all_before() -> None:
    try:
        _migrate(("calls", "0019_call_analysis_copy"))
        before = _daily_cap_indexes()
        _migrate(("calls", "0020_daily_cap_counts_outbound_calls"))
        after = _daily_cap_indexes()
    finally:
        _migrate()

    assert (before, after) == ({"call_org_phone_created"}, {"call_org_outbound_created"})


def _number_indexes() -> dict[str, list[str]]:
    constraints = connection.introspection.get_constraints(connection.cursor(), "calls_call")
    names = ("call_org_callee", "call_org_caller", "call_callee", "call_caller")
    return {name: found["columns"] for name, found in constraints.items() if name in names}


def test_the_number_indexes_lead_with_the_number_after_the_migration_and_back() -> None:
    """calls 0024: the admin's search looks a number up across organizations."""
    try:
        _migrate(("calls", "0023_livekit_event_happened_at"))
        before = _number_indexes()
        _migrate(("calls", "0024_call_number_indexes"))
        after = _number_indexes()
    finally:
        _migrate()

    assert before == {
        "call_org_callee": ["organization_id", "phone_number"],
        "call_org_caller": ["organization_id", "from_number"],
    }
    assert after == {
        "call_callee": ["phone_number", "organization_id"],
        "call_caller": ["from_number", "organization_id"],
    }


def _verdict_indexes() -> dict[str, list[str]]:
    constraints = connection.introspection.get_constraints(connection.cursor(), "calls_call")
    names = ("call_org_analysis_success", "call_org_workflow_success")
    return {name: found["columns"] for name, found in constraints.items() if name in names}


def test_the_workflow_verdict_index_is_added_by_the_migration_and_removed_by_its_reverse() -> None:
    """calls 0027: a workflow's calls by verdict, beside the organization's."""
    try:
        _migrate(("calls", "0026_call_agent_left"))
        before = _verdict_indexes()
        _migrate(("calls", "0027_call_org_workflow_success"))
        after = _verdict_indexes()
    finally:
        _migrate()

    organization_wide = ["organization_id", "analysis_success", "created_at", "id"]
    organization_wide += ["workflow_id", "status", "started_at"]
    assert before == {"call_org_analysis_success": organization_wide}
    assert after == {
        "call_org_analysis_success": organization_wide,
        "call_org_workflow_success": [
            "organization_id",
            "workflow_id",
            "analysis_success",
            "created_at",
            "id",
            "status",
            "started_at",
        ],
    }
