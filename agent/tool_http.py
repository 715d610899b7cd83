"""How the worker reaches a customer's tool endpoint: only public addresses (the
worker runs inside the platform's network), checked again at connect time and the
checked address connected to, and an answer read up to a bound."""

from __future__ import annotations

import asyncio
import socket
import zlib
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

# The web service's SSRF rule, shared (standard library only, no Django).
from voicecalls.addresses import address_is_public


class UnsafeToolURL(Exception):
    pass


async def check_tool_url(url: str, *, allow_private: bool) -> None:
    """Tool endpoints are public https URLs: the worker runs inside the platform's
    network, so a customer's URL must not reach it (SSRF)."""
    try:
        # The name as httpx sends it (IDNA 2008); Python's resolver would read a unicode
        # name by IDNA 2003, which takes some names httpx refuses, and refuses others.
        host = httpx.URL(url).raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise UnsafeToolURL(f"tool url is not one a request can go to: {exc}") from exc
    parts = urlsplit(url)
    try:
        port = parts.port or 443
    except ValueError as exc:  # out of range: no connection can use it
        raise UnsafeToolURL(str(exc)) from exc
    if allow_private:
        if parts.scheme not in ("https", "http"):
            raise UnsafeToolURL("tool url must be http(s)")
        return
    if parts.scheme != "https" or not parts.hostname:
        raise UnsafeToolURL("tool url must be https")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UnsafeToolURL(f"cannot resolve {parts.hostname}") from exc
    for info in infos:
        if not address_is_public(info[4][0]):
            raise UnsafeToolURL(f"{parts.hostname} is not a public address")


# What anyio waits before trying a host's next address (RFC 8305's recommendation).
HAPPY_EYEBALLS_DELAY = 0.25


class _PublicAddressesOnly(httpcore.AsyncNetworkBackend):
    """Connects only to public addresses, resolved here, at connect time, and connects
    to the address it checked (TLS and the Host header keep the name): a DNS answer
    that changes after `check_tool_url` (rebinding) cannot reach an internal service."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}") from exc
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        if not addresses or not all(address_is_public(a) for a in addresses):
            raise httpcore.ConnectError(f"{host} is not a public address")
        return await self._first_connected(
            addresses,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def _first_connected(
        self, addresses: list[str], port: int, **options: Any
    ) -> httpcore.AsyncNetworkStream:
        """The first of `addresses` to connect, in the resolver's order, the next tried
        HAPPY_EYEBALLS_DELAY on or as soon as one fails, as anyio does connecting by
        name: one after another, a silent first address (a blackholed IPv6 route)
        would take the tool's whole timeout."""
        connected: list[httpcore.AsyncNetworkStream] = []
        errors: list[Exception] = []
        async with anyio.create_task_group() as group:

            async def attempt(address: str, failed: anyio.Event) -> None:
                try:
                    stream = await self._backend.connect_tcp(address, port, **options)
                except Exception as exc:  # (raised below, not as anyio's ExceptionGroup)
                    errors.append(exc)
                    failed.set()
                    return
                if connected:  # another address won meanwhile
                    await stream.aclose()
                    return
                connected.append(stream)
                group.cancel_scope.cancel()

            for address in addresses:
                failed = anyio.Event()
                group.start_soon(attempt, address, failed)
                with anyio.move_on_after(HAPPY_EYEBALLS_DELAY):
                    await failed.wait()
        if connected:
            return connected[0]
        raise errors[-1]

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class PublicOnlyTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over `_PublicAddressesOnly`: httpx 0.28 takes no network
    backend, so the pool it built is replaced by one that uses it."""

    def __init__(self) -> None:
        super().__init__()
        # httpx's own default limits: httpcore's keep an idle connection for ever, and
        # one a middlebox dropped silently would swallow the next tool call whole.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_PublicAddressesOnly(),
        )


class AnswerTooLarge(Exception):
    pass


# The encodings a tool may answer in (asked for by name: httpx would also offer br or
# zstd when their packages are installed).
ACCEPT_ENCODING = "gzip, deflate"


async def answer_read(response: httpx.Response, limit: int) -> bytes:
    """The answer's body, inflated (gzip or deflate), or AnswerTooLarge past `limit`
    bytes, sent or inflated: read raw, as httpx would inflate each 64 KiB read whole (64
    MiB of zeros). httpx.DecodingError for an encoding or stream it cannot take."""
    if response.is_stream_consumed:  # built in memory (a stand-in transport)
        raw = response.content
        encoding = ""
    else:
        raw = bytearray()
        async for chunk in response.aiter_raw():
            raw += chunk
            if len(raw) > limit:
                raise AnswerTooLarge
        encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return bytes(raw)
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise httpx.DecodingError(f"the answer's encoding {encoding!r} is not taken")
    # A gzip or zlib header, either (32 + MAX_WBITS reads both); `deflate` is sent raw
    # too, with no header (as httpx's DeflateDecoder, tried when the header is not one).
    wbits = [32 + zlib.MAX_WBITS] + ([-zlib.MAX_WBITS] if encoding == "deflate" else [])
    for tried, bits in enumerate(wbits, start=1):
        try:
            body = zlib.decompressobj(bits).decompress(bytes(raw), limit + 1)
            break
        except zlib.error as exc:
            if tried == len(wbits):
                raise httpx.DecodingError(str(exc)) from exc
    if len(body) > limit:
        raise AnswerTooLarge
    return body
