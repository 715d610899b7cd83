from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from voicecalls.error_shape import error_body


def _too_large() -> dict:
    detail = f"Request body exceeds {settings.API_MAX_BODY_BYTES} bytes."
    return error_body("client_error", "request_too_large", detail)


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
            return JsonResponse(_too_large(), status=413)
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


class ASGIBodyLimitMiddleware:
    """ASGI middleware: Django's ASGI handler reads a whole request body into a temporary
    file before any Django middleware runs, so RequestBodyLimitMiddleware answered only
    after gigabytes reached the disk. Here at most `API_MAX_BODY_BYTES` + 1 bytes are
    read: a body declared or found larger is a 413 at once (the connection closed on
    the rest); a smaller one is handed on as it came."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.API_MAX_BODY_BYTES
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await _send_too_large(send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client left: Django sees it as it would have
            size += len(message.get("body", b""))
            if size > limit:
                return await _send_too_large(send)
            if not message.get("more_body", False):
                break
        pending = iter(messages)

        async def replay() -> dict:
            # The body as it came, then the connection's own messages (a disconnect
            # ends a stream).
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)


async def _send_too_large(send: Callable) -> None:
    body = json.dumps(_too_large()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# Under /api/ but a page a person opens in a browser (no key, nothing to resend):
# redirected to HTTPS like the admin.
_API_PAGES = frozenset({"/api/docs/"})


class APIHTTPSRequiredMiddleware:
    """With SECURE_SSL_REDIRECT, an API request over plain HTTP is refused (403 in the
    error shape) before SecurityMiddleware redirects it: a client following the 301
    turns a POST into a GET (a create answered with the calls list), and its key went
    out in the clear already. The docs page is redirected."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.refuse = settings.SECURE_SSL_REDIRECT

    def __call__(self, request: HttpRequest) -> HttpResponse:
        api = request.path.startswith("/api/") and request.path not in _API_PAGES
        if self.refuse and api and not request.is_secure():
            detail = "The API is served over HTTPS only: send this request to https://."
            return JsonResponse(error_body("client_error", "https_required", detail), status=403)
        return self.get_response(request)
