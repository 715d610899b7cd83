"""Structured logs: every record carries the request id, organization and call, and
never a secret.

The request id comes from django-guid (`X-Request-ID`, accepted from the client when
it is a valid uuid, returned on every response); organization and call ids are set
by authentication and URL resolution through context variables, so they follow the
request without being passed around.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator

from django.http import HttpRequest, HttpResponse
from django_guid import get_guid
from pythonjsonlogger.json import JsonFormatter

# The filter settings.LOGGING names here; the patterns live beside gunicorn's logger.
from voicecalls.redaction import RedactSecretsFilter, redact  # noqa: F401

organization_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "organization_id", default=None
)
call_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_id", default=None)


class RedactingJsonFormatter(JsonFormatter):
    """JSON lines whose exception text is masked: python-json-logger formats a record's
    `exc_info` itself, never the `exc_text` that RedactSecretsFilter masked."""

    def formatException(self, ei: object) -> str:
        return redact(super().formatException(ei))


class RequestContextFilter(logging.Filter):
    """Adds request_id, organization_id and call_id to every record, unless the record
    names them itself (`extra=`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        if fields.get("request_id") is None:
            record.request_id = get_guid()
        if fields.get("organization_id") is None:
            record.organization_id = organization_id_var.get()
        if fields.get("call_id") is None:
            record.call_id = call_id_var.get()
        return True


@contextlib.contextmanager
def log_context(*, call_id: object = None, organization_id: object = None) -> Iterator[None]:
    """Records logged within name this call and organization: work no URL names the
    call of (a task, a LiveKit webhook) is then found in the logs by the call's id."""
    call_token = call_id_var.set(str(call_id) if call_id else call_id_var.get())
    org_token = organization_id_var.set(
        str(organization_id) if organization_id else organization_id_var.get()
    )
    try:
        yield
    finally:
        organization_id_var.reset(org_token)
        call_id_var.reset(call_token)


class LogContextMiddleware:
    """Clears the per-request context and picks the call id out of the URL."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        org_token = organization_id_var.set(None)
        call_token = call_id_var.set(None)
        try:
            return self.get_response(request)
        finally:
            organization_id_var.reset(org_token)
            call_id_var.reset(call_token)

    def process_view(self, request: HttpRequest, view: Callable, args: tuple, kwargs: dict) -> None:
        call_id = kwargs.get("call_id") or (
            kwargs.get("pk")
            if request.path.startswith(("/api/v1/calls/", "/api/v1/agent/calls/"))
            else None
        )
        if call_id:
            call_id_var.set(str(call_id))
