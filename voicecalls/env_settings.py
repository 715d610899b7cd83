"""How voicecalls.settings reads the environment: the database, a secret (or the file
NAME_FILE names), a list of secrets, KEY:SECRET pairs, timeouts and the webhooks' retry
schedule. A malformed value stops the process at start (ImproperlyConfigured), never
quoting a secret."""

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


def _read(name: str, default: float, cast: type[int] | type[float]) -> float:
    # django-environ's own ValueError ("could not convert string to float: ''") names
    # neither the variable nor what it takes.
    try:
        return env.int(name, default=default) if cast is int else env.float(name, default=default)
    except ValueError as exc:
        kind = "a whole number" if cast is int else "a number"
        raise ImproperlyConfigured(f"{name} must be {kind}") from exc


def whole_number(name: str, default: int, *, least: int = 0, most: int | None = None) -> int:
    """A count, or whole seconds: a whole number from `least` (to `most`), else no start."""
    value = int(_read(name, default, int))
    if value < least or (most is not None and value > most):
        bounds = f"from {least} to {most}" if most is not None else f"{least} or more"
        raise ImproperlyConfigured(f"{name} must be a whole number {bounds}")
    return value


def duration(name: str, default: float, *, zero: bool = False) -> float:
    """A delay or duration: more than 0 (or 0 too, when `zero` means none), else no start."""
    value = _read(name, default, float)
    if value < 0 or (value == 0 and not zero):
        raise ImproperlyConfigured(f"{name} must be {'0 or more' if zero else 'more than 0'}")
    return value


def timeout(name: str, default: float, most: float) -> float:
    """A timeout setting: more than 0 and at most `most` seconds, else no start."""
    value = _read(name, default, float)
    if not 0 < value <= most:
        raise ImproperlyConfigured(f"{name} must be more than 0 and at most {most:g}")
    return value


def database_timeout(name: str, default: float, most: float) -> float:
    """A PostgreSQL timeout setting: 0 (none) to `most` seconds, else no start."""
    value = _read(name, default, float)
    if not 0 <= value <= most:
        raise ImproperlyConfigured(f"{name} must be 0 (none) to {most:g} seconds")
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


def database(*, default: str) -> dict:
    """DATABASES["default"] from DATABASE_URL (`default` without it), with the options
    each engine runs with here."""
    config = env.db("DATABASE_URL", default=default)
    config["CONN_MAX_AGE"] = whole_number("CONN_MAX_AGE", 60)
    config["CONN_HEALTH_CHECKS"] = True
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # WAL and a busy timeout let the server, expire_calls and the task worker share
        # the embedded database without "database is locked" errors.
        config["OPTIONS"] = {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    elif config["ENGINE"] == "django.db.backends.postgresql":
        # Django's backend, its per-request health check without a round trip when the
        # connection is quiet (voicecalls/postgresql/base.py).
        config["ENGINE"] = "voicecalls.postgresql"
        # The hot paths' statements (voicecalls/db.py) are prepared once a connection has
        # run them this many times; Django's default is never, for poolers in
        # transaction mode that lose prepared statements: "none" restores it.
        prepare = env.str("DATABASE_PREPARE_THRESHOLD", default="5").lower()
        if prepare != "none" and not prepare.isdigit():
            raise ImproperlyConfigured("DATABASE_PREPARE_THRESHOLD must be a whole number or none.")
        config.setdefault("OPTIONS", {})["prepare_threshold"] = (
            None if prepare == "none" else int(prepare)
        )
        # A database that takes the connection and never answers (a host black-holed in a
        # failover, a stuck pooler) fails the request in seconds, a 503, not after the
        # kernel's minutes with every worker stuck. `?connect_timeout=` in the URL wins.
        config["OPTIONS"].setdefault(
            "connect_timeout", whole_number("DATABASE_CONNECT_TIMEOUT_SECONDS", 10, least=1)
        )
    return config
