from __future__ import annotations

from collections.abc import Callable

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
