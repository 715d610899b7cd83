"""The clients of `make bench-streams` (bench/streams.py), in a process of their own.

The stream clients and the agent posting lines run here, on one asyncio loop, so
their work (reading ~1,000 events/s) never holds the GIL of the process that times
`POST /calls` and the lists; their CPU is read and reported apart. The benchmark
drives this process through a pipe: `open`, `reset`, `collect`, `close`, `stop`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from multiprocessing.connection import Connection

CONTENT = b'"content":"'


def _post(path: str, key: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + data


async def _http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    body = await reader.read()
    writer.close()
    return body


class StreamLoad:
    """Streams held open on this loop, and the agent posting to the live calls."""

    def __init__(
        self, api_port: int, stream_port: int, keys: dict, calls: list[str], interval: float
    ) -> None:
        self.api_port, self.stream_port, self.keys = api_port, stream_port, keys
        self.calls, self.interval = calls, interval
        # marker → when the agent's POST was sent: its transaction commits before the
        # answer, which a stream may beat, so delays count from the request (an upper
        # bound of commit → arrival) and the POST's own latency is reported beside them.
        self.sent: dict[str, float] = {}
        self.delays: list[float] = []
        self.post_ms: list[float] = []
        self.opened = 0
        self.refused: list[str] = []
        self.streams: list[asyncio.Task] = []

    async def stream(self, call_id: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.stream_port)
        writer.write(
            f"GET /api/v1/calls/{call_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {self.keys['client']}\r\n\r\n".encode()
        )
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            self.refused.append((status + await reader.read(2000)).decode(errors="replace"))
            return
        self.opened += 1
        try:
            # One event at a time; the marker is found without parsing the JSON.
            while event := await reader.readuntil(b"\n\n"):
                start = event.find(CONTENT)
                if start < 0:
                    continue
                start += len(CONTENT)
                sent = self.sent.get(event[start : event.index(b'"', start)].decode())
                if sent is not None:
                    self.delays.append(time.monotonic() - sent)
        except asyncio.IncompleteReadError:
            return
        finally:  # cancelled: the stream's socket closes with it
            writer.close()

    async def agent(self) -> None:
        n = 0
        while True:
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
            path = f"/api/v1/agent/calls/{call_id}/events"
            request = _post(path, self.keys["agent"], {"events": events})
            started = time.monotonic()
            for marker in markers:
                self.sent[marker] = started
            answer = await _http(self.api_port, request)
            self.post_ms.append(1000 * (time.monotonic() - started))
            if not answer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"agent events refused: {answer[:200]!r}")
            n += 1
            await asyncio.sleep(self.interval)

    async def open(self, count: int) -> dict:
        self.opened, self.refused = 0, []
        self.streams = [
            asyncio.create_task(self.stream(self.calls[i % len(self.calls)])) for i in range(count)
        ]
        started = time.monotonic()
        while self.opened < count and not self.refused:
            if time.monotonic() - started > 120:
                break
            await asyncio.sleep(0.1)
        return {"opened": self.opened, "refused": self.refused[:1]}

    async def close(self) -> None:
        for task in self.streams:
            task.cancel()
        await asyncio.gather(*self.streams, return_exceptions=True)
        self.streams = []


async def _command(load: StreamLoad, agent: asyncio.Task, name: str, arg: int) -> object:
    if agent.done():
        return {"error": repr(agent.exception())}
    if name == "open":
        return await load.open(arg)
    if name == "reset":
        load.delays.clear()
        load.post_ms.clear()
        return None
    if name == "collect":
        return {"delays": list(load.delays), "post_ms": list(load.post_ms)}
    if name == "close":
        await load.close()
        return None
    raise ValueError(name)


def serve(
    conn: Connection, api_port: int, stream_port: int, keys: dict, calls: list, interval: float
) -> None:
    """The process's body: post as the agent from the start, obey the pipe until `stop`."""
    loop = asyncio.new_event_loop()
    load = StreamLoad(api_port, stream_port, keys, calls, interval)
    agent = loop.create_task(load.agent())

    def obey() -> None:
        while (message := conn.recv())[0] != "stop":
            future = asyncio.run_coroutine_threadsafe(_command(load, agent, *message), loop)
            conn.send(future.result())
        loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=obey, daemon=True).start()
    loop.run_forever()
    agent.cancel()
    loop.run_until_complete(asyncio.gather(agent, return_exceptions=True))
    conn.send(None)
