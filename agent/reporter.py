"""Agent events, batched to `POST /api/v1/agent/calls/{id}/events` off the audio loop.

Callers add events synchronously (`report`, never awaits); one background task sends
them in batches of at most 500 events (and well under the API's 1 MiB body limit),
about once a second. Every event carries a client-made uuid `id`, which is the API's
idempotency key: a batch that failed on the network or with a 5xx/429 is re-sent as it
was, and whatever the server had already stored counts as a duplicate, not twice.
`aclose()` flushes what is left within a deadline (the job's shutdown budget).

The events not yet sent are bounded (`max_pending_events`, `max_pending_bytes`): when
the API stays down that long, the reporter stops accepting new transcript lines,
metrics and handoffs, and logs an error saying how many it refused. What it already
holds (the oldest lines) is kept and delivered when the API is back; nothing goes to
disk, which would hold callers' words outside the API's erasure and retention. Status
events are always accepted: the call's end must reach the API.

Usage reports (`usage`: cumulative totals per provider and model) are held apart: only
the newest waits (a newer report replaces it, so they never fill the reporter), and it
goes in a POST of its own, so an API that refuses it (one that predates usage events
answers 400) can never cost a transcript line; after a refusal the call sends no more.
Each names the reporter's `session`: this run's totals count from zero, so a job
re-dispatched after its worker died adds to what the first run reported, not replaces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid

from agent.api import AgentAPI, AgentAPIError
from agent.events import event_new, json_safe

logger = logging.getLogger("voicecalls.agent.reporter")

MAX_BATCH_EVENTS = 500
# The API refuses bodies over 1 MiB; stay well below it.
MAX_BATCH_BYTES = 512 * 1024
# The API's limit for a transcript line's content.
MAX_CONTENT_CHARS = 65536
# About an hour of conversation; a worker runs many calls, so each stays small.
MAX_PENDING_EVENTS = 5_000
MAX_PENDING_BYTES = 8 * 1024 * 1024
FLUSH_INTERVAL = 1.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 10.0
# The longest a 429 or 503's Retry-After is followed; longer, the backoff's own cap.
RETRY_AFTER_CAP = 60.0
# While closing, the last retry starts this long before the close's deadline.
CLOSE_MARGIN = 0.5


class EventReporter:
    def __init__(
        self,
        api: AgentAPI,
        call_id: str,
        *,
        max_batch_events: int = MAX_BATCH_EVENTS,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        max_pending_events: int = MAX_PENDING_EVENTS,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        flush_interval: float = FLUSH_INTERVAL,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        self._api = api
        self.call_id = call_id
        self._max_events = max_batch_events
        self._max_bytes = max_batch_bytes
        self._max_pending_events = max_pending_events
        self._max_pending_bytes = max_pending_bytes
        self._interval = flush_interval
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        # (event, its size as JSON) not yet taken into a batch
        self._pending: list[tuple[dict, int]] = []
        self._pending_bytes = 0
        # The newest usage report not yet sent (each one holds this run's totals so far).
        self._usage: dict | None = None
        self.session = uuid.uuid4().hex
        self._usage_refused = False
        self._in_flight = False
        self._urgent = False
        # When aclose must be done (loop time), once it was called.
        self._close_by: float | None = None
        self._close_started = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None
        # What happened, for logs and tests.
        self.accepted = 0
        self.duplicates = 0
        self.attempts = 0
        # Events the API refused, by id and type only: their words are not kept (the
        # reporter holds a caller's words only until the API has them).
        self.dropped: list[dict] = []
        # Events refused while full, and whether the last one offered was.
        self.refused = 0
        self._refusing = False

    # -- adding events (synchronous: safe from any session callback) --------------------

    def report(
        self, event_type: str, *, timestamp: float | None = None, **fields: object
    ) -> dict | None:
        """Queue an event; None when the reporter is full and refused it (logged)."""
        event = event_new(event_type, timestamp, fields)
        size = len(json.dumps(event, separators=(",", ":"), default=str).encode())
        if event_type != "status" and self._full(size):
            return None
        self._pending.append((event, size))
        self._pending_bytes += size
        self._idle.clear()
        self._wakeup.set()
        return event

    def _full(self, size: int) -> bool:
        full = (
            len(self._pending) >= self._max_pending_events
            or self._pending_bytes + size > self._max_pending_bytes
        )
        if full:
            self.refused += 1
            if not self._refusing:
                logger.error(
                    "call %s: %d event(s) wait for the API, the most this worker holds; "
                    "refusing new events until it takes some (%d refused so far)",
                    self.call_id,
                    len(self._pending),
                    self.refused,
                )
        elif self._refusing:
            logger.error(
                "call %s: accepting events again; %d refused in all", self.call_id, self.refused
            )
        self._refusing = full
        return full

    def transcript(
        self,
        *,
        role: str,
        content: str,
        agent_name: str | None,
        tool_call: dict | None = None,
        interrupted: bool | None = None,
        timestamp: float | None = None,
    ) -> dict | None:
        return self.report(
            "transcript",
            timestamp=timestamp,
            role=role,
            content=content[:MAX_CONTENT_CHARS],
            agent_name=agent_name,
            tool_call=tool_call,
            interrupted=interrupted,
        )

    def handoff(
        self, *, from_agent: str, to_agent: str, timestamp: float | None = None
    ) -> dict | None:
        return self.report(
            "agent_handoff", timestamp=timestamp, from_agent=from_agent, to_agent=to_agent
        )

    def metrics(self, *, timestamp: float | None = None, **values: object) -> dict | None:
        measured = [f"{c}_latency_ms" for c in ("stt", "llm", "tts", "e2e", "eou")]
        values = {name: json_safe(value) for name, value in values.items()}
        if all(values.get(name) is None for name in (*measured, "tokens")):
            return None  # the API wants at least one measurement per sample
        return self.report("metrics", timestamp=timestamp, **values)

    def usage(self, items: list[dict], *, timestamp: float | None = None) -> dict | None:
        """Report the call's usage so far; it replaces a report still waiting. None once
        the API has refused one (it would refuse the next the same way)."""
        if self._usage_refused:
            return None
        self._usage = event_new("usage", timestamp, {"usage": items, "session": self.session})
        self._idle.clear()
        self._wakeup.set()
        return self._usage

    def status(self, status: str, *, reason: str | None = None) -> dict:
        event = self.report("status", status=status, reason=reason)
        assert event is not None  # status events are never refused
        return event

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="voicecalls-event-reporter")

    @property
    def pending(self) -> int:
        return len(self._pending) + (self._usage is not None)

    async def flush(self) -> None:
        """Send everything reported so far now (no batching delay); wait until done."""
        self.start()
        self._urgent = True
        self._wakeup.set()
        await self._idle.wait()

    async def aclose(self, timeout: float = 8.0) -> None:
        """Flush within `timeout` seconds, then stop. Events still unsent are logged."""
        self._close_by = asyncio.get_running_loop().time() + timeout
        self._close_started.set()
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            logger.error(
                "call %s: %d event(s) could not be delivered before shutdown",
                self.call_id,
                self.pending + (1 if self._in_flight else 0),
            )
        if self.refused:
            logger.error("call %s: %d event(s) were refused while full", self.call_id, self.refused)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._api.aclose()

    # -- the sending task ----------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending and self._usage is None:
                self._urgent = False
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = loop.time() + self._interval
            while not self._batch_ready():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
            self._in_flight = True
            try:
                if self._pending:
                    await self._send(self._take_batch())
                if self._usage is not None:
                    await self._send_usage()
            finally:
                self._in_flight = False

    async def _send_usage(self) -> None:
        event, self._usage = self._usage, None
        assert event is not None
        dropped = len(self.dropped)
        await self._send([event])
        if len(self.dropped) > dropped:
            self._usage_refused = True
            self._usage = None
            logger.error("call %s: the API refused a usage report: no more are sent", self.call_id)

    def _batch_ready(self) -> bool:
        return (
            self._urgent
            or len(self._pending) >= self._max_events
            or self._pending_bytes >= self._max_bytes
        )

    def _take_batch(self) -> list[dict]:
        batch: list[dict] = []
        size = 0
        while self._pending and len(batch) < self._max_events:
            event, event_size = self._pending[0]
            if batch and size + event_size > self._max_bytes:
                break
            self._pending.pop(0)
            self._pending_bytes -= event_size
            batch.append(event)
            size += event_size
        return batch

    def _closing_delay(self, delay: float, last_try: bool) -> tuple[float, bool]:
        """While closing, the wait before the next try: within the close's budget, then
        one last try at once (the call's end is in it), then past the budget (the close
        cancels the task): never a storm of tries at an API shedding load."""
        if self._close_by is None:
            return delay, last_try
        now = asyncio.get_running_loop().time()
        left = self._close_by - now - CLOSE_MARGIN
        if left > 0:
            return min(delay, left), last_try
        if not last_try:
            return 0.0, True
        return self._close_by - now + CLOSE_MARGIN, True

    async def _retry_wait(self, delay: float) -> None:
        """Wait `delay`; a wait begun before the close ends when it starts, so the
        close's budget still holds a last try."""
        if self._close_by is not None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._close_started.wait(), delay)

    async def _send(self, batch: list[dict]) -> None:
        failures = 0
        last_try = False
        while batch:
            self.attempts += 1
            try:
                result = await self._api.post_events(self.call_id, batch)
            except AgentAPIError as exc:
                invalid = exc.item_index("events", len(batch))
                if invalid is not None:
                    # One bad event would sink the whole (all-or-nothing) batch.
                    self._drop_refused(batch.pop(invalid), exc)
                    continue
                if exc.status_code == 413 and len(batch) > 1:
                    half = len(batch) // 2
                    self._requeue_front(batch[half:])
                    del batch[half:]
                    continue
                if not exc.retryable:
                    self.dropped.extend(_trace(event) for event in batch)
                    logger.error(
                        "call %s: dropped %d event(s): %s %s",
                        self.call_id,
                        len(batch),
                        exc,
                        exc.codes,
                    )
                    return
                # (The exponent is bounded: 2**1024 is no float, after a long outage.)
                delay = min(self._backoff_cap, self._backoff_base * 2 ** min(failures, 32))
                delay *= random.uniform(0.5, 1.0)
                # An API shedding load says when to come back: no sooner, unless closing.
                delay = max(delay, min(exc.retry_after or 0.0, RETRY_AFTER_CAP))
                delay, last_try = self._closing_delay(delay, last_try)
                failures += 1
                logger.warning(
                    "call %s: sending %d event(s) failed (%s); retrying in %.1fs",
                    self.call_id,
                    len(batch),
                    exc,
                    delay,
                )
                await self._retry_wait(delay)
                continue
            except Exception:
                # A bug of ours, not the API's answer: this batch is lost, never the
                # reporter (its task would die, and every later event with it).
                self.dropped.extend(_trace(event) for event in batch)
                logger.exception("call %s: dropped %d event(s)", self.call_id, len(batch))
                return
            if isinstance(result, dict):  # a proxy's 200 may carry anything
                self.accepted += _count(result.get("accepted"))
                self.duplicates += _count(result.get("duplicates"))
            return

    def _drop_refused(self, event: dict, exc: AgentAPIError) -> None:
        self.dropped.append(_trace(event))
        # Ids, codes and fields only: the event's content (and an error detail quoting
        # a value) is the caller's words, kept out of logs.
        logger.error(
            "call %s: API refused %s event %s: %s",
            self.call_id,
            event["type"],
            event["id"],
            exc.codes,
        )

    def _requeue_front(self, events: list[dict]) -> None:
        entries = [(e, len(json.dumps(e, separators=(",", ":")).encode())) for e in events]
        self._pending[:0] = entries
        self._pending_bytes += sum(size for _, size in entries)


def _count(value: object) -> int:
    return value if isinstance(value, int) else 0


def _trace(event: dict) -> dict:
    """What is kept of an event the API refused: which one it was, not what it said."""
    return {"id": event["id"], "type": event["type"]}
