"""The generator's HTTP side: every request timed and recorded (endpoint, status, when),
5xx and dropped connections retried until they succeed or a deadline passes; and the
bounded loop that keeps N calls in flight for M minutes."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

RETRY_FOR_SECONDS = 120.0


@dataclass
class Request:
    t: float  # seconds since the run started
    endpoint: str
    status: int  # 0: no answer (connection refused or cut, timeout)
    ms: float


@dataclass
class Record:
    """The generator's own record of the run."""

    started: float = field(default_factory=time.time)
    traffic_seconds: float = 0.0
    requests: list[Request] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)
    unretried: list[dict] = field(default_factory=list)  # 5xx never followed by success
    unexpected: list[dict] = field(default_factory=list)  # hostile requests answered wrong
    stream_tasks: set[asyncio.Task] = field(default_factory=set)
    streams: dict[str, int] = field(default_factory=lambda: {"opened": 0, "ended": 0, "events": 0})

    def now(self) -> float:
        return time.time() - self.started


class Http:
    def __init__(self, session: aiohttp.ClientSession, record: Record) -> None:
        self.session, self.record = session, record

    async def once(
        self, method: str, url: str, endpoint: str, **kwargs: object
    ) -> tuple[int, object]:
        """One request: (status, parsed JSON body or raw text); status 0 when no answer."""
        started = time.monotonic()
        t = self.record.now()
        try:
            async with self.session.request(method, url, **kwargs) as response:
                raw = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError, ConnectionError):
            status, raw = 0, b""
        self.record.requests.append(
            Request(t, endpoint, status, (time.monotonic() - started) * 1000)
        )
        try:
            body: object = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        return status, body

    async def call(
        self,
        method: str,
        url: str,
        endpoint: str,
        *,
        ok: Callable[[int], bool],
        in_flight: bool = False,
        **kwargs: object,
    ) -> tuple[int, object]:
        """Retry 5xx and no answer until `ok`; with `in_flight`, 409 as well (the same
        Idempotency-Key still in flight)."""
        deadline = time.monotonic() + RETRY_FOR_SECONDS
        wait = 0.2
        failures: list[tuple[float, int]] = []
        while True:
            status, body = await self.once(method, url, endpoint, **kwargs)
            retry = status >= 500 or status == 0 or (in_flight and status == 409)
            if ok(status) or not retry:
                return status, body
            failures.append((self.record.now(), status))
            if time.monotonic() > deadline:
                self.record.unretried.append(
                    {"endpoint": endpoint, "url": url, "failures": failures}
                )
                return status, body
            await asyncio.sleep(wait)
            wait = min(wait * 2, 5.0)


async def keep_in_flight(
    *,
    concurrency: int,
    seconds: float,
    start_call: Callable[[int], Awaitable[None]],
    stop: asyncio.Event,
) -> int:
    """Keep `concurrency` calls going until `seconds` passed (or `stop`), starting the
    slots a little apart; returns how many calls were started."""
    deadline = time.monotonic() + seconds
    started = 0

    async def slot(index: int) -> None:
        nonlocal started
        await asyncio.sleep(random.Random(index).random() * min(10.0, seconds / 4))
        while time.monotonic() < deadline and not stop.is_set():
            number = started
            started += 1
            await start_call(number)

    await asyncio.gather(*(slot(index) for index in range(concurrency)))
    return started
