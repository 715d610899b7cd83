"""The streams of one process: who watches which call, what wakes them, and the beat
that renews their leases.

One hub per event loop (per ASGI worker process). On PostgreSQL it holds the one
LISTEN connection of the process (psycopg's async connection, autocommit, to
`DATABASE_LISTEN_URL` or the database itself) and LISTENs on the channel of each call
somebody watches; a NOTIFY wakes that call's streams, which read the new rows through
Django's ORM and give the connection back at once. On SQLite one poller reads the
counters of the watched calls. On PostgreSQL the same poll runs at every heartbeat as
a safety net (a notification lost while the LISTEN connection was down).

The streams of one call share their reads: the hub keeps the call's newest rendered
events, so a hundred watchers of one call cost one read per change, not a hundred.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection, connections

from calls.models import Call
from streams import services
from streams.feed import SCRUBBED, channel_name
from streams.selectors import PAGE_SIZE, StreamEvent, call_events_after

logger = logging.getLogger(__name__)

# Rendered events kept per watched call: enough for every watcher near the head.
_CACHE_EVENTS = 4 * PAGE_SIZE
# The LISTEN loop looks for new channels to listen on this often.
_LISTEN_TICK_SECONDS = 0.1
_RECONNECT_SECONDS = 1.0
# Closing a lease is retried a little (a busy database) before it is left to expire.
_LEASE_CLOSE_ATTEMPTS = 3


async def in_db_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ORM code in a worker thread and close its connection afterwards: an idle
    stream holds no database connection."""

    def run() -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return await sync_to_async(run, thread_sensitive=False)()


