"""POST /calls through gunicorn (2 sync workers, the repository's gunicorn.conf.py) on
loopback, driven by a small load generator on the same machine: a few processes, each
sending one request per connection (sync workers close every connection), as fast as
answers come back. Its floor is the same work by hand (SQL, token, json.dumps) in as
many processes as gunicorn has workers.

When `wrk` is installed (`apt-get install wrk`), the same server is also driven by it:
one C thread for the same number of connections, so the generator takes less of the
two cores from the server than four Python processes do. Both are reported and judged."""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable

from bench import floor, floor_create, http_client
from bench.http_client import WORKERS

CLIENTS = int(os.environ.get("BENCH_HTTP_CLIENTS", 4))
SECONDS = float(os.environ.get("BENCH_HTTP_SECONDS", 6))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))


def _request(port: int, key: str, n: int) -> bytes:
    body = json.dumps(
        {
            "workflow_slug": "flow-00",
            "user_id": f"bench-user-{n % 1000}",
            "user_data": {"name": "Bench User", "language": "en"},
            "metadata": {"source": "bench-http", "n": n},
        }
    ).encode()
    head = (
        f"POST /api/v1/calls HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _client(port: int, key: str, seconds: float, worker: int, out: multiprocessing.Queue) -> None:
    latencies: list[float] = []
    errors = 0
    n = worker * 10_000_000
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        payload = _request(port, key, n)
        n += 1
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(payload)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        latencies.append((time.perf_counter() - started) * 1000)
        if not b"".join(chunks).startswith(b"HTTP/1.1 201"):
            errors += 1
    out.put((latencies, errors))


def _floor_worker(
    organization_id: str, limit: int | None, seconds: float, out: multiprocessing.Queue
) -> None:
    conn = floor.connect(prepare=True)
    latencies = []
    n = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        floor_create.call_create(
            conn,
            organization_id=organization_id,
            workflow_slug="flow-00",
            user_id=f"bench-user-{n % 1000}",
            user_data={"name": "Bench User", "language": "en"},
            metadata={"source": "bench-floor", "n": n},
            concurrency_limit=limit,
        )
        latencies.append((time.perf_counter() - started) * 1000)
        n += 1
    conn.close()
    out.put((latencies, 0))


def _parallel(
    target: Callable, args_for: Callable[[int], tuple], processes: int
) -> tuple[list[float], int, float]:
    """Run `target(*args_for(i), queue)` in `processes` forked processes; gather."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=args_for(i) + (out,)) for i in range(processes)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    results = [_gathered(out, procs) for _ in procs]
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join()
    latencies = [value for lat, _ in results for value in lat]
    errors = sum(err for _, err in results)
    return latencies, errors, elapsed


def _gathered(out, procs: list) -> tuple:
    """One process's result; a process that died without one fails the run (waiting for
    it would hang the benchmark for ever)."""
    while True:
        try:
            return out.get(timeout=1)
        except queue.Empty:
            dead = [proc for proc in procs if proc.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a load process exited with {dead[0].exitcode}") from None


def _summary(rounds: list[tuple[list[float], int, float]]) -> dict:
    latencies = sorted(v for lat, _, _ in rounds for v in lat)
    rates = [len(lat) / elapsed for lat, _, elapsed in rounds]
    return {
        "n": len(latencies),
        "errors": sum(err for _, err, _ in rounds),
        "p50_ms": round(statistics.median(latencies), 3),
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
        "requests_per_s": round(statistics.median(rates), 1),
        "round_requests_per_s": [round(r, 1) for r in rates],
        "spread_pct": round(100 * (max(rates) - min(rates)) / statistics.median(rates), 1),
    }


# The headline: the create throttle and the concurrency limit on, checked on every
# request at a rate and a limit the load never reaches (a 429 is answered fast and
# would flatter the figure), with the benchmark's open calls growing all the while.
LIMITS_ON = {
    "THROTTLE_EXEMPT_ORGANIZATIONS": "",
    "CONCURRENCY_LIMIT_EXEMPT_ORGANIZATIONS": "",
    "API_CREATE_RATE": "1000000/minute",
    "CALLS_CONCURRENCY_LIMIT": "100000000",
}


def create_calls(ctx) -> list[dict]:
    """The headline with the limits on, then the diagnostic run exempt from them."""
    results = _create_calls(ctx, env_extra=LIMITS_ON, label="limits on")
    results += _create_calls(ctx, env_extra={}, label="exempt from limits, diagnostic")
    return results


def _create_calls(ctx, *, env_extra: dict, label: str) -> list[dict]:
    from django.db import connections

    limit = int(env_extra["CALLS_CONCURRENCY_LIMIT"]) if env_extra else None
    wrk = shutil.which("wrk")
    with http_client.gunicorn(env_extra) as port:
        connections.close_all()  # nothing shared with the forked processes
        stack_rounds, wrk_rounds, floor_rounds = [], [], []
        # Warm both workers (imports, connections, prepared statements) before timing.
        _parallel(_client, lambda i: (port, ctx.client_key, 1.0, i), CLIENTS)
        for _ in range(ROUNDS):
            stack_rounds.append(
                _parallel(_client, lambda i: (port, ctx.client_key, SECONDS, i), CLIENTS)
            )
            if wrk:
                wrk_rounds.append(_wrk(wrk, port, ctx.client_key, SECONDS))
            floor_rounds.append(
                _parallel(_floor_worker, lambda i: (ctx.organization_id, limit, SECONDS), WORKERS)
            )
    raw = _summary(floor_rounds)
    results = [_result(f"{CLIENTS} clients, {label}", _summary(stack_rounds), raw)]
    if wrk:
        results.append(
            _result(f"wrk, {CLIENTS} connections, {label}", _wrk_summary(wrk_rounds), raw)
        )
    else:
        ctx.notes.append("wrk is not installed: POST /calls measured with the Python clients only")
    return results


def _result(driver: str, stack: dict, raw: dict) -> dict:
    if stack["errors"]:
        # A 429 or 500 is answered fast: counting it would flatter the throughput.
        raise AssertionError(f"POST /calls through gunicorn: {stack['errors']} answers not 201")
    return {
        "name": f"POST /calls (gunicorn, {WORKERS} workers, {driver})",
        "stack": stack,
        "floor": raw,
        "ratio": round(raw["requests_per_s"] / stack["requests_per_s"], 2),
        "ratio_note": "floor throughput / stack throughput",
    }


# The same bodies as `_request`; `done` prints what `_wrk_summary` reads.
_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
wrk.headers["Connection"] = "close"
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"workflow_slug": "flow-00", "user_id": "bench-user-%d", '
    .. '"user_data": {"name": "Bench User", "language": "en"}, '
    .. '"metadata": {"source": "bench-wrk", "n": %d}}', n % 1000, n)
  return wrk.format(nil, "/api/v1/calls", nil, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("bench-wrk %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(95)))
end
"""


