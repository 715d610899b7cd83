"""What the servers answer themselves, before Django sees the request (gunicorn: a
header or request line over its limits, malformed HTTP; uvicorn, serving the streams
and `make run`: malformed HTTP), is in the API's one error shape too."""

from __future__ import annotations

import json
import socket
import sys
from types import SimpleNamespace

import pytest

from tests.live_server import _environment, _free_port, process_serving, run_dev_option


def raw_request(live, request: bytes) -> tuple[int, str, dict]:
    """Send `request` as is; the status, Content-Type and JSON body of the answer."""
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.lower(): value for name, value in (line.split(": ", 1) for line in header_lines)
    }
    return int(status_line.split()[1]), headers["content-type"], json.loads(body)


TOO_LARGE = "request_header_fields_too_large"
BAD_LENGTH = b"GET /api/v1/calls HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n"


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "Connection: close", "", ""]
    return "\r\n".join(lines).encode()


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (get("/api/v1/calls", "X-Big: " + "a" * 9000), 431, TOO_LARGE),
        (get("/api/v1/calls", *[f"X-H{n}: 1" for n in range(120)]), 431, TOO_LARGE),
        (get("/api/v1/calls?user_id=" + "a" * 5000), 414, "request_uri_too_long"),
        (BAD_LENGTH, 400, "bad_request"),
        (b"NOT A REQUEST\r\n\r\n", 400, "bad_request"),
    ],
    ids=["long-header", "many-headers", "long-uri", "bad-content-length", "bad-request-line"],
)
def test_a_request_gunicorn_refuses_is_answered_in_the_error_shape(
    live_server_gunicorn, request_bytes, status, code
) -> None:
    answer_status, content_type, body = raw_request(live_server_gunicorn, request_bytes)

    assert (answer_status, content_type) == (status, "application/json")
    assert body["type"] == "client_error"
    assert [(error["code"], error["attr"]) for error in body["errors"]] == [(code, None)]
    assert body["errors"][0]["detail"]


# --- uvicorn: the streams' service and `make run` -------------------------------------


@pytest.mark.parametrize("service", ["streams-gunicorn", "make-run-uvicorn"])
def test_a_request_uvicorn_cannot_parse_is_answered_in_the_error_shape(service, tmp_path) -> None:
    port = _free_port()
    env = _environment(tmp_path, port)
    if service == "streams-gunicorn":
        env.update(STREAMS_BIND=f"127.0.0.1:{port}", STREAMS_WORKERS="1")
        command = [sys.executable, "-m", "gunicorn", "voicecalls.asgi:application"]
        command += ["-c", "gunicorn.streams.conf.py", "--no-control-socket"]
    else:
        command = [sys.executable, "-m", "uvicorn", "voicecalls.asgi:application"]
        command += ["--port", str(port), "--http", run_dev_option("--http")]
    server = process_serving(command, env, port, tmp_path / "server.log")
    try:
        live = SimpleNamespace(url=f"http://127.0.0.1:{port}")
        answer_status, content_type, body = raw_request(live, b"NOT A REQUEST\r\n\r\n")
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert (answer_status, content_type) == (400, "application/json")
    assert body == {
        "type": "client_error",
        "errors": [
            {"code": "bad_request", "detail": "Invalid HTTP request received.", "attr": None}
        ],
    }
