"""The API's answer while the database cannot serve a request (refusing connections,
a lock or statement timeout, a connection lost): 503 in the error shape with
Retry-After, and nothing of the request left half-written."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from django.db import connection

from accounts.models import Organization
from calls.models import Call
from tests.conftest import another_connection

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
