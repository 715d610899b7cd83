"""livekit-agents' per-model usage turned into the API's `usage` event items.

`session_usage_updated` carries the session's usage so far, one entry per provider and
model (`livekit/agents/metrics/usage.py`). The API prices each item and keeps the
newest report, so items are cumulative totals, never deltas. Only what voicecalls
prices is kept: STT audio seconds, LLM prompt/completion/cached tokens, TTS characters;
other usage (interruption and end-of-turn models) is left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from livekit.agents.metrics.usage import LLMModelUsage, STTModelUsage, TTSModelUsage

# The API's bound on a provider or model name.
MAX_NAME_CHARS = 100
# livekit-agents reports "" when a plugin gave no metadata; the API needs a name, and
# an unknown model is still worth reporting (it shows as unpriced, not as missing).
UNKNOWN = "unknown"


def _name(value: str | None) -> str:
    return (value or "").strip()[:MAX_NAME_CHARS] or UNKNOWN


def _count(value: float | None) -> int:
    return max(0, int(value or 0))


def _quantities(usage: Any) -> tuple[str, dict[str, float | int]] | None:
    if isinstance(usage, LLMModelUsage):
        prompt = _count(usage.input_tokens)
        return "llm", {
            "prompt_tokens": prompt,
            "completion_tokens": _count(usage.output_tokens),
            # Some of the prompt (the API refuses more): a plugin counting them apart
            # must not cost the batch its transcript lines.
            "cached_tokens": min(_count(usage.input_cached_tokens), prompt),
        }
    if isinstance(usage, STTModelUsage):
        return "stt", {"audio_seconds": round(max(0.0, usage.audio_duration or 0.0), 3)}
    if isinstance(usage, TTSModelUsage):
        return "tts", {"characters": _count(usage.characters_count)}
    return None


def usage_items(
    model_usage: Iterable[Any], provider_names: Mapping[tuple[str, str], str] | None = None
) -> list[dict]:
    """One item per component, provider and model, in livekit's order, each provider
    named as the catalog names it (`provider_names`: the plugins' own labels, which
    price nothing, to the catalog's; `ComponentCache.provider_names`). Names that only
    differ past the API's length bound (or are both unnamed) are summed into one item:
    the API takes one item per component, provider and model."""
    names = provider_names or {}
    items: dict[tuple[str, str, str], dict] = {}
    for usage in model_usage:
        quantities = _quantities(usage)
        if quantities is None:
            continue
        component, amounts = quantities
        provider = names.get((component, usage.provider), usage.provider)
        key = (component, _name(provider), _name(usage.model))
        item = items.setdefault(
            key,
            {"component": component, "provider": key[1], "model": key[2]}
            | dict.fromkeys(amounts, 0),
        )
        for name, amount in amounts.items():
            item[name] += amount
    for item in items.values():
        if "audio_seconds" in item:
            item["audio_seconds"] = round(item["audio_seconds"], 3)
    return list(items.values())
