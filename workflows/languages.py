"""Which call languages each STT/TTS provider accepts, where its livekit-agents plugin
states it (the worker's plugins, 1.8.9). A workflow naming a language one of its
providers does not support is refused when it is saved.

The lists are copies of the plugins' `Literal` types (the web service does not install
the worker's plugins); agent/tests/test_providers.py holds them equal. Providers whose
plugin states no list (openai, groq, speechmatics and assemblyai STT; elevenlabs TTS)
are passed the language's primary subtag and judge it themselves when the call runs;
OpenAI TTS takes no language at all and speaks the language of the text it is given.
"""

from __future__ import annotations

# A BCP 47-like tag ("en", "es-MX", "zh-Hant-TW") or Deepgram's "multi".
LANGUAGE_PATTERN = r"^(?:[a-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}|multi)$"
MULTILINGUAL = "multi"

# livekit.plugins.deepgram.models.DeepgramLanguages
DEEPGRAM_STT_LANGUAGES = (
    "zh", "zh-CN", "zh-TW", "zh-HK", "da", "nl", "en", "en-US", "en-AU", "en-GB", "en-NZ",
    "en-IN", "fr", "fr-CA", "de", "hi", "hi-Latn", "id", "it", "ja", "ko", "no", "pl", "pt",
    "pt-BR", "ru", "es", "es-419", "es-LATAM", "sv", "ta", "taq", "th", "tr", "uk", "multi",
)  # fmt: skip

# livekit.plugins.cartesia.models.TTSLanguages
CARTESIA_TTS_LANGUAGES = (
    "en", "es", "fr", "de", "pt", "zh", "ja", "hi", "ko", "it", "nl", "pl", "ru", "sv", "tr",
    "tl", "bg", "ro", "ar", "cs", "el", "fi", "hr", "ms", "sk", "da", "ta", "uk", "hu", "no",
    "vi", "bn", "th", "he", "ka", "id", "te", "gu", "kn", "ml", "mr", "or", "pa", "ur",
)  # fmt: skip


def primary_subtag(language: str) -> str:
    """`es` of `es-MX`: what providers taking ISO 639-1 codes are given."""
    return language.split("-", 1)[0]


def language_problem(*, component: str, provider: str, model: str, language: str) -> str | None:
    """Why `provider` (as `component`, with `model`) cannot run a call in `language`,
    or None when its plugin states nothing against it."""
    if component == "stt" and provider == "deepgram":
        if language not in DEEPGRAM_STT_LANGUAGES:
            return f"Deepgram speech-to-text does not support language {language!r}."
        return None
    if language == MULTILINGUAL:
        return f"{MULTILINGUAL!r} is for Deepgram speech-to-text only, not {component} {provider}."
    if component == "tts" and provider == "cartesia":
        if primary_subtag(language) not in CARTESIA_TTS_LANGUAGES:
            return f"Cartesia text-to-speech does not support language {language!r}."
    if component == "tts" and provider == "deepgram":
        # Deepgram's voices speak one language each, named last: aura-2-thalia-en.
        suffix = model.rsplit("-", 1)[-1] if "-" in model else ""
        if len(suffix) == 2 and suffix != primary_subtag(language):
            return f"Deepgram voice {model!r} speaks {suffix!r}, not {language!r}."
    return None


def agents_language_problems(agents: list[dict], language: str) -> list[str]:
    """Why each STT/TTS provider of `agents` (fallbacks included) that cannot run
    `language` cannot, once per distinct reason."""
    problems: dict[str, None] = {}
    for agent in agents:
        for component in ("stt", "tts"):
            config = agent[component]
            for choice in (config, *config.get("fallbacks", [])):
                problem = language_problem(
                    component=component,
                    provider=choice["provider"],
                    model=choice["model"],
                    language=language,
                )
                if problem:
                    problems.setdefault(problem)
    return list(problems)
