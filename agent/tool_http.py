"""How the worker reaches a customer's tool endpoint: only public addresses (the
worker runs inside the platform's network), checked again at connect time and the
checked address connected to, and an answer read up to a bound."""

from __future__ import annotations

import asyncio
import socket
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

# The web service's SSRF rule, shared (standard library only, no Django).
from voicecalls.addresses import address_is_public


class UnsafeToolURL(Exception):
    pass


async def check_tool_url(url: str, *, allow_private: bool) -> None:
    """Tool endpoints are public https URLs: the worker runs inside the platform's
    network, so a customer's URL must not reach it (SSRF)."""
    parts = urlsplit(url)
    if allow_private:
        if parts.scheme not in ("https", "http"):
            raise UnsafeToolURL("tool url must be http(s)")
        return
    if parts.scheme != "https" or not parts.hostname:
        raise UnsafeToolURL("tool url must be https")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, parts.port or 443, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise UnsafeToolURL(f"cannot resolve {parts.hostname}") from exc
    for info in infos:
        if not address_is_public(info[4][0]):
            raise UnsafeToolURL(f"{parts.hostname} is not a public address")


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
        error: Exception | None = None
        for address in addresses:  # in the resolver's order, as a plain connect tries
            try:
                return await self._backend.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class PublicOnlyTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over `_PublicAddressesOnly`: httpx 0.28 takes no network
    backend, so the pool it built is replaced by one that uses it."""

    def __init__(self) -> None:
        super().__init__()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), network_backend=_PublicAddressesOnly()
        )


class AnswerTooLarge(Exception):
    pass


async def answer_read(response: httpx.Response, limit: int) -> bytes:
    """The answer's body, decoded (gzip counts as what it inflates to), or AnswerTooLarge
    once past `limit` bytes, having read no more."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise AnswerTooLarge
    return bytes(body)
