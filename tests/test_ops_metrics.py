"""GET /ops/metrics: the operator's gauges, read from the database at each scrape, for
whoever holds METRICS_TOKEN."""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks.base import TaskResult
from django_tasks_db.models import DBTaskResult
from prometheus_client.parser import text_string_to_metric_families

from analysis.models import CallAnalysis
from analysis.tasks import analyse_call
from calls.models import CallChannel, CallStatus
from privacy.models import Erasure
from telephony.tasks import phone_call_dial
from tests.factories import CallFactory, OrganizationFactory, RecordingFactory
from voicecalls.logging import RedactSecretsFilter
from webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from webhooks.tasks import deliver_webhook

pytestmark = pytest.mark.django_db

TOKEN = "opaque-metrics-token-0123456789abcdef"
URL = "/ops/metrics"


@pytest.fixture
def metrics_token(settings) -> str:
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(token: str = TOKEN, **headers: str) -> object:
    return Client().get(URL, HTTP_AUTHORIZATION=f"Bearer {token}", **headers)


def samples(response) -> dict[tuple[str, tuple], float]:
    """Every sample of the exposition, parsed by prometheus_client's own parser."""
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def ago(seconds: float) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(seconds=seconds)


def failed(result: TaskResult, at: datetime.datetime, **fields: str) -> None:
    """The queued task `result` finished at `at`, failed unless `fields` say otherwise."""
    DBTaskResult.objects.filter(pk=result.id).update(
        **{"status": "FAILED", "finished_at": at, **fields}
    )


def delivery(endpoint: WebhookEndpoint, **fields: object) -> WebhookDelivery:
    event = WebhookEvent.objects.create(
        organization=endpoint.organization, type="call.status_changed", occurred_at=ago(0)
    )
    return WebhookDelivery.objects.create(event=event, endpoint=endpoint, **fields)


