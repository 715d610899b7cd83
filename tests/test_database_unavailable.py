"""The API's answer while the database cannot serve a request (refusing connections,
a lock or statement timeout, a connection lost): 503 in the error shape with
Retry-After, and nothing of the request left half-written."""

from __future__ import annotations

import datetime
import logging
import socket
import threading
import time

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from accounts.models import Organization
from calls.models import Call, CallStatus
from tests.conftest import another_connection
from tests.factories import CallFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fresh_connection_after():
    # These tests change the session's settings: the next test starts on a new one.
    yield
    connection.close()


def _open_calls(organization: Organization) -> int:
    return Organization.objects.values_list("open_calls", flat=True).get(pk=organization.pk)


def test_a_create_waiting_past_the_lock_timeout_is_503_with_retry_after_and_records_nothing(
    api, workflow
) -> None:
    organization = workflow.organization
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '200ms'")
    api.raise_request_exception = False
    with another_connection() as other:
        # Another transaction holds the organization's row (an admin edit, a long one).
        other.execute(
            "SELECT 1 FROM accounts_organization WHERE id = %s FOR UPDATE", [organization.pk]
        )
        response = api.post("/api/v1/calls", {"workflow_slug": "daily-call"}, format="json")

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "type": "server_error",
        "errors": [
            {
                "code": "service_unavailable",
                "detail": "The service is busy or its database is unavailable; retry shortly.",
                "attr": None,
            }
        ],
    }
    assert int(response["Retry-After"]) > 0
    assert not Call.objects.filter(organization=organization).exists()
    assert _open_calls(organization) == 0


@pytest.mark.parametrize(
    ("lock_timeout", "statement_timeout", "which"),
    [(0.2, 0, "lock timeout"), (0, 0.3, "statement timeout")],
)
def test_a_request_held_behind_a_row_lock_is_503_within_the_web_timeouts(
    api, workflow, settings, caplog, lock_timeout, statement_timeout, which
) -> None:
    """The web's connections carry lock and statement timeouts: one stuck lock (an
    admin edit, a long pass) answers 503 in seconds, where it held a gunicorn worker
    until the lock went, the API unanswered once every worker waited so."""
    settings.DATABASE_LOCK_TIMEOUT_SECONDS = lock_timeout
    settings.DATABASE_STATEMENT_TIMEOUT_SECONDS = statement_timeout
    organization = workflow.organization
    connection.close()  # the request opens its own, as in a web process
    api.raise_request_exception = False
    caplog.set_level(logging.WARNING)
    with another_connection() as other:
        other.execute(
            "SELECT 1 FROM accounts_organization WHERE id = %s FOR UPDATE", [organization.pk]
        )
        # Without a timeout the request would wait for ever: let it go after 5 s.
        release = threading.Timer(5, other.rollback)
        release.start()
        started = time.monotonic()
        response = api.post("/api/v1/calls", {"workflow_slug": "daily-call"}, format="json")
        waited = time.monotonic() - started
        release.cancel()

    assert response.status_code == 503, response.content
    assert waited < 3
    assert response.json()["errors"][0]["code"] == "service_unavailable"
    assert int(response["Retry-After"]) > 0
    assert not Call.objects.filter(organization=organization).exists()
    assert _open_calls(organization) == 0
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.WARNING
    assert which in record.getMessage() and "/api/v1/calls" in record.getMessage()
    assert record.organization_id == str(organization.pk)
    assert record.exc_info is None  # no traceback, no statement text


def test_commands_wait_past_the_web_timeouts(workflow, settings, fake_livekit) -> None:
    """`expire_calls`, retention, erasure and the task worker are no request: a pass
    meeting a lock waits for it rather than failing at the web's bounds."""
    settings.DATABASE_LOCK_TIMEOUT_SECONDS = 0.2
    settings.DATABASE_STATEMENT_TIMEOUT_SECONDS = 0.3
    late = CallFactory(
        organization=workflow.organization,
        workflow=workflow,
        created_at=timezone.now() - datetime.timedelta(seconds=120),
        connect_timeout_seconds=60,
    )
    connection.close()
    with another_connection() as other:
        other.execute("SELECT 1 FROM calls_call WHERE id = %s FOR UPDATE", [late.pk])
        release = threading.Timer(1, other.rollback)
        release.start()
        started = time.monotonic()
        call_command("expire_calls")
        waited = time.monotonic() - started
        release.join()

    assert waited >= 0.9
    late.refresh_from_db()
    assert (late.status, late.end_reason) == (CallStatus.TIMEOUT, "connect_timeout")


def test_a_database_that_never_answers_the_connection_is_503_within_the_connect_timeout(
    api, settings
) -> None:
    """An address that takes the connection and says nothing (a host black-holed in a
    failover, a pooler stuck): without a connect timeout the worker waited for the
    kernel, minutes, and every worker stuck so became an outage."""
    silent = socket.create_server(("127.0.0.1", 0))  # listens, never accepts nor speaks
    answers: list = []
    connection.close()
    saved = dict(connection.settings_dict)
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(silent.getsockname()[1]))
    api.raise_request_exception = False
    request = threading.Thread(target=lambda: answers.append(api.get("/api/v1/calls")))
    try:
        started = time.monotonic()
        request.start()
        request.join(timeout=30)
        waited = time.monotonic() - started
    finally:
        silent.close()  # a request still waiting gets its answer now
        request.join()
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)

    assert waited < 30, "the request still waited for the database after 30 s"
    assert answers[0].status_code == 503
    assert answers[0]["Retry-After"]
