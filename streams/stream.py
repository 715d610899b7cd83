"""A call's stream as Server-Sent Events: what exists after the client's position, then
live events, a comment every heartbeat, and `end` once the call has ended and
everything was sent.

Two ways to serve it. Under ASGI (the streams service, `make run`): `live_stream`, an
async generator that waits for news without holding a thread or a database
connection. Under WSGI (the API's gunicorn, if a stream request reaches it):
`catch_up_stream` sends what exists and closes, asking the client to come back with
its Last-Event-ID (`retry`), so a sync worker is never held by a stream.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass

import orjson
from django.conf import settings
from django.utils import timezone

from calls.models import ENDED_STATUSES
from streams.hub import get_hub
from streams.selectors import PAGE_SIZE, StreamEvent, call_events_after

# Milliseconds a client waits before reconnecting (EventSource's `retry` field).
RETRY_MS = 2000
RETRY = b"retry: %d\n\n" % RETRY_MS
# Sent with `end`: an EventSource that does not close on it (a page left open) comes
# back after an hour, not every RETRY_MS for as long as the page stays open.
ENDED_RETRY = b"retry: %d\n\n" % 3_600_000
PING = b": ping\n\n"

# Live streams this process serves: each holds a thread (bench/README.md), so the view
# refuses more than STREAMS_PER_PROCESS. Moved by the event loop alone.
_live_count = 0


def live_stream_count() -> int:
    """The live streams this process serves now."""
    return _live_count


@dataclass
class StreamStart:
    """Where a stream starts: the call, the client's position, and the call's state
    when it connected (an ended call ends its stream once everything was sent)."""

    call_id: uuid.UUID
    after: int
    status: str
    end_reason: str | None
    ended_at: datetime.datetime | None


# What JSON leaves unescaped but `str.splitlines` (and so httpx's `iter_lines`, which
# README's Python example reads with) ends a line at: U+0085, U+2028, U+2029 in UTF-8,
# each written as its JSON escape instead (the same string once parsed).
_UNICODE_LINE_BREAKS = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)


def _sse(seq: int, type_: str, data: bytes) -> bytes:
    # Compact JSON escapes the control characters, CR and LF among them; the Unicode
    # line breaks are escaped here: one data line, whatever splits it.
    if not data.isascii():
        for raw, escaped in _UNICODE_LINE_BREAKS:
            data = data.replace(raw, escaped)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, type_.encode(), data)


class _Position:
    """What a stream has sent so far, and what it knows of the call's end."""

    def __init__(self, start: StreamStart) -> None:
        self.call_id = start.call_id
        self.seq = start.after
        self.status = start.status
        self.end_reason = start.end_reason
        self.ended_at = start.ended_at if start.status in ENDED_STATUSES else None

    def render(self, events: list[StreamEvent]) -> bytes:
        chunks = []
        for event in events:
            self.seq = event.seq
            if event.data is None:
                continue  # its row is gone (erased): skipped, never sent
            chunks.append(_sse(event.seq, event.type, event.data))
            if event.type == "status":
                change = orjson.loads(event.data)
                self.status, self.end_reason = change["to_status"], change["end_reason"]
                if self.status in ENDED_STATUSES and self.ended_at is None:
                    self.ended_at = timezone.now()
        return b"".join(chunks)

    def seconds_to_end(self) -> float | None:
        """None while the call runs; else how long to wait for late lines first."""
        if self.ended_at is None:
            return None
        grace = datetime.timedelta(seconds=settings.STREAMS_END_GRACE_SECONDS)
        return (self.ended_at + grace - timezone.now()).total_seconds()

    def end(self) -> bytes:
        data = orjson.dumps({"status": self.status, "end_reason": self.end_reason})
        return ENDED_RETRY + _sse(self.seq, "end", data)


def catch_up_stream(start: StreamStart) -> Iterator[bytes]:
    """WSGI: what exists after the client's position, `end` if the call is over, and
    the client reconnects after RETRY_MS for more."""
    position = _Position(start)
    yield RETRY
    while True:
        events = call_events_after(call_id=start.call_id, after=position.seq)
        chunk = position.render(events)
        if chunk:
            yield chunk
        if len(events) < PAGE_SIZE:
            break
    remaining = position.seconds_to_end()
    if remaining is not None and remaining <= 0:
        yield position.end()


async def live_stream(
    start: StreamStart, *, lease_id: uuid.UUID | None, session_key: str | None = None
) -> AsyncIterator[bytes]:
    """ASGI: what exists, then live events until the call has ended and everything was
    sent; closed early when the key is revoked, the staff login ends, or the client
    stops reading. Counted in `live_stream_count` while it runs."""
    global _live_count
    _live_count += 1
    try:
        async with aclosing(_live_events(start, lease_id, session_key)) as chunks:
            async for chunk in chunks:
                yield chunk
    finally:
        _live_count -= 1


async def _live_events(
    start: StreamStart, lease_id: uuid.UUID | None, session_key: str | None
) -> AsyncIterator[bytes]:
    hub = get_hub()
    subscription = await hub.subscribe(
        call_id=start.call_id, lease_id=lease_id, session_key=session_key
    )
    position = _Position(start)
    try:
        with subscription.sending():
            yield RETRY
        force = True  # the first read goes to the database whatever the hub knows
        while not subscription.closed:
            events = await hub.events_after(start.call_id, position.seq, force=force)
            # A full page: more may exist than the hub has heard of (a stream opened on
            # a long call), so the next page is read, not looked up.
            force = len(events) == PAGE_SIZE
            chunk = position.render(events)
            if chunk:
                with subscription.sending():
                    yield chunk
            if force:
                continue
            timeout = settings.STREAMS_HEARTBEAT_SECONDS
            remaining = position.seconds_to_end()
            if remaining is not None:
                if remaining <= 0:
                    # "Everything was sent" is the database's word, not what the hub
                    # heard (a poll or a NOTIFY behind): a last line may be there.
                    last = await hub.events_after(start.call_id, position.seq, force=True)
                    if last:
                        force = len(last) == PAGE_SIZE
                        chunk = position.render(last)
                        if chunk:
                            with subscription.sending():
                                yield chunk
                        continue
                    with subscription.sending():
                        yield position.end()
                    return
                timeout = min(timeout, remaining)
            if not await subscription.wait(timeout) and remaining is None:
                # A heartbeat too can be what a client that reads nothing blocks on.
                with subscription.sending():
                    yield PING
    finally:
        await hub.release(subscription)
