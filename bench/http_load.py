"""POST /calls through gunicorn (2 sync workers, the repository's gunicorn.conf.py) on
loopback, driven by a small load generator on the same machine: a few processes, each
sending one request per connection (sync workers close every connection), as fast as
answers come back. Its floor is the same work by hand (SQL, token, json.dumps) in as
many processes as gunicorn has workers."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import floor

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
CLIENTS = int(os.environ.get("BENCH_HTTP_CLIENTS", 4))
SECONDS = float(os.environ.get("BENCH_HTTP_SECONDS", 6))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def _floor_worker(organization_id: str, seconds: float, out: multiprocessing.Queue) -> None:
    conn = floor.connect(prepare=True)
    latencies = []
    n = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        floor.call_create(
            conn,
            organization_id=organization_id,
            workflow_slug="flow-00",
            user_id=f"bench-user-{n % 1000}",
            user_data={"name": "Bench User", "language": "en"},
            metadata={"source": "bench-floor", "n": n},
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
    results = [out.get() for _ in procs]
    elapsed = time.perf_counter() - started
    for proc in procs:
        proc.join()
    latencies = [value for lat, _ in results for value in lat]
    errors = sum(err for _, err in results)
    return latencies, errors, elapsed


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


def create_calls(ctx) -> dict:  # noqa: ANN001 - bench.scenarios.Context
    from django.db import connections

    port = _free_port()
    env = {**os.environ, "GUNICORN_MAX_REQUESTS": "0", "WEB_CONCURRENCY": str(WORKERS)}
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "voicecalls.wsgi:application",
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "--access-logfile",
            "/dev/null",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        _wait_ready(port)
        connections.close_all()  # nothing shared with the forked processes
        stack_rounds, floor_rounds = [], []
        # Warm both workers (imports, connections) before timing.
        _parallel(_client, lambda i: (port, ctx.client_key, 1.0, i), CLIENTS)
        for _ in range(ROUNDS):
            stack_rounds.append(
                _parallel(_client, lambda i: (port, ctx.client_key, SECONDS, i), CLIENTS)
            )
            floor_rounds.append(
                _parallel(_floor_worker, lambda i: (ctx.organization_id, SECONDS), WORKERS)
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    stack, raw = _summary(stack_rounds), _summary(floor_rounds)
    if stack["errors"]:
        # A 429 or 500 is answered fast: counting it would flatter the throughput.
        raise AssertionError(f"POST /calls through gunicorn: {stack['errors']} answers not 201")
    return {
        "name": f"POST /calls (gunicorn, {WORKERS} workers, {CLIENTS} clients)",
        "stack": stack,
        "floor": raw,
        "ratio": round(raw["requests_per_s"] / stack["requests_per_s"], 2),
        "ratio_note": "floor throughput / stack throughput",
    }


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer /healthz within 60 s")
