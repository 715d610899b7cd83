"""GET /api/v1/calls/{id}/stream: a call's transcript lines, status changes, handoffs
and metrics as Server-Sent Events, in the API's own shapes.

The first half reads it through Django's test client (WSGI: what exists, then the
client is asked to come back); the second half through uvicorn serving the ASGI
application, as the streams service does (live events, heartbeats, the cap, revoked
keys, clients that read nothing)."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from accounts.models import APIKey
from calls.lifecycle import call_transition
from calls.models import CallStatus, TranscriptEntry
from streams.models import StreamLease
from tests.factories import CallFactory
from tests.stream_server import EventReader, retry_locked
from tests.test_agent_events_api import handoff, metrics, transcript

S = CallStatus


def stream_url(call_id: object) -> str:
    return f"/api/v1/calls/{call_id}/stream"


def parse(body: bytes) -> list[dict]:
    """The events of a whole text/event-stream body (comments and `retry` left out)."""
    events = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "id" in fields:
            events.append({**fields, "data": json.loads(fields["data"])})
    return events


def read(client, call_id: object, **headers: str) -> tuple[object, list[dict]]:
    response = client.get(stream_url(call_id), headers=headers)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, parse(body)


def record(agent_api, call, *events: dict) -> None:
    url = f"/api/v1/agent/calls/{call.pk}/events"
    response = retry_locked(lambda: agent_api.post(url, {"events": list(events)}))
    assert response.status_code == 200, response.content


@pytest.fixture
def call(workflow):
    return CallFactory(organization=workflow.organization, workflow=workflow, active=True)


@pytest.fixture
def played(call, agent_api, settings):
    """A call with two lines, a sample and a handoff, then ended."""
    settings.STREAMS_END_GRACE_SECONDS = 0
    record(agent_api, call, transcript(0), transcript(1, role="user"), metrics(stt_latency_ms=90))
    record(agent_api, call, handoff("greeter-agent", "meal-agent"))
    call_transition(call_id=call.pk, to_status=S.COMPLETED, end_reason="user_hangup")
    return call


# --- What exists, through the WSGI client ----------------------------------------------------


@pytest.mark.parametrize("spelling", [str.upper, lambda text: text.replace("-", "")])
def test_the_stream_takes_every_spelling_of_the_call_id_the_other_call_paths_take(
    api, played, spelling
):
    """Django's `uuid` converter takes lower case with dashes only: the stream was a
    404 for the spellings the call's other paths answer."""
    call_id = spelling(str(played.pk))
    assert api.get(f"/api/v1/calls/{call_id}/transcript").status_code == 200

    response, events = read(api, call_id)

    assert response.status_code == 200
    assert [event["event"] for event in events][-1] == "end"


def test_an_ended_calls_stream_sends_every_event_in_order_then_end(api, played):
    response, events = read(api, played.pk)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-store"
    assert [(e["id"], e["event"]) for e in events] == [
        ("1", "transcript"),
        ("2", "transcript"),  # at 10:30:01, as the sample: lines first
        ("3", "metrics"),
        ("4", "handoff"),
        ("5", "status"),
        ("5", "end"),
    ]
    assert events[-1]["data"] == {"status": "completed", "end_reason": "user_hangup"}


def test_each_event_has_the_shape_the_rest_api_gives_it(api, played):
    _, events = read(api, played.pk)
    lines = api.get(f"/api/v1/calls/{played.pk}/transcript").json()
    assert [e["data"] for e in events if e["event"] == "transcript"] == lines
    [sample] = [e["data"] for e in events if e["event"] == "metrics"]
    assert sample == {
        "agent_name": None,
        "turn_index": None,
        "stt_latency_ms": 90.0,
        "llm_latency_ms": None,
        "tts_latency_ms": None,
        "eou_latency_ms": None,
        "e2e_latency_ms": None,
        "tokens": None,
        "providers": None,
        "timestamp": "2026-01-17T10:30:01Z",
    }
    [moved] = [e["data"] for e in events if e["event"] == "handoff"]
    assert moved == {
        "from_agent": "greeter-agent",
        "to_agent": "meal-agent",
        "timestamp": "2026-01-17T10:30:02Z",
    }
    [ended] = [e["data"] for e in events if e["event"] == "status"]
    assert ended.pop("at").endswith("Z")
    assert ended == {
        "call_id": str(played.pk),
        "from_status": "active",
        "to_status": "completed",
        "end_reason": "user_hangup",
    }


def test_last_event_id_resumes_after_that_event(api, played):
    _, events = read(api, played.pk, **{"Last-Event-ID": "3"})
    assert [e["id"] for e in events] == ["4", "5", "5"]


def test_the_end_tells_a_client_to_come_back_an_hour_later_at_the_soonest(api, played):
    """A browser's EventSource does not stop at `end`: it reconnected every 2 s (the
    stream's `retry`), and got `end` again, for as long as its page stayed open."""
    response = api.get(stream_url(played.pk), headers={"Last-Event-ID": "5"})
    body = b"".join(response.streaming_content)

    assert body == (
        b"retry: 2000\n\nretry: 3600000\n\nid: 5\nevent: end\n"
        b'data: {"status":"completed","end_reason":"user_hangup"}\n\n'
    )


