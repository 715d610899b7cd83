"""Logs carry the request id, organization and call, and never a secret."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import runpy
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.glogging import SafeAtoms
from rest_framework.test import APIClient

from tests.conftest import bearer_client
from tests.live_server import _environment, _free_port, process_serving, run_dev_option
from voicecalls.logging import RedactSecretsFilter, RequestContextFilter, redact
from voicecalls.redaction import RedactingLogger

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcdefgh.ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", "ABCDEFGHIJKLMNOP"),
        ("key abcdefgh.ABCDEFGHIJKLMNOPQRSTUVWXYZ012345 used", "ABCDEFGHIJKLMNOP"),
        ("secret whsec_dm9pY2VjYWxscy10ZXN0LXNlY3JldA== rotated", "dm9pY2VjYWxscy10"),
        ("openai sk-proj-1234567890abcdef failed", "1234567890abcdef"),
        ('{"api_key": "dg_live_0123456789"}', "dg_live_0123456789"),
        ("api_key='gsk_abcdef123456'", "gsk_abcdef123456"),
        ("GET /api/v1/calls?api_key=opaque-value-123 HTTP/1.1", "opaque-value-123"),
        ("/api/v1/calls?page=2&token=sk-proj-1234567890abcdef", "1234567890abcdef"),
        ("/x?access_token=eyJhbGciOi.payload.sig&page=1", "eyJhbGciOi"),
        ("/x?a=1&client_secret=hunter2hunter2", "hunter2hunter2"),
        ("/x?password=correct-horse;key=battery", "correct-horse"),
        ("/x?password=correct-horse;key=battery", "battery"),
        ("/x?Authorization=Bearer%20abc123def456", "abc123def456"),
        ("/x?api%5Fkey=percent-encoded-name", "percent-encoded-name"),
        ("/x?q=abcdefgh%2EABCDEFGHIJKLMNOPQRSTUVWXYZ012345", "ABCDEFGHIJKLMNOP"),
        ("<WSGIRequest: GET '/api/v1/calls?secret=s3cr3t-value'>", "s3cr3t-value"),
    ],
)
def test_redact_masks_every_shape_of_secret(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "[redacted]" in redact(text)


def test_the_request_id_is_returned_and_taken_from_the_client(api: APIClient) -> None:
    mine = str(uuid.uuid4())

    generated = api.get("/api/v1/calls")
    echoed = api.get("/api/v1/calls", HTTP_X_REQUEST_ID=mine)

    uuid.UUID(generated["X-Request-ID"])
    assert echoed["X-Request-ID"] == mine


def test_a_successful_request_without_a_request_id_writes_no_log_line(
    api: APIClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The access log has the line; the app adds none (django_guid would, at INFO)."""
    caplog.set_level(logging.INFO)

    assert api.get("/api/v1/calls").status_code == 200

    assert [(r.name, r.getMessage()) for r in caplog.records] == []


def test_a_malformed_request_id_is_replaced(api: APIClient) -> None:
    response = api.get("/api/v1/calls", HTTP_X_REQUEST_ID="<script>")

    assert response["X-Request-ID"] != "<script>"
    uuid.UUID(response["X-Request-ID"])


