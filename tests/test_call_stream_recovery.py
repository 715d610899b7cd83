"""A live stream misses nothing and leaks nothing in the harder cases: a call with more
than a page of events, a resume id the call never gave, erased words the process still
holds, a client that leaves while its stream subscribes."""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import threading
import time
import types

import httpx
import pytest
from django.utils import timezone

from accounts.models import APIKey
from accounts.services import api_key_create
from calls.lifecycle import call_transition
from calls.models import CallStatus
from privacy.erasure import erasure_create, erasure_run
from streams import hub as hub_module
from streams import views as streams_views
from streams.hub import Hub, in_db_thread
from streams.models import StreamLease
from tests import stream_server as stream_server_module
from tests.factories import CallFactory
from tests.stream_server import EventReader, asgi_server, hub_heard_of_erasure, retry_locked
from tests.test_agent_events_api import transcript

S = CallStatus
live = pytest.mark.django_db(transaction=True)


def record(agent_api, call, *events: dict) -> None:
    url = f"/api/v1/agent/calls/{call.pk}/events"
    response = retry_locked(lambda: agent_api.post(url, {"events": list(events)}))
    assert response.status_code == 200, response.content


def open_stream(server: str, key: str, call_id: object, **headers: str):
    return httpx.stream(
        "GET",
        f"{server}/api/v1/calls/{call_id}/stream",
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=httpx.Timeout(10, read=5),
    )


def read_all(response: httpx.Response, reader: EventReader | None = None) -> list[dict]:
    """The events until the server closes (or a read times out), from `reader` if one
    reads the response already."""
    reader, events = reader or EventReader(response), []
    while True:
        try:
            event = reader.next()
        except (StopIteration, httpx.ReadTimeout):
            return events
        if "id" in event:
            events.append(event)


def stream_request_sent(
    server: str, key: str, call_id: object, *, receive_buffer: int | None = None
) -> socket.socket:
    """A client's socket with its stream request sent, to leave at a chosen moment
    (with a small `receive_buffer`: a client that reads nothing fills it soon)."""
    host, port = server.removeprefix("http://").split(":")
    client = socket.socket()
    if receive_buffer is not None:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    client.connect((host, int(port)))
    client.sendall(
        f"GET /api/v1/calls/{call_id}/stream HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {key}\r\n\r\n".encode()
    )
    return client


@pytest.fixture
def call(workflow):
    return CallFactory(organization=workflow.organization, workflow=workflow, active=True)


@pytest.fixture
def server(stream_server: str) -> str:
    return stream_server


@live
def test_an_ended_calls_live_stream_sends_every_page_before_end(
    server, client_key, agent_api, call, settings
):
    """It ended the stream after the first page (100 events): the hub had not heard of
    the rest."""
    settings.STREAMS_END_GRACE_SECONDS = 0
    record(agent_api, call, *[transcript(i) for i in range(150)])
    retry_locked(
        lambda: call_transition(call_id=call.pk, to_status=S.COMPLETED, end_reason="user_hangup")
    )

    with open_stream(server, client_key, call.pk) as response:
        assert response.status_code == 200
        events = read_all(response)

    kinds = [event["event"] for event in events]
    assert kinds.count("transcript") == 150, (len(events), events[-1])
    assert kinds[-2:] == ["status", "end"]
    assert [int(event["id"]) for event in events] == [*range(1, 152), 151]


@live
def test_erased_words_are_not_streamed_again_from_what_the_process_holds(
    server, client_key, agent_api, call, organization
):
    """A watcher keeps the call's events in the hub's cache; once the erasure is heard
    of (a NOTIFY at its commit; SQLite: the poll), a second stream of the call (a
    reconnect, another tab) gets `[erased]` on every page, never the words."""
    record(agent_api, call, *[transcript(i, content=f"secret {i}") for i in range(150)])
    with open_stream(server, client_key, call.pk) as first:
        # The reader is kept: a reader collected closes its response, and the stream.
        first_reader = EventReader(first)
        assert len(first_reader.events(150)) == 150  # now in the hub's cache
        key = APIKey.objects.filter(prefix=client_key.partition(".")[0]).get()
        erasure = retry_locked(
            lambda: erasure_create(organization=organization, user_id=call.user_id, api_key=key)
        )
        retry_locked(lambda: erasure_run(erasure_id=erasure.pk))
        hub_heard_of_erasure(call.pk)  # a NOTIFY, or a poll (every 0.05 s) on SQLite

        with open_stream(server, client_key, call.pk) as second:
            events = EventReader(second).events(150)
        assert first_reader.next() == {"comment": "ping"}  # the first stream was open all along

    contents = {json.loads(event["data"])["content"] for event in events}
    assert contents == {"[erased]"}


