"""STT, LLM and TTS plugin instances from a session's `{provider, model, voice?, api_key}`.

One registry entry per provider in the web service's catalog (providerkeys/catalog.py).
Keys always come from the session payload and are passed explicitly: a multi-tenant
worker must never fall back to a provider key in its own environment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

COMPONENTS = ("stt", "llm", "tts")


class ComponentError(Exception):
    """A component of the call cannot be built; the call fails with `agent_error`."""

    def __init__(self, component: str, message: str) -> None:
        super().__init__(message)
        self.component = component


class MissingKeyError(ComponentError):
    def __init__(self, component: str, provider: str) -> None:
        super().__init__(component, f"missing key for {component}")
        self.provider = provider


def _opt(**kwargs: Any) -> dict[str, Any]:
    """Keyword arguments without the unset ones, so plugin defaults apply."""
    return {k: v for k, v in kwargs.items() if v}


# -- STT ---------------------------------------------------------------------------------


def _stt_deepgram(model: str, api_key: str, voice: str | None) -> Any:
    from livekit.plugins import deepgram

    return deepgram.STT(api_key=api_key, **_opt(model=model))


def _stt_assemblyai(model: str, api_key: str, voice: str | None) -> Any:
    from livekit.plugins import assemblyai

    return assemblyai.STT(api_key=api_key, **_opt(model=model))


def _stt_openai(model: str, api_key: str, voice: str | None) -> Any:
    from livekit.plugins import openai

    return openai.STT(api_key=api_key, **_opt(model=model))


def _stt_speechmatics(model: str, api_key: str, voice: str | None) -> Any:
    from livekit.plugins import speechmatics

    return speechmatics.STT(api_key=api_key, **_opt(model=model))


def _stt_groq(model: str, api_key: str, voice: str | None) -> Any:
    from livekit.plugins import groq

    return groq.STT(api_key=api_key, **_opt(model=model))


# -- LLM ---------------------------------------------------------------------------------


def _llm_openai(model: str, api_key: str, voice: str | None) -> Any:
    from livekit.plugins import openai

    return openai.LLM(api_key=api_key, **_opt(model=model))


def _llm_anthropic(model: str, api_key: str, voice: str | None) -> Any:
    from livekit.plugins import anthropic

    return anthropic.LLM(api_key=api_key, **_opt(model=model))


def _llm_groq(model: str, api_key: str, voice: str | None) -> Any:
    from livekit.plugins import groq

    return groq.LLM(api_key=api_key, **_opt(model=model))


def _llm_mistral(model: str, api_key: str, voice: str | None) -> Any:
    from livekit.plugins import mistralai

    return mistralai.LLM(api_key=api_key, **_opt(model=model))


def _llm_google(model: str, api_key: str, voice: str | None) -> Any:
    from livekit.plugins import google

    # The Gemini API with a key, never Vertex AI (which would need cloud credentials).
    return google.LLM(api_key=api_key, vertexai=False, **_opt(model=model))


# -- TTS ---------------------------------------------------------------------------------


def _tts_elevenlabs(model: str, api_key: str, voice: str | None) -> Any:
    from livekit.plugins import elevenlabs

    return elevenlabs.TTS(api_key=api_key, **_opt(model=model, voice_id=voice))


def _tts_cartesia(model: str, api_key: str, voice: str | None) -> Any:
    from livekit.plugins import cartesia

    return cartesia.TTS(api_key=api_key, **_opt(model=model, voice=voice))


def _tts_openai(model: str, api_key: str, voice: str | None) -> Any:
    from livekit.plugins import openai

    return openai.TTS(api_key=api_key, **_opt(model=model, voice=voice))


def _tts_deepgram(model: str, api_key: str, voice: str | None) -> Any:
    from livekit.plugins import deepgram

    # Deepgram's voice is part of the model name (aura-2-<voice>-en).
    return deepgram.TTS(api_key=api_key, **_opt(model=model))


Builder = Callable[[str, str, "str | None"], Any]

REGISTRY: dict[str, dict[str, Builder]] = {
    "stt": {
        "deepgram": _stt_deepgram,
        "assemblyai": _stt_assemblyai,
        "openai": _stt_openai,
        "speechmatics": _stt_speechmatics,
        "groq": _stt_groq,
    },
    "llm": {
        "openai": _llm_openai,
        "anthropic": _llm_anthropic,
        "groq": _llm_groq,
        "mistral": _llm_mistral,
        "google": _llm_google,
    },
    "tts": {
        "elevenlabs": _tts_elevenlabs,
        "cartesia": _tts_cartesia,
        "openai": _tts_openai,
        "deepgram": _tts_deepgram,
    },
}


def check_component(component: str, config: dict) -> None:
    """Raise a ComponentError if `config` cannot be built (unknown provider, no key)."""
    provider = config.get("provider")
    if provider not in REGISTRY[component]:
        raise ComponentError(component, f"unknown {component} provider {provider!r}")
    if config.get("missing_key") or not config.get("api_key"):
        raise MissingKeyError(component, provider)


def build_component(component: str, config: dict) -> Any:
    """The plugin instance for one session component (`stt`, `llm` or `tts`)."""
    check_component(component, config)
    builder = REGISTRY[component][config["provider"]]
    try:
        return builder(config.get("model") or "", config["api_key"], config.get("voice"))
    except Exception as exc:  # a plugin refusing its options must not crash the worker
        raise ComponentError(
            component, f"cannot build {component} {config['provider']}: {type(exc).__name__}"
        ) from exc


class ComponentCache:
    """Builds each distinct component once per call, shared by the agents that use it."""

    def __init__(self, build: Callable[[str, dict], Any] = build_component) -> None:
        self._build = build
        self._built: dict[tuple, Any] = {}

    def get(self, component: str, config: dict) -> Any:
        check_component(component, config)
        key = (
            component,
            config.get("provider"),
            config.get("model"),
            config.get("voice"),
            config.get("api_key"),
        )
        if key not in self._built:
            self._built[key] = self._build(component, config)
        return self._built[key]
