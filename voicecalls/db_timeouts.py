"""Lock and statement timeouts on the PostgreSQL connections that serve requests.

A request waiting on a row lock (an admin edit, a long pass) or running away held its
worker until the database let go; with two workers a host, the API stopped answering.
Connections opened while serving a request carry `lock_timeout` and `statement_timeout`
(DATABASE_LOCK_TIMEOUT_SECONDS, DATABASE_STATEMENT_TIMEOUT_SECONDS) in the startup
packet's `options`: no statement on any request, and the connection keeps them for its
CONN_MAX_AGE. Connections opened outside a request (`migrate`, the periodic commands,
the task workers) carry none: index builds, retention and erasure batches run longer.
PgBouncer refuses these options (README "Operating"): behind it, set both to 0 and give
the web's database role the timeouts.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

serving_request: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "serving_request", default=False
)

# What PostgreSQL answers when one of them cancels a statement.
_TIMEOUTS = {"55P03": "lock timeout", "57014": "statement timeout"}


class RequestTimeoutsMiddleware:
    """Marks the work a request does, so the connections it opens carry the timeouts."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = serving_request.set(True)
        try:
            return self.get_response(request)
        finally:
            serving_request.reset(token)


def startup_options() -> str:
    """`-c` options for a connection opened now: the timeouts within a request, else ''."""
    if not serving_request.get():
        return ""
    options = []
    for name, seconds in (
        ("lock_timeout", settings.DATABASE_LOCK_TIMEOUT_SECONDS),
        ("statement_timeout", settings.DATABASE_STATEMENT_TIMEOUT_SECONDS),
    ):
        if seconds:
            options.append(f"-c {name}={max(1, round(seconds * 1000))}")
    return " ".join(options)


def timeout_cancelled(exc: BaseException) -> str | None:
    """'lock timeout' or 'statement timeout' when the database cancelled the statement
    behind `exc` (Django's error wrapping psycopg's), else None."""
    return _TIMEOUTS.get(getattr(exc.__cause__, "sqlstate", None) or "")
