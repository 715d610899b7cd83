from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


class RequestBodyLimitMiddleware:
    """Refuse bodies over `API_MAX_BODY_BYTES` with 413 before anything reads them.

    Django's own limit raises `RequestDataTooBig`, which surfaces as a 400; clients
    deserve the precise status, in the API's error shape.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.API_MAX_BODY_BYTES:
            return JsonResponse(
                {
                    "type": "client_error",
                    "errors": [
                        {
                            "code": "request_too_large",
                            "detail": f"Request body exceeds {settings.API_MAX_BODY_BYTES} bytes.",
                            "attr": None,
                        }
                    ],
                },
                status=413,
            )
        return self.get_response(request)


class ChunkedBodyMiddleware:
    """WSGI middleware: a chunked request body (`Transfer-Encoding: chunked`, no
    Content-Length) is read here, at most `API_MAX_BODY_BYTES` + 1 bytes, and handed on
    with its length. Django reads exactly CONTENT_LENGTH bytes, so under gunicorn such
    a body was read as empty; over the limit, RequestBodyLimitMiddleware answers 413."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not environ.get("CONTENT_LENGTH"):
            wanted = settings.API_MAX_BODY_BYTES + 1
            body = io.BytesIO()
            while body.tell() < wanted:
                data = environ["wsgi.input"].read(wanted - body.tell())
                if not data:
                    break
                body.write(data)
            environ["CONTENT_LENGTH"] = str(body.tell())
            body.seek(0)
            environ["wsgi.input"] = body
        return self.app(environ, start_response)
