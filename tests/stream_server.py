"""The ASGI application under uvicorn, in a thread of the test process: the streams as
the streams service serves them, on the test database (tests using it need
`transaction=True`, so what they write is committed and visible to its threads)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import httpx
import uvicorn
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from streams import hub as hub_module
from voicecalls.asgi import application

T = TypeVar("T")


def _read_uncommitted(sender: object, connection: BaseDatabaseWrapper, **kwargs: object) -> None:
    # The SQLite test database lives in memory, shared between the threads' connections
    # (shared cache), where a reader is refused at once while another connection
    # writes instead of waiting as on a database file; reading uncommitted rows does
    # not change what the streams send (they read numbered rows, written whole).
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA read_uncommitted = 1")


@contextmanager
def asgi_server() -> Iterator[str]:
    """The base URL of uvicorn serving voicecalls.asgi on a loopback port."""
    connection_created.connect(_read_uncommitted, dispatch_uid="tests.stream_server")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        application,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        connection_created.disconnect(dispatch_uid="tests.stream_server")


def retry_locked(function: Callable[[], T]) -> T:
    """Run a query of the test's own thread (a write, or a read of a table the server
    writes), again while the in-memory SQLite database is locked by a server thread's
    write (shared cache: table locks, no busy wait)."""
    for attempt in range(20):
        try:
            return function()
        except OperationalError as exc:
            if "locked" not in str(exc) or attempt == 19:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def hub_heard_of_erasure(call_id: object, *, timeout: float = 10.0) -> None:
    """Wait until this process's hub has polled (or been told of) the call's erasure and
    dropped what it held of its words: a fixed sleep was too short on a loaded machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watch = hub_module._hub.watches.get(call_id) if hub_module._hub else None
        if watch is not None and watch.scrubbed and watch.scrubbed[0] and not watch.cache:
            return
        time.sleep(0.02)
    raise AssertionError(f"the hub did not hear of the erasure of call {call_id} in {timeout} s")


class EventReader:
    """Reads a text/event-stream response event by event (what EventSource does)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.iter_lines()

    def next(self) -> dict:
        """The next event or comment: {"id", "event", "data"} or {"comment"} or
        {"retry"}; StopIteration when the server closed."""
        event: dict = {}
        for line in self._lines:
            if line == "":
                if event:
                    return event
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                return {"comment": value}
            event[field] = value
        if event:
            return event
        raise StopIteration

    def events(self, count: int) -> list[dict]:
        """The next `count` events with an id (comments and `retry` skipped)."""
        found: list[dict] = []
        while len(found) < count:
            event = self.next()
            if "id" in event:
                found.append(event)
        return found

    def closed_within(self, seconds: float) -> bool:
        """True when the server closes the stream within `seconds` (heartbeats and
        events read meanwhile), False when it is still open then."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.next()
            except StopIteration:
                return True
        return False
