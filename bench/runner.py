"""Timed scenarios: each request through the real stack (gunicorn on loopback, DEBUG
off, production logging) and its raw floor in the same run, in alternating rounds so
machine noise hits both alike; then a table and a JSON file in bench/results/."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
# Each side of a round runs about this long (within MIN..MAX requests).
ROUND_SECONDS = float(os.environ.get("BENCH_ROUND_SECONDS", 1.5))
MIN_REQUESTS, MAX_REQUESTS = 15, 400


@dataclass
class Scenario:
    name: str
    stack: Callable[[Any], bytes]
    floor: Callable[[Any], bytes] | None
    # Makes one payload per request (fresh ids for writes), outside the timed part.
    prepare: Callable[[], Any] = lambda: None
    rows: int = 0  # rows written per request: reported as rows/s
    compare: bool = True  # check stack and floor bodies match before timing
    target: Callable[[dict, dict], tuple[bool, str]] | None = None


@dataclass
class Samples:
    rounds: list[list[float]] = field(default_factory=list)  # milliseconds

    @property
    def all(self) -> list[float]:
        return [value for values in self.rounds for value in values]

    def summary(self, rows: int) -> dict:
        values = sorted(self.all)
        p50s = [statistics.median(r) for r in self.rounds]
        mean_ms = statistics.fmean(values)
        summary = {
            "n": len(values),
            "p50_ms": round(statistics.median(values), 3),
            "p95_ms": round(values[max(0, math.ceil(0.95 * len(values)) - 1)], 3),
            "mean_ms": round(mean_ms, 3),
            "requests_per_s": round(1000 / mean_ms, 1),
            "round_p50_ms": [round(v, 3) for v in p50s],
            "spread_pct": round(100 * (max(p50s) - min(p50s)) / statistics.median(p50s), 1),
        }
        if rows:
            summary["rows_per_s"] = round(rows * 1000 / mean_ms)
        return summary


def _time(fn: Callable[[Any], bytes], payloads: list) -> list[float]:
    timings = []
    for payload in payloads:
        started = time.perf_counter_ns()
        fn(payload)
        timings.append((time.perf_counter_ns() - started) / 1e6)
    return timings


def _settled(body: object) -> object:
    """`body` without the durations of calls still running: they tick between requests."""
    if isinstance(body, dict):
        return {
            key: _settled(value)
            for key, value in body.items()
            if not (key == "duration_seconds" and body.get("ended_at", 0) is None)
        }
    if isinstance(body, list):
        return [_settled(value) for value in body]
    return body


def _check_same(name: str, stack_body: bytes, floor_body: bytes) -> None:
    """The floor must build the very answer the stack gives, or it floors nothing."""
    if stack_body == floor_body:
        return
    stack_json, floor_json = json.loads(stack_body), json.loads(floor_body)
    if _settled(stack_json) == _settled(floor_json) and (
        json.dumps(stack_json, ensure_ascii=False, separators=(",", ":")).encode() == stack_body
    ):
        return
    raise AssertionError(f"{name}: the floor's body differs from the stack's")


def measure(scenario: Scenario) -> dict:
    for _ in range(3):  # warm caches, connections, code paths
        scenario.stack(scenario.prepare())
        if scenario.floor:
            scenario.floor(scenario.prepare())
    if scenario.compare and scenario.floor:
        _check_same(scenario.name, scenario.stack(None), scenario.floor(None))
    probe = _time(scenario.stack, [scenario.prepare() for _ in range(5)])
    n = int(min(MAX_REQUESTS, max(MIN_REQUESTS, ROUND_SECONDS * 1000 / statistics.fmean(probe))))
    stack, floor = Samples(), Samples()
    for _ in range(ROUNDS):
        stack.rounds.append(_time(scenario.stack, [scenario.prepare() for _ in range(n)]))
        if scenario.floor:
            floor.rounds.append(_time(scenario.floor, [scenario.prepare() for _ in range(n)]))
    result = {"name": scenario.name, "stack": stack.summary(scenario.rows)}
    if scenario.floor:
        result["floor"] = floor.summary(scenario.rows)
        result["ratio"] = round(result["stack"]["p50_ms"] / result["floor"]["p50_ms"], 2)
    return result


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def table(results: list[dict]) -> str:
    lines = [
        "| scenario | p50 ms | p95 ms | req/s | rows/s | floor p50 | floor p95 | floor req/s "
        "| ratio | p50 spread stack / floor | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        s, f = r["stack"], r.get("floor") or {}
        rows = s.get("rows_per_s")
        floor_rows = f.get("rows_per_s")
        spread = f"{s['spread_pct']:.0f}%" + (f" / {f['spread_pct']:.0f}%" if f else "")
        floor_rps = f"{f['requests_per_s']:.0f}" if f else ""
        rows_text = f"{rows or ''}" + (f" (floor {floor_rows})" if floor_rows else "")
        lines.append(
            f"| {r['name']} | {_fmt(s['p50_ms'])} | {_fmt(s['p95_ms'])} "
            f"| {s['requests_per_s']:.0f} | {rows_text} "
            f"| {_fmt(f.get('p50_ms'))} | {_fmt(f.get('p95_ms'))} "
            f"| {floor_rps} | {r.get('ratio', '')} | {spread} | {r.get('target', '')} |"
        )
    return "\n".join(lines)


def _machine() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
        settings = {}
        for name in ("shared_buffers", "work_mem", "effective_cache_size", "random_page_cost"):
            cursor.execute(f"SHOW {name}")
            settings[name] = cursor.fetchone()[0]
    return {
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "postgresql": server,
        "postgresql_settings": settings,
    }


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True)
        return head + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(*, only: str | None, label: str, load_timings: dict | None) -> None:
    from bench import http_client, http_load, scenarios, targets

    ctx = scenarios.Context.build()
    for note in ctx.notes:
        print(f"bench: {note}", flush=True)
    started = datetime.datetime.now(datetime.UTC)
    machine_before = _machine()
    results: list[dict] = []
    # `--only a|b`: the scenarios whose name holds any of the parts.
    wanted = only.split("|") if only else []
    with http_client.gunicorn() as ctx.port:
        for scenario in scenarios.build(ctx):
            if wanted and not any(part in scenario.name for part in wanted):
                continue
            result = measure(scenario)
            results.append(result)
            print(f"bench: {scenario.name}: {json.dumps(result)}", flush=True)
    if not wanted or any("gunicorn" in part for part in wanted):
        for result in http_load.create_calls(ctx):
            results.append(result)
            print(f"bench: {result['name']}: {json.dumps(result)}", flush=True)
    targets.judge(results)
    report = {
        "started_at": started.isoformat(),
        "label": label,
        "git": _git(),
        "machine_before": machine_before,
        "machine_after": _machine(),
        "rounds": ROUNDS,
        "notes": ctx.notes,
        "load": load_timings,
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}{'-' + label if label else ''}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\nbench: results in {path.relative_to(RESULTS.parent.parent)}", flush=True)
