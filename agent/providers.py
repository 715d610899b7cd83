"""STT, LLM and TTS plugin instances from a session's `{provider, model, voice?, api_key,
fallbacks}`, in the call's language.

One registry entry per provider in the web service's catalog (providerkeys/catalog.py).
Keys always come from the session payload and are passed explicitly: a multi-tenant
worker must never fall back to a provider key in its own environment. A component with
fallbacks is livekit-agents' `FallbackAdapter` over the first choice and its fallbacks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from livekit.agents import APIConnectOptions

from agent.languages import MULTILINGUAL, primary_subtag

logger = logging.getLogger("voicecalls.agent.providers")

COMPONENTS = ("stt", "llm", "tts")
# A fallback's error this recent is part of why its adapter gave up.
FAILURE_RECENT_SECONDS = 60.0

# How long the session waits on each provider (livekit-agents' defaults, 10 s an attempt
# and three retries, left a caller in silence 40 s and more before the apology).
# The model: 5 s an attempt, retried twice (a 5xx or 429 burst gets a second): ~16 s.
# An agent's `llm.timeout_seconds` replaces the 5 s (a model that thinks first needs more).
DEFAULT_LLM_TIMEOUT = 5.0
LLM_CONN_OPTIONS = APIConnectOptions(max_retry=2, retry_interval=1.0, timeout=DEFAULT_LLM_TIMEOUT)
# The voice: its first audio comes within a second; the streaming plugins also wait at
# most this long for each next message. One retry: ~10 s, then the call ends.
TTS_CONN_OPTIONS = APIConnectOptions(max_retry=1, retry_interval=0.5, timeout=5.0)
# The transcriber's stream lives the whole call and is silent while the caller is, so
# its timeout only bounds each connect (a websocket opens within a second).
STT_CONN_OPTIONS = APIConnectOptions(max_retry=2, retry_interval=1.0, timeout=5.0)


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


def _iso639(language: str | None) -> str | None:
    """`es` of `es-MX`, for plugins that take a bare language code."""
    if not language or language == MULTILINGUAL:
        return None
    return primary_subtag(language)


# -- STT ---------------------------------------------------------------------------------


def _stt_deepgram(model: str, api_key: str, voice: str | None, language: str | None) -> Any:
    from livekit.plugins import deepgram

    return deepgram.STT(api_key=api_key, **_opt(model=model, language=language))


def _stt_assemblyai(model: str, api_key: str, voice: str | None, language: str | None) -> Any:
    from livekit.plugins import assemblyai

    codes = [primary_subtag(language)] if language else None
    return assemblyai.STT(api_key=api_key, **_opt(model=model, language_codes=codes))


def _stt_openai(model: str, api_key: str, voice: str | None, language: str | None) -> Any:
    from livekit.plugins import openai

    return openai.STT(api_key=api_key, **_opt(model=model, language=_iso639(language)))


def _stt_speechmatics(model: str, api_key: str, voice: str | None, language: str | None) -> Any:
    from livekit.plugins import speechmatics

    return speechmatics.STT(api_key=api_key, **_opt(model=model, language=_iso639(language)))


def _stt_groq(model: str, api_key: str, voice: str | None, language: str | None) -> Any:
    from livekit.plugins import groq

    return groq.STT(api_key=api_key, **_opt(model=model, language=_iso639(language)))


# -- LLM ---------------------------------------------------------------------------------


def _llm_openai(model: str, api_key: str, voice: str | None, language: str | None) -> Any:
    from livekit.plugins import openai

    return openai.LLM(api_key=api_key, **_opt(model=model))


def _llm_anthropic(model: str, api_key: str, voice: str | None, language: str | None) -> Any:
    from livekit.plugins import anthropic

    return anthropic.LLM(api_key=api_key, **_opt(model=model))


def _llm_groq(model: str, api_key: str, voice: str | None, language: str | None) -> Any:
    from livekit.plugins import groq

    return groq.LLM(api_key=api_key, **_opt(model=model))


def _llm_mistral(model: str, api_key: str, voice: str | None, language: str | None) -> Any:
    from livekit.plugins import mistralai

    return mistralai.LLM(api_key=api_key, **_opt(model=model))


def _llm_google(model: str, api_key: str, voice: str | None, language: str | None) -> Any:
    from livekit.plugins import google

    # The Gemini API with a key, never Vertex AI (which would need cloud credentials).
    return google.LLM(api_key=api_key, vertexai=False, **_opt(model=model))


# -- TTS ---------------------------------------------------------------------------------


def _tts_elevenlabs(model: str, api_key: str, voice: str | None, language: str | None) -> Any:
    from livekit.plugins import elevenlabs

    return elevenlabs.TTS(
        api_key=api_key, **_opt(model=model, voice_id=voice, language=_iso639(language))
    )


def _tts_cartesia(model: str, api_key: str, voice: str | None, language: str | None) -> Any:
    from livekit.plugins import cartesia

    return cartesia.TTS(
        api_key=api_key, **_opt(model=model, voice=voice, language=_iso639(language))
    )


def _tts_openai(model: str, api_key: str, voice: str | None, language: str | None) -> Any:
    from livekit.plugins import openai

    # OpenAI's voices take no language: they speak the language of the text.
    return openai.TTS(api_key=api_key, **_opt(model=model, voice=voice))


def _tts_deepgram(model: str, api_key: str, voice: str | None, language: str | None) -> Any:
    from livekit.plugins import deepgram

    # Deepgram's voice, and so its language, is the model name (aura-2-<voice>-en).
    return deepgram.TTS(api_key=api_key, **_opt(model=model))


Builder = Callable[[str, str, "str | None", "str | None"], Any]

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


def build_component(component: str, config: dict, language: str | None = None) -> Any:
    """The plugin instance for one choice of a component (`stt`, `llm` or `tts`)."""
    check_component(component, config)
    builder = REGISTRY[component][config["provider"]]
    try:
        return builder(config.get("model") or "", config["api_key"], config.get("voice"), language)
    except Exception as exc:  # a plugin refusing its options must not crash the worker
        raise ComponentError(
            component, f"cannot build {component} {config['provider']}: {type(exc).__name__}"
        ) from exc


def llm_connect_options(config: dict) -> APIConnectOptions:
    """The wait on an agent's model: its `timeout_seconds` an attempt (a session from a
    web service without the setting: 5 s), retried as LLM_CONN_OPTIONS."""
    timeout = config.get("timeout_seconds") or DEFAULT_LLM_TIMEOUT
    return dataclasses.replace(LLM_CONN_OPTIONS, timeout=float(timeout))


def connect_options(*, max_unrecoverable_errors: int = 3) -> Any:
    """An AgentSession's `conn_options`: each component's bounded wait (above)."""
    from livekit.agents.voice.agent_session import SessionConnectOptions

    return SessionConnectOptions(
        stt_conn_options=STT_CONN_OPTIONS,
        llm_conn_options=LLM_CONN_OPTIONS,
        tts_conn_options=TTS_CONN_OPTIONS,
        max_unrecoverable_errors=max_unrecoverable_errors,
    )


def fallback_adapter(
    component: str, instances: list, *, vad: Any = None, llm_timeout: float | None = None
) -> Any:
    """livekit-agents' FallbackAdapter for `component` over `instances`, tried in order.
    STT needs the VAD to stream through providers that only transcribe whole clips; the
    LLM's choices each get `llm_timeout` (the component's `timeout_seconds`)."""
    from livekit.agents import llm, stt, tts

    # Each choice gets the component's wait; the next choice is the retry (the adapters'
    # own defaults gave each TTS three tries, each STT 10 s twice, 5 s apart).
    if component == "stt":
        options = STT_CONN_OPTIONS
        return stt.FallbackAdapter(
            instances, vad=vad, attempt_timeout=options.timeout, retry_interval=1.0
        )
    if component == "llm":
        timeout = llm_timeout or LLM_CONN_OPTIONS.timeout
        return llm.FallbackAdapter(instances, attempt_timeout=timeout)
    return tts.FallbackAdapter(instances, max_retry_per_tts=0)


def _named(config: dict) -> str:
    return f"{config['provider']} {config.get('model') or ''}".strip()


class ComponentCache:
    """Builds each distinct component (with its fallbacks) once per call, shared by the
    agents that use it."""

    def __init__(
        self,
        build: Callable[[str, dict, str | None], Any] = build_component,
        *,
        language: str | None = None,
        vad: Any = None,
    ) -> None:
        self._build = build
        self._language = language
        self._vad = vad
        self._built: dict[str, Any] = {}
        # (component, the plugin's own provider label) → the catalog's provider name.
        # livekit-agents labels usage with the plugin's label ("Deepgram",
        # "api.openai.com"); the API prices by the catalog's ("deepgram", "openai").
        self.provider_names: dict[tuple[str, str], str] = {}
        # Every plugin instance built, fallbacks included: (component, instance).
        self._instances: list[tuple[str, Any]] = []
        # Each choice behind a FallbackAdapter: its latest error, by component, provider.
        self._failures: dict[tuple[str, str], Any] = {}
        # `provider model` of each instance built, by its id.
        self._names: dict[int, str] = {}
        # Told each error of a choice behind a FallbackAdapter (component, provider, error).
        self.on_failure: Callable[[str, str, Any], None] | None = None

    def instances(self, component: str) -> list:
        """The plugin instances built for `component` so far, each fallback on its own
        (not the FallbackAdapter over them)."""
        return [instance for kind, instance in self._instances if kind == component]

    def get(self, component: str, config: dict) -> Any:
        """The component: its first choice alone, or a FallbackAdapter over it and the
        fallbacks that can be built. Raises ComponentError when the first choice cannot."""
        check_component(component, config)
        key = json.dumps([component, config], sort_keys=True)
        if key not in self._built:
            primary = self._build_one(component, config)
            choices = [(_named(config), primary), *self._fallbacks(component, config)]
            if len(choices) == 1:
                self._built[key] = primary
            else:
                for provider, instance in choices:
                    self._watch(component, provider, instance)
                instances = [instance for _, instance in choices]
                timeout = llm_connect_options(config).timeout if component == "llm" else None
                self._built[key] = fallback_adapter(
                    component, instances, vad=self._vad, llm_timeout=timeout
                )
        return self._built[key]

    def _watch(self, component: str, provider: str, instance: Any) -> None:
        """livekit-agents' FallbackAdapter gives up saying only that every choice failed
        (each one's error is only logged): keep each one's, to say why."""

        def failed(error: Any) -> None:
            self._failures[(component, provider)] = error
            if self.on_failure is not None:
                self.on_failure(component, provider, error)

        if hasattr(instance, "on"):
            instance.on("error", failed)

    def failures(self, component: str) -> list[str]:
        """`provider model: error` for each choice behind `component`'s FallbackAdapter
        that failed lately, in the order they first failed."""
        recent = time.time() - FAILURE_RECENT_SECONDS
        return [
            f"{provider}: {getattr(error, 'error', error)!r}"
            for (kind, provider), error in self._failures.items()
            if kind == component and getattr(error, "timestamp", 0) >= recent
        ]

    def named(self, instance: Any) -> str | None:
        """`provider model` of a plugin instance built here (None for an adapter)."""
        return self._names.get(id(instance))

    def _build_one(self, component: str, config: dict) -> Any:
        instance = self._build(component, config, self._language)
        self._instances.append((component, instance))
        self._names[id(instance)] = _named(config)
        label = getattr(instance, "provider", None)
        if isinstance(label, str):
            self.provider_names[(component, label)] = config["provider"]
        return instance

    def _fallbacks(self, component: str, config: dict) -> list[tuple[str, Any]]:
        """(provider, instance) of each fallback. One that cannot be built (no key) is
        left out: the call still runs on the first choice, and on the fallbacks that can."""
        instances = []
        for fallback in config.get("fallbacks") or []:
            try:
                instances.append((_named(fallback), self._build_one(component, fallback)))
            except ComponentError as exc:
                logger.warning(
                    "%s fallback %s left out: %s", component, fallback.get("provider"), exc
                )
        return instances
