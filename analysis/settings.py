"""A workflow's `analysis` setting: what the post-call analysis asks the LLM for.

Validated with the rest of the workflow at save time (`workflows.serializers`), so a
stored workflow never holds a prompt that does not compile, a schema the validator
refuses, or a provider the analysis cannot call.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from providerkeys.catalog import OPENAI_COMPATIBLE_LLM, PROVIDER_CATALOG
from voicecalls.fields import JSONSchemaDocumentField, JSONTypedSerializer
from workflows.prompts import template_error

DEFAULT_SUMMARY_PROMPT = "Summarize the call in two or three sentences."
MAX_SUMMARY_PROMPT_CHARS = 8_000
MAX_SUCCESS_CRITERIA_CHARS = 4_000
MAX_SCHEMA_BYTES = 16 * 1024
MAX_SCHEMA_DEPTH = 16


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": True,
        "nullable": True,
        "description": "A JSON Schema for the structured data to extract (at most 16 KiB); "
        "null: no structured data.",
        "example": {
            "type": "object",
            "properties": {"meal_type": {"type": "string"}, "calories": {"type": "integer"}},
            "required": ["meal_type"],
        },
    }
)
class StructuredDataSchemaField(JSONSchemaDocumentField):
    max_depth = MAX_SCHEMA_DEPTH
    max_bytes = MAX_SCHEMA_BYTES
    default_error_messages = {
        "remote_ref": "References must stay inside the schema (`#...`).",
    }

    def check_document(self, value: dict) -> None:
        if _has_remote_ref(value):
            # The validator would fetch a remote `$ref` over the network.
            self.fail("remote_ref")


def _has_remote_ref(value: object) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                if key in ("$ref", "$dynamicRef") and not (
                    isinstance(child, str) and child.startswith("#")
                ):
                    return True
                stack.append(child)
        elif isinstance(node, list):
            stack.extend(node)
    return False


_COMPATIBLE = ", ".join(OPENAI_COMPATIBLE_LLM)


@extend_schema_field({"type": "string", "enum": list(OPENAI_COMPATIBLE_LLM)})
class AnalysisProviderField(serializers.CharField):
    """States the providers in the schema; validate_provider keeps its clearer message."""


class AnalysisSettingsSerializer(JSONTypedSerializer):
    summary_prompt = serializers.CharField(
        max_length=MAX_SUMMARY_PROMPT_CHARS,
        default=DEFAULT_SUMMARY_PROMPT,
        trim_whitespace=False,
        help_text="What the summary should say: a template with `user`, `metadata` and "
        "`call`, like agent instructions.",
    )
    structured_data_schema = StructuredDataSchemaField(
        required=False, allow_null=True, default=None
    )
    success_criteria = serializers.CharField(
        max_length=MAX_SUCCESS_CRITERIA_CHARS,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        help_text="When the call counts as a success; empty: no verdict (`success` null).",
    )
    provider = AnalysisProviderField(
        max_length=50,
        required=False,
        allow_null=True,
        default=None,
        help_text=f"LLM provider for the analysis, one of: {_COMPATIBLE} (their "
        "OpenAI-compatible API). Null: the start agent's LLM.",
    )
    model = serializers.CharField(
        max_length=100,
        required=False,
        allow_null=True,
        default=None,
        help_text="Model for the analysis; null: the start agent's LLM model.",
    )

    def validate_summary_prompt(self, value: str) -> str:
        error = template_error(value)
        if error:
            raise serializers.ValidationError(error, code="template_syntax_error")
        return value

    def validate_provider(self, value: str | None) -> str | None:
        if value is not None and value not in OPENAI_COMPATIBLE_LLM:
            known = value in PROVIDER_CATALOG["llm"]
            raise serializers.ValidationError(
                f"{'Provider' if known else 'Unknown provider'} {value!r} has no "
                f"OpenAI-compatible chat-completions API; choose one of: {_COMPATIBLE}.",
                code="unsupported_provider",
            )
        return value

    def validate(self, data: dict) -> dict:
        if data.get("provider") and not data.get("model"):
            raise serializers.ValidationError(
                {"model": [ErrorDetail("Name the model with the provider.", code="required")]}
            )
        if data.get("model") and not data.get("provider"):
            raise serializers.ValidationError(
                {"provider": [ErrorDetail("Name the provider with the model.", code="required")]}
            )
        return data


def analysis_llm_problem(analysis: dict, start_llm: dict) -> str | None:
    """Why a workflow's analysis cannot run on its start agent's LLM (when it names no
    provider of its own), or None."""
    if analysis.get("provider") or start_llm.get("provider") in OPENAI_COMPATIBLE_LLM:
        return None
    return (
        f"The start agent's LLM provider {start_llm.get('provider')!r} has no "
        f"OpenAI-compatible chat-completions API; name an analysis provider ({_COMPATIBLE})."
    )


def analysis_llm(definition: dict) -> tuple[str, str] | None:
    """The (provider, model) a workflow version's analysis runs on, or None without one."""
    analysis = definition.get("analysis")
    if not analysis:
        return None
    if analysis.get("provider"):
        return analysis["provider"], analysis["model"]
    start = next(a for a in definition["agents"] if a["name"] == definition["start_agent"])
    return start["llm"]["provider"], start["llm"]["model"]
