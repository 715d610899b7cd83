"""`python -m bench.report BEFORE.json AFTER.json`: the before/after table of two runs,
as Markdown (bench/results/summary.md is made with it)."""

from __future__ import annotations

import json
import sys


def _row(name: str, before: dict | None, after: dict) -> str:
    def cell(result: dict | None, side: str) -> str:
        if not result or side not in result:
            return "–"
        s = result[side]
        if "rows_per_s" in s:
            return f"{s['p50_ms']:.1f} ms, {s['rows_per_s']:,} rows/s"
        if "gunicorn" in name:
            return f"{s['requests_per_s']:.0f} req/s (p50 {s['p50_ms']:.0f} ms)"
        return f"{s['p50_ms']:.1f} ms (±{s['spread_pct'] / 2:.0f}%)"

    return (
        f"| {name} | {cell(before, 'stack')} | {cell(before, 'floor')} "
        f"| {cell(after, 'stack')} | {cell(after, 'floor')} | {after.get('ratio', '')} "
        f"| {after.get('target', '')} |"
    )


def compare(before: dict, after: dict) -> str:
    old = {r["name"]: r for r in before["results"]}

    def when(run: dict) -> str:
        start, end = run["machine_before"]["loadavg"][0], run["machine_after"]["loadavg"][0]
        load = f"{start:.1f} → {end:.1f}"
        return f"{run['started_at'][:16]} UTC, git {run['git']}, load average {load}"

    lines = [
        f"Before: {when(before)}.  \nAfter: {when(after)}."
        f"  \np50 (± half the spread of the {after['rounds']} rounds' p50s); ratio = after stack"
        " p50 / after floor p50 (for gunicorn: floor req/s / stack req/s).",
        "",
        "| scenario | before: stack | before: floor | after: stack | after: floor | ratio "
        "| target (after) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [_row(r["name"], old.get(r["name"]), r) for r in after["results"]]
    return "\n".join(lines)


if __name__ == "__main__":
    before_path, after_path = sys.argv[1:3]
    with open(before_path) as b, open(after_path) as a:
        print(compare(json.load(b), json.load(a)))