@live
def test_the_hub_forgets_the_words_it_holds_once_the_call_is_erased(
    agent_api, call, organization, settings
):
    """A stream behind the head is served from the hub's cache when woken; after an
    erasure that cache must not hold the words (a NOTIFY at the erasure's commit;
    SQLite: the poll)."""
    settings.STREAMS_POLL_SECONDS = 0.05
    record(agent_api, call, *[transcript(i, content=f"secret {i}") for i in range(3)])
    key, _ = api_key_create(name="privacy-bot", organization=organization)

    async def served_after_the_erasure() -> list[str]:
        hub = Hub(asyncio.get_running_loop())
        subscription = await hub.subscribe(call_id=call.pk, lease_id=None)
        try:
            assert len(await hub.events_after(call.pk, 0, force=True)) == 3  # now held
            erasure = await in_db_thread(
                erasure_create, organization=organization, user_id=call.user_id, api_key=key
            )
            await in_db_thread(erasure_run, erasure_id=erasure.pk)
            watch = hub.watches[call.pk]
            for _ in range(500):  # up to 10 s (a loaded machine): a NOTIFY, or a poll
                if watch.scrubbed and watch.scrubbed[0] and not watch.cache:
                    break
                await asyncio.sleep(0.02)
            events = await hub.events_after(call.pk, 0, force=False)
        finally:
            await hub.release(subscription)
            for task in hub._tasks:
                task.cancel()
        return [json.loads(event.data)["content"] for event in events]

    # A loop of its own, on a thread of its own: the test's thread may run one already
    # (the browser tests' Playwright, in the same worker).
    served: list[list[str]] = []
    thread = threading.Thread(target=lambda: served.append(asyncio.run(served_after_the_erasure())))
    thread.start()
    thread.join(30)
    assert served == [["[erased]"] * 3]


def test_a_last_event_id_the_call_never_gave_is_400_not_a_stream_of_nothing(api, agent_api, call):
    """Resuming after it would hide the call's next events (an id of another call)."""
    record(agent_api, call, transcript(0), transcript(1))
    url = f"/api/v1/calls/{call.pk}/stream"

    beyond = api.get(url, headers={"Last-Event-ID": "3"})
    last = api.get(url, headers={"Last-Event-ID": "2"})

    assert beyond.status_code == 400
    assert beyond.json()["errors"] == [
        {
            "code": "unknown_event_id",
            "detail": "No event of this call has this id yet.",
            "attr": "Last-Event-ID",
        }
    ]
    assert last.status_code == 200


@pytest.mark.postgres
@live
def test_a_client_gone_while_its_stream_subscribes_leaves_no_lease_renewed_for_ever(
    client_key, call, settings
):
    """With the LISTEN connection down a stream waits a heartbeat to subscribe; a client
    leaving then left a subscription whose lease every beat renewed."""
    settings.STREAMS_HEARTBEAT_SECONDS = 1.5
    default = settings.DATABASES["default"]
    settings.DATABASE_LISTEN = {
        **default,
        "NAME": "no_such_database",
        "OPTIONS": {**default.get("OPTIONS", {})},
    }
    with asgi_server() as server:
        client = stream_request_sent(server, client_key, call.pk)
        client.settimeout(5)
        assert client.recv(100).startswith(b"HTTP/1.1 200")  # subscribing now
        client.close()
        time.sleep(5 * 1.5)  # the subscribing is long over: five beats

        leases = list(StreamLease.objects.values_list("opened_at", "renewed_at"))

    assert leases == [], [(renewed - opened).total_seconds() for opened, renewed in leases]