def test_the_gauges_hold_what_the_database_holds(metrics_token: str) -> None:
    organization, other = OrganizationFactory(), OrganizationFactory()
    CallFactory(organization=organization, created_at=ago(90))
    CallFactory(organization=other)
    CallFactory(organization=other, active=True, channel=CallChannel.PHONE)
    CallFactory(organization=other, status=CallStatus.PENDING, channel=CallChannel.PHONE)
    CallFactory(organization=organization, completed=True, created_at=ago(3600))
    # Tasks: two due webhooks (one queued 40 s ago), one queued for later, one taken; an
    # analysis whose delay ran out 20 s ago.
    deliver_webhook.enqueue(1)
    DBTaskResult.objects.update(enqueued_at=ago(40))
    deliver_webhook.enqueue(2)
    deliver_webhook.using(run_after=ago(-3600)).enqueue(3)
    phone_call_dial.enqueue("x")
    DBTaskResult.objects.filter(queue_name="dial").update(status="RUNNING")
    analyse_call.using(run_after=ago(20)).enqueue("call", 1)
    DBTaskResult.objects.filter(queue_name="analysis").update(enqueued_at=ago(60))
    endpoint = WebhookEndpoint.objects.create(organization=organization, url="https://x.test")
    delivery(endpoint, next_attempt_at=ago(300))
    delivery(endpoint, next_attempt_at=ago(-3600), attempt_count=2)
    delivery(endpoint, status="failed", updated_at=ago(600))
    delivery(endpoint, status="failed", updated_at=ago(7200))
    delivery(endpoint, status="succeeded")
    analysed = [CallFactory(organization=organization, completed=True) for _ in range(3)]
    for call, status in zip(analysed, ["pending", "running", "completed"], strict=True):
        CallAnalysis.objects.create(call=call, status=status)
    for status in ["pending", "running", "running", "completed"]:
        Erasure.objects.create(organization=organization, status=status, user_id_hash="h")
    RecordingFactory(status="recording")
    RecordingFactory(status="starting", egress_id=None)
    RecordingFactory()
    # Failed tasks: two deliveries and a dial within the day, an analysis 25 h ago, one
    # another release queued (kept, and failed, here) and a delivery that succeeded.
    failed(deliver_webhook.enqueue(4), ago(3600))
    failed(deliver_webhook.enqueue(5), ago(23 * 3600))
    failed(phone_call_dial.enqueue("y"), ago(600))
    failed(analyse_call.enqueue("call", 2), ago(25 * 3600))
    failed(deliver_webhook.enqueue(6), ago(60), status="SUCCESSFUL")
    failed(deliver_webhook.enqueue(7), ago(60), task_path="webhooks.tasks.gone")

    got = samples(scrape())

    open_calls = {
        labels: value for (name, labels), value in got.items() if name == "voicecalls_calls_open"
    }
    assert open_calls == {
        (("channel", channel), ("status", status)): count
        for status, web, phone in [("pending", 0, 1), ("connecting", 2, 0), ("active", 0, 1)]
        for channel, count in [("web", web), ("phone", phone)]
    }
    assert 90 <= got["voicecalls_calls_open_oldest_age_seconds", ()] < 120
    ready = {labels[0][1]: v for (n, labels), v in got.items() if n == "voicecalls_tasks_ready"}
    assert ready == {"default": 0, "webhooks": 2, "analysis": 1, "dial": 0}
    age = "voicecalls_tasks_ready_oldest_age_seconds"
    assert 40 <= got[age, (("queue", "webhooks"),)] < 70
    assert 20 <= got[age, (("queue", "analysis"),)] < 50
    assert got[age, (("queue", "dial"),)] == got[age, (("queue", "default"),)] == 0
    assert got["voicecalls_webhook_deliveries_pending", ()] == 2
    assert got["voicecalls_webhook_deliveries_due", ()] == 1
    assert 300 <= got["voicecalls_webhook_deliveries_oldest_due_age_seconds", ()] < 330
    assert got["voicecalls_webhook_deliveries_failed_last_hour", ()] == 1
    assert got["voicecalls_analyses_open", (("status", "pending"),)] == 1
    assert got["voicecalls_analyses_open", (("status", "running"),)] == 1
    assert got["voicecalls_erasures_unfinished", (("status", "pending"),)] == 1
    assert got["voicecalls_erasures_unfinished", (("status", "running"),)] == 2
    in_progress = {
        labels[0][1]: value
        for (name, labels), value in got.items()
        if name == "voicecalls_recordings_in_progress"
    }
    assert in_progress == {"starting": 1, "recording": 1, "processing": 0}
    failures = {
        labels[0][1]: value
        for (name, labels), value in got.items()
        if name == "voicecalls_tasks_failed_last_day"
    }
    assert {task: n for task, n in failures.items() if n} == {
        "webhooks.tasks.deliver_webhook": 2,
        "telephony.tasks.phone_call_dial": 1,
        "webhooks.tasks.gone": 1,
    }
    assert failures["analysis.tasks.analyse_call"] == 0


def test_with_nothing_open_every_series_is_there_at_zero(metrics_token: str) -> None:
    CallFactory(completed=True)

    got = samples(scrape())

    assert set(got.values()) == {0}
    # Every task of this release, none failed.
    tasks = {labels for name, labels in got if name == "voicecalls_tasks_failed_last_day"}
    assert {
        (("task", "privacy.tasks.erasure_run_task"),),
        (("task", phone_call_dial.module_path),),
    } <= tasks
    assert len(got) == 6 + 1 + 4 + 4 + 4 + 2 + 2 + 3 + len(tasks)


def test_a_deleted_endpoints_pending_deliveries_are_not_waiting_for_a_worker(
    metrics_token: str,
) -> None:
    """Its DELETE leaves them, never to be sent, to the next `expire_data` pass:
    counted, they read as deliveries due, waiting for a worker that never takes them."""
    endpoint = WebhookEndpoint.objects.create(
        organization=OrganizationFactory(), url="https://x.test", deleted_at=ago(60)
    )
    delivery(endpoint, next_attempt_at=ago(900))

    got = samples(scrape())

    assert got["voicecalls_webhook_deliveries_pending", ()] == 0
    assert got["voicecalls_webhook_deliveries_due", ()] == 0
    assert got["voicecalls_webhook_deliveries_oldest_due_age_seconds", ()] == 0


