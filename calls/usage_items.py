"""The items of an agent's `usage` event: one per provider and model, with the
quantities of its component (`calls.agent_events_api.UsageEventSerializer`)."""

from __future__ import annotations

import datetime

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from voicecalls.fields import JSONTypedSerializer

# A call's cumulative usage: a week of audio, ten billion tokens, a billion characters.
MAX_USAGE_SECONDS = 7 * 24 * 3600
MAX_USAGE_TOKENS = 10**10
MAX_USAGE_CHARACTERS = 10**9
MAX_USAGE_ITEMS = 50


def _count_field(maximum: int, help_text: str) -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False, min_value=0, max_value=maximum, help_text=help_text
    )


class _UsageItemBase(JSONTypedSerializer):
    """One provider's model, what it used since the call began (cumulative)."""

    provider = serializers.CharField(max_length=100)
    model = serializers.CharField(max_length=100)


class SttUsageSerializer(_UsageItemBase):
    component = serializers.ChoiceField(choices=["stt"])
    audio_seconds = serializers.FloatField(
        required=False, min_value=0, max_value=MAX_USAGE_SECONDS, help_text="Audio heard."
    )


class LlmUsageSerializer(_UsageItemBase):
    component = serializers.ChoiceField(choices=["llm"])
    prompt_tokens = _count_field(MAX_USAGE_TOKENS, "Input tokens, cached ones included.")
    completion_tokens = _count_field(MAX_USAGE_TOKENS, "Output tokens.")
    cached_tokens = _count_field(
        MAX_USAGE_TOKENS, "Input tokens served from cache: some of `prompt_tokens`, never more."
    )

    def validate(self, attrs: dict) -> dict:
        # Cached tokens are priced apart from the rest of the prompt: more than the
        # prompt would bill tokens nobody sent.
        if attrs.get("cached_tokens", 0) > attrs.get("prompt_tokens", 0):
            raise serializers.ValidationError(
                {"cached_tokens": ["Must be at most prompt_tokens."]}, code="max_value"
            )
        return attrs


class TtsUsageSerializer(_UsageItemBase):
    component = serializers.ChoiceField(choices=["tts"])
    characters = _count_field(MAX_USAGE_CHARACTERS, "Characters synthesized.")


USAGE_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    "stt": SttUsageSerializer,
    "llm": LlmUsageSerializer,
    "tts": TtsUsageSerializer,
}


@extend_schema_field(
    PolymorphicProxySerializer(
        component_name="UsageItem",
        serializers=USAGE_SERIALIZERS,
        resource_type_field_name="component",
    )
)
class UsageItemField(serializers.Field):
    """One usage item, validated by the serializer of its `component`."""

    def to_internal_value(self, data: object) -> dict:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Expected an object.", code="invalid")
        component = data.get("component")
        serializer_class = USAGE_SERIALIZERS.get(component) if isinstance(component, str) else None
        if serializer_class is None:
            raise serializers.ValidationError(
                {"component": [f"One of: {', '.join(USAGE_SERIALIZERS)}."]},
                code="invalid_choice",
            )
        return dict(serializer_class().run_validation(data))

    def to_representation(self, value: dict) -> dict:
        return value


def usage_report_newer(
    usage: list[dict], at: datetime.datetime, kept: list[dict], kept_at: datetime.datetime
) -> bool:
    """Whether an agent session's report `usage` (stamped `at`) is newer than the one
    kept. A session's totals only grow, so the report holding more is the newer whatever
    the stamps say (the agent host's clock may step back mid-call), and one holding the
    same changes nothing; only where neither holds the other do the stamps decide."""
    new, old = _quantities(usage), _quantities(kept)
    if new == old:
        return False
    if all(new.get(key, 0) >= value for key, value in old.items()):
        return True
    if all(old.get(key, 0) >= value for key, value in new.items()):
        return False
    return at > kept_at


def _quantities(usage: list[dict]) -> dict[tuple[str, ...], float]:
    return {
        (item["component"], item["provider"], item["model"], name): value
        for item in usage
        for name, value in item.items()
        if name not in ("component", "provider", "model")
    }