@live
def test_a_client_gone_while_its_stream_waits_for_an_opening_frees_its_place_at_once(
    client_key, call, settings
):
    """A burst fills the openings; a client that leaves while waiting still had a lease
    opened for it by the view, which no stream ever started to release: it held one
    place of the organization's cap for STREAMS_LEASE_SECONDS."""
    settings.STREAMS_PER_ORGANIZATION = 1
    settings.STREAMS_LEASE_ADOPT_SECONDS = 1.0
    openings = [streams_views._OPENINGS.acquire() for _ in range(8)]  # a burst holds all
    assert all(openings)
    with asgi_server() as server:
        client = stream_request_sent(server, client_key, call.pk)
        time.sleep(0.5)  # waiting for an opening
        client.close()
        time.sleep(0.5)
        for _ in openings:
            streams_views._OPENINGS.release()
        deadline = time.monotonic() + 5
        while not (opened := retry_locked(StreamLease.objects.exists)):
            assert time.monotonic() < deadline
            time.sleep(0.05)  # the view goes on without its client, and opens a lease
        time.sleep(1.5)

        with open_stream(server, client_key, call.pk) as response:
            status = response.status_code

    assert (opened, status) == (True, 200)


@live
def test_a_started_stream_keeps_its_place_beyond_the_seconds_an_unstarted_one_has(
    client_key, call, settings
):
    settings.STREAMS_PER_ORGANIZATION = 1
    settings.STREAMS_LEASE_ADOPT_SECONDS = 0.5
    with asgi_server() as server, open_stream(server, client_key, call.pk) as first:
        reader = EventReader(first)  # kept: collecting it would close the response
        assert reader.next() == {"retry": "2000"}  # subscribed
        time.sleep(1.5)  # no beat yet (every 15 s): the start renewed the lease

        with open_stream(server, client_key, call.pk) as second:
            status = second.status_code

    assert status == 429


@live
def test_a_head_request_is_405_and_holds_no_place_of_the_organizations_streams(
    server, client_key, call, settings
):
    """Django answered HEAD with GET's response: a live stream nobody read, renewing its
    lease while the connection stayed open."""
    settings.STREAMS_PER_ORGANIZATION = 1
    settings.STREAMS_LEASE_ADOPT_SECONDS = 0.5  # an unstarted stream's lease: gone by then
    headers = {"Authorization": f"Bearer {client_key}"}
    with httpx.Client(timeout=httpx.Timeout(10, read=5)) as client:
        head = client.head(f"{server}/api/v1/calls/{call.pk}/stream", headers=headers)
        time.sleep(2)  # four heartbeats
        with open_stream(server, client_key, call.pk) as response:
            status = response.status_code

    assert (head.status_code, status) == (405, 200)


def _small_send_buffer_socket() -> socket.socket:
    """The server's connections inherit a small kernel send buffer (loopback grows it
    to megabytes, which a test would have to fill)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return sock


@live
def test_a_client_that_reads_nothing_is_cut_off_when_a_heartbeat_is_what_blocks(
    client_key, agent_api, call, settings, monkeypatch
):
    """A page under the transport's buffer is handed over at once; the next send, a
    heartbeat, waits for a drain that never comes, and only pages were timed."""
    settings.STREAMS_HEARTBEAT_SECONDS = 0.5
    settings.STREAMS_POLL_SECONDS = 0.05
    settings.STREAMS_SEND_TIMEOUT_SECONDS = 0.5
    monkeypatch.setattr(
        stream_server_module, "socket", types.SimpleNamespace(socket=_small_send_buffer_socket)
    )
    big = "x" * 8000
    with asgi_server() as server:
        client = stream_request_sent(server, client_key, call.pk, receive_buffer=4096)
        time.sleep(0.5)  # subscribed, `retry` sent
        for batch in range(5):  # pages under 64 KiB each: the second pauses the transport
            record(agent_api, call, *[transcript(batch * 7 + i, content=big) for i in range(7)])
            time.sleep(0.5)
        time.sleep(2)  # four beats past the send timeout
        leased = retry_locked(StreamLease.objects.exists)
        serving = list(hub_module._hub.subscriptions)
        client.close()

    assert (leased, serving) == (False, [])


@live
def test_a_stream_opened_just_after_a_late_heard_end_waits_for_the_agents_last_lines(
    server, client_key, agent_api, call, settings
):
    """The grace for late lines counted from the end's stamp (a webhook delivered 30 s
    late), not from when it was recorded: a stream opened then sent `end` at once."""
    settings.STREAMS_END_GRACE_SECONDS = 3
    record(agent_api, call, transcript(0))
    stamped = timezone.now() - datetime.timedelta(seconds=30)
    retry_locked(
        lambda: call_transition(
            call_id=call.pk, to_status=S.COMPLETED, end_reason="user_hangup", at=stamped
        )
    )
    with open_stream(server, client_key, call.pk, **{"Last-Event-ID": "2"}) as response:
        reader = EventReader(response)
        assert reader.next() == {"retry": "2000"}
        time.sleep(1)  # the stream has read what exists
        record(agent_api, call, transcript(1))  # the agent's last line, within the grace
        events = read_all(response, reader)

    assert [event["event"] for event in events] == ["transcript", "end"]


@live
def test_a_line_recorded_within_the_grace_is_sent_before_end_even_if_the_hub_has_not_heard(
    stream_server, client_key, agent_api, call, settings
):
    """`end` means "everything was sent": the last read before it must go to the
    database, not trust the hub's idea of the newest id (a poll or a NOTIFY behind)."""
    settings.STREAMS_POLL_SECONDS = 30  # the hub's news lags (e.g. LISTEN down: 1 heartbeat)
    settings.STREAMS_HEARTBEAT_SECONDS = 30
    settings.STREAMS_END_GRACE_SECONDS = 2
    retry_locked(
        lambda: call_transition(call_id=call.pk, to_status=S.COMPLETED, end_reason="user_hangup")
    )
    with open_stream(stream_server, client_key, call.pk) as response:
        reader = EventReader(response)
        assert reader.next() == {"retry": "2000"}
        [status] = reader.events(1)
        assert status["event"] == "status"
        record(agent_api, call, transcript(9))  # the agent's last line, well within the grace
        events = read_all(response, reader)

    assert [event["event"] for event in events] == ["transcript", "end"]


