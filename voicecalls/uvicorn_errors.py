"""uvicorn's own answer to a request it cannot parse (malformed HTTP: 400) in the API's
one error shape, where uvicorn writes plain text that clients' error handling cannot
read: the ASGI counterpart of voicecalls.gunicorn_errors.

uvicorn has no setting for this answer: its HTTP protocol class is named instead, by
the streams' worker class (gunicorn.streams.conf.py) and by `make run`
(`uvicorn --http voicecalls.uvicorn_errors:JSONErrorsHttpToolsProtocol`).
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from voicecalls.error_shape import error_body


class JSONErrorsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (what "auto" picks, httptools being installed)."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(error_body("client_error", "bad_request", msg)).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: " + str(len(body)).encode("ascii") + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()


class StreamsWorker(UvicornWorker):
    """gunicorn's uvicorn worker, with the protocol above."""

    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "http": JSONErrorsHttpToolsProtocol}
