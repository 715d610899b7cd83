"""Under ASGI (the streams' service, `make run`) a body over 1 MiB is refused before it
is read, as under gunicorn's sync workers: Django's ASGI handler reads a whole body to a
temporary file before any view or middleware runs, so nobody could fill the disk."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

MIB = 1024 * 1024
STREAM = "/api/v1/calls/00000000-0000-0000-0000-000000000000/stream"
TOO_LARGE = {
    "type": "client_error",
    "errors": [
        {"code": "request_too_large", "detail": "Request body exceeds 1048576 bytes.", "attr": None}
    ],
}

pytestmark = pytest.mark.django_db(transaction=True)


def post_without_end(base: str, head: str, body: bytes) -> tuple[int, dict]:
    """Send `head` and `body` and no more of what `head` announced: the answer that
    comes (a server waiting for the rest of the body times this out). `body` is kept
    short of what a server reads at once: closing on unread bytes would reset the
    connection, the answer lost."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"POST {STREAM} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode())
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head_bytes, _, payload = answer.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), json.loads(payload)


def test_a_body_declared_over_the_limit_is_413_before_it_is_read(stream_server) -> None:
    head = f"Content-Type: application/json\r\nContent-Length: {10 * 1024 * MIB}\r\n"

    # No byte of the body: answered at once, any byte sent would be unread at the close.
    assert post_without_end(stream_server, head, b"") == (413, TOO_LARGE)


def test_a_chunked_body_is_413_once_it_passes_the_limit(stream_server) -> None:
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"  # 64 KiB
    head = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"

    # 1 MiB and one byte, and no last chunk: the body goes on as far as the server knows.
    # (The byte over the limit comes last: answered with bytes unread, the server's
    # close would reset the connection, the answer lost.)
    assert post_without_end(stream_server, head, chunk * 16 + b"1\r\n \r\n") == (413, TOO_LARGE)


def test_a_body_within_the_limit_still_reaches_the_view(stream_server, client_key) -> None:
    key = {"provider_type": "stt", "provider_name": "deepgram", "api_key": "dg-asgi-0123"}
    answer = httpx.post(
        f"{stream_server}/api/v1/provider-keys",
        content=json.dumps(key) + " " * (MIB - 100),
        headers={"Authorization": f"Bearer {client_key}", "Content-Type": "application/json"},
        timeout=10,
    )

    assert answer.status_code == 201, answer.text
    assert answer.json()["masked_key"] == "••••0123"