def test_a_scrape_costs_eight_queries_whatever_the_data(
    metrics_token: str, django_assert_num_queries
) -> None:
    CallFactory(active=True)
    deliver_webhook.enqueue(1)
    failed(deliver_webhook.enqueue(2), ago(60))
    RecordingFactory(status="recording")

    with django_assert_num_queries(8):
        response = scrape()

    assert response.status_code == 200


@pytest.mark.postgres
def test_the_failed_tasks_are_read_through_their_own_index(metrics_token: str) -> None:
    """The task table keeps every task run for two weeks (prune_db_task_results): the
    scrape reads only the failures of the day, through task_failed_finished."""
    for n in range(200):
        deliver_webhook.enqueue(n)
    DBTaskResult.objects.update(status="SUCCESSFUL", finished_at=ago(60))
    failed(deliver_webhook.enqueue(-1), ago(60))

    with CaptureQueriesContext(connection) as queries:
        scrape()

    [sql] = [q["sql"] for q in queries.captured_queries if "'FAILED'" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE django_tasks_database_dbtaskresult")
        for method in ("seqscan", "bitmapscan"):
            cursor.execute(f"SET LOCAL enable_{method} = off")
        cursor.execute("EXPLAIN " + sql)
        plan = "\n".join(line for (line,) in cursor.fetchall())
    assert "using task_failed_finished on django_tasks_database_dbtaskresult" in plan, plan


@pytest.mark.parametrize("method", ["get", "post"])
def test_without_a_token_set_the_endpoint_does_not_exist(settings, method: str) -> None:
    settings.METRICS_TOKEN = ""

    client = Client(enforce_csrf_checks=True)

    response = getattr(client, method)(URL, HTTP_AUTHORIZATION="Bearer ")
    unknown = getattr(client, method)("/ops/nothing")

    assert response.status_code == 404
    assert response.content == unknown.content


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "not_authenticated"),
        ("Bearer ", "not_authenticated"),
        ("Basic b3BzOm9wcw==", "not_authenticated"),
        (f"Bearer {TOKEN[:-1]}", "authentication_failed"),
        (f"Bearer {TOKEN}x", "authentication_failed"),
        ("Bearer \u00e9\u00e9", "authentication_failed"),
    ],
)
def test_a_request_without_the_token_is_401_in_the_apis_error_shape(
    metrics_token: str, header: str | None, code: str, django_assert_num_queries
) -> None:
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}

    with django_assert_num_queries(0):
        response = Client().get(URL, **extra)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json()["type"] == "client_error"
    assert [error["code"] for error in response.json()["errors"]] == [code]


def test_the_answer_is_never_cached(metrics_token: str) -> None:
    response = scrape()

    assert "no-store" in response["Cache-Control"]


def test_a_scraper_is_not_redirected_to_https(metrics_token: str, settings) -> None:
    settings.SECURE_SSL_REDIRECT = True

    assert scrape().status_code == 200


def test_no_log_record_holds_the_token(
    metrics_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    scrape()
    scrape(TOKEN[:-1] + "X")
    Client().get(f"{URL}?token={TOKEN}")

    assert any(record.name == "django.request" for record in caplog.records)
    for record in caplog.records:
        RedactSecretsFilter().filter(record)
        assert TOKEN[:-1] not in record.getMessage()
        assert TOKEN[:-1] not in str(vars(record))


def test_the_token_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    def token(**extra: str) -> str:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("METRICS_TOKEN")}
        show = "from django.conf import settings; print(repr(settings.METRICS_TOKEN))"
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c", show],
            cwd=django_settings.BASE_DIR,
            env={**clean, "VOICECALLS_ENV_FILE": os.devnull, "DEBUG": "1", **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    token_file = tmp_path / "metrics-token"
    token_file.write_text(f"{TOKEN}\n")

    assert token(METRICS_TOKEN=TOKEN) == repr(TOKEN)
    assert token(METRICS_TOKEN_FILE=str(token_file)) == repr(TOKEN)
    assert token() == repr("")
