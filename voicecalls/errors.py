"""API exceptions beyond DRF's own, and JSON answers for Django-level errors.

Every error leaves the service in drf-standardized-errors' one shape:
`{"type": ..., "errors": [{"code", "detail", "attr"}]}`.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers, status
from rest_framework.exceptions import APIException


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


class UnprocessableEntity(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "The request cannot be processed."
    default_code = "unprocessable"


class BadGateway(APIException):
    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "An upstream service failed."
    default_code = "bad_gateway"


def error_json(status_code: int, error_type: str, code: str, detail: str) -> JsonResponse:
    """The one error shape, for plain Django views (outside DRF's exception handler)."""
    body = {"type": error_type, "errors": [{"code": code, "detail": detail, "attr": None}]}
    return JsonResponse(body, status=status_code)


_error = error_json


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


# Django-level handlers (unknown URLs, errors raised outside DRF views): JSON for the
# API, Django's own pages for the admin.
@csrf_exempt  # also the catch-all for unknown /api/ paths: a POST there is a 404, not a CSRF 403
def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return _error(404, "client_error", "not_found", "Not found.")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return _error(500, "server_error", "error", "Server Error (500).")
    return defaults.server_error(request)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return _error(400, "client_error", "bad_request", "Bad request.")
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return _error(403, "client_error", "permission_denied", "Permission denied.")
    return defaults.permission_denied(request, exception)


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code.")
    detail = serializers.CharField(help_text="Human-readable message.")
    attr = serializers.CharField(allow_null=True, help_text="The offending field, if any.")


class ErrorResponseSerializer(serializers.Serializer):
    """The one error shape (documented for 409, 413, 422 and 502)."""

    type = serializers.ChoiceField(choices=["client_error", "server_error"])
    errors = ErrorDetailSerializer(many=True)


_ERROR_DESCRIPTIONS = {
    409: "Conflict with the resource's current state.",
    413: "Request body over 1 MiB.",
    422: "Idempotency-Key reused with a different body.",
    502: "LiveKit unreachable or failing; nothing changed.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Schema entries for error statuses drf-standardized-errors cannot infer."""
    return {
        code: OpenApiResponse(ErrorResponseSerializer, description=_ERROR_DESCRIPTIONS[code])
        for code in codes
    }
