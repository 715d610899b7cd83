"""The bench marks each result with issue 19's target it is held to, met or missed."""

from __future__ import annotations

from bench.targets import judge


def _result(name: str, stack: dict, floor: dict | None = None) -> dict:
    return {"name": name, "stack": stack, "floor": floor}


def test_a_page_1_is_held_to_one_and_a_half_times_its_floor_or_five_ms_more() -> None:
    results = [
        _result("GET /calls status=failed, page 1", {"p50_ms": 31.0, "p95_ms": 40}, {"p50_ms": 20}),
        _result("GET /calls user_id, page 1", {"p50_ms": 6.5, "p95_ms": 101}, {"p50_ms": 1.0}),
    ]

    judge(results)

    assert [r["target"] for r in results] == [
        "MISS p50 ≤ 30.0 ms; ok p95 ≤ 100 ms",
        "MISS p50 ≤ 6.0 ms; MISS p95 ≤ 100 ms",
    ]


def test_a_page_500_is_held_to_twice_its_own_lists_page_1() -> None:
    results = [
        _result("GET /calls no filter, page 1", {"p50_ms": 4.0, "p95_ms": 5}, {"p50_ms": 4}),
        _result("GET /calls no filter, page 500", {"p50_ms": 8.0, "p95_ms": 9}, {"p50_ms": 9}),
    ]

    judge(results)

    assert results[1]["target"] == "ok p50 ≤ 2× page 1 = 8.0 ms"


def test_one_row_answers_creates_and_agent_batches_have_their_own_targets() -> None:
    results = [
        _result("GET /calls/{id}", {"p50_ms": 4.1, "p95_ms": 5}, {"p50_ms": 1.0}),
        _result(
            "POST /calls (gunicorn, 2 workers, wrk, 4 connections, limits on)",
            {"requests_per_s": 610},
            {"requests_per_s": 1000},
        ),
        _result(
            "POST agent events, batch of 100",
            {"rows_per_s": 10_000},
            {"rows_per_s": 10_000},
        ),
        _result("POST /calls (one client)", {"p50_ms": 4.0}, {"p50_ms": 1.0}),
    ]

    judge(results)

    assert [r.get("target") for r in results] == [
        "MISS p50 ≤ floor + 3 = 4.0 ms",
        "ok ≥ 600 req/s; ok ≥ 0.5× floor = 500 req/s",
        "ok ≥ 1.0× the floor's rows/s",
        None,
    ]