class Subscription:
    """One open stream, as the hub sees it."""

    def __init__(
        self, call_id: uuid.UUID, lease_id: uuid.UUID | None, session_key: str | None = None
    ) -> None:
        self.call_id = call_id
        self.lease_id = lease_id
        # A staff stream (the admin's call page) lives as long as its login session.
        self.session_key = session_key
        self.closed = False
        # The task serving the response: cancelled when its client stops reading.
        self.task = asyncio.current_task()
        self.sending_since: float | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    @contextmanager
    def sending(self) -> Iterator[None]:
        """Around each send: the beat disconnects a client stuck in one too long."""
        self.sending_since = asyncio.get_running_loop().time()
        try:
            yield
        finally:
            self.sending_since = None

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def wait(self, timeout: float) -> bool:
        """True when woken (news, or closed), False after `timeout` seconds of quiet."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            return False
        self._wake.clear()
        return True


@dataclass
class _Watch:
    """A call somebody in this process watches."""

    subscriptions: set[Subscription] = field(default_factory=set)
    latest: int = 0  # the highest number known to exist
    cache: dict[int, StreamEvent] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    listening: asyncio.Event = field(default_factory=asyncio.Event)
    # The call's erasure and transcript expiry times as last polled (None: not yet).
    scrubbed: tuple | None = None


class Hub:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.watches: dict[uuid.UUID, _Watch] = {}
        self.postgres = connections["default"].vendor == "postgresql"
        self._tasks: list[asyncio.Task] = []

    def _start(self) -> None:
        if self._tasks:
            return
        loops: list[Callable[[], Awaitable[None]]] = [self._poll_forever, self._beat_forever]
        if self.postgres:
            loops.append(self._listen_forever)
        # A context of their own: not the first stream's (its request id, its DB state).
        self._tasks = [self.loop.create_task(run(), context=contextvars.Context()) for run in loops]

    @property
    def subscriptions(self) -> list[Subscription]:
        return [s for watch in self.watches.values() for s in watch.subscriptions]

    async def subscribe(
        self, *, call_id: uuid.UUID, lease_id: uuid.UUID | None, session_key: str | None = None
    ) -> Subscription:
        """Watch `call_id`; returns once news of it will wake the subscription (its
        channel is listened on), so a read made afterwards misses nothing."""
        self._start()
        subscription = Subscription(call_id, lease_id, session_key)
        watch = self.watches.setdefault(call_id, _Watch())
        watch.subscriptions.add(subscription)
        try:
            if lease_id is not None:
                await self._adopt(subscription)
            if self.postgres:
                await self._listening(watch, call_id)
        except asyncio.CancelledError:
            # The client left meanwhile: no stream will release it, the beat would
            # renew its lease for ever.
            self.loop.create_task(self.release(subscription))
            raise
        return subscription

    async def _adopt(self, subscription: Subscription) -> None:
        """Renew the lease the view opened, which counts for a few seconds only until
        its stream starts (services.stream_lease_open)."""
        try:
            lease_ids = [subscription.lease_id]
            gone = await in_db_thread(services.stream_leases_renew, lease_ids=lease_ids)
        except DatabaseError:
            logger.warning(
                "stream of call %s: its lease is renewed at the next beat", subscription.call_id
            )
            return
        if gone:
            subscription.close()  # its key was revoked meanwhile, or its lease ran out

    async def _listening(self, watch: _Watch, call_id: uuid.UUID) -> None:
        try:
            await asyncio.wait_for(watch.listening.wait(), settings.STREAMS_HEARTBEAT_SECONDS)
        except TimeoutError:
            # The LISTEN connection is down: the heartbeat poll still wakes it.
            logger.warning("stream of call %s opened without LISTEN", call_id)

    async def release(self, subscription: Subscription) -> None:
        """Forget a stream and close its lease (once, whoever asks first: the stream
        ending, or the beat cutting off a client that reads nothing)."""
        watch = self.watches.get(subscription.call_id)
        if watch is not None:
            watch.subscriptions.discard(subscription)
            if not watch.subscriptions:
                del self.watches[subscription.call_id]  # the LISTEN loop unlistens
        lease_id, subscription.lease_id = subscription.lease_id, None
        if lease_id is None:
            return
        for attempt in range(_LEASE_CLOSE_ATTEMPTS):
            try:
                await in_db_thread(services.stream_lease_close, lease_id=lease_id)
                return
            except DatabaseError:
                await asyncio.sleep(0.1 * (attempt + 1))
        # Not renewed any more, it stops counting after STREAMS_LEASE_SECONDS.
        logger.warning("could not close the lease of a stream of call %s", subscription.call_id)

    async def events_after(self, call_id: uuid.UUID, position: int, *, force: bool) -> list:
        """The call's events after `position` (a page at most): from the shared cache
        when every one is there, else one read for every watcher. Without `force`,
        nothing is read unless something newer than `position` is known to exist."""
        watch = self.watches[call_id]
        async with watch.lock:
            if not force and watch.latest <= position:
                return []
            wanted = range(position + 1, min(watch.latest, position + PAGE_SIZE) + 1)
            if not force and all(seq in watch.cache for seq in wanted):
                return [watch.cache[seq] for seq in wanted]
            events = await in_db_thread(call_events_after, call_id=call_id, after=position)
            for event in events:
                watch.cache[event.seq] = event
            if events and events[-1].seq > watch.latest:
                # News the hub had not heard: the call's other streams wait for it
                # (its poll or NOTIFY, when it comes, is then no longer news).
                watch.latest = events[-1].seq
                for subscription in watch.subscriptions:
                    subscription.wake()
            for seq in sorted(watch.cache)[:-_CACHE_EVENTS]:
                del watch.cache[seq]
            return events

    def _scrubbed(self, call_id: uuid.UUID) -> None:
        """The call's words were erased or deleted: what the cache holds of them goes
        (under the lock, so a read that began before the erasure cannot refill it)."""
        watch = self.watches.get(call_id)
        if watch is not None:
            self.loop.create_task(_cache_drop(watch))

    def _news(self, call_id: uuid.UUID, seq: int) -> None:
        watch = self.watches.get(call_id)
        if watch is None or seq <= watch.latest:
            return
        watch.latest = seq
        for subscription in watch.subscriptions:
            subscription.wake()

    # --- what wakes the streams ---------------------------------------------------------

    async def _poll_forever(self) -> None:
        interval = (
            settings.STREAMS_HEARTBEAT_SECONDS if self.postgres else settings.STREAMS_POLL_SECONDS
        )
        while True:
            await asyncio.sleep(interval)
            if not self.watches:
                continue
            try:
                counters = await in_db_thread(_stream_counters, list(self.watches))
            except Exception:
                logger.exception("polling the streams' calls failed")
                continue
            for call_id, seq, *scrubbed in counters:
                watch = self.watches.get(call_id)
                if watch is not None and watch.scrubbed != tuple(scrubbed):
                    watch.scrubbed = tuple(scrubbed)
                    self._scrubbed(call_id)  # (the first poll too: an erasure may precede it)
                self._news(call_id, seq)

    async def _listen_forever(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    **_listen_params(), autocommit=True
                ) as conn:
                    await self._listen(conn)
            except (psycopg.Error, OSError):
                logger.exception("the streams' LISTEN connection failed; reconnecting")
            for watch in self.watches.values():
                watch.listening.clear()
                for subscription in watch.subscriptions:
                    subscription.wake()  # re-read: news may have been missed meanwhile
            await asyncio.sleep(_RECONNECT_SECONDS)

    async def _listen(self, conn: psycopg.AsyncConnection) -> None:
        listening: dict[str, uuid.UUID] = {}
        while True:
            wanted = {channel_name(call_id): call_id for call_id in self.watches}
            for channel in listening.keys() - wanted.keys():
                await conn.execute(f'UNLISTEN "{channel}"')
                del listening[channel]
            for channel, call_id in wanted.items():
                if channel not in listening:
                    await conn.execute(f'LISTEN "{channel}"')
                    listening[channel] = call_id
                watch = self.watches.get(call_id)
                if watch is not None:
                    watch.listening.set()
            async for notify in conn.notifies(timeout=_LISTEN_TICK_SECONDS):
                call_id = listening.get(notify.channel)
                if call_id is not None and notify.payload.isdigit():
                    self._news(call_id, int(notify.payload))
                elif call_id is not None and notify.payload == SCRUBBED:
                    self._scrubbed(call_id)

    # --- the beat: leases, revoked keys, clients that read nothing ---------------------

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(settings.STREAMS_HEARTBEAT_SECONDS)
            self._cancel_stalled()
            for check in (self._renew_leases, self._check_sessions):
                try:
                    await check()
                except Exception:
                    logger.exception("the streams' beat failed (%s)", check.__name__)

    async def _renew_leases(self) -> None:
        """Keep the API streams' leases; close the streams whose key was revoked."""
        leased = {s.lease_id: s for s in self.subscriptions if s.lease_id is not None}
        if leased:
            gone = await in_db_thread(services.stream_leases_renew, lease_ids=list(leased))
            for lease_id in gone:
                leased[lease_id].close()

    async def _check_sessions(self) -> None:
        """Close the staff streams whose login ended (logged out, expired, no more staff)."""
        staff = [s for s in self.subscriptions if s.session_key is not None]
        if staff:
            keys = {s.session_key for s in staff}
            ended = await in_db_thread(services.staff_sessions_ended, session_keys=keys)
            for subscription in staff:
                if subscription.session_key in ended:
                    subscription.close()

    def _cancel_stalled(self) -> None:
        """Disconnect the clients that read nothing for `STREAMS_SEND_TIMEOUT_SECONDS`:
        their response is stuck in a send (socket buffers full), holding a page."""
        now = self.loop.time()
        for subscription in self.subscriptions:
            since = subscription.sending_since
            if since is not None and now - since > settings.STREAMS_SEND_TIMEOUT_SECONDS:
                logger.info("stream of call %s: the client reads nothing", subscription.call_id)
                subscription.close()
                # The response is stuck in the server's send, not in the stream: cancel
                # it there, and release the stream here (the stream's own cleanup only
                # runs when its generator is collected).
                if subscription.task is not None:
                    subscription.task.cancel()
                self.loop.create_task(self.release(subscription))