def _wrk(wrk: str, port: int, key: str, seconds: float) -> dict:
    """One round of wrk: one thread, CLIENTS connections, a new connection per request."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_WRK_SCRIPT)
        script.flush()
        out = subprocess.run(
            [
                wrk,
                "-t1",
                f"-c{CLIENTS}",
                f"-d{int(seconds)}s",
                "-s",
                script.name,
                f"http://127.0.0.1:{port}",
            ],
            env={**os.environ, "BENCH_KEY": key},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    match = re.search(r"^bench-wrk (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no summary: {out!r}")
    requests, duration_us, errors, p50_us, p95_us = map(int, match.groups())
    return {
        "requests": requests,
        "seconds": duration_us / 1e6,
        "errors": errors,
        "p50_ms": p50_us / 1000,
        "p95_ms": p95_us / 1000,
    }


def _wrk_summary(rounds: list[dict]) -> dict:
    """As `_summary`, from wrk's own per-round percentiles (medians over the rounds)."""
    rates = [r["requests"] / r["seconds"] for r in rounds]
    return {
        "n": sum(r["requests"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in rounds), 3),
        "p95_ms": round(statistics.median(r["p95_ms"] for r in rounds), 3),
        "requests_per_s": round(statistics.median(rates), 1),
        "round_requests_per_s": [round(r, 1) for r in rates],
        "spread_pct": round(100 * (max(rates) - min(rates)) / statistics.median(rates), 1),
    }
