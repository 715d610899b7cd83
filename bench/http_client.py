"""What the scenarios send, over HTTP to a gunicorn on loopback: the repository's
gunicorn.conf.py (2 sync workers, its access log written and discarded), DEBUG off,
production logging. The subset of Django's test `Client` the scenarios use, so each
request costs what it costs a user, parsing and logging included."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2


@dataclass
class Response:
    status_code: int
    content: bytes

    def json(self) -> object:
        return json.loads(self.content)


class GunicornClient:
    """`get` and `post` as Django's test Client takes them (`HTTP_*` keyword headers),
    one connection per request as sync workers close each one."""

    def __init__(self, port: int, **headers: str) -> None:
        self.port = port
        self.headers = _header_names(headers)

    def get(self, path: str, params: dict | None = None, **headers: str) -> Response:
        query = f"?{urlencode(params)}" if params else ""
        return self._send("GET", path + query, None, headers)

    def post(
        self,
        path: str,
        data: object = None,
        content_type: str = "application/json",
        **headers: str,
    ) -> Response:
        if isinstance(data, str):
            body = data.encode()
        elif isinstance(data, bytes):
            body = data
        else:
            body = json.dumps(data).encode()
        return self._send("POST", path, body, {**headers, "CONTENT_TYPE": content_type})

    def _send(self, method: str, path: str, body: bytes | None, headers: dict) -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(
                method, path, body=body, headers={**self.headers, **_header_names(headers)}
            )
            response = connection.getresponse()
            return Response(status_code=response.status, content=response.read())
        finally:
            connection.close()


def _header_names(headers: dict) -> dict:
    """`HTTP_X_REQUEST_ID` → `X-Request-Id`, `CONTENT_TYPE` → `Content-Type`."""
    return {
        name.removeprefix("HTTP_").replace("_", "-").title(): value
        for name, value in headers.items()
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gunicorn(env_extra: dict | None = None) -> Iterator[int]:
    """A gunicorn serving the project on a free loopback port, for the `with` block."""
    port = free_port()
    # Worker recycling as configured (every ~5,000 requests), as users get it.
    env = {**os.environ, "WEB_CONCURRENCY": str(WORKERS)}
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "voicecalls.wsgi:application",
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
        ],
        cwd=ROOT,
        env={**env, **(env_extra or {})},
        # gunicorn.conf.py's access log is written, as in production, then discarded.
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_ready(port)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer /healthz within 60 s")
