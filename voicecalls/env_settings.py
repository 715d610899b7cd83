"""How voicecalls.settings reads the environment: a secret (or the file NAME_FILE names),
a list of secrets, KEY:SECRET pairs, timeouts and the webhooks' retry schedule. A
malformed value stops the process at start (ImproperlyConfigured), never quoting a
secret."""

from __future__ import annotations

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

env = environ.Env()


def secret(name: str, default: str) -> str:
    """A secret from NAME, or from the file NAME_FILE points at (Docker/K8s secrets)."""
    path = env.str(f"{name}_FILE", default="")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE points at an unreadable file") from exc
    return env.str(name, default=default)


def retry_schedule(value: str) -> tuple[float, ...]:
    """WEBHOOKS_RETRY_SCHEDULE: comma-separated waits in seconds, at least one, none < 0."""
    try:
        waits = tuple(float(part) for part in value.split(","))
    except ValueError as exc:
        raise ImproperlyConfigured(
            "WEBHOOKS_RETRY_SCHEDULE must be comma-separated seconds"
        ) from exc
    if any(wait < 0 for wait in waits):
        raise ImproperlyConfigured("WEBHOOKS_RETRY_SCHEDULE waits must not be negative")
    return waits


def timeout(name: str, default: float, most: float) -> float:
    """A timeout setting: more than 0 and at most `most` seconds, else no start."""
    value = env.float(name, default=default)
    if not 0 < value <= most:
        raise ImproperlyConfigured(f"{name} must be more than 0 and at most {most:g}")
    return value


def secrets(name: str) -> list[str]:
    """NAME (or NAME_FILE): comma-separated secrets, e.g. a key's fallbacks."""
    return [key.strip() for key in secret(name, "").split(",") if key.strip()]


def key_pairs(name: str) -> dict[str, str]:
    """NAME (or NAME_FILE): comma-separated KEY:SECRET pairs, else no start."""
    pairs = [pair.strip() for pair in secret(name, "").split(",") if pair.strip()]
    if not all(":" in pair for pair in pairs):
        # The value is secrets: the message must not quote it.
        raise ImproperlyConfigured(f"{name} must be comma-separated KEY:SECRET pairs")
    return dict(pair.split(":", 1) for pair in pairs)
