"""gunicorn's own answers to requests it cannot parse (a header or request line over its
limits: 431, 414; malformed HTTP: 400) in the API's one error shape, where gunicorn
writes an HTML page that clients' error handling cannot read.

gunicorn has no hook for these answers: gunicorn.conf.py swaps its writer for this
one. Standard library and gunicorn only (and the shape, voicecalls.error_shape): it is
loaded before Django.
"""

from __future__ import annotations

import json
import socket

from gunicorn import util

from voicecalls.error_shape import error_body

_CODES = {
    400: "bad_request",
    403: "permission_denied",
    414: "request_uri_too_long",
    417: "expectation_failed",
    431: "request_header_fields_too_large",
    500: "error",
    501: "not_implemented",
}


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """`gunicorn.util.write_error`'s signature and framing, with a JSON body."""
    kind = "server_error" if status_int >= 500 else "client_error"
    error = error_body(kind, _CODES.get(status_int, "error"), mesg or reason)
    body = json.dumps(error).encode()  # ASCII: escapes the rest
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def answer_errors_in_json() -> None:
    util.write_error = write_json_error