def _stream_counters(call_ids: list[uuid.UUID]) -> list[tuple]:
    calls = Call.objects.filter(pk__in=call_ids)
    return list(calls.values_list("pk", "stream_seq", "erased_at", "transcript_expired_at"))


async def _cache_drop(watch: _Watch) -> None:
    async with watch.lock:
        watch.cache.clear()


def _listen_params() -> dict[str, Any]:
    """Where to LISTEN: `DATABASE_LISTEN_URL`, else the database Django uses."""
    config = settings.DATABASE_LISTEN or connections["default"].settings_dict
    # The URL's query (`?host=/socket/dir&sslmode=...`) lands in OPTIONS: every libpq
    # parameter there counts (Django's own, such as prepare_threshold, are not libpq's).
    params = {
        key: value for key, value in (config.get("OPTIONS") or {}).items() if key in _LIBPQ_KEYWORDS
    }
    params.update(
        dbname=config["NAME"],
        user=config.get("USER"),
        password=config.get("PASSWORD"),
        host=config.get("HOST") or params.get("host"),
        port=config.get("PORT") or params.get("port"),
    )
    return {key: value for key, value in params.items() if value not in (None, "")}


_LIBPQ_KEYWORDS = frozenset(
    option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults()
)


_hub: Hub | None = None


def get_hub() -> Hub:
    """This event loop's hub (a process serves its streams from one loop)."""
    global _hub
    loop = asyncio.get_running_loop()
    if _hub is None or _hub.loop is not loop:
        _hub = Hub(loop)
    return _hub
