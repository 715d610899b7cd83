"""drf-spectacular extensions: how our authentication and errors appear in openapi.yaml."""

from __future__ import annotations

import json

from django.core.validators import ProhibitNullCharactersValidator, RegexValidator
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_basic_type, is_list_serializer, is_patched_serializer
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from drf_standardized_errors.openapi import AutoSchema as StandardizedErrorsAutoSchema
from rest_framework import serializers

from voicecalls.auth import IsAgentKey
from voicecalls.errors import ERROR_DESCRIPTIONS, ErrorResponseSerializer, ServiceUnavailable
from voicecalls.routing import UUID_PATTERN


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
# What ServiceUnavailable answers, shown with every 503.
_UNAVAILABLE_EXAMPLE = OpenApiExample(
    "Service unavailable",
    value={
        "type": "server_error",
        "errors": [
            {
                "code": ServiceUnavailable.default_code,
                "detail": ServiceUnavailable.default_detail,
                "attr": None,
            }
        ],
    },
)
# What str.strip() (DRF's trimming) removes, as a character class's contents, spelled
# out: `\s` means other characters to clients' ECMA-262 regular expressions (U+FEFF in;
# U+001C-U+001F and U+0085 out) than to Python's.
STRIPPED_CHARS = r"\t-\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# DRF's CharField refuses U+0000 and, unless blank is allowed, a value that is only
# whitespace once trimmed: at least one character that is neither.
_NO_NUL = r"^[^\u0000]*$"
_NOT_BLANK = rf"^[^\u0000]*[^{STRIPPED_CHARS}\u0000][^\u0000]*$"


def _state_text_rules(field: serializers.CharField, schema: dict) -> None:
    """Add the text rules DRF applies to every CharField that the schema does not
    already state by a pattern, a format or an enum."""
    if schema.get("type") != "string" or {"pattern", "format", "enum"} & set(schema):
        return
    if any(isinstance(v, RegexValidator) for v in field.validators):
        return  # drf-spectacular states the field's own regex as the pattern afterwards
    if not any(isinstance(v, ProhibitNullCharactersValidator) for v in field.validators):
        return  # a NUL is taken (and removed): NulRemovedCharField
    schema["pattern"] = _NO_NUL if field.allow_blank else _NOT_BLANK


class AutoSchema(StandardizedErrorsAutoSchema):
    """drf-standardized-errors' per-operation errors, all in the one `ErrorResponse`
    component, plus 413 wherever a body is taken, 429 where requests are throttled and
    503 wherever the database is read."""

    def _should_add_error_response(self, responses: dict, status_code: str) -> bool:
        if status_code == "413":
            # RequestBodyLimitMiddleware answers any body over 1 MiB.
            return status_code not in responses and self.method in _BODY_METHODS
        if status_code == "503":
            # The exception handler answers the database's errors so (ServiceUnavailable).
            reads_database = getattr(self.view, "reads_database", True)
            return reads_database and super()._should_add_error_response(responses, status_code)
        return super()._should_add_error_response(responses, status_code)

    def _should_add_http429_error_response(self) -> bool:
        # The rates count no agent key (OrganizationRateThrottle): a view only they reach
        # is never throttled.
        if any(isinstance(p, IsAgentKey) for p in self.view.get_permissions()):
            return False
        action = getattr(self.view, "action", None)
        return any(
            throttle.counts_operation(method=self.method, action=action, path=self.path)
            for throttle in self.view.get_throttles()
        )

    def _resolve_path_parameters(self, variables: list[str]) -> list[dict]:
        # Uuid segments (the routers' `lookup_value_regex`, `<any_uuid:>`) are uuids to
        # SDKs, not patterned text.
        parameters = super()._resolve_path_parameters(variables)
        for parameter in parameters:
            if parameter["schema"].get("pattern") == f"^{UUID_PATTERN}$":
                parameter["schema"] = build_basic_type(OpenApiTypes.UUID)
        return parameters

    def _map_serializer_field(self, field: object, direction: str, **kwargs: object) -> dict:
        # drf-spectacular states the item bounds of a ListField, not of a nested
        # serializer with many=True (`agents`, `tools`, `fallbacks`...).
        schema = super()._map_serializer_field(field, direction, **kwargs)
        if direction == "request" and isinstance(field, serializers.CharField) and schema:
            _state_text_rules(field, schema)
        if is_list_serializer(field) and schema and schema.get("type") == "array":
            min_items = field.min_length if field.allow_empty else max(field.min_length or 0, 1)
            if min_items:
                schema["minItems"] = min_items
            if field.max_length is not None:
                schema["maxItems"] = field.max_length
        return schema

    def _map_basic_serializer(self, serializer: object, direction: str) -> dict:
        # Generated clients (openapi-python-client) send a property's declared default
        # whenever the caller left it out: in a body whose absent keys mean "keep", a
        # PATCH of one field would reset the others. Such bodies declare none.
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and is_patched_serializer(serializer, direction):
            _drop_defaults(schema, state_in_description=False)
        elif direction == "request" and getattr(serializer, "merged_by_patch", False):
            _drop_defaults(schema, state_in_description=True)
        return schema

    def _get_error_response_serializer(self, status_code: str) -> OpenApiResponse:
        examples = [_UNAVAILABLE_EXAMPLE] if status_code == "503" else []
        return OpenApiResponse(
            ErrorResponseSerializer,
            description=ERROR_DESCRIPTIONS[int(status_code)],
            examples=examples,
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
        elif str(status_code) == "503":
            headers.setdefault(
                "Retry-After",
                {
                    "schema": {"type": "integer", "minimum": 0},
                    "required": True,
                    "description": "Seconds to wait before retrying.",
                },
            )
        elif str(status_code) == "401" and self._should_add_http401_error_response():
            headers.setdefault(
                "WWW-Authenticate",
                {"schema": {"type": "string"}, "description": "`Bearer`."},
            )
        return headers


def _drop_defaults(schema: dict, *, state_in_description: bool) -> None:
    """Remove `default` from each property (and its inline alternatives); with
    `state_in_description`, say it in the description instead."""
    for prop in schema.get("properties", {}).values():
        branches = [prop, *(b for k in ("anyOf", "oneOf") for b in prop.get(k, []))]
        defaults = [b.pop("default") for b in branches if isinstance(b, dict) and "default" in b]
        if defaults and state_in_description:
            text = json.dumps(defaults[0], ensure_ascii=False)
            prop["description"] = f"{prop.get('description', '')} Default: {text}.".strip()


_EMPTY_TEXT = {"type": "string", "maxLength": 0}


def blank_alternatives_postprocess(result: dict, **kwargs: object) -> dict:
    """drf-spectacular states a text field that may be blank and has a pattern, format
    or minimum as `oneOf: [its rules, an empty string]`; where its rules take "" too
    (`^[^\\u0000]*$`), "" matches both and `oneOf` refuses it. `anyOf` says what the
    API takes: either."""
    stack: list[object] = [result]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            alternatives = node.get("oneOf")
            if isinstance(alternatives, list) and _EMPTY_TEXT in alternatives:
                node["anyOf"] = node.pop("oneOf")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return result


def csv_parameters_postprocess(result: dict, **kwargs: object) -> dict:
    """A comma-separated query parameter (`status=a,b`) takes one value at least: its
    empty form (`status=`) is a 400 (calls.filters.NotBlankCSVField)."""
    for item in result.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                schema = parameter.get("schema", {})
                if parameter.get("style") == "form" and parameter.get("explode") is False:
                    if schema.get("type") == "array":
                        schema["minItems"] = 1
    return result
