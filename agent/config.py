"""The worker's settings, from the environment (12-factor, like the web service)."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_AGENT_NAME = "voicecalls-agent"


class ConfigError(RuntimeError):
    pass


@dataclass(frozen=True)
class Config:
    api_url: str
    agent_key: str
    agent_name: str = DEFAULT_AGENT_NAME
    # Tool endpoints must be public https URLs; local development may lift that.
    tools_allow_private_urls: bool = False

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        api_url = env.get("VOICECALLS_API_URL", "http://127.0.0.1:8000").rstrip("/")
        agent_key = env.get("VOICECALLS_AGENT_KEY", "")
        if not agent_key:
            raise ConfigError(
                "VOICECALLS_AGENT_KEY is not set: create one with "
                "`python manage.py create_api_key worker --agent`."
            )
        return cls(
            api_url=api_url,
            agent_key=agent_key,
            agent_name=env.get("LIVEKIT_AGENT_NAME") or DEFAULT_AGENT_NAME,
            tools_allow_private_urls=env.get("AGENT_TOOLS_ALLOW_PRIVATE_URLS") == "1",
        )
