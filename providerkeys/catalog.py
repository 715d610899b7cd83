"""Providers the voice-agent worker can run with a single API key, per component.

Providers that need service-account files, regions or endpoints (Azure, AWS, Google
Cloud speech) come later with their own fields.
"""

from __future__ import annotations

PROVIDER_TYPES = ("stt", "llm", "tts")

PROVIDER_CATALOG: dict[str, tuple[str, ...]] = {
    "stt": ("deepgram", "assemblyai", "openai", "speechmatics", "groq"),
    "llm": ("openai", "anthropic", "groq", "mistral", "google"),
    "tts": ("elevenlabs", "cartesia", "openai", "deepgram"),
}


def providers_for(provider_type: str) -> tuple[str, ...]:
    return PROVIDER_CATALOG.get(provider_type, ())


# Named for the schema's enums (settings.SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]).
STT_PROVIDERS = PROVIDER_CATALOG["stt"]
LLM_PROVIDERS = PROVIDER_CATALOG["llm"]
TTS_PROVIDERS = PROVIDER_CATALOG["tts"]
ALL_PROVIDERS = tuple(sorted(set().union(*PROVIDER_CATALOG.values())))
