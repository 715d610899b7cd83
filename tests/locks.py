"""PostgreSQL's view of sessions waiting for a row lock, for tests that stage races."""

from __future__ import annotations

from django.db import connection


def a_session_waits_for_a_lock() -> bool:
    """Whether any session of the test database is waiting for a lock now."""
    with connection.cursor() as cursor:
        # Inside a transaction the activity view keeps its first reading unless cleared.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0] > 0
