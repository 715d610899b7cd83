"""An agent's speech-to-text, language model and text-to-speech in a workflow's
definition (`workflows.serializers`): each a provider of the catalog and a model, with
the fallbacks tried in order when it fails, and the model's wait on each attempt."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from providerkeys.catalog import PROVIDER_CATALOG
from voicecalls.fields import JSONTypedSerializer
from workflows.tools import ReportingListSerializer, error_detail

MAX_FALLBACKS = 3
# How long the worker waits on each attempt of an agent's model (two retries follow a
# timeout): 5 s suits a model that streams at once; one that thinks first needs more.
DEFAULT_LLM_TIMEOUT_SECONDS = 5.0
LLM_TIMEOUT_BOUNDS = (1.0, 120.0)


class _ComponentSerializer(JSONTypedSerializer):
    """A provider and model; the `fallbacks` of a component have this shape."""

    component_type = ""

    provider = serializers.CharField(max_length=50)
    model = serializers.CharField(max_length=100)
    voice = serializers.CharField(max_length=200, required=False, allow_null=True, default=None)

    class Meta:
        list_serializer_class = ReportingListSerializer

    def validate_provider(self, value: str) -> str:
        allowed = PROVIDER_CATALOG[self.component_type]
        if value not in allowed:
            raise serializers.ValidationError(
                f"Unknown {self.component_type} provider {value!r}; "
                f"choose one of: {', '.join(allowed)}.",
                code="invalid_choice",
            )
        return value

    def validate(self, data: dict) -> dict:
        # Fallbacks never repeat a choice tried before them.
        seen = {(data["provider"], data["model"], data.get("voice"))}
        for index, fallback in enumerate(data.get("fallbacks", [])):
            choice = (fallback["provider"], fallback["model"], fallback.get("voice"))
            if choice in seen:
                raise serializers.ValidationError(
                    {f"fallbacks.{index}": error_detail("Already tried before it.", "duplicate")}
                )
            seen.add(choice)
        return data


def _provider_field_class(component_type: str) -> type[serializers.CharField]:
    """A CharField whose schema lists the catalog's providers of `component_type`
    (validate_provider enforces it with the message it has always given)."""
    schema = {"type": "string", "enum": list(PROVIDER_CATALOG[component_type])}
    name = f"{component_type.capitalize()}ProviderField"
    return extend_schema_field(schema)(type(name, (serializers.CharField,), {}))


_PROVIDER_FIELDS = {kind: _provider_field_class(kind) for kind in PROVIDER_CATALOG}


def _providers_help(component_type: str) -> str:
    return f"Provider, one of: {', '.join(PROVIDER_CATALOG[component_type])}."


def _fallbacks_field(serializer_class: type[_ComponentSerializer]) -> serializers.Field:
    return serializer_class(
        many=True,
        max_length=MAX_FALLBACKS,
        default=list,
        help_text=(
            f"Tried in order when the one before fails (at most {MAX_FALLBACKS}); each "
            "uses the organization's key for its provider."
        ),
    )


class SpeechToTextFallbackSerializer(_ComponentSerializer):
    component_type = "stt"
    provider = _PROVIDER_FIELDS["stt"](max_length=50, help_text=_providers_help("stt"))


class LanguageModelFallbackSerializer(_ComponentSerializer):
    component_type = "llm"
    provider = _PROVIDER_FIELDS["llm"](max_length=50, help_text=_providers_help("llm"))


class TextToSpeechFallbackSerializer(_ComponentSerializer):
    component_type = "tts"
    provider = _PROVIDER_FIELDS["tts"](max_length=50, help_text=_providers_help("tts"))
    voice = serializers.CharField(
        max_length=200,
        required=False,
        allow_null=True,
        default=None,
        help_text="Provider's voice id; the provider's default voice when null.",
    )


class SpeechToTextSerializer(SpeechToTextFallbackSerializer):
    fallbacks = _fallbacks_field(SpeechToTextFallbackSerializer)


class LanguageModelSerializer(LanguageModelFallbackSerializer):
    fallbacks = _fallbacks_field(LanguageModelFallbackSerializer)
    timeout_seconds = serializers.FloatField(
        min_value=LLM_TIMEOUT_BOUNDS[0],
        max_value=LLM_TIMEOUT_BOUNDS[1],
        default=DEFAULT_LLM_TIMEOUT_SECONDS,
        help_text=(
            "Seconds the agent waits for the model's first words (and between its next "
            "ones) on each attempt; a timed-out attempt is retried twice, so the caller "
            "may wait about three times this before the error message. Raise it for "
            "models that think before answering. The fallbacks get the same wait."
        ),
    )


class TextToSpeechSerializer(TextToSpeechFallbackSerializer):
    fallbacks = _fallbacks_field(TextToSpeechFallbackSerializer)
