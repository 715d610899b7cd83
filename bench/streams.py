"""Live call streams under load (`make bench-streams`; bench/README.md "Live streams").

On a throwaway PostgreSQL loaded by bench.load (BENCH_CALLS, 50,000 by default here),
the API on gunicorn (gunicorn.conf.py, 2 sync workers) and the streams service on
gunicorn with one uvicorn worker (gunicorn.streams.conf.py):

1. Calls run: an agent posts a 5-line batch to one of LIVE_CALLS calls every
   POST_INTERVAL seconds, throughout.
2. Without streams: POST /calls (4 client processes) and the lists are timed.
3. STREAMS streams are opened (spread over the live calls) and held; the streams
   worker's memory and CPU are read from /proc; each event's delay from the agent's
   POST being sent to its arrival on every stream is taken.
4. With the streams open: POST /calls and the lists are timed again; the streams are
   closed and 2-4 repeat (BENCH_STREAM_CYCLES), then 2 once more, so every
   with-streams run is compared with the runs on both sides of it.

The stream clients and the agent run in a process of their own (bench.stream_clients),
never in the one that times the API, and their CPU is reported apart.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import env, stream_clients

STREAMS = int(os.environ.get("BENCH_STREAMS", 1000))
LIVE_CALLS = int(os.environ.get("BENCH_LIVE_CALLS", 50))
POST_INTERVAL = float(os.environ.get("BENCH_POST_INTERVAL", 0.1))
SECONDS = float(os.environ.get("BENCH_HTTP_SECONDS", 6))
CYCLES = int(os.environ.get("BENCH_STREAM_CYCLES", 3))
ROOT = Path(__file__).resolve().parent.parent


def _stat_fields(text: str) -> tuple[float, int]:
    fields = text.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, int(fields[21]) * os.sysconf("SC_PAGE_SIZE")


def _proc_stat(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and resident bytes of a process."""
    return _stat_fields(Path(f"/proc/{pid}/stat").read_text())


def _postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process now running (the streams' reads, their
    connections and the NOTIFYs included)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        if "(postgres)" in text:
            total += _stat_fields(text)[0]
    return total


def _worker_pid(arbiter: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{arbiter}/task/{arbiter}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("the streams service started no worker")


def _lists(port: int, key: str, seconds: float) -> dict:
    from bench.http_client import GunicornClient

    client = GunicornClient(port, HTTP_AUTHORIZATION=f"Bearer {key}")
    timings: dict[str, list[float]] = {"GET /calls": [], "GET /calls/active": []}
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for name, path in (
            ("GET /calls", "/api/v1/calls"),
            ("GET /calls/active", "/api/v1/calls/active"),
        ):
            started = time.perf_counter()
            assert (
                client.get(path, {"page_size": 20} if name == "GET /calls" else None).status_code
                == 200
            )
            timings[name].append((time.perf_counter() - started) * 1000)
    return {name: round(statistics.median(values), 2) for name, values in timings.items()}


def _creates(port: int, key: str) -> dict:
    from django.db import connections

    from bench import http_load

    connections.close_all()
    rounds = [
        http_load._parallel(http_load._client, lambda i: (port, key, SECONDS, i), http_load.CLIENTS)
        for _ in range(http_load.ROUNDS)
    ]
    summary = http_load._summary(rounds)
    return {"requests_per_s": summary["requests_per_s"], "p50_ms": summary["p50_ms"]}


RATIOS = ("POST /calls", "GET /calls", "GET /calls/active")


def _figure(name: str, run: dict) -> float:
    return run[name]["requests_per_s"] if name == "POST /calls" else run[name]


def _ratios(withs: list[dict], arounds: list[dict]) -> dict:
    """Each with-streams figure over the mean of the without-streams runs around it:
    throughput for POST /calls (higher is better), p50 for the lists (lower is)."""
    ratios: dict[str, list[float]] = {}
    for i, with_streams in enumerate(withs):
        for name in RATIOS:
            value, before, after = (
                _figure(name, run) for run in (with_streams, arounds[i], arounds[i + 1])
            )
            ratios.setdefault(name, []).append(round(value / ((before + after) / 2), 3))
    return ratios


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[int(share * (len(ordered) - 1))]


def _streams_service(port: int) -> subprocess.Popen:
    service = {
        **os.environ,
        "STREAMS_WORKERS": "1",  # one process: its memory and CPU are the streams'
        "STREAMS_PER_ORGANIZATION": str(STREAMS * 10),
        "STREAMS_BIND": f"127.0.0.1:{port}",
    }
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "voicecalls.asgi:application"]
        + ["-c", "gunicorn.streams.conf.py", "--access-logfile", "/dev/null"],
        cwd=ROOT,
        env=service,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _measure(ctx, api_port: int) -> dict:
    """POST /calls and the lists timed, and PostgreSQL's CPU meanwhile."""
    started, pg0 = time.monotonic(), _postgres_cpu()
    figures = {
        "POST /calls": _creates(api_port, ctx.client_key),
        **_lists(api_port, ctx.client_key, SECONDS),
    }
    pg_pct = 100 * (_postgres_cpu() - pg0) / (time.monotonic() - started)
    return {**figures, "postgres_cpu_pct": round(pg_pct, 1)}


