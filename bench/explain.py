"""`python -m bench explain`: EXPLAIN (ANALYZE, BUFFERS) of every SQL statement the stack
runs for each GET /calls scenario (captured from a real request), as Markdown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connection
from django.test import Client

from bench import scenarios


def explain() -> str:
    ctx = scenarios.Context.build()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ctx.client_key}")
    statements, capture = _statements()
    out = []
    pages = [(f, page) for f in scenarios.list_filters(ctx) for page in (1, scenarios.PAGE_500)]
    pages += [(f, 1) for f in scenarios.one_page_filters(ctx)]
    for (label, query, _, _), page in pages:
        params = {**query, "page": page} if page != 1 else query
        client.get("/api/v1/calls", params)  # warm
        statements.clear()
        with connection.execute_wrapper(capture):
            response = client.get("/api/v1/calls", params)
        assert response.status_code == 200, response.content
        out.append(f"### GET /calls {label}, page {page}\n")
        for sql in statements:
            if "accounts_apikey" in sql:
                continue  # authentication, the same for every request
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)  # no params: sent as written
                plan = "\n".join(row[0] for row in cursor.fetchall())
            out.append(f"```sql\n{sql}\n```\n```\n{plan}\n```\n")
    return "\n".join(out)


def _statements() -> tuple[list[str], Callable]:
    """A list, and a `connection.execute_wrapper` that appends to it each statement run,
    its values written in: the prepared statements' captured text has only `$1`…"""
    statements: list[str] = []

    def capture(execute: Callable, sql: str, params: Any, many: bool, context: dict) -> Any:
        statements.append(connection.ops.compose_sql(sql, params) if params else sql)
        return execute(sql, params, many, context)

    return statements, capture