def test_records_carry_request_and_tenant_context(
    api: APIClient, organization, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.factories import CallFactory

    call = CallFactory(organization=organization)
    seen: list[logging.LogRecord] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    spy = Spy()
    spy.addFilter(RequestContextFilter())
    logger = logging.getLogger("calls")
    logger.addHandler(spy)
    try:
        from calls import views

        original = views.CallViewSet.retrieve

        def logged_retrieve(self, request, pk):
            logging.getLogger("calls").warning("reading a call")
            return original(self, request, pk)

        views.CallViewSet.retrieve = logged_retrieve
        try:
            api.get(
                f"/api/v1/calls/{call.id}", HTTP_X_REQUEST_ID="0b9c7c1e-7f55-4b43-8b5a-8d0d6a4f4e11"
            )
        finally:
            views.CallViewSet.retrieve = original
    finally:
        logger.removeHandler(spy)

    record = next(r for r in seen if r.getMessage() == "reading a call")
    assert record.request_id == "0b9c7c1e-7f55-4b43-8b5a-8d0d6a4f4e11"
    assert record.organization_id == str(organization.id)
    assert record.call_id == str(call.id)


def test_the_json_formatter_writes_one_object_per_line() -> None:
    formatter = json_formatter()
    record = logging.LogRecord("calls", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    RequestContextFilter().filter(record)
    RedactSecretsFilter().filter(record)

    line = json.loads(formatter.format(record))

    assert line["message"] == "hello world"
    assert line["level"] == "INFO"
    assert {"request_id", "organization_id", "call_id", "time", "logger"} <= set(line)


def test_hostile_requests_leave_no_secret_in_any_log(
    client_key: str, workflow, caplog: pytest.LogCaptureFixture
) -> None:
    """Every secret the suite's hostile cases use is absent from every captured record."""
    caplog.set_level(logging.DEBUG)
    handler_filter = RedactSecretsFilter()
    secrets = [client_key, client_key.split(".", 1)[1]]
    wrong = client_key[:-1] + ("A" if client_key[-1] != "A" else "B")
    secrets.append(wrong.split(".", 1)[1])

    bearer_client(wrong).get("/api/v1/calls")
    bearer_client(client_key).post("/api/v1/calls", "{bad json", content_type="application/json")
    bearer_client(client_key).post(
        "/api/v1/calls", {"workflow_slug": "nope", "metadata": {"api_key": "x"}}, format="json"
    )
    bearer_client(client_key).get("/api/v1/calls?page=0")
    bearer_client(client_key).get("/api/v1/calls/not-a-uuid")
    # A key in the query string: django.request logs the 401 with the request itself.
    APIClient().get(f"/api/v1/calls?api_key={client_key}")
    APIClient().get(f"/api/v1/calls?token={PROVIDER_SECRET}")
    bearer_client(client_key).get(f"/api/v1/calls/not-a-uuid?key={client_key}")

    assert any(r.name == "django.request" and hasattr(r, "request") for r in caplog.records)
    for record in caplog.records:
        handler_filter.filter(record)
        line = json_line(record)
        for secret in [*secrets, PROVIDER_SECRET[3:]]:
            assert secret not in line


PROVIDER_SECRET = "sk-proj-0123456789abcdefghij"


def json_formatter() -> logging.Formatter:
    """The console handler's formatter, as settings.LOGGING configures it."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    config = dict(settings.LOGGING["formatters"]["json"])
    return import_string(config.pop("()"))(**config)


def json_line(record: logging.LogRecord) -> str:
    """The record as the console handler writes it: message and every extra."""
    return json_formatter().format(record)


def test_an_exception_logged_with_its_traceback_shows_no_secret_in_the_json_line() -> None:
    """`logger.exception` (and django.request's 500s) print the exception's message;
    the JSON formatter formats `exc_info` itself, not the filter's masked text."""
    try:
        raise RuntimeError(f"provider refused Authorization: Bearer {PROVIDER_SECRET}")
    except RuntimeError:
        record = logging.getLogger("analysis").makeRecord(
            "analysis",
            logging.ERROR,
            __file__,
            1,
            "attempt failed",
            None,
            sys.exc_info(),
            sinfo=f"Stack (most recent call last): api_key={PROVIDER_SECRET}",
        )
    RedactSecretsFilter().filter(record)

    line = json.loads(json_line(record))

    assert line["message"] == "attempt failed"
    assert line["exc_info"].endswith(
        "RuntimeError: provider refused Authorization: Bearer [redacted]"
    )
    assert line["stack_info"] == "Stack (most recent call last): api_key=sk-[redacted]"


def test_the_filter_masks_extras_and_keeps_plain_ones(rf) -> None:
    request = rf.get("/api/v1/calls", {"api_key": "abcdefgh.ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"})
    clean = rf.get("/api/v1/calls", {"page": "2"})
    record = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "x", None, None)
    record.request = request
    record.status_code = 401
    record.detail = {"token": "sk-live-0123456789", "codes": [1, 2]}
    other = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "x", None, None)
    other.request = clean

    RedactSecretsFilter().filter(record)
    RedactSecretsFilter().filter(other)

    assert record.request == "<WSGIRequest: GET '/api/v1/calls?api_key=[redacted]'>"
    assert record.status_code == 401
    assert record.detail == {"token": "sk-[redacted]", "codes": [1, 2]}
    assert other.request is clean


def test_gunicorn_logs_hold_no_key_from_the_query_string(live_server_gunicorn) -> None:
    """The access log (`%(r)s`, the request line) and the app's log, as gunicorn runs it."""
    live = live_server_gunicorn
    key = live.client_key
    requests = [
        f"/api/v1/calls?api_key={key}",
        f"/api/v1/calls?page=1&token={PROVIDER_SECRET}",
        f"/api/v1/calls/not-a-uuid?access_token={key.split('.', 1)[1]}",
        f"/api/v1/nowhere?q={key}",
    ]
    for path in requests:
        try:
            urllib.request.urlopen(live.url + path, timeout=10).close()
        except urllib.error.HTTPError as exc:
            assert exc.code in (401, 404)

    logs = wait_for(live, lambda text: "/api/v1/nowhere?q=[redacted]" in text)
    assert '"GET /api/v1/calls?api_key=[redacted] HTTP/1.1" 401' in logs
    assert "/api/v1/calls?page=1&token=[redacted]" in logs
    assert '"request": "<WSGIRequest: GET \'/api/v1/calls?api_key=[redacted]\'>"' in logs
    for secret in (key, key.split(".", 1)[1], PROVIDER_SECRET[3:]):
        assert secret not in logs


def test_the_streams_service_logs_hold_no_key_from_the_query_string(live_server_streams) -> None:
    """uvicorn's workers write their own access line (the path with its query string)
    through gunicorn's handlers: a browser's EventSource sends no header, so a key is
    put in the URL there first."""
    live = live_server_streams
    key = live.client_key
    stream = f"/api/v1/calls/{uuid.uuid4()}/stream"
    for path in (f"{stream}?api_key={key}", f"{stream}?token={PROVIDER_SECRET}"):
        try:
            urllib.request.urlopen(live.url + path, timeout=10).close()
        except urllib.error.HTTPError as exc:
            assert exc.code == 401

    logs = wait_for(live, lambda text: f"{stream}?token=[redacted]" in text)
    assert f"{stream}?api_key=[redacted]" in logs
    for secret in (key, key.split(".", 1)[1], PROVIDER_SECRET[3:]):
        assert secret not in logs


def wait_for(live, ready) -> str:
    """Both logs once `ready(text)` holds (gunicorn writes the access line after the
    response is sent)."""
    deadline = time.monotonic() + 10
    while not ready(text := live.logs()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return text


GUNICORN_CONF = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"
# What gunicorn hands its logger for one request: its response, request and WSGI environ.
ACCESS_RESPONSE = SimpleNamespace(
    status="201 Created",
    sent=347,
    headers=[("Content-Type", "application/json"), ("X-Request-ID", "3f2a9c")],
)
ACCESS_REQUEST = SimpleNamespace(
    headers=[("USER-AGENT", "sdk/1.0"), ("AUTHORIZATION", "Bearer abcdefgh.secret")]
)
ACCESS_ENVIRON = {
    "REMOTE_ADDR": "10.0.0.7",
    "REQUEST_METHOD": "POST",
    "RAW_URI": "/api/v1/calls?page=2",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "PATH_INFO": "/api/v1/calls",
    "QUERY_STRING": "page=2",
    "HTTP_USER_AGENT": "sdk/1.0",
}


def access_line(logger: GunicornLogger, atoms: dict) -> str:
    return logger.cfg.access_log_format % SafeAtoms(atoms)


def gunicorn_logger(access_log_format: str) -> RedactingLogger:
    cfg = Config()
    cfg.set("access_log_format", access_log_format)
    return RedactingLogger(cfg)


def test_our_access_format_gets_only_its_atoms_and_the_line_gunicorns_own_print() -> None:
    logger = gunicorn_logger(runpy.run_path(str(GUNICORN_CONF))["access_log_format"])
    took = datetime.timedelta(microseconds=12_345)
    args = (ACCESS_RESPONSE, ACCESS_REQUEST, ACCESS_ENVIRON, took)

    atoms = logger.atoms(*args)
    line = access_line(logger, atoms)

    assert set(atoms) == {"h", "r", "s", "b", "M", "{content-type}o", "{x-request-id}o"}
    assert line == access_line(logger, GunicornLogger.atoms(logger, *args))
    assert line == '10.0.0.7 "POST /api/v1/calls?page=2 HTTP/1.1" 201 347 12ms rid=3f2a9c'


def test_a_format_printing_other_atoms_gets_gunicorns_own() -> None:
    logger = gunicorn_logger('%(h)s "%(a)s" %(U)s %({user-agent}i)s %(s)s')
    args = (ACCESS_RESPONSE, ACCESS_REQUEST, ACCESS_ENVIRON, datetime.timedelta(0))

    line = access_line(logger, logger.atoms(*args))

    assert line == '10.0.0.7 "sdk/1.0" /api/v1/calls sdk/1.0 201'


@pytest.mark.parametrize(
    ("raw_uri", "kept", "personal"),
    [
        ("/api/v1/calls?user_id=%2B14155550123&page=2", "page=2", "14155550123"),
        ("/api/v1/calls?status=completed&user_id=user-8812", "status=completed", "user-8812"),
        ("/api/v1/calls?user%5Fid=user-8812", "/api/v1/calls", "user-8812"),
        ("/admin/privacy/erasure/?q=user-8812", "/admin/privacy/erasure/", "user-8812"),
        ("/admin/calls/call/?q=%2B14155550123&o=1", "o=1", "14155550123"),
        (
            "/admin/calls/call/5d7c/change/?_changelist_filters=q%3D%2B14155550123",
            "/admin/calls/call/5d7c/change/",
            "14155550123",
        ),
    ],
)
def test_the_access_log_keeps_no_user_id_or_number_a_list_or_a_search_asked_for(
    raw_uri: str, kept: str, personal: str, capsys: pytest.CaptureFixture
) -> None:
    """docs/privacy.md: logs carry ids, never user ids or numbers. The calls list's
    `user_id` filter and the admin's searches (staff find a user's calls and erasures by
    the user id, which the erasure record keeps only as a keyed hash) are in the URL."""
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", runpy.run_path(str(GUNICORN_CONF))["access_log_format"])
    logger = RedactingLogger(cfg)
    environ = {**ACCESS_ENVIRON, "REQUEST_METHOD": "GET", "RAW_URI": raw_uri}

    logger.access(ACCESS_RESPONSE, ACCESS_REQUEST, environ, datetime.timedelta(0))

    line = capsys.readouterr().out
    assert kept in line
    assert "[redacted]" in line
    assert personal not in line


def test_make_runs_uvicorn_logs_hold_no_key_from_the_query_string(tmp_path) -> None:
    """`make run` serves through uvicorn, whose own access line prints the query string:
    its log config (scripts/run_dev.sh's `--log-config`) masks it as production does."""
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "voicecalls.asgi:application"]
    command += ["--port", str(port), "--log-config", run_dev_option("--log-config")]
    log = tmp_path / "uvicorn.log"
    server = process_serving(command, _environment(tmp_path, port), port, log)
    stream = f"/api/v1/calls/{uuid.uuid4()}/stream"
    try:
        for query in ("api_key=abcdefgh.abcdefghabcdefghabcdefghabcdefgh", "user_id=alice"):
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}{stream}?{query}", timeout=10)
        deadline = time.monotonic() + 10
        while "user_id=[redacted]" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=30)

    logs = log.read_text()
    assert f'"GET {stream}?api_key=[redacted] HTTP/1.1" 401' in logs
    assert f'"GET {stream}?user_id=[redacted] HTTP/1.1" 401' in logs
    assert "abcdefghabcdefgh" not in logs and "alice" not in logs


