"""drf-spectacular extensions: how our authentication and errors appear in openapi.yaml."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse
from drf_standardized_errors.openapi import AutoSchema as StandardizedErrorsAutoSchema

from voicecalls.errors import ERROR_DESCRIPTIONS, ErrorResponseSerializer


class BearerAPIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "voicecalls.auth.APIKeyAuthentication"
    name = "BearerAuth"

    def get_security_definition(self, auto_schema: object) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: `Authorization: Bearer <key>`.",
        }


_BODY_METHODS = ("POST", "PUT", "PATCH")


class AutoSchema(StandardizedErrorsAutoSchema):
    """drf-standardized-errors' per-operation errors, all in the one `ErrorResponse`
    component, plus 413 wherever a body is taken and 429 where requests are throttled."""

    def _should_add_error_response(self, responses: dict, status_code: str) -> bool:
        if status_code == "413":
            # RequestBodyLimitMiddleware answers any body over 1 MiB.
            return status_code not in responses and self.method in _BODY_METHODS
        return super()._should_add_error_response(responses, status_code)

    def _should_add_http429_error_response(self) -> bool:
        from voicecalls.throttling import is_create_operation

        return bool(self.view.get_throttles()) and is_create_operation(
            method=self.method, action=getattr(self.view, "action", None), path=self.path
        )

    def _get_error_response_serializer(self, status_code: str) -> OpenApiResponse:
        return OpenApiResponse(
            ErrorResponseSerializer, description=ERROR_DESCRIPTIONS[int(status_code)]
        )

    def _get_response_headers_for_code(self, status_code: str, direction: str = "response") -> dict:
        headers = super()._get_response_headers_for_code(status_code, direction)
        if str(status_code) == "429":
            headers.setdefault(
                "Retry-After",
                {
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "Seconds to wait before retrying (when throttled).",
                },
            )
        elif str(status_code) == "401" and self._should_add_http401_error_response():
            headers.setdefault(
                "WWW-Authenticate",
                {"schema": {"type": "string"}, "description": "`Bearer`."},
            )
        return headers
