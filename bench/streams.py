"""Live call streams under load (`make bench-streams`; bench/README.md "Live streams").

On a throwaway PostgreSQL loaded by bench.load (BENCH_CALLS, 50,000 by default here),
the API on gunicorn (gunicorn.conf.py, 2 sync workers) and the streams service on
gunicorn with one uvicorn worker (gunicorn.streams.conf.py):

1. Calls run: an agent posts a 5-line batch to one of LIVE_CALLS calls every
   POST_INTERVAL seconds, throughout.
2. Without streams: POST /calls (4 client processes) and the lists are timed.
3. STREAMS streams are opened (spread over the live calls) and held; the streams
   worker's memory and CPU are read from /proc; each event's delay from the agent's
   POST answered (its transaction committed) to its arrival on every stream is taken.
4. With the streams open: POST /calls and the lists are timed again.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench import env

STREAMS = int(os.environ.get("BENCH_STREAMS", 1000))
LIVE_CALLS = int(os.environ.get("BENCH_LIVE_CALLS", 50))
POST_INTERVAL = float(os.environ.get("BENCH_POST_INTERVAL", 0.1))
SECONDS = float(os.environ.get("BENCH_HTTP_SECONDS", 6))
ROOT = Path(__file__).resolve().parent.parent


def _proc_stat(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and resident bytes of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def _worker_pid(arbiter: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{arbiter}/task/{arbiter}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("the streams service started no worker")


async def _http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    body = await reader.read()
    writer.close()
    return body


def _post(port: int, path: str, key: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + data


class StreamLoad:
    """Streams held open in this process's event loop, and the agent posting."""

    def __init__(self, api_port: int, stream_port: int, ctx, calls: list[str]) -> None:
        self.api_port, self.stream_port, self.ctx, self.calls = api_port, stream_port, ctx, calls
        # marker → when the agent's POST was sent: its transaction commits before the
        # answer, which a stream may beat, so delays count from the request (an upper
        # bound of commit → arrival) and the POST's own latency is reported beside them.
        self.sent: dict[str, float] = {}
        self.delays: list[float] = []
        self.post_ms: list[float] = []
        self.opened = 0
        self.refused: list[bytes] = []
        self.posting = True

    async def stream(self, call_id: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.stream_port)
        writer.write(
            f"GET /api/v1/calls/{call_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {self.ctx.client_key}\r\n\r\n".encode()
        )
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            self.refused.append(status + await reader.read(2000))
            return
        self.opened += 1
        try:
            while line := await reader.readline():
                if line.startswith(b'data: {"role"'):
                    marker = json.loads(line[6:])["content"]
                    sent = self.sent.get(marker)
                    if sent is not None:
                        self.delays.append(time.monotonic() - sent)
        finally:  # cancelled: the stream's socket closes with it
            writer.close()

    async def agent(self) -> None:
        n = 0
        while self.posting:
            call_id = self.calls[n % len(self.calls)]
            markers = [f"m-{n}-{i}" for i in range(5)]
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            events = [
                {
                    "id": str(uuid.uuid4()),
                    "type": "transcript",
                    "timestamp": now,
                    "role": "assistant",
                    "content": m,
                    "agent_name": "bench",
                }
                for m in markers
            ]
            request = _post(
                self.api_port,
                f"/api/v1/agent/calls/{call_id}/events",
                self.ctx.agent_key,
                {"events": events},
            )
            started = time.monotonic()
            for marker in markers:
                self.sent[marker] = started
            answer = await _http(self.api_port, request)
            self.post_ms.append(1000 * (time.monotonic() - started))
            if not answer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"agent events refused: {answer[:200]!r}")
            n += 1
            await asyncio.sleep(POST_INTERVAL)


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


def _ratio(with_streams: dict, before: dict, after: dict) -> float:
    """POST /calls throughput with streams over the mean of the runs around it."""
    rate = "requests_per_s"
    around = (before["POST /calls"][rate] + after["POST /calls"][rate]) / 2
    return round(with_streams["POST /calls"][rate] / around, 3)


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
    return {
        "POST /calls": _creates(api_port, ctx.client_key),
        **_lists(api_port, ctx.client_key, SECONDS),
    }


def run(ctx) -> dict:
    import threading

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
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, daemon=True).start()
            load = StreamLoad(api_port, stream_port, ctx, calls)
            agent = asyncio.run_coroutine_threadsafe(load.agent(), loop)
            time.sleep(2)
            if agent.done():
                agent.result()  # raises what stopped it
            without = _measure(ctx, api_port)
            cpu0, rss0 = _proc_stat(worker)
            opening = time.monotonic()
            streams = [
                asyncio.run_coroutine_threadsafe(load.stream(calls[i % len(calls)]), loop)
                for i in range(STREAMS)
            ]
            while load.opened < STREAMS:
                if time.monotonic() - opening > 120:
                    raise RuntimeError(f"only {load.opened} streams opened: {load.refused[:1]}")
                time.sleep(0.1)
            opened_in = time.monotonic() - opening
            time.sleep(2)
            load.delays.clear()
            load.post_ms.clear()
            cpu1, rss1 = _proc_stat(worker)
            window = time.monotonic()
            with_streams = _measure(ctx, api_port)
            cpu2, rss2 = _proc_stat(worker)
            window = time.monotonic() - window
            delays, post_ms = list(load.delays), list(load.post_ms)
            # Without streams again, after them: before/with/after brackets the with-streams
            # rounds, so a warming database cannot pass for the streams' cost.
            for stream in streams:
                stream.cancel()
            time.sleep(3)
            after = _measure(ctx, api_port)
            load.posting = False
        finally:
            service.terminate()
            service.wait(timeout=30)
    events_per_s = 5 / POST_INTERVAL
    return {
        "streams": STREAMS,
        "live_calls": LIVE_CALLS,
        "agent_lines_per_s_posted_at_most": events_per_s,
        "opened_in_s": round(opened_in, 2),
        "worker_rss_mb": {"before": round(rss0 / 2**20, 1), "with_streams": round(rss2 / 2**20, 1)},
        "rss_kib_per_stream": round((rss1 - rss0) / 1024 / STREAMS, 1),
        "worker_cpu_pct_while_measuring": round(100 * (cpu2 - cpu1) / window, 1),
        "cpu_ms_per_stream_per_s": round(1000 * (cpu2 - cpu1) / window / STREAMS, 3),
        "deliveries": len(delays),
        "agent_post_ms_p50": round(statistics.median(post_ms), 1),
        "delay_from_agent_request_ms": {
            "p50": round(1000 * _percentile(delays, 0.5), 1),
            "p95": round(1000 * _percentile(delays, 0.95), 1),
        },
        "without_streams": without,
        "with_streams": with_streams,
        "without_streams_after": after,
        "post_calls_with_vs_without": _ratio(with_streams, without, after),
        "cpu_seconds_opening": round(cpu1 - cpu0, 2),
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
