"""Issue 19's targets, each result marked with the one it is held to, met or missed."""

from __future__ import annotations

from bench.scenarios import PAGE_500


def _page_1(results: dict, name: str) -> dict | None:
    return results.get(name.replace(f"page {PAGE_500}", "page 1"))


# Issue 19: answers of one row cost at most 3 ms more than their query's floor.
ONE_ROW_ANSWERS = {
    "GET /calls/{id}",
    "GET /calls/{id}/metrics",
    "GET /calls/active",
    "GET /calls user_id (one call), page 1",
}


def judge(results: list[dict]) -> None:
    """Attach the issue's target, met or missed, to each result it applies to."""
    by_name = {r["name"]: r for r in results}
    for r in results:
        stack, raw = r["stack"], r.get("floor")
        name = r["name"]
        verdicts = []
        if name.startswith("GET /calls ") and name.endswith("page 1") and raw:
            limit = max(1.5 * raw["p50_ms"], raw["p50_ms"] + 5)
            verdicts.append((stack["p50_ms"] <= limit, f"p50 ≤ {limit:.1f} ms"))
            verdicts.append((stack["p95_ms"] <= 100, "p95 ≤ 100 ms"))
        if name.startswith("GET /calls ") and name.endswith(f"page {PAGE_500}"):
            first = _page_1(by_name, name)
            if first:
                limit = 2 * first["stack"]["p50_ms"]
                verdicts.append((stack["p50_ms"] <= limit, f"p50 ≤ 2× page 1 = {limit:.1f} ms"))
        if name.startswith("GET /usage/daily") and raw:
            limit = 1.5 * raw["p50_ms"]
            verdicts.append((stack["p50_ms"] <= limit, f"p50 ≤ 1.5× floor = {limit:.1f} ms"))
        if "transcript" in name:
            verdicts.append((stack["p50_ms"] <= 40, "p50 ≤ 40 ms"))
            verdicts.append((stack["p95_ms"] <= 60, "p95 ≤ 60 ms"))
        if name in ONE_ROW_ANSWERS and raw:
            limit = raw["p50_ms"] + 3
            verdicts.append((stack["p50_ms"] <= limit, f"p50 ≤ floor + 3 = {limit:.1f} ms"))
        if name.startswith("POST agent events") and raw:
            verdicts.append((stack["rows_per_s"] >= raw["rows_per_s"], "≥ 1.0× the floor's rows/s"))
        if "gunicorn" in name and "limits on" in name and raw:
            rate, half = stack["requests_per_s"], 0.5 * raw["requests_per_s"]
            verdicts.append((rate >= 600, "≥ 600 req/s"))
            verdicts.append((rate >= half, f"≥ 0.5× floor = {half:.0f} req/s"))
        if verdicts:
            r["target"] = "; ".join(("ok " if ok else "MISS ") + text for ok, text in verdicts)
