"""A tool endpoint's answer is bounded: in time (its host's name included), in size
(compressed or not), and in where it comes from (DNS rebinding)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import zlib

import httpx
import pytest
from livekit.agents import ToolError

from agent.tests.test_workflow_tools import SAVE_MEAL, url_runner
from agent.workflow import TOOL_TIMEOUT_SECONDS, ToolRunner


async def _tool_server(answer):
    """A stand-in for a customer's tool endpoint on loopback: `answer(writer)` writes
    the HTTP answer once the request has come. Returns (server, url, stats)."""
    stats = {"connections": 0, "sent": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            await answer(writer, stats)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/tool", stats


async def test_a_tool_that_answers_a_byte_at_a_time_is_cut_off_at_the_timeout():
    """httpx's timeout bounds each read, not the answer: an endpoint that sends a byte
    a second (a stuck proxy, a slow upstream) held the caller in silence for as long as
    it liked. The tool gets TOOL_TIMEOUT_SECONDS in all, as the README says (10 s)."""
    body = json.dumps({"saved": True, "note": "x" * 30}).encode()

    async def drip(writer: asyncio.StreamWriter, stats: dict) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        for byte in body:
            writer.write(bytes([byte]))
            await writer.drain()
            stats["sent"] += 1
            await asyncio.sleep(0.5)  # well within httpx's per-read timeout

    server, url, _ = await _tool_server(drip)
    runner = ToolRunner(call_id="c1", allow_private_urls=True)
    started = time.monotonic()
    try:
        with pytest.raises(ToolError, match="did not answer in time"):
            await runner.run({**SAVE_MEAL, "url": url}, {"meal_type": "lunch"}, agent_name="a")
    finally:
        elapsed = time.monotonic() - started
        await runner.aclose()
        server.close()
    assert elapsed < TOOL_TIMEOUT_SECONDS + 2


async def test_a_tool_host_whose_dns_does_not_answer_is_cut_off_at_the_timeout(monkeypatch):
    """The URL's check resolved the host outside the tool's 10 s: a customer's name
    server that does not answer held the caller in silence for the resolver's own
    timeouts (5 s a try, per server and attempt), however long they added up to."""
    answered = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def silent_dns(host, *args, **kwargs):  # a name server's stand-in
        if host in ("tools.silent.example", b"tools.silent.example"):
            answered.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", silent_dns)
    runner = ToolRunner(call_id="c1")
    spec = {**SAVE_MEAL, "url": "https://tools.silent.example/meals"}
    started = time.monotonic()
    try:
        with pytest.raises(ToolError, match="did not answer in time"):
            await runner.run(spec, {"meal_type": "lunch"}, agent_name="a")
    finally:
        elapsed = time.monotonic() - started
        answered.set()
        await runner.aclose()
    assert elapsed < TOOL_TIMEOUT_SECONDS + 2


async def test_a_huge_tool_answer_is_refused_without_being_read_whole():
    """The worker runs many calls in one process: an endpoint answering hundreds of MiB
    (a log dump, a misrouted download) was read whole into memory, then cut to 16,000
    characters. An answer over MAX_TOOL_RESPONSE_BYTES is an error for the model, and
    the worker stops reading it."""
    size = 256 * 1024 * 1024
    chunk = b"x" * 65536

    async def flood(writer: asyncio.StreamWriter, stats: dict) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b'Content-Length: %d\r\n\r\n["' % (size + 4)
        )
        while stats["sent"] < size:
            writer.write(chunk)
            await writer.drain()
            stats["sent"] += len(chunk)
        writer.write(b'"]\r\n')
        await writer.drain()

    server, url, stats = await _tool_server(flood)
    runner = ToolRunner(call_id="c1", allow_private_urls=True)
    try:
        with pytest.raises(ToolError, match="too large"):
            await runner.run({**SAVE_MEAL, "url": url}, {"meal_type": "lunch"}, agent_name="a")
    finally:
        await runner.aclose()
        server.close()
    # What the kernel's buffers held when the worker hung up, not the whole answer.
    assert stats["sent"] < 32 * 1024 * 1024


async def test_a_tool_host_rebinding_to_a_private_address_after_the_check_is_not_reached(
    monkeypatch,
):
    """DNS rebinding: the customer's name resolves to a public address when the URL is
    checked and to an internal one when httpx connects (a TTL of 0 does it). The
    address connected to must be the checked one (as the webhook transport does), so
    the worker never reaches a service inside the platform's network."""
    reached = {"connections": 0}

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached["connections"] += 1
        writer.close()

    internal = await asyncio.start_server(count, "127.0.0.1", 0)
    port = internal.sockets[0].getsockname()[1]
    real_getaddrinfo = socket.getaddrinfo
    answers = {"tools.rebind.example": 0}

    def rebinding_dns(host, *args, **kwargs):  # a DNS server's stand-in
        if isinstance(host, bytes):  # (anyio asks for the IDNA-encoded name)
            host = host.decode("ascii")
        if host in answers:
            answers[host] += 1
            address = "93.184.215.14" if answers[host] == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    runner = ToolRunner(call_id="c1")
    spec = {**SAVE_MEAL, "url": f"https://tools.rebind.example:{port}/meals"}
    try:
        with pytest.raises(ToolError):
            await runner.run(spec, {"meal_type": "lunch"}, agent_name="a")
    finally:
        await runner.aclose()
        internal.close()
    assert answers["tools.rebind.example"] >= 1
    assert reached["connections"] == 0