@live
def test_a_watcher_is_woken_for_an_event_another_watchers_read_found_first(
    stream_server, client_key, agent_api, call, settings
):
    """Two streams of one call: B's first read finds event 2 before the hub heard of it
    (poll / NOTIFY not there yet); A, already waiting, must still get it promptly, not a
    heartbeat later."""
    settings.STREAMS_POLL_SECONDS = 1
    settings.STREAMS_HEARTBEAT_SECONDS = 8
    record(agent_api, call, transcript(0))
    patient = {"timeout": httpx.Timeout(20, read=15)}
    with httpx.stream(
        "GET",
        f"{stream_server}/api/v1/calls/{call.pk}/stream",
        headers={"Authorization": f"Bearer {client_key}"},
        **patient,
    ) as a:
        reader_a = EventReader(a)
        assert reader_a.next() == {"retry": "2000"}
        [first] = reader_a.events(1)
        time.sleep(1.5)  # A waits now, the hub has polled
        record(agent_api, call, transcript(1))
        with open_stream(stream_server, client_key, call.pk) as b:  # reads event 2 at once
            reader_b = EventReader(b)
            assert [e["id"] for e in reader_b.events(2)] == ["1", "2"]
            started = time.monotonic()
            [second] = reader_a.events(1)
            waited = time.monotonic() - started
    assert second["id"] == "2"
    assert waited < 4, f"A got event 2 only after {waited:.1f} s (a heartbeat)"


@pytest.mark.postgres
@live
def test_postgres_listen_down_a_line_within_the_grace_is_sent_before_end(
    client_key, agent_api, call, settings
):
    """PostgreSQL with the LISTEN connection down (its documented fallback: the poll at
    every heartbeat): a line the agent flushes within the grace is dropped, `end` sent."""
    from tests.stream_server import asgi_server

    settings.STREAMS_HEARTBEAT_SECONDS = 4
    settings.STREAMS_END_GRACE_SECONDS = 2
    default = settings.DATABASES["default"]
    settings.DATABASE_LISTEN = {
        **default,
        "NAME": "no_such_database",
        "OPTIONS": {**default.get("OPTIONS", {})},
    }
    with asgi_server() as server:
        with httpx.stream(
            "GET",
            f"{server}/api/v1/calls/{call.pk}/stream",
            headers={"Authorization": f"Bearer {client_key}"},
            timeout=httpx.Timeout(20, read=15),
        ) as response:
            reader = EventReader(response)
            assert reader.next() == {"retry": "2000"}
            call_transition(call_id=call.pk, to_status=S.COMPLETED, end_reason="user_hangup")
            [status] = reader.events(1)  # heard at a poll
            assert status["event"] == "status"
            record(agent_api, call, transcript(9))  # the agent's last line, within the grace
            events = read_all(response, reader)

    assert [event["event"] for event in events] == ["transcript", "end"]
