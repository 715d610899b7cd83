"""The one module that sends HTTP requests to customers' webhook endpoints.

SSRF guard: the host is resolved here, at send time, every address it resolves to is
checked, and the request goes to the checked address (the name is kept for TLS and
the Host header), so a DNS answer changing between check and connect (rebinding)
cannot redirect us to an internal service. Redirects are never followed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import email.utils
import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import idna
import urllib3
from django.utils import timezone

from voicecalls.addresses import address_is_public
from voicecalls.text import storable

logger = logging.getLogger(__name__)

USER_AGENT = "voicecalls-webhooks/1"
EXCERPT_CHARS = 200

BLOCKED_HOSTNAMES = ("localhost", "metadata.google.internal")
BLOCKED_SUFFIXES = (".localhost", ".internal")


class DeliveryError(Exception):
    """The request got no HTTP answer. `retryable` is False for a refused target."""

    def __init__(self, message: str, *, retryable: bool = True, duration_ms: int = 0) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.duration_ms = duration_ms


class BlockedTarget(DeliveryError):
    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass(frozen=True)
class Answer:
    status_code: int
    duration_ms: int
    excerpt: str
    retry_after_seconds: float | None


def url_problem(url: str, *, allow_private: bool) -> str | None:
    """Why `url` cannot be a webhook endpoint, or None. Checked when it is saved;
    the resolved addresses are checked again at every send."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "Enter a valid URL."
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        return "The URL must use https."
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return "The URL must have a host."
    try:
        host = ascii_host(host)
    except UnicodeError:
        return "Enter a valid host name."
    if parts.username is not None or parts.password is not None:
        return "The URL must not contain credentials."
    if port == 0:
        return "Enter a valid port."
    if allow_private:
        return None
    if host in BLOCKED_HOSTNAMES or host.endswith(BLOCKED_SUFFIXES):
        return "The URL must not point at a local or internal host."
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: resolved and checked at send time
    if not address_is_public(host):
        return "The URL must not point at a private, loopback or reserved address."
    return None


def ascii_host(host: str) -> str:
    """`host` as DNS, TLS and the Host header take it: an internationalised name in its
    punycode form, mapped as browsers map it (UTS-46). UnicodeError when it has none."""
    if host.isascii():
        return host
    return idna.encode(host, uts46=True).decode("ascii")


# getaddrinfo has no timeout: it runs here and is waited for no longer than the attempt
# may take (a customer's name server that does not answer kept the attempt past its
# hold on the delivery, for the resolver's own timeouts). A lookup given up on ends in
# its thread; a few at once bound how many can.
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")


def _resolve(host: str, port: int, *, allow_private: bool, timeout: float) -> list[str]:
    lookup = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=timeout)
    except concurrent.futures.TimeoutError as exc:
        lookup.cancel()
        raise DeliveryError(f"DNS resolution of {host} took over {timeout:g} s") from exc
    except (OSError, UnicodeError) as exc:
        raise DeliveryError(f"DNS resolution failed for {host}: {exc}") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise DeliveryError(f"DNS resolution returned no address for {host}")
    if not allow_private:
        for address in addresses:
            if not address_is_public(address):
                # The address goes to our log only: in the customer's delivery log it
                # would look up names of our own network for them.
                logger.warning("webhook target %s refused: it resolves to %s", host, address)
                raise BlockedTarget(f"refused: {host} resolves to a non-public address")
    return addresses


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" is a digit to isdigit(), not to float()
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):  # a huge field is an OverflowError
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - timezone.now()).total_seconds())


_FIXED_HEADERS = {"Content-Type": "application/json", "User-Agent": USER_AGENT}


