"""The run's figures (requests/s, latency per endpoint in and out of fault windows,
faults, events lost, duplicates, reconciliation time, memory) and the invariants the
generator's record decides by itself: 5xx only in fault windows, and retried; no
process's memory growing past a bound."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

from soak.faults import GRACE_SECONDS, Fault
from soak.traffic import Record, Request

# A process may grow this much past its size once warmed up (a quarter into its life).
RSS_GROWTH_BOUND_KB = 96 * 1024


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def in_window(t: float, faults: list[Fault], ms: float = 0.0) -> bool:
    """Whether a request (sent at `t`, answered `ms` later) overlapped a fault's window."""
    return any(f.start - 1 <= t + ms / 1000 and t <= f.end + GRACE_SECONDS for f in faults if f.end)


def latency(record: Record, faults: list[Fault]) -> dict[str, dict]:
    """p50/p95/p99 (ms) and counts per endpoint, in and out of fault windows."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for request in record.requests:
        where = "in_faults" if in_window(request.t, faults) else "steady"
        groups[(request.endpoint, where)].append(request.ms)
    table: dict[str, dict] = defaultdict(dict)
    for (endpoint, where), values in sorted(groups.items()):
        table[endpoint][where] = {
            "n": len(values),
            **{f"p{q}": round(_percentile(values, q / 100), 1) for q in (50, 95, 99)},
        }
    return dict(table)


def livekit_webhook_failures(failures: list[dict], *, started: float) -> list[Request]:
    """The soak's LiveKit's failed webhook attempts (soak/livekit.py), as requests."""
    return [Request(f["t"] - started, "livekit_webhook", f["status"], f["ms"]) for f in failures]


def server_errors(
    record: Record, faults: list[Fault], *, extra: Sequence[Request] = ()
) -> tuple[list[str], dict]:
    """5xx (and unanswered requests) outside every fault window, and any never retried
    to success, are violations; `extra`: requests others made (LiveKit's webhooks)."""
    requests = [*record.requests, *extra]
    failures = [r for r in requests if r.status >= 500 or r.status == 0]
    outside = [r for r in failures if not in_window(r.t, faults, r.ms)]
    violations = []
    if outside:
        shown = "; ".join(f"{r.t:.1f}s {r.endpoint} {r.status}" for r in outside[:10])
        violations.append(f"5xx or no answer outside the fault windows ({len(outside)}): {shown}")
    if record.unretried:
        violations.append(
            f"5xx never retried to success ({len(record.unretried)}): {record.unretried[:3]}"
        )
    if record.unexpected:
        violations.append(
            f"hostile requests answered wrong ({len(record.unexpected)}): {record.unexpected[:3]}"
        )
    by_status = defaultdict(int)
    for r in failures:
        by_status[str(r.status)] += 1
    return violations, {"5xx_or_no_answer": dict(by_status), "5xx_outside_faults": len(outside)}


def memory(samples: list[tuple[float, str, int, int]], seconds: float) -> tuple[list[str], dict]:
    """Per process (pid) living at least half the run: its RSS at the end against its RSS
    a quarter into its life."""
    by_pid: dict[int, list[tuple[float, str, int]]] = defaultdict(list)
    for t, role, pid, rss in samples:
        by_pid[pid].append((t, role, rss))
    violations, peaks = [], defaultdict(int)
    for pid, points in by_pid.items():
        role = points[0][1]
        peaks[role] = max(peaks[role], max(p[2] for p in points))
        if points[-1][0] - points[0][0] < seconds / 2:
            continue
        warm = points[len(points) // 4][2]
        end = statistics.median(p[2] for p in points[-3:])
        if end - warm > RSS_GROWTH_BOUND_KB:
            violations.append(f"{role} pid {pid} grew {warm // 1024} → {end // 1024} MiB")
    return violations, {"rss_peak_mib": {role: kb // 1024 for role, kb in sorted(peaks.items())}}


def render(results: dict) -> str:
    """The figures as text (printed, and what docs/reliability.md quotes)."""
    f = results["figures"]
    lines = [
        f"soak: {f['calls']} calls ({f['concurrency']} in flight, {f['minutes']} min), "
        f"{f['requests']} requests, {f['requests_per_second']} req/s held",
        f"calls by plan: {f['plans']}; {f['transcript_lines']} transcript lines; "
        f"ended otherwise because LiveKit gave up on a webhook: {f['livekit_lost_ends']}; "
        f"end-of-call reports built before lines sent after the end: "
        f"{f['reports_predating_late_lines']}",
        f"streams: {f['streams']}",
        f"events: {f['events']} customer webhook events, lost {f['events_lost']}; "
        f"deliveries received {f['deliveries_received']} (answered 500 while failing: "
        f"{f['answered_500']}), duplicates seen and deduplicated: {f['duplicates_received']}",
        f"LiveKit webhooks: {f['livekit']}",
        f"reconciliation closed {len(f['reconciled_end_offsets'])} calls whose webhooks were "
        f"dropped; their recorded end minus the real one: {_spread(f['reconciled_end_offsets'])} s",
        f"5xx/no answer: {f['5xx_or_no_answer']} "
        f"(outside fault windows: {f['5xx_outside_faults']})",
        f"drain: {f['drain_seconds']} s; whole run {f.get('wall_seconds')} s; "
        f"peak RSS MiB: {f['rss_peak_mib']}; restarted: {f['restarts']}",
        "faults:",
    ]
    for fault in results["faults"]:
        lines.append(
            f"  {fault['start']:7.1f}–{fault['end']:7.1f}s {fault['name']}: {fault['detail']}"
        )
    lines.append("latency ms (p50/p95/p99, n) steady | in fault windows:")
    for endpoint, where in sorted(f["latency"].items()):
        cells = [
            f"{w['p50']}/{w['p95']}/{w['p99']} ({w['n']})" if (w := where.get(k)) else "—"
            for k in ("steady", "in_faults")
        ]
        lines.append(f"  {endpoint:15} {cells[0]:>32} | {cells[1]}")
    verdict = results["violations"]
    lines.append("INVARIANTS HOLD" if not verdict else "INVARIANTS VIOLATED:")
    lines += [f"  - {v}" for v in verdict]
    return "\n".join(lines)


def _spread(values: list[float]) -> str:
    if not values:
        return "—"
    return f"median {statistics.median(values):.1f}, max {max(values):.1f}"
