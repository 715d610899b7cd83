"""Logs carry the request id, organization and call, and never a secret."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from rest_framework.test import APIClient

from tests.conftest import bearer_client
from voicecalls.logging import RedactSecretsFilter, RequestContextFilter, redact

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
    from django.conf import settings
    from pythonjsonlogger.json import JsonFormatter

    config = settings.LOGGING["formatters"]["json"]
    formatter = JsonFormatter(config["fmt"], rename_fields=config["rename_fields"])
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

    for record in caplog.records:
        handler_filter.filter(record)
        text = record.getMessage() + (record.exc_text or "")
        for secret in secrets:
            assert secret not in text
