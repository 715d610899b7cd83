"""API exceptions beyond DRF's own, and JSON answers for Django-level errors.

Every error leaves the service in drf-standardized-errors' one shape:
`{"type": ..., "errors": [{"code", "detail", "attr"}]}`.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.log import log_response
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse
from drf_standardized_errors.formatter import ExceptionFormatter as BaseExceptionFormatter
from drf_standardized_errors.handler import ExceptionHandler as BaseExceptionHandler
from drf_standardized_errors.types import ErrorResponse
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ParseError

from voicecalls.db_timeouts import timeout_cancelled
from voicecalls.error_shape import error_body

logger = logging.getLogger(__name__)


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


class ServiceUnavailable(APIException):
    """503: the database could not serve the request (refusing connections, a lock or
    statement timeout, the connection lost); its transaction rolled back."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The service is busy or its database is unavailable; retry shortly."
    default_code = "service_unavailable"
    # A restart, a failover or a burst passes in seconds: long enough not to hammer it.
    RETRY_AFTER_SECONDS = 5

    def __init__(self) -> None:
        super().__init__()
        self.wait = self.RETRY_AFTER_SECONDS


class LimitExceeded(Exception):
    """A per-organization limit a service would not pass (raised by services, which know
    no HTTP); `exception_handler` answers it as a 429 with `meta` and Retry-After."""

    code = "limit_reached"
    detail = "A limit of your organization was reached."

    def __init__(self, *, meta: dict[str, Any], retry_after: int | None = None) -> None:
        super().__init__(self.detail)
        self.meta = meta
        self.retry_after = retry_after


class LimitReached(APIException):
    """429 for a per-organization limit; `meta` carries the numbers behind it."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = "A limit of your organization was reached."
    default_code = "limit_reached"

    def __init__(
        self, detail: str, *, code: str, meta: dict[str, Any], retry_after: int | None = None
    ) -> None:
        super().__init__(detail, code=code)
        self.meta = meta
        # DRF's exception handler turns `wait` into the Retry-After header.
        self.wait = retry_after


class ExceptionFormatter(BaseExceptionFormatter):
    """drf-standardized-errors' shape, plus a top-level `meta` when the error has one."""

    def format_error_response(self, error_response: ErrorResponse) -> dict:
        body = super().format_error_response(error_response)
        meta = getattr(self.original_exc, "meta", None)
        if meta is not None:
            body["meta"] = meta
        return body


class ExceptionHandler(BaseExceptionHandler):
    """drf-standardized-errors' handler, with the services' own limits as 429s."""

    def convert_known_exceptions(self, exc: Exception) -> Exception:
        if isinstance(exc, LimitExceeded):
            return LimitReached(
                exc.detail, code=exc.code, meta=exc.meta, retry_after=exc.retry_after
            )
        if isinstance(exc, SuspiciousOperation):
            # Django's own 400s raised while a DRF view reads the request (over
            # DATA_UPLOAD_MAX_NUMBER_FIELDS query parameters: TooManyFieldsSent), which
            # Django answers 400 outside DRF; its message may name settings: not echoed.
            return ParseError("The request could not be read.", code="bad_request")
        if isinstance(exc, (OperationalError, InterfaceError)):
            # Transient, not a bug: a 500 said so, where Retry-After tells clients when
            # to retry (django.request logs it with its traceback, as it did the 500).
            return ServiceUnavailable()
        return super().convert_known_exceptions(exc)

    def report_exception(self, exc: APIException, response: Any) -> None:
        cancelled = timeout_cancelled(self.exc)
        if cancelled is None:
            return super().report_exception(exc, response)
        # The database bounded the request as asked (voicecalls.db_timeouts): no bug to
        # trace, and its statement and parameters stay out of the log.
        request = getattr(self.context.get("request"), "_request", None)
        log_response(
            "Service Unavailable (%s): %s %s",
            cancelled,
            getattr(request, "method", ""),
            getattr(request, "path", ""),
            response=response,
            request=request,
            logger=logger,
            level="warning",
        )


def error_json(status_code: int, error_type: str, code: str, detail: str) -> JsonResponse:
    """The one error shape, for plain Django views (outside DRF's exception handler)."""
    return JsonResponse(error_body(error_type, code, detail), status=status_code)


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


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: the API authenticates by header and exempts itself, so an API
    path only gets here by a bug; answer in the API's shape all the same."""
    if _is_api(request):
        return _error(403, "client_error", "permission_denied", "CSRF verification failed.")
    from django.views.csrf import csrf_failure as django_csrf_failure

    return django_csrf_failure(request, reason)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return _error(403, "client_error", "permission_denied", "Permission denied.")
    return defaults.permission_denied(request, exception)


ERROR_TYPES = ["validation_error", "client_error", "server_error"]


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code.")
    detail = serializers.CharField(help_text="Human-readable message.")
    attr = serializers.CharField(
        allow_null=True,
        help_text="The offending field or parameter (`events.3.timestamp` inside lists), or null.",
    )


class ErrorResponseSerializer(serializers.Serializer):
    """The one error shape of every 4xx and 5xx answer."""

    type = serializers.ChoiceField(choices=ERROR_TYPES)
    errors = ErrorDetailSerializer(many=True)
    meta = serializers.DictField(
        required=False, help_text="Numbers behind the error, when a client needs them (429)."
    )


class LimitMetaSerializer(serializers.Serializer):
    """The numbers behind a 429 of a call's creation: the concurrency limit's, or (a
    phone call) the outbound rate's or daily cap's."""

    active_calls = serializers.IntegerField(
        required=False, help_text="`concurrency_limit_reached`: calls not yet ended now."
    )
    concurrency_limit = serializers.IntegerField(
        required=False, help_text="`concurrency_limit_reached`: most calls not yet ended at once."
    )
    limit = serializers.ChoiceField(
        choices=["outbound_calls_per_minute", "outbound_calls_per_day"],
        required=False,
        help_text="`outbound_rate_limited`: which limit; its value is under its own name.",
    )
    outbound_calls_per_minute = serializers.IntegerField(required=False)
    outbound_calls_per_day = serializers.IntegerField(required=False)


class LimitErrorResponseSerializer(ErrorResponseSerializer):
    """429: `concurrency_limit_reached` or `outbound_rate_limited` (with `meta`), or
    `throttled` (see Retry-After)."""

    meta = LimitMetaSerializer(
        required=False, help_text="With `concurrency_limit_reached` and `outbound_rate_limited`."
    )


ERROR_DESCRIPTIONS = {
    400: "Invalid request: malformed JSON, or a field or query parameter named in `attr`.",
    401: "Missing or invalid API key.",
    403: "The key may not use this endpoint (client keys vs agent keys), or "
    "`organization_suspended`: staff suspended your organization (contact support).",
    404: "No such object in your organization.",
    405: "Method not allowed.",
    406: "Not acceptable: the `Accept` header allows no JSON, which is all the API answers.",
    409: "Conflict with the resource's current state.",
    413: "Request body over 1 MiB.",
    415: "Unsupported media type: the API speaks JSON only.",
    422: "Idempotency-Key reused for a different request (another body or endpoint).",
    429: "Too many requests; wait `Retry-After` seconds.",
    500: "Server error.",
    502: "LiveKit unreachable or failing; nothing changed.",
    503: "`service_unavailable`: the service is busy or its database is unavailable "
    "(restarting, failing over, overloaded); retry after `Retry-After` seconds.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """Schema entries for error statuses drf-standardized-errors cannot infer."""
    return {
        code: OpenApiResponse(ErrorResponseSerializer, description=ERROR_DESCRIPTIONS[code])
        for code in codes
    }
