"""Settings come from the environment; production refuses the public dev secrets."""

from __future__ import annotations

import ast
import os
import runpy
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from privacy.keys import user_id_hash

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_SECRETS = {
    "SECRET_KEY": "a-real-secret-key-with-many-different-characters-0123456789-abcdefghij",
    "CRYPTOGRAPHY_KEY": "a-real-cryptography-key-" + "y" * 40,
    "LIVEKIT_API_KEY": "APIrealkey",
    "LIVEKIT_API_SECRET": "a-real-livekit-secret-" + "z" * 30,
}


def run_check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    # DJANGO_ALLOW_ASYNC_UNSAFE: set in this process by the browser tests (Playwright),
    # and an error under `check --deploy`; the checked process must not inherit it.
    dropped = {"DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    clean = {
        k: v for k, v in os.environ.items() if k not in PRODUCTION_SECRETS and k not in dropped
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", *args],
        cwd=ROOT,
        # A developer's .env (written by `make run`) must not supply what a test removed.
        env={**clean, "VOICECALLS_ENV_FILE": os.devnull, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("missing", sorted(PRODUCTION_SECRETS))
def test_with_debug_off_it_refuses_to_start_on_a_dev_secret(missing: str) -> None:
    env = {k: v for k, v in PRODUCTION_SECRETS.items() if k != missing}

    result = run_check({**env, "DEBUG": "0"})

    assert result.returncode != 0
    assert "keep their public dev defaults" in result.stderr
    assert missing in result.stderr
    for value in PRODUCTION_SECRETS.values():
        assert value not in result.stderr


def test_with_debug_off_and_real_secrets_it_starts() -> None:
    result = run_check({**PRODUCTION_SECRETS, "DEBUG": "0"})

    assert result.returncode == 0, result.stderr


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret_key"
    secret_file.write_text(PRODUCTION_SECRETS["SECRET_KEY"] + "\n")
    env = {k: v for k, v in PRODUCTION_SECRETS.items() if k != "SECRET_KEY"}

    result = run_check({**env, "DEBUG": "0", "SECRET_KEY_FILE": str(secret_file)})

    assert result.returncode == 0, result.stderr


def test_a_malformed_setting_is_refused() -> None:
    result = run_check({"DEBUG": "1", "LIVEKIT_TOKEN_TTL_SECONDS": "3600"})

    assert result.returncode != 0
    assert "LIVEKIT_TOKEN_TTL_SECONDS" in result.stderr


def test_a_webhook_history_kept_less_than_the_failing_endpoint_check_reads_is_refused() -> None:
    """Disabling an endpoint reads its successes of the last WEBHOOKS_DISABLE_AFTER_DAYS:
    deleted sooner, a working endpoint would be taken for failing."""
    result = run_check({"DEBUG": "1", "WEBHOOKS_DELIVERY_RETENTION_DAYS": "4"})

    assert result.returncode != 0
    assert "WEBHOOKS_DELIVERY_RETENTION_DAYS must be at least" in result.stderr


def test_the_webhook_retry_schedule_comes_from_the_environment() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings; print(settings.WEBHOOKS_RETRY_SCHEDULE)",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "voicecalls.settings",
            "VOICECALLS_ENV_FILE": os.devnull,
            "DEBUG": "1",
            "WEBHOOKS_RETRY_SCHEDULE": "0, 1,2.5",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.stdout.strip() == "(0.0, 1.0, 2.5)", result.stderr


@pytest.mark.parametrize("value", ["JSON", "text"])
def test_a_log_format_other_than_json_or_plain_is_refused_naming_it(value: str) -> None:
    """It failed with logging's "Unable to configure handler 'console'", which names
    neither the setting nor what it takes."""
    result = run_check({"DEBUG": "1", "LOG_FORMAT": value})

    assert result.returncode != 0
    assert "LOG_FORMAT must be one of: json, plain" in result.stderr


@pytest.mark.parametrize("value", ["", "5,soon", "0,-1"])
def test_a_malformed_webhook_retry_schedule_is_refused(value: str) -> None:
    result = run_check({"DEBUG": "1", "WEBHOOKS_RETRY_SCHEDULE": value})

    assert result.returncode != 0
    assert "WEBHOOKS_RETRY_SCHEDULE" in result.stderr


@pytest.mark.parametrize("value", ["0", "-5", "300"])
def test_a_webhook_timeout_an_attempt_cannot_keep_to_is_refused(value: str) -> None:
    """urllib3 refuses a timeout of 0 or less (every attempt raised, its delivery stuck),
    and one past an attempt's hold on its delivery (then a fixed 120 s) let the overdue
    sweep send the event again while the first request still waited."""
    result = run_check({"DEBUG": "1", "WEBHOOKS_TIMEOUT_SECONDS": value})

    assert result.returncode != 0
    assert "WEBHOOKS_TIMEOUT_SECONDS" in result.stderr


@pytest.mark.parametrize("value", ["0", "-1", "300"])
def test_an_analysis_timeout_a_run_cannot_keep_to_is_refused(value: str) -> None:
    """A run asks at most twice, each up to about twice the timeout; past 3 minutes a
    request could still wait when the sweep takes the run for lost (15 minutes) and asks
    the provider again on the customer's key."""
    result = run_check({"DEBUG": "1", "ANALYSIS_TIMEOUT_SECONDS": value})

    assert result.returncode != 0
    assert "ANALYSIS_TIMEOUT_SECONDS" in result.stderr


@pytest.mark.parametrize(
    "name", ["DATABASE_LOCK_TIMEOUT_SECONDS", "DATABASE_STATEMENT_TIMEOUT_SECONDS"]
)
@pytest.mark.parametrize("value", ["-1", "601", "five"])
def test_a_database_timeout_out_of_bounds_is_refused(name: str, value: str) -> None:
    result = run_check({"DEBUG": "1", name: value})

    assert result.returncode != 0
    assert name in result.stderr


def _prepare_threshold(value: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings;"
            " print(settings.DATABASES['default']['OPTIONS']['prepare_threshold'])",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "voicecalls.settings",
            "DEBUG": "1",
            "DATABASE_URL": "postgres://app@db.example.com/voicecalls",
            "DATABASE_PREPARE_THRESHOLD": value,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("value", "threshold"), [("5", "5"), ("0", "0"), ("none", "None")])
def test_preparing_statements_on_postgresql_can_be_tuned_or_turned_off(
    value: str, threshold: str
) -> None:
    result = _prepare_threshold(value)

    assert result.stdout.strip() == threshold, result.stderr


@pytest.mark.parametrize("value", ["", "-1", "five", "5.0"])
def test_a_malformed_prepare_threshold_is_refused(value: str) -> None:
    result = _prepare_threshold(value)

    assert result.returncode != 0
    assert "DATABASE_PREPARE_THRESHOLD must be a whole number or none" in result.stderr


def test_check_deploy_is_clean_with_production_settings() -> None:
    result = run_check(
        {**PRODUCTION_SECRETS, "DEBUG": "0", "ALLOWED_HOSTS": "api.example.com"},
        "--deploy",
        "--fail-level",
        "WARNING",
    )

    assert result.returncode == 0, result.stderr


def test_secret_key_fallbacks_come_comma_separated_from_the_environment_or_a_file(
    tmp_path: Path,
) -> None:
    """Rotating SECRET_KEY (docs/key-rotation.md): the hashes a retained identity, an
    erasure's record or an idempotency record keep were made under the old key, and a
    deployment reaches them only through SECRET_KEY_FALLBACKS set in its environment."""
    organization_id = uuid.uuid4()
    show = (
        "from privacy.keys import user_id_hashes; "
        f"print(user_id_hashes(organization_id='{organization_id}', user_id='user-1')[1:])"
    )

    def fallback_hashes(**extra: str) -> list[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SECRET_KEY")}
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c", show],
            cwd=ROOT,
            env={**clean, "VOICECALLS_ENV_FILE": os.devnull, "DEBUG": "1", **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return ast.literal_eval(result.stdout.strip())

    def made_under(secret: str) -> str:
        return user_id_hash(organization_id=organization_id, user_id="user-1", secret=secret)

    secret_file = tmp_path / "fallbacks"
    secret_file.write_text("older-secret-key\n")

    assert fallback_hashes(SECRET_KEY_FALLBACKS="old-secret-key, older-secret-key,") == [
        made_under("old-secret-key"),
        made_under("older-secret-key"),
    ]
    assert fallback_hashes(SECRET_KEY_FALLBACKS_FILE=str(secret_file)) == [
        made_under("older-secret-key")
    ]
    assert fallback_hashes() == []


def test_livekit_key_fallbacks_are_key_secret_pairs_and_a_malformed_one_is_refused() -> None:
    show = "from django.conf import settings; print(settings.LIVEKIT_API_KEY_FALLBACKS)"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", show],
        cwd=ROOT,
        env={
            **os.environ,
            "VOICECALLS_ENV_FILE": os.devnull,
            "DEBUG": "1",
            "LIVEKIT_API_KEY_FALLBACKS": "APIold:old-secret, APIolder:a:b,",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "{'APIold': 'old-secret', 'APIolder': 'a:b'}", result.stderr

    refused = run_check({"DEBUG": "1", "LIVEKIT_API_KEY_FALLBACKS": "APIold-without-its-secret"})

    assert refused.returncode != 0
    assert "LIVEKIT_API_KEY_FALLBACKS must be comma-separated KEY:SECRET pairs" in refused.stderr
    assert "APIold-without-its-secret" not in refused.stderr


def test_with_debug_off_a_livekit_fallback_with_the_public_dev_secret_is_refused() -> None:
    """Anyone may sign a LiveKit webhook with `livekit-server --dev`'s secret: listed as
    the fallback of a deployment leaving its dev keys, it would take forged events."""
    result = run_check(
        {**PRODUCTION_SECRETS, "DEBUG": "0", "LIVEKIT_API_KEY_FALLBACKS": "devkey:secret"}
    )

    assert result.returncode != 0
    assert "keep their public dev defaults: LIVEKIT_API_KEY_FALLBACKS" in result.stderr


def test_a_livekit_fallback_naming_the_current_key_is_refused() -> None:
    """LiveKit holds one secret per key: a new secret under the same key cannot be
    rotated to without downtime, and the fallback's secret would never be tried."""
    result = run_check(
        {
            "DEBUG": "1",
            "LIVEKIT_API_KEY": "APIsamekey",
            "LIVEKIT_API_KEY_FALLBACKS": "APIsamekey:the-old-secret",
        }
    )

    assert result.returncode != 0
    assert "LIVEKIT_API_KEY_FALLBACKS names LIVEKIT_API_KEY" in result.stderr
    assert "the-old-secret" not in result.stderr


# Every number README's Configuration table names, and a value out of its bounds.
OUT_OF_BOUNDS = {
    "LIVEKIT_TOKEN_TTL_SECONDS": "59",
    "LIVEKIT_DEPARTURE_TIMEOUT": "-1",
    "LIVEKIT_API_TIMEOUT_SECONDS": "0",
    "CALL_RECONCILE_AFTER_SECONDS": "0",
    "CALL_AGENT_JOIN_TIMEOUT_SECONDS": "0",
    "CONN_MAX_AGE": "-1",
    "DATABASE_CONNECT_TIMEOUT_SECONDS": "0",
    "DATABASE_LOCK_TIMEOUT_SECONDS": "-1",
    "DATABASE_STATEMENT_TIMEOUT_SECONDS": "601",
    "CALLS_CONCURRENCY_LIMIT": "-5",
    "STREAMS_PER_ORGANIZATION": "-1",
    "STREAMS_PER_PROCESS": "-1",
    "STREAMS_HEARTBEAT_SECONDS": "0",
    "STREAMS_LEASE_SECONDS": "0",
    "STREAMS_LEASE_ADOPT_SECONDS": "-10",
    "STREAMS_SEND_TIMEOUT_SECONDS": "0",
    "STREAMS_END_GRACE_SECONDS": "-1",
    "STREAMS_POLL_SECONDS": "0",
    "WEBHOOKS_END_REPORT_DELAY": "-15",
    "WEBHOOKS_TIMEOUT_SECONDS": "0",
    "WEBHOOKS_ENDPOINT_MAX_IN_FLIGHT": "0",
    "WEBHOOKS_DISABLE_AFTER_DAYS": "0",
    "WEBHOOKS_DELIVERY_RETENTION_DAYS": "0",
    "ANALYSIS_TIMEOUT_SECONDS": "0",
    "ANALYSIS_ORGANIZATION_MAX_RUNNING": "0",
    "ANALYSIS_RETRY_BASE_SECONDS": "-30",
    "ANALYSIS_MAX_ATTEMPTS": "0",
    "RECORDINGS_URL_TTL_SECONDS": "901",
    "RECORDINGS_S3_TIMEOUT_SECONDS": "0",
    "SECURE_HSTS_SECONDS": "-1",
}


def _settings_with(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> dict:
    """voicecalls.settings evaluated afresh with NAME=value (a PostgreSQL URL, so the
    settings read only there are read too; nothing connects)."""
    monkeypatch.setenv("VOICECALLS_ENV_FILE", os.devnull)
    monkeypatch.setenv("DEBUG", "1")
    monkeypatch.setenv("DATABASE_URL", "postgres://app@db.example.com/voicecalls")
    monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "voicecalls" / "settings.py"))


@pytest.mark.parametrize("name", sorted(OUT_OF_BOUNDS))
def test_a_numeric_setting_that_is_no_number_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """django-environ's own ValueError ("could not convert string to float: ''") names
    neither the variable nor what it takes."""
    with pytest.raises(ImproperlyConfigured, match=rf"^{name} must be "):
        _settings_with(monkeypatch, name, "ten")


@pytest.mark.parametrize(("name", "value"), sorted(OUT_OF_BOUNDS.items()))
def test_a_numeric_setting_out_of_its_bounds_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """They started and took effect later: a negative limit, delay or retry base, a
    timeout, interval or lease of 0."""
    with pytest.raises(ImproperlyConfigured, match=rf"^{name} must be "):
        _settings_with(monkeypatch, name, value)


@pytest.mark.parametrize(("value", "level"), [("debug", "DEBUG"), ("Warning", "WARNING")])
def test_the_log_level_is_read_in_any_case(
    monkeypatch: pytest.MonkeyPatch, value: str, level: str
) -> None:
    """logging takes only upper-case names: `LOG_LEVEL=debug` stopped the process with
    "Unable to configure root logger", naming neither the setting nor what it takes."""
    assert _settings_with(monkeypatch, "LOG_LEVEL", value)["LOGGING"]["root"]["level"] == level


def test_an_unknown_log_level_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        ImproperlyConfigured,
        match="^LOG_LEVEL must be one of: DEBUG, INFO, WARNING, ERROR, CRITICAL$",
    ):
        _settings_with(monkeypatch, "LOG_LEVEL", "verbose")
