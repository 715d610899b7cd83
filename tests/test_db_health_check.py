"""The per-request database health check (voicecalls/postgresql): a connection the
server dropped while the worker was idle is replaced before the request's first query,
and a quiet, healthy connection is trusted without a round trip."""

from __future__ import annotations

import select

import pytest
from django.db import connection, connections

from accounts.models import Organization
from tests.conftest import another_connection

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fresh_connection_after():
    # These tests end connections on purpose: whatever happens, the next test of this
    # worker starts on a new one.
    yield
    connection.close()


def _last_statement_of(backend_pid: int) -> str:
    with another_connection(autocommit=True) as other:
        row = other.execute(
            "SELECT query FROM pg_stat_activity WHERE pid = %s", [backend_pid]
        ).fetchone()
    return row[0]


def _new_request() -> None:
    connection.health_check_done = False  # what request_started does


def _slug_of(organization: Organization) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT slug FROM accounts_organization WHERE id = %s", [organization.pk])
        return cursor.fetchone()[0]


def test_the_settings_use_the_backend_with_the_quiet_health_check() -> None:
    assert type(connections["default"]).__module__ == "voicecalls.postgresql.base"
    assert connection.health_check_enabled


def test_a_connection_the_server_ended_between_requests_is_replaced(
    organization: Organization,
) -> None:
    connection.ensure_connection()
    dropped = connection.connection
    with another_connection(autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [dropped.info.backend_pid])
    # The backend ends a moment after it is told to: wait until it has gone, as a
    # connection dropped while the worker was idle has.
    assert select.select([dropped.fileno()], [], [], 5)[0], "the backend did not end"
    _new_request()

    assert _slug_of(organization) == organization.slug
    assert connection.connection is not dropped


def test_a_quiet_connection_is_trusted_without_asking_the_server() -> None:
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'the last statement before the request'")
    backend = connection.connection.info.backend_pid
    _new_request()

    connection.close_if_health_check_failed()

    assert connection.health_check_done
    assert connection.connection.info.backend_pid == backend
    assert _last_statement_of(backend) == "SELECT 'the last statement before the request'"


def test_a_connection_with_something_waiting_is_asked_and_kept_when_it_answers() -> None:
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("LISTEN health_check_test")
    kept = connection.connection
    with another_connection(autocommit=True) as other:
        other.execute("NOTIFY health_check_test")
    select.select([kept.fileno()], [], [], 5)  # until it has arrived
    _new_request()

    connection.close_if_health_check_failed()

    assert connection.connection is kept
    assert _last_statement_of(kept.info.backend_pid) == "SELECT 1"
    with connection.cursor() as cursor:
        cursor.execute("UNLISTEN *")
