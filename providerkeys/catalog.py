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


# LLM providers that answer OpenAI's chat-completions API (with `response_format`
# JSON Schema) at these base URLs: post-call analysis runs only on these.
OPENAI_COMPATIBLE_LLM: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "google": "https://generativelanguage.googleapis.com/v1beta/openai",
}


# Named for the schema's enums (settings.SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]).
STT_PROVIDERS = PROVIDER_CATALOG["stt"]
LLM_PROVIDERS = PROVIDER_CATALOG["llm"]
TTS_PROVIDERS = PROVIDER_CATALOG["tts"]
ALL_PROVIDERS = tuple(sorted(set().union(*PROVIDER_CATALOG.values())))
