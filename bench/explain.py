"""`python -m bench explain`: EXPLAIN (ANALYZE, BUFFERS) of every SQL statement the stack
runs for each GET /calls scenario (captured from a real request), as Markdown."""

from __future__ import annotations

from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from bench import scenarios


def explain() -> str:
    ctx = scenarios.Context.build()
    client = Client(HTTP_AUTHORIZATION=f"Bearer {ctx.client_key}")
    out = []
    for label, query, _, _ in scenarios.list_filters(ctx):
        for page in (1, scenarios.PAGE_500):
            params = {**query, "page": page} if page != 1 else query
            client.get("/api/v1/calls", params)  # warm
            with CaptureQueriesContext(connection) as captured:
                response = client.get("/api/v1/calls", params)
            assert response.status_code == 200, response.content
            out.append(f"### GET /calls {label}, page {page}\n")
            for sql in (q["sql"] for q in captured.captured_queries):
                if "accounts_apikey" in sql:
                    continue  # authentication, the same for every request
                with connection.cursor() as cursor:
                    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql.replace("%", "%%"))
                    plan = "\n".join(row[0] for row in cursor.fetchall())
                out.append(f"```sql\n{sql}\n```\n```\n{plan}\n```\n")
    return "\n".join(out)
