"""livekit-agents' ModelUsage objects → the API's `usage` event items."""

from __future__ import annotations

from livekit.agents.metrics.usage import (
    EOTModelUsage,
    InterruptionModelUsage,
    LLMModelUsage,
    STTModelUsage,
    TTSModelUsage,
)

from agent.usage import usage_items


def test_each_model_becomes_one_item_with_the_apis_quantities():
    model_usage = [
        LLMModelUsage(
            provider="openai",
            model="gpt-4o-mini",
            input_tokens=1200,
            output_tokens=300,
            input_cached_tokens=0,
            input_audio_tokens=5,  # not priced: not reported
            output_reasoning_tokens=40,  # already in output_tokens
        ),
        TTSModelUsage(
            provider="cartesia", model="sonic-2", characters_count=830, audio_duration=41.2
        ),
        STTModelUsage(provider="deepgram", model="nova-3", audio_duration=12.5, input_tokens=9),
    ]

    assert usage_items(model_usage) == [
        {
            "component": "llm",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "prompt_tokens": 1200,
            "completion_tokens": 300,
            "cached_tokens": 0,
        },
        {"component": "tts", "provider": "cartesia", "model": "sonic-2", "characters": 830},
        {"component": "stt", "provider": "deepgram", "model": "nova-3", "audio_seconds": 12.5},
    ]


def test_usage_of_models_voicecalls_does_not_price_is_left_out():
    model_usage = [
        InterruptionModelUsage(provider="livekit", model="adaptive", total_requests=3),
        EOTModelUsage(provider="livekit", model="turn-detector", total_requests=7),
    ]

    assert usage_items(model_usage) == []


def test_names_are_bounded_and_a_model_without_a_name_is_still_reported():
    model_usage = [
        LLMModelUsage(provider="p" * 150, model="m" * 100 + "-a", input_tokens=10),
        LLMModelUsage(provider="p" * 150, model="m" * 100 + "-b", input_tokens=5),
        STTModelUsage(provider="", model="", audio_duration=1.25),
    ]

    assert usage_items(model_usage) == [
        # One item per component, provider and model, as the API takes them.
        {
            "component": "llm",
            "provider": "p" * 100,
            "model": "m" * 100,
            "prompt_tokens": 15,
            "completion_tokens": 0,
            "cached_tokens": 0,
        },
        {"component": "stt", "provider": "unknown", "model": "unknown", "audio_seconds": 1.25},
    ]


def test_quantities_are_never_negative_and_seconds_are_rounded_to_milliseconds():
    model_usage = [
        STTModelUsage(provider="deepgram", model="nova-3", audio_duration=0.1),
        STTModelUsage(provider="deepgram", model="nova-3 ", audio_duration=0.2),
        TTSModelUsage(provider="cartesia", model="sonic-2", characters_count=-4),
    ]

    items = usage_items(model_usage)

    assert items[0]["audio_seconds"] == 0.3
    assert items[1]["characters"] == 0


def test_cached_tokens_counted_apart_from_the_prompt_are_reported_as_at_most_the_prompt():
    # The API refuses more cached tokens than prompt tokens, with the whole batch.
    model_usage = [
        LLMModelUsage(provider="p", model="m", input_tokens=100, input_cached_tokens=400),
    ]

    (item,) = usage_items(model_usage)

    assert (item["prompt_tokens"], item["cached_tokens"]) == (100, 100)


def test_a_real_plugins_usage_is_reported_under_the_catalogs_provider_name():
    """livekit-agents labels usage with the plugin's own `provider` ("Deepgram",
    "api.openai.com", "MistralAI", ...); the API prices by the catalog's names, so no
    real call's STT, LLM or TTS was ever priced."""
    from agent.providers import REGISTRY, ComponentCache, build_component

    usage_class = {"stt": STTModelUsage, "llm": LLMModelUsage, "tts": TTSModelUsage}
    for component, providers in REGISTRY.items():
        for provider in providers:
            cache = ComponentCache(build_component)
            plugin = cache.get(component, {"provider": provider, "api_key": "k" * 32})
            # What livekit-agents keys the session's usage by (its metrics' metadata).
            usage = usage_class[component](provider=plugin.provider, model=plugin.model)

            (item,) = usage_items([usage], cache.provider_names)

            assert (item["provider"], item["model"]) == (provider, plugin.model)


def test_a_fallbacks_usage_is_named_as_the_catalog_names_it_too():
    from agent.providers import ComponentCache, build_component

    cache = ComponentCache(build_component)
    config = {
        "provider": "deepgram",
        "api_key": "k" * 32,
        "fallbacks": [{"provider": "assemblyai", "api_key": "a" * 32}],
    }
    cache.get("stt", config)
    usage = [
        STTModelUsage(provider="Deepgram", model="nova-3", audio_duration=3.0),
        STTModelUsage(provider="AssemblyAI", model="universal", audio_duration=2.0),
    ]

    items = usage_items(usage, cache.provider_names)

    assert [item["provider"] for item in items] == ["deepgram", "assemblyai"]
