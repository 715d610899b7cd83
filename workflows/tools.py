"""A workflow agent's tools: function tools (a JSON Schema of arguments, an optional
https endpoint) and transfer tools (where a phone call may be handed to a person)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.settings import api_settings

from telephony.fields import TransferDestinationField
from voicecalls.fields import JSONSchemaDocumentField, JSONTypedSerializer
from voicecalls.json_schemas import offered_tool_parameters

# Agent and tool names become LLM function names (`transfer_to_<agent>`), whose
# providers accept ^[a-zA-Z0-9_-]{1,64}$.
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
NAME_HELP = "Letters, digits, `_` and `-`; at most 64 characters."
RESERVED_TOOL_PREFIX = "transfer_to_"
MAX_TOOL_DESCRIPTION_CHARS = 1_024
MAX_PARAMETERS_BYTES = 16 * 1024
MAX_PARAMETERS_DEPTH = 32
MAX_TRANSFER_DESTINATIONS = 10
MAX_TRANSFER_MESSAGE_CHARS = 500


class ToolType:
    FUNCTION = "function"
    TRANSFER = "transfer"


TOOL_TYPES = [ToolType.FUNCTION, ToolType.TRANSFER]


def error_detail(message: str, code: str) -> list[ErrorDetail]:
    return [ErrorDetail(message, code=code)]


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": True,
        "required": ["type"],
        "properties": {"type": {"type": "string", "enum": ["object"]}},
        "description": "A JSON Schema (type `object`) for the tool's arguments; omitted: none.",
        "example": {
            "type": "object",
            "properties": {"meal_type": {"type": "string"}},
            "required": ["meal_type"],
        },
    }
)
class JSONSchemaField(JSONSchemaDocumentField):
    """A JSON Schema for a tool's arguments: an object schema the validator accepts."""

    max_depth = MAX_PARAMETERS_DEPTH
    max_bytes = MAX_PARAMETERS_BYTES
    default_error_messages = {
        "not_object_type": 'Tool parameters must be a schema of "type": "object".',
    }

    def to_internal_value(self, data: object) -> dict:
        value = super().to_internal_value(data)
        if value.get("type") != "object":
            self.fail("not_object_type")
        return value


class ReportingListSerializer(serializers.ListSerializer):
    """Reports a wrong list length on the list itself (`agents`), not on
    `agents.non_field_errors`."""

    def to_internal_value(self, data: Any) -> list:
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            detail = exc.detail
            if isinstance(detail, dict) and set(detail) == {api_settings.NON_FIELD_ERRORS_KEY}:
                raise serializers.ValidationError(
                    detail[api_settings.NON_FIELD_ERRORS_KEY]
                ) from exc
            raise


class WorkflowToolSerializer(JSONTypedSerializer):
    name = serializers.RegexField(NAME_PATTERN, max_length=64, help_text=NAME_HELP)
    type = serializers.ChoiceField(
        choices=TOOL_TYPES,
        default=ToolType.FUNCTION,
        help_text="`function`: the model calls it with `parameters` (POSTed to `url` when "
        "set). `transfer`: on phone calls, hands the caller to one of `destinations`.",
    )
    description = serializers.CharField(
        max_length=MAX_TOOL_DESCRIPTION_CHARS,
        allow_blank=True,
        default="",
        help_text="What the tool does, for the LLM.",
    )
    parameters = JSONSchemaField(default=dict)
    url = serializers.URLField(
        max_length=2000,
        required=False,
        allow_null=True,
        default=None,
        help_text="Optional https endpoint the worker POSTs the arguments to.",
    )
    destinations = serializers.ListField(
        child=TransferDestinationField(),
        max_length=MAX_TRANSFER_DESTINATIONS,
        default=list,
        help_text="`transfer` tools: where the call may go, E.164 numbers or `sip:` URIs; "
        "the only destinations a transfer accepts.",
    )
    message = serializers.CharField(
        max_length=MAX_TRANSFER_MESSAGE_CHARS,
        allow_blank=True,
        default="",
        help_text="`transfer` tools: said to the caller before the transfer; empty: nothing.",
    )

    class Meta:
        list_serializer_class = ReportingListSerializer

    def validate_name(self, value: str) -> str:
        if value.startswith(RESERVED_TOOL_PREFIX):
            raise serializers.ValidationError(
                f"Tool names starting with {RESERVED_TOOL_PREFIX!r} are reserved for handoffs.",
                code="reserved",
            )
        return value

    def validate_url(self, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith("https://"):
            raise serializers.ValidationError("Tool URLs must use https.", code="https_required")
        try:
            urlsplit(value or "").port  # noqa: B018 - URLField takes any five digits
        except ValueError as exc:
            raise serializers.ValidationError("Enter a valid URL.", code="invalid") from exc
        return value

    def validate(self, data: dict) -> dict:
        if data["type"] == ToolType.TRANSFER:
            if not data["destinations"]:
                raise serializers.ValidationError(
                    {
                        "destinations": error_detail(
                            "A transfer tool needs destinations.", "required"
                        )
                    }
                )
            if data["url"] is not None:
                raise serializers.ValidationError(
                    {"url": error_detail("A transfer tool has no url.", "not_allowed")}
                )
            return data
        if data["destinations"] or data["message"]:
            field = "destinations" if data["destinations"] else "message"
            raise serializers.ValidationError(
                {field: error_detail("Only transfer tools have this.", "not_allowed")}
            )
        # Stored as before transfer tools existed: a function tool has neither.
        del data["destinations"], data["message"]
        return data

    def to_internal_value(self, data: Any) -> dict:
        value = super().to_internal_value(data)
        if not value["parameters"]:
            value["parameters"] = {"type": "object", "properties": {}}
        return value


# Anthropic refuses every request offering a tool whose argument names (the properties
# of its parameters as offered, `offered_tool_parameters`) do not all match this.
ANTHROPIC_PROPERTY_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,64}")


def tool_property_problems(agent: dict) -> dict[str, list[ErrorDetail]]:
    """Errors by field for the agent's tools whose argument names its LLM (or one of
    its fallbacks) refuses."""
    llms = [agent["llm"], *agent["llm"].get("fallbacks", [])]
    if not any(llm["provider"] == "anthropic" for llm in llms):
        return {}
    errors = {}
    for index, tool in enumerate(agent["tools"]):
        names = offered_tool_parameters(tool["parameters"])["properties"]
        bad = next((n for n in names if not ANTHROPIC_PROPERTY_NAME.fullmatch(n)), None)
        if bad is not None:
            errors[f"tools.{index}.parameters"] = error_detail(
                f"Argument name {bad[:80]!r}: anthropic takes only letters, digits, `_`, "
                "`.` and `-`, at most 64 characters.",
                "unsupported_property_name",
            )
    return errors