def test_each_events_data_stays_one_line_for_clients_that_split_on_unicode_line_breaks(
    api, agent_api, call
):
    """httpx's `iter_lines` (README's Python example) and `str.splitlines` also end a
    line at U+0085, U+2028 and U+2029, which JSON leaves unescaped: a line with one in
    it reached such a client as a cut `data:` line that JSON could not parse."""
    content = "next\x85line\u2028separator\u2029paragraph"
    record(agent_api, call, transcript(0, content=content, agent_name="greeter\u2028agent"))
    response = api.get(stream_url(call.pk))
    body = b"".join(response.streaming_content).decode()

    data = [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data:")]

    [line] = [json.loads(text) for text in data]
    assert (line["content"], line["agent_name"]) == (content, "greeter\u2028agent")


def test_a_replayed_batch_adds_no_event(api, agent_api, call):
    line = transcript(0)
    record(agent_api, call, line)
    record(agent_api, call, line)
    _, events = read(api, call.pk)
    assert [e["id"] for e in events] == ["1"]


def test_under_wsgi_a_live_call_catches_up_and_asks_the_client_to_come_back(api, agent_api, call):
    record(agent_api, call, transcript(0))
    response = api.get(stream_url(call.pk))
    body = b"".join(response.streaming_content)
    assert body.startswith(b"retry: 2000\n\n")
    assert [e["event"] for e in parse(body)] == ["transcript"]  # no `end`: it goes on


def test_an_erased_line_is_read_from_its_row_never_from_a_copy(api, agent_api, call):
    record(agent_api, call, transcript(0), transcript(1))
    first, second = TranscriptEntry.objects.filter(call=call).order_by("id")
    TranscriptEntry.objects.filter(pk=first.pk).update(content="")
    second.delete()
    _, events = read(api, call.pk)
    assert [(e["id"], e["data"]["content"]) for e in events] == [("1", "")]


def test_reading_a_stream_takes_a_constant_number_of_queries(
    api, agent_api, call, settings, django_assert_num_queries
):
    settings.STREAMS_END_GRACE_SECONDS = 0
    record(agent_api, call, *[transcript(i) for i in range(30)], metrics(tokens=5))
    call_transition(call_id=call.pk, to_status=S.COMPLETED, end_reason="user_hangup")
    # API key, the call, when its end was recorded, then the events, their lines and
    # their samples.
    with django_assert_num_queries(6):
        _, events = read(api, call.pk)
    assert len(events) == 33


@pytest.mark.parametrize("value", ["", "abc", "-1", "1.5", "9" * 19])
def test_a_last_event_id_that_is_not_an_event_id_is_400(api, call, value):
    response = api.get(stream_url(call.pk), headers={"Last-Event-ID": value})
    assert response.status_code == 400
    assert response.json()["errors"][0]["attr"] == "Last-Event-ID"


def test_another_organizations_call_is_404(outsider_api, call):
    response = outsider_api.get(stream_url(call.pk))
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"


def test_errors_are_json_even_to_an_event_source(outsider_api, call):
    response = outsider_api.get(stream_url(call.pk), headers={"Accept": "text/event-stream"})
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_no_key_is_401_and_an_agent_key_is_403(anonymous_api, agent_api, call):
    assert anonymous_api.get(stream_url(call.pk)).status_code == 401
    assert agent_api.get(stream_url(call.pk)).status_code == 403


# --- Live, through uvicorn (the ASGI service) ------------------------------------------------

live = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(stream_server: str) -> str:
    return stream_server


def open_stream(server: str, key: str, call_id: object, **headers: str):
    return httpx.stream(
        "GET",
        server + stream_url(call_id),
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=httpx.Timeout(10, read=5),
    )


@live
def test_events_arrive_as_they_are_recorded_and_the_end_closes_the_stream(
    server, client_key, agent_api, call
):
    with open_stream(server, client_key, call.pk) as response:
        assert response.status_code == 200
        reader = EventReader(response)
        assert reader.next() == {"retry": "2000"}
        record(agent_api, call, transcript(0))
        [line] = reader.events(1)
        assert (line["id"], line["event"]) == ("1", "transcript")
        assert json.loads(line["data"])["content"] == "line 0"
        record(agent_api, call, handoff("greeter-agent", "meal-agent"), transcript(5))
        assert [e["event"] for e in reader.events(2)] == ["handoff", "transcript"]
        retry_locked(
            lambda: call_transition(
                call_id=call.pk, to_status=S.COMPLETED, end_reason="user_hangup"
            )
        )
        assert [e["event"] for e in reader.events(2)] == ["status", "end"]
        with pytest.raises(StopIteration):
            reader.next()


@live
def test_a_reconnect_from_last_event_id_neither_repeats_nor_skips(
    server, client_key, agent_api, call
):
    record(agent_api, call, *[transcript(i) for i in range(3)])
    with open_stream(server, client_key, call.pk) as response:
        first = EventReader(response).events(2)
    record(agent_api, call, transcript(3))  # while nobody listens
    with open_stream(server, client_key, call.pk, **{"Last-Event-ID": first[-1]["id"]}) as again:
        reader = EventReader(again)
        resumed = reader.events(2)
        record(agent_api, call, transcript(4))
        resumed += reader.events(1)
    seen = [e["id"] for e in first + resumed]
    assert seen == ["1", "2", "3", "4", "5"]
    contents = [json.loads(e["data"])["content"] for e in first + resumed]
    assert contents == [f"line {i}" for i in range(5)]


@live
def test_a_quiet_stream_gets_a_comment_every_heartbeat(server, client_key, call):
    with open_stream(server, client_key, call.pk) as response:
        reader = EventReader(response)
        assert reader.next() == {"retry": "2000"}
        started = time.monotonic()
        assert reader.next() == {"comment": "ping"}
        assert reader.next() == {"comment": "ping"}
        assert 0.7 < time.monotonic() - started < 3


@live
def test_an_outsiders_stream_is_404_under_asgi_too(server, outsider, call):
    from accounts.services import api_key_create

    _, key = api_key_create(name="outsider", organization=outsider)
    with open_stream(server, key, call.pk) as response:
        assert response.status_code == 404
        response.read()
        assert response.json()["errors"][0]["code"] == "not_found"


@live
def test_streams_past_the_organizations_cap_are_429_until_one_closes(
    server, client_key, call, settings
):
    settings.STREAMS_PER_ORGANIZATION = 2
    with (
        open_stream(server, client_key, call.pk) as one,
        open_stream(server, client_key, call.pk) as two,
    ):
        assert (one.status_code, two.status_code) == (200, 200)
        with open_stream(server, client_key, call.pk) as three:
            assert three.status_code == 429
            three.read()
            assert int(three.headers["Retry-After"]) > 0
            body = three.json()
        assert body["errors"][0]["code"] == "stream_limit_reached"
        assert body["meta"] == {"open_streams": 2, "stream_limit": 2}
    # The closed streams' leases go with them.
    deadline = time.monotonic() + 5
    while retry_locked(StreamLease.objects.exists):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with open_stream(server, client_key, call.pk) as again:
        assert again.status_code == 200


@live
def test_streams_past_the_processs_capacity_are_503_with_retry_after_until_one_closes(
    server, client_key, call, settings
):
    """Each live stream holds a thread of the process: past STREAMS_PER_PROCESS (every
    organization's streams together) the next is refused, to be retried, possibly on
    another process, where it used to take one more thread until the host refused."""
    settings.STREAMS_PER_PROCESS = 1
    with open_stream(server, client_key, call.pk) as one:
        assert one.status_code == 200
        reader = EventReader(one)
        assert reader.next() == {"retry": "2000"}
        assert reader.next() == {"comment": "ping"}  # served, past its first read
        with open_stream(server, client_key, call.pk) as two:
            assert two.status_code == 503
            two.read()
            assert int(two.headers["Retry-After"]) > 0
            assert two.json()["errors"][0]["code"] == "stream_capacity_reached"
    deadline = time.monotonic() + 5
    while True:  # the closed stream stops counting once the server notices it left
        with open_stream(server, client_key, call.pk) as again:
            if again.status_code == 200:
                break
        assert time.monotonic() < deadline
        time.sleep(0.1)


@live
def test_a_revoked_keys_stream_closes_within_a_heartbeat(server, client_key, call):
    with open_stream(server, client_key, call.pk) as response:
        reader = EventReader(response)
        assert reader.next() == {"retry": "2000"}
        revoke = APIKey.objects.filter(prefix=client_key.partition(".")[0])
        retry_locked(lambda: revoke.update(revoked=True))
        assert reader.closed_within(2 * 0.5 + 0.5)
    assert not retry_locked(StreamLease.objects.exists)


@live
def test_a_client_that_reads_nothing_is_disconnected(server, client_key, agent_api, call, settings):
    """The server holds one page per stream; once the socket's buffers are full and the
    client still reads nothing, the stream is cut, not buffered without end."""
    settings.STREAMS_SEND_TIMEOUT_SECONDS = 0.5
    big = "x" * 8000
    batches = 24
    for batch in range(batches):
        record(agent_api, call, *[transcript(batch * 50 + i, content=big) for i in range(50)])
    written = batches * 50 * len(big)
    host, port = server.removeprefix("http://").split(":")
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect((host, int(port)))
    client.sendall(
        f"GET {stream_url(call.pk)} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {client_key}\r\n\r\n".encode()
    )
    time.sleep(3)  # the server notices within a heartbeat past the send timeout
    client.settimeout(10)
    received = 0
    while chunk := client.recv(1 << 16):
        received += len(chunk)
    client.close()
    assert received < written  # cut off, not everything delivered
    assert not retry_locked(StreamLease.objects.exists)