def post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    allow_private: bool,
) -> Answer:
    """POST `body` to `url` and report the answer; DeliveryError when there is none."""
    problem = url_problem(url, allow_private=allow_private)
    if problem:
        raise BlockedTarget(f"refused: {problem}")
    parts = urlsplit(url)
    host = ascii_host(parts.hostname.rstrip("."))  # (url_problem found it has one)
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    deadline = time.monotonic() + timeout
    address = _resolve(host, port, allow_private=allow_private, timeout=timeout)[0]
    left = max(deadline - time.monotonic(), 0.1)  # what the lookup left of the timeout
    path, request_headers = _request_target(
        parts, host=host, port=port, default_port=default_port, headers=headers
    )
    # The connection gets what the lookup left too: a whole timeout of its own let an
    # attempt outlast its hold on the delivery (delivery.attempt_lease).
    pool = _pool(parts.scheme, address, port, host=host, timeout=left)
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    # urllib3's timeout bounds each read; a receiver sending a byte at a time within it
    # would hold the worker for hours (and past its lease, when another worker sends
    # the event again). The watchdog cuts the connection at the deadline.
    watchdog = threading.Timer(left, pool.connection_cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        status_code, excerpt, retry_after = _send(
            pool, path, body, request_headers, timeout=timeout
        )
    except DeliveryError as exc:
        if pool.cut:
            raise DeliveryError(f"timeout after {timeout:g} s", duration_ms=elapsed_ms()) from exc
        exc.duration_ms = elapsed_ms()
        raise
    finally:
        watchdog.cancel()
        pool.close()
    if pool.cut:
        # Cut mid-answer, a read may end quietly with what had come: no answer in time.
        raise DeliveryError(f"timeout after {timeout:g} s", duration_ms=elapsed_ms())
    return Answer(
        status_code=status_code,
        duration_ms=elapsed_ms(),
        # (NUL is no text to PostgreSQL: a binary body could not be logged.)
        excerpt=storable(excerpt.decode("utf-8", "replace"))[:EXCERPT_CHARS],
        retry_after_seconds=_retry_after(retry_after),
    )


def _request_target(
    parts: SplitResult, *, host: str, port: int, default_port: int, headers: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """The request's path (with its query) and headers (the Host as the URL names it)."""
    netloc_host = f"[{host}]" if ":" in host else host
    request_headers = {
        **headers,
        "Host": netloc_host if port == default_port else f"{netloc_host}:{port}",
        **_FIXED_HEADERS,
    }
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return path, request_headers


class _Cuttable:
    """A pool that keeps the connection it opened, so a watchdog can cut it."""

    connection: urllib3.connection.HTTPConnection | None = None
    cut = False

    def _new_conn(self) -> urllib3.connection.HTTPConnection:
        self.connection = super()._new_conn()
        return self.connection

    def connection_cut(self) -> None:
        """Shut the connection's socket: a read blocked on it ends at once."""
        self.cut = True
        sock = getattr(self.connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _HTTPPool(_Cuttable, urllib3.HTTPConnectionPool):
    pass


class _HTTPSPool(_Cuttable, urllib3.HTTPSConnectionPool):
    pass


def _pool(scheme: str, address: str, port: int, *, host: str, timeout: float) -> _Cuttable:
    """A one-connection pool to the checked `address`; TLS verified against `host`."""
    kwargs: dict[str, object] = {
        "timeout": urllib3.Timeout(total=timeout),
        "retries": False,
        "maxsize": 1,
    }
    if scheme != "https":
        return _HTTPPool(address, port, **kwargs)
    return _HTTPSPool(
        address,
        port,
        cert_reqs="CERT_REQUIRED",
        server_hostname=host,
        assert_hostname=host,
        **kwargs,
    )


def _send(
    pool: _Cuttable, path: str, body: bytes, headers: dict[str, str], *, timeout: float
) -> tuple[int, bytes, str | None]:
    """The answer's status, the start of its body and its Retry-After; DeliveryError
    (its duration set by the caller) when there is no answer (`timeout`: the attempt's,
    as its log names it)."""
    try:
        response = pool.urlopen(
            "POST",
            path,
            body=body,
            headers=headers,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
        )
        try:
            excerpt = response.read(EXCERPT_CHARS * 4, decode_content=False)
        finally:
            response.release_conn()
    except urllib3.exceptions.NewConnectionError as exc:
        # A subclass of ConnectTimeoutError in urllib3 2, but a refusal, not a timeout.
        raise DeliveryError(f"connection failed: {exc.__context__ or exc}"[:300]) from exc
    except urllib3.exceptions.TimeoutError as exc:
        raise DeliveryError(f"timeout after {timeout:g} s") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise DeliveryError(f"connection error: {type(exc).__name__}: {exc}"[:300]) from exc
    except Exception as exc:
        # Whatever else an odd answer makes the client raise: an attempt that escapes
        # unlogged leaves the delivery claimed, and every later wake-up sends it again.
        raise DeliveryError(f"unreadable answer: {type(exc).__name__}"[:300]) from exc
    return response.status, excerpt, response.headers.get("Retry-After")
