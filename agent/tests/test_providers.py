"""Every provider in the web service's catalog builds a real plugin instance offline,
with the key from the session (plugins connect lazily)."""

from __future__ import annotations

import pytest
from livekit.agents import llm, stt, tts

from agent.providers import (
    REGISTRY,
    ComponentCache,
    ComponentError,
    MissingKeyError,
    build_component,
)
from providerkeys.catalog import PROVIDER_CATALOG

BASES = {"stt": stt.STT, "llm": llm.LLM, "tts": tts.TTS}


def config(provider: str, **extra: object) -> dict:
    return {"provider": provider, "model": "", "api_key": "test-key-123456", **extra}


def test_the_registry_covers_exactly_the_catalog():
    assert {c: sorted(REGISTRY[c]) for c in REGISTRY} == {
        c: sorted(names) for c, names in PROVIDER_CATALOG.items()
    }


@pytest.mark.parametrize(
    ("component", "provider"),
    [(c, p) for c, providers in PROVIDER_CATALOG.items() for p in providers],
)
async def test_each_catalog_provider_builds_offline(component: str, provider: str):
    built = build_component(component, config(provider))
    assert isinstance(built, BASES[component])


async def test_model_and_voice_are_passed_on():
    built = build_component(
        "tts", config("cartesia", model="sonic-2", voice="f786b574-daa5-4673-aa0c-cbe3e8534c02")
    )
    assert built.model == "sonic-2"
    assert build_component("llm", config("openai", model="gpt-4.1-mini")).model == "gpt-4.1-mini"


def test_a_missing_key_is_an_error_naming_the_component(monkeypatch: pytest.MonkeyPatch):
    # A key in the worker's environment must never stand in for the organization's.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    with pytest.raises(MissingKeyError, match="^missing key for llm$"):
        build_component(
            "llm", {"provider": "openai", "model": "x", "api_key": None, "missing_key": True}
        )


def test_an_unknown_provider_is_an_error():
    with pytest.raises(ComponentError, match="unknown tts provider 'acme'"):
        build_component("tts", config("acme"))


def test_the_cache_builds_each_distinct_component_once():
    built: list[tuple] = []
    cache = ComponentCache(build=lambda c, cfg: built.append((c, cfg["model"])) or object())
    first = cache.get("llm", config("openai", model="a"))
    assert cache.get("llm", config("openai", model="a")) is first
    assert cache.get("llm", config("openai", model="b")) is not first
    assert built == [("llm", "a"), ("llm", "b")]