@contextlib.contextmanager
def records_of(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records logger `name` emits, with the context the console handler adds."""
    seen: list[logging.LogRecord] = []

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    spy = Spy(level=logging.DEBUG)
    spy.addFilter(RequestContextFilter())
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(spy)
    logger.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        logger.removeHandler(spy)
        logger.setLevel(level)


def test_a_record_logged_with_its_call_keeps_it() -> None:
    """`extra={"call_id": …}` (the analysis logs so) was overwritten by the filter with
    the request's call, none in a task: the line named no call at all."""
    record = logging.LogRecord("analysis", logging.WARNING, __file__, 1, "failed", None, None)
    record.call_id = "4f1c1b0e-8a8e-4d8e-9d5e-2a7f3c1d9b10"

    RequestContextFilter().filter(record)

    assert record.call_id == "4f1c1b0e-8a8e-4d8e-9d5e-2a7f3c1d9b10"


def test_a_webhook_delivery_attempts_lines_name_its_call_and_organization(organization) -> None:
    """Support follows a call's webhooks in the logs by its id: the attempt's line said
    only "webhook delivery 12 attempt 3: pending (500)"."""
    from calls.models import CallStatus
    from tests.factories import CallFactory
    from tests.test_webhook_delivery import attempt, endpoint_create, record
    from webhooks.models import EventType, WebhookDelivery

    call = CallFactory(organization=organization)
    with socket.socket() as probe:  # a port nobody listens on: the attempt fails
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint_create(organization, f"http://127.0.0.1:{port}/x", [EventType.CALL_STATUS_CHANGED])
    record(call, CallStatus.CONNECTING, CallStatus.ACTIVE)

    with records_of("webhooks.delivery") as seen:
        attempt(WebhookDelivery.objects.get())

    line = next(r for r in seen if "attempt 1" in r.getMessage())
    assert (line.call_id, line.organization_id) == (str(call.id), str(organization.id))


def test_a_livekit_webhooks_lines_name_the_call(recording_workflow) -> None:
    """LiveKit's webhooks name a room, not the call: what their handling logged (here,
    a recording workflow without storage) had no call id to search by."""
    from tests.factories import CallFactory
    from tests.livekit_samples import send

    call = CallFactory(workflow=recording_workflow, organization=recording_workflow.organization)

    with records_of("recordings.services") as seen:
        assert send("participant_joined", call.id).status_code == 200

    line = next(r for r in seen if "is not recorded" in r.getMessage())
    assert (line.call_id, line.organization_id) == (str(call.id), str(call.organization_id))


@pytest.mark.django_db(transaction=True)
def test_a_tasks_lines_name_the_call(organization, fake_llm) -> None:
    """The task worker serves no request: an analysis failing logged its line with no
    call (its `extra` lost, as above), and so did each task's other lines."""
    from tests.fake_llm import Outcome
    from tests.test_analysis_run import ended_call, run_worker

    fake_llm.default = Outcome(status=400)
    call = ended_call(organization)

    with records_of("analysis.services") as seen:
        run_worker()

    line = next(r for r in seen if r.getMessage() == "analysis request failed")
    assert line.call_id == str(call.id)


def test_what_a_calls_end_logs_names_the_call(api, agent_api, workflow) -> None:
    """A call ended off any request of its own (expire_calls, a command): what its end
    logged (here its pricing, past what a cost holds) named no call."""
    from calls.lifecycle import call_transition
    from tests.factories import CallFactory
    from tests.test_call_cost import LLM, report, usage

    override = {"component": "llm_prompt", "provider": "openai", "model": "*"}
    api.post("/api/v1/prices/overrides", {**override, "unit_price_usd": "99999999"}, format="json")
    call = CallFactory(organization=workflow.organization, workflow=workflow, active=True)
    assert report(agent_api, call, usage(LLM)).status_code == 200

    with records_of("billing.cost") as seen:
        assert call_transition(call_id=call.pk, to_status="timeout", end_reason="max_duration")

    line = next(r for r in seen if "beyond what is stored" in r.getMessage())
    assert line.call_id == str(call.id)
