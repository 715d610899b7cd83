"""Every provider in the web service's catalog builds a real plugin instance offline,
with the key from the session (plugins connect lazily), in the call's language, and
behind livekit-agents' FallbackAdapter when it has fallbacks."""

from __future__ import annotations

import pytest
from livekit.agents import llm, stt, tts
from livekit.plugins import silero

from agent import languages
from agent.providers import (
    REGISTRY,
    ComponentCache,
    ComponentError,
    MissingKeyError,
    build_component,
)
from providerkeys.catalog import PROVIDER_CATALOG
from workflows import languages as web_languages

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
    cache = ComponentCache(build=lambda c, cfg, lang: built.append((c, cfg["model"])) or object())
    first = cache.get("llm", config("openai", model="a"))
    assert cache.get("llm", config("openai", model="a")) is first
    assert cache.get("llm", config("openai", model="b")) is not first
    assert built == [("llm", "a"), ("llm", "b")]


@pytest.mark.parametrize(
    ("component", "adapter", "fallback"),
    [
        ("llm", llm.FallbackAdapter, config("anthropic", model="claude-haiku-4-5")),
        ("stt", stt.FallbackAdapter, config("openai", model="gpt-4o-mini-transcribe")),
        ("tts", tts.FallbackAdapter, config("openai", model="gpt-4o-mini-tts")),
    ],
)
async def test_a_component_with_fallbacks_is_a_fallback_adapter_over_them_in_order(
    component: str, adapter: type, fallback: dict
):
    first = {"llm": "openai", "stt": "deepgram", "tts": "cartesia"}[component]
    cache = ComponentCache(vad=silero.VAD.load())

    built = cache.get(component, config(first, fallbacks=[fallback]))

    assert isinstance(built, adapter)
    instances = getattr(built, f"_{component}_instances")
    assert len(instances) == 2
    # A fallback STT that only transcribes whole clips streams through the VAD.
    plugins = [getattr(i, "wrapped_stt", i) for i in instances]
    assert [type(p).__module__.split(".")[2] for p in plugins] == [first, fallback["provider"]]


async def test_each_choice_of_a_model_with_fallbacks_gets_the_agents_llm_timeout():
    """A model given 30 s (one that thinks first) still got 5 s behind the adapter:
    every choice timed out in turn, and the call failed."""
    fallback = config("anthropic", model="claude-haiku-4-5")

    built = ComponentCache().get("llm", config("openai", fallbacks=[fallback], timeout_seconds=30))

    assert built._attempt_timeout == 30.0


async def test_a_fallback_without_a_key_is_left_out_and_the_call_runs_on_the_rest():
    cache = ComponentCache()
    without_key = {"provider": "groq", "model": "x", "api_key": None, "missing_key": True}

    built = cache.get("llm", config("openai", fallbacks=[without_key]))

    assert isinstance(built, llm.LLM) and not isinstance(built, llm.FallbackAdapter)


@pytest.mark.parametrize(
    ("component", "provider", "language", "option", "expected"),
    [
        ("stt", "deepgram", "fr-CA", "_opts.language", "fr-CA"),
        ("stt", "deepgram", "multi", "_opts.language", "multi"),
        ("stt", "openai", "es-MX", "_opts.languages", ["es"]),
        ("stt", "groq", "it", "_opts.languages", ["it"]),
        ("stt", "speechmatics", "de", "_stt_options.language", "de"),
        ("stt", "assemblyai", "pt-BR", "_opts.language_codes", ["pt"]),
        ("tts", "cartesia", "fr-FR", "_opts.language", "fr"),
        ("tts", "elevenlabs", "de", "_opts.language", "de"),
    ],
)
def test_the_calls_language_is_given_to_stt_and_tts(
    component: str, provider: str, language: str, option: str, expected: object
):
    built = build_component(component, config(provider), language)

    holder, name = option.split(".")
    assert getattr(getattr(built, holder), name) == expected


def test_without_a_language_each_provider_keeps_its_default():
    assert build_component("stt", config("deepgram"), None)._opts.language == "en-US"
    assert build_component("tts", config("cartesia"), None)._opts.language == "en"


def test_the_web_services_language_lists_are_the_plugins():
    assert web_languages.DEEPGRAM_STT_LANGUAGES == languages.deepgram_stt_languages()
    assert web_languages.CARTESIA_TTS_LANGUAGES == languages.cartesia_tts_languages()


@pytest.mark.parametrize(
    ("component", "provider", "model", "language"),
    [
        ("stt", "deepgram", "nova-3", "xh"),
        ("stt", "deepgram", "nova-3", "es-419"),
        ("stt", "openai", "whisper-1", "multi"),
        ("tts", "cartesia", "sonic-2", "sw"),
        ("tts", "cartesia", "sonic-2", "fr-CA"),
        ("tts", "deepgram", "aura-2-thalia-en", "de"),
        ("tts", "deepgram", "aura-2-thalia-en", "en-GB"),
        ("tts", "openai", "tts-1", "sw"),
    ],
)
def test_the_worker_and_the_web_service_judge_languages_alike(
    component: str, provider: str, model: str, language: str
):
    web = web_languages.language_problem(
        component=component, provider=provider, model=model, language=language
    )
    assert languages.supports(
        component=component, provider=provider, model=model, language=language
    ) is (web is None)


def test_a_callers_language_with_a_trailing_newline_is_no_language_tag():
    """`$` also matches before a final newline: `user_data.language` "es\\n" (a form
    field, a CSV cell) passed as a tag and went to every provider that states no list
    (OpenAI STT got "es\\n" and refuses every turn), not the workflow's language."""
    agents = [
        {
            "name": "a",
            "stt": {"provider": "openai", "model": "gpt-4o-transcribe"},
            "tts": {"provider": "elevenlabs", "model": "eleven_flash_v2_5"},
        }
    ]
    session = {
        "call_id": "c1",
        "user_data": {"language": "es\n"},
        "workflow": {"agents": agents, "settings": {"language": "en"}},
    }

    assert languages.call_language(session) == "en"
    assert languages.call_language({**session, "user_data": {"language": "es"}}) == "es"


def test_a_callers_language_that_is_no_tag_is_logged_by_its_length_not_its_text(caplog):
    """`user_data.language` is the customer's text about their user: a sentence, a
    name, an address put there by mistake went to the worker's log in full."""
    session = {
        "call_id": "c1",
        "user_data": {"language": "Maria Lopez, 12 Calle Mayor"},
        "workflow": {"agents": [], "settings": {"language": "en"}},
    }

    with caplog.at_level("WARNING", logger="voicecalls.agent.languages"):
        assert languages.call_language(session) == "en"

    assert [r.getMessage() for r in caplog.records] == [
        "call c1: user_data.language (27 characters) is not a language tag"
    ]