class Clients:
    """The stream clients and the agent, in their own process (bench.stream_clients)."""

    def __init__(self, api_port: int, stream_port: int, ctx, calls: list[str]) -> None:
        mp = multiprocessing.get_context("spawn")
        self.conn, child = mp.Pipe()
        keys = {"client": ctx.client_key, "agent": ctx.agent_key}
        args = (child, api_port, stream_port, keys, calls, POST_INTERVAL)
        self.process = mp.Process(target=stream_clients.serve, args=args, daemon=True)
        self.process.start()

    def ask(self, name: str, arg: int = 0):
        self.conn.send((name, arg))
        answer = self.conn.recv()
        if isinstance(answer, dict) and "error" in answer:
            raise RuntimeError(f"the stream clients stopped: {answer['error']}")
        return answer

    def stop(self) -> None:
        self.conn.send(("stop", 0))
        self.conn.recv()
        self.process.join(timeout=10)


def _with_streams(ctx, api_port: int, worker: int, clients: Clients) -> dict:
    """Open the streams, time POST /calls and the lists with them open, close them."""
    cpu0, rss0 = _proc_stat(worker)
    opening = time.monotonic()
    answer = clients.ask("open", STREAMS)
    if answer["opened"] < STREAMS:
        raise RuntimeError(f"only {answer['opened']} streams opened: {answer['refused']}")
    opened_in = time.monotonic() - opening
    time.sleep(2)
    clients.ask("reset")
    cpu1, rss1 = _proc_stat(worker)
    client_cpu1, _ = _proc_stat(clients.process.pid)
    window = time.monotonic()
    figures = _measure(ctx, api_port)
    cpu2, rss2 = _proc_stat(worker)
    client_cpu2, _ = _proc_stat(clients.process.pid)
    window = time.monotonic() - window
    seen = clients.ask("collect")
    clients.ask("close")
    delays = seen["delays"]
    return {
        "figures": figures,
        "opened_in_s": round(opened_in, 2),
        "cpu_seconds_opening": round(cpu1 - cpu0, 2),
        "worker_rss_mb": {"before": round(rss0 / 2**20, 1), "with_streams": round(rss2 / 2**20, 1)},
        "rss_kib_per_stream": round((rss1 - rss0) / 1024 / STREAMS, 1),
        "worker_cpu_pct_while_measuring": round(100 * (cpu2 - cpu1) / window, 1),
        "cpu_ms_per_stream_per_s": round(1000 * (cpu2 - cpu1) / window / STREAMS, 3),
        "clients_cpu_pct_while_measuring": round(100 * (client_cpu2 - client_cpu1) / window, 1),
        "deliveries": len(delays),
        "agent_post_ms_p50": round(statistics.median(seen["post_ms"]), 1),
        "delay_from_agent_request_ms": {
            "p50": round(1000 * _percentile(delays, 0.5), 1),
            "p95": round(1000 * _percentile(delays, 0.95), 1),
        },
    }


def run(ctx) -> dict:
    from bench import http_client

    stream_port = http_client.free_port()
    with http_client.gunicorn() as api_port:
        service = _streams_service(stream_port)
        try:
            http_client._wait_ready(stream_port)
            worker = _worker_pid(service.pid)
            api = http_client.GunicornClient(
                api_port, HTTP_AUTHORIZATION=f"Bearer {ctx.client_key}"
            )
            calls = [
                api.post("/api/v1/calls", {"workflow_slug": ctx.workflow_slug}).json()["call_id"]
                for _ in range(LIVE_CALLS)
            ]
            clients = Clients(api_port, stream_port, ctx, calls)
            time.sleep(2)
            clients.ask("reset")  # raises if the agent could not post
            _measure(ctx, api_port)  # warm-up: the first run after loading is slower
            # Without, with, without, with, ..., without: every with-streams run has a
            # without-streams run on each side, so a warming database cannot pass for
            # the streams' cost (nor the opposite).
            arounds = [_measure(ctx, api_port)]
            cycles = []
            for _ in range(CYCLES):
                cycles.append(_with_streams(ctx, api_port, worker, clients))
                time.sleep(3)
                arounds.append(_measure(ctx, api_port))
            clients.stop()
        finally:
            service.terminate()
            service.wait(timeout=30)
    ratios = _ratios([cycle["figures"] for cycle in cycles], arounds)
    return {
        "streams": STREAMS,
        "live_calls": LIVE_CALLS,
        "agent_lines_per_s_posted_at_most": 5 / POST_INTERVAL,
        "without_streams": arounds,
        "with_streams": cycles,
        "with_vs_around": ratios,
    }


def main() -> None:
    import resource

    # A thousand streams are a thousand sockets on each side.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.environ.setdefault("BENCH_CALLS", "50000")
    env.setup()
    from bench import load
    from bench.scenarios import Context

    shape = load.Shape.from_env()
    print(f"bench streams: loading {shape}", flush=True)
    load.load(shape)
    result = run(Context.build())
    print(json.dumps(result, indent=2), flush=True)
    out = ROOT / "bench" / "results" / f"streams-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