@pytest.mark.parametrize(
    "url",
    [
        # A soft hyphen pasted with the name: Python's resolver reads a name by IDNA
        # 2003, which drops it (tools.example.com); httpx (IDNA 2008) refuses it.
        "https://tools.ex\u00adample.com/meals",
        # A label IDNA cannot encode in 63 characters: Python's resolver raises.
        "https://" + "ä" * 63 + ".example.com/meals",
    ],
)
async def test_a_tool_url_no_request_can_be_sent_to_is_unavailable(monkeypatch, url):
    """The API's URLField takes both URLs. The check let the first pass and httpx's
    InvalidURL followed, the second raised UnicodeError (no OSError): neither an error
    the runner answered, so livekit-agents logged a traceback and told the model and
    the transcript "An internal error occurred" at every call of the tool."""
    real_getaddrinfo = socket.getaddrinfo

    def public_dns(host, *args, **kwargs):  # a name server's stand-in
        name = host.decode("ascii") if isinstance(host, bytes) else host.encode("idna").decode()
        if name == "tools.example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", public_dns)
    runner = ToolRunner(call_id="c1")
    try:
        with pytest.raises(ToolError, match=r"^save_meal is unavailable\.$"):
            await runner.run({**SAVE_MEAL, "url": url}, {"meal_type": "lunch"}, agent_name="a")
    finally:
        await runner.aclose()


async def test_a_tool_answer_keeps_its_words_as_written():
    """The result is the model's input and the tool's transcript line: `{"city":
    "M\\u00fcnchen"}` showed escapes to whoever reads the transcript, and a Japanese
    answer took six of the 16,000 characters per character."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"city": "München", "note": "予約済み"})

    runner = url_runner(handler)
    spec = {**SAVE_MEAL, "url": "https://tools.example.com/meals"}
    result = await runner.run(spec, {"meal_type": "dinner"}, agent_name="a")
    assert "München" in result and "予約済み" in result
    assert json.loads(result) == {"city": "München", "note": "予約済み"}


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        # A Java servlet's text/plain without a charset set is ISO-8859-1.
        ("text/plain;charset=ISO-8859-1", "Réservé à 19 h".encode("latin-1")),
        # Media types are case-insensitive (RFC 9110, 8.3.1).
        ("Text/Plain; charset=UTF-8", "Réservé à 19 h".encode()),
    ],
)
async def test_a_plain_text_answer_is_read_as_its_content_type_says(content_type, body):
    """Every text/plain answer was read as UTF-8, so an ISO-8859-1 one reached the model
    and the transcript as "R\\ufffdserv\\ufffd", and `Text/Plain` was no plain text: the
    call failed as not JSON, though the tool had run."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": content_type})

    runner = url_runner(handler)
    spec = {**SAVE_MEAL, "url": "https://tools.example.com/meals"}
    result = await runner.run(spec, {"meal_type": "dinner"}, agent_name="a")
    assert json.loads(result) == {"result": "Réservé à 19 h"}


async def test_a_compressed_answer_is_not_inflated_past_the_bound_in_memory():
    """Content-Encoding: gzip inflates a 64 KiB read (one chunk of the connection) to
    ~64 MiB before answer_read counts it: the 1 MiB bound held the body, not what the
    worker inflated to check it. Many calls' tools at once multiply it."""
    import gzip
    import tracemalloc

    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)  # ~64 KiB

    async def answer(writer: asyncio.StreamWriter, stats: dict) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb)
        )
        writer.write(bomb)
        await writer.drain()

    server, url, _ = await _tool_server(answer)
    runner = ToolRunner(call_id="c1", allow_private_urls=True)
    tracemalloc.start()
    try:
        with pytest.raises(ToolError, match="too large"):
            await runner.run({**SAVE_MEAL, "url": url}, {"meal_type": "lunch"}, agent_name="a")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await runner.aclose()
        server.close()
    assert peak < 8 * 1024 * 1024


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", lambda data: __import__("gzip").compress(data)),
        ("deflate", lambda data: __import__("zlib").compress(data)),
        # Raw deflate, without zlib's header (RFC 9110 says zlib; IIS, some PHP and
        # Java stacks send it raw): httpx reads both, and so must we.
        ("deflate", _raw_deflate),
    ],
)
async def test_a_compressed_answer_within_the_bound_is_read(encoding, compress):
    body = compress(json.dumps({"saved": True, "note": "x" * 200_000}).encode())

    async def answer(writer: asyncio.StreamWriter, stats: dict) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (encoding.encode(), len(body), body)
        )
        await writer.drain()

    server, url, _ = await _tool_server(answer)
    runner = ToolRunner(call_id="c1", allow_private_urls=True)
    try:
        result = await runner.run({**SAVE_MEAL, "url": url}, {"meal_type": "lunch"}, agent_name="a")
    finally:
        await runner.aclose()
        server.close()
    assert result.startswith('{"saved": true, "note": "xxx')
