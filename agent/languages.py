"""The call's language, and what each STT/TTS plugin is given for it.

The language is the call's `user_data.language` when it is a language tag the call's
providers accept, else the workflow's `language` setting (validated by the API when
the workflow was saved), else None: each provider's own default, as before.

Where a plugin states the languages it takes (Deepgram STT, Cartesia TTS, Deepgram's
one-language voices) the worker reads the plugin's own list; the web service keeps a
copy (workflows/languages.py) that tests/test_providers.py holds equal.
"""

from __future__ import annotations

import logging
import re
import typing
from functools import cache

logger = logging.getLogger("voicecalls.agent.languages")

LANGUAGE_PATTERN = re.compile(r"^(?:[a-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}|multi)$")
MULTILINGUAL = "multi"


@cache
def deepgram_stt_languages() -> tuple[str, ...]:
    from livekit.plugins.deepgram import models

    return typing.get_args(models.DeepgramLanguages)


@cache
def cartesia_tts_languages() -> tuple[str, ...]:
    from livekit.plugins.cartesia import models

    return typing.get_args(models.TTSLanguages)


def primary_subtag(language: str) -> str:
    return language.split("-", 1)[0]


def supports(*, component: str, provider: str, model: str, language: str) -> bool:
    """Whether the plugin of `provider` states nothing against `language` (the web
    service's `language_problem`, from the plugins' own lists)."""
    if component == "stt" and provider == "deepgram":
        return language in deepgram_stt_languages()
    if language == MULTILINGUAL:
        return False
    if component == "tts" and provider == "cartesia":
        return primary_subtag(language) in cartesia_tts_languages()
    if component == "tts" and provider == "deepgram":
        suffix = model.rsplit("-", 1)[-1] if "-" in model else ""
        return len(suffix) != 2 or suffix == primary_subtag(language)
    return True


def _choices(agents: list[dict]) -> list[tuple[str, dict]]:
    return [
        (component, choice)
        for agent in agents
        for component in ("stt", "tts")
        for choice in (agent[component], *agent[component].get("fallbacks", []))
    ]


def call_language(session: dict) -> str | None:
    """The language this call runs in (see the module's docstring)."""
    workflow = session["workflow"]
    configured = (workflow.get("settings") or {}).get("language")
    user_data = session.get("user_data") or {}
    wanted = user_data.get("language") if isinstance(user_data, dict) else None
    if not isinstance(wanted, str) or wanted == configured:
        return configured
    if not LANGUAGE_PATTERN.fullmatch(wanted):  # (`$` would take a final newline)
        # By its length: the customer's text about their user, whatever it holds.
        logger.warning(
            "call %s: user_data.language (%d characters) is not a language tag",
            session["call_id"],
            len(wanted),
        )
        return configured
    refused = [
        f"{component} {choice['provider']}"
        for component, choice in _choices(workflow["agents"])
        if not supports(
            component=component, provider=choice["provider"], model=choice["model"], language=wanted
        )
    ]
    if refused:
        logger.warning(
            "call %s: %s cannot run language %r; keeping %r",
            session["call_id"],
            ", ".join(refused),
            wanted,
            configured,
        )
        return configured
    return wanted
