"""A query parameter given twice is a 400 naming it: the API read only its last value
and silently dropped the others (`?user_id=a&user_id=b` listed b's calls alone)."""

from __future__ import annotations

import pytest

WORKFLOW = "00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize(
    ("query", "attr"),
    [
        ("/api/v1/calls?user_id=a&user_id=b", "user_id"),
        (f"/api/v1/calls?workflow_id={WORKFLOW}&workflow_id={WORKFLOW}", "workflow_id"),
        ("/api/v1/calls?started_after=2026-01-01&started_after=2026-02-01", "started_after"),
        ("/api/v1/calls?success=true&success=false", "success"),
        ("/api/v1/calls?page=1&page=2", "page"),
        ("/api/v1/calls/active?limit=1&limit=50", "limit"),
        ("/api/v1/workflows?slug=a&slug=b", "slug"),
        ("/api/v1/workflows?page_size=5&page_size=10", "page_size"),
        ("/api/v1/usage/daily?from=2026-01-01&from=2026-01-02&to=2026-01-03", "from"),
        ("/api/v1/webhook-endpoints?page=2&page=1", "page"),
    ],
)
def test_a_parameter_given_twice_is_400_naming_it(api, query, attr):
    response = api.get(query)

    assert response.status_code == 400, response.content
    assert [(e["code"], e["attr"]) for e in response.json()["errors"]] == [("repeated", attr)]


def test_a_repeated_parameter_no_operation_reads_is_ignored_as_any_unknown_one(api):
    response = api.get("/api/v1/calls?cache=1&cache=2")

    assert response.status_code == 200
