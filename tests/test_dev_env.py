"""A newcomer's shell: after `make run`'s first run every `.venv/bin/python manage.py …`
line of the README works verbatim, with nothing in the environment but PATH and HOME
(DESIGN.md "Running"): `make run` writes a git-ignored .env that the settings read."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
README_COMMAND = re.compile(r"\.venv/bin/python manage\.py ([a-z_]+(?: [^`)\n]+)?)")


def newcomer_env(env_file: Path, database: Path) -> dict[str, str]:
    """A new shell: PATH and HOME only, plus where this test keeps .env and the database."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "VOICECALLS_ENV_FILE": str(env_file),
        "DATABASE_URL": f"sqlite:///{database}",
    }


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def first_run(env: dict[str, str]) -> str:
    """`make run`'s steps before the server (Makefile `run`); the first-run key's output."""
    outputs = [
        run(env, "scripts/dev_env.py"),
        run(env, "manage.py", "migrate", "--noinput"),
        run(env, "manage.py", "createcachetable"),
        run(env, "manage.py", "load_demo", "--org", "demo"),
        run(env, "manage.py", "first_run_key", "--org", "demo"),
    ]
    for result in outputs:
        assert result.returncode == 0, result.stderr
    return outputs[-1].stdout


def test_the_readme_commands_work_in_a_new_shell_after_the_first_run(tmp_path: Path) -> None:
    env = newcomer_env(tmp_path / ".env", tmp_path / "db.sqlite3")
    first_run(env)
    readme = (ROOT / "README.md").read_text()
    commands = sorted({match.strip() for match in README_COMMAND.findall(readme)})
    assert commands == [
        "create_api_key me --org demo",
        "createsuperuser",
        "simulate_call --org demo",
    ]

    results = {command: run(env, "manage.py", *command.split()) for command in commands}

    for command, result in results.items():
        assert result.returncode == 0, (command, result.stderr)
        assert "ImproperlyConfigured" not in result.stderr, command
    assert re.fullmatch(
        r"\w{8}\.\w{32}", results["create_api_key me --org demo"].stdout.split()[-1]
    )
    uuid.UUID(results["simulate_call --org demo"].stdout.split()[-1])
    # Interactive, so with no terminal it only says so; a real one is created below.
    assert "not running in a TTY" in results["createsuperuser"].stdout
    created = run(
        {**env, "DJANGO_SUPERUSER_PASSWORD": "a-newcomer-password-42"},
        "manage.py",
        *"createsuperuser --noinput --username newcomer --email newcomer@example.com".split(),
    )
    assert created.returncode == 0, created.stderr
    assert "Superuser created successfully." in created.stdout


def test_without_the_first_run_a_new_shell_is_refused(tmp_path: Path) -> None:
    """What the README commands met before: no DEBUG, public dev secrets."""
    env = newcomer_env(tmp_path / "missing.env", tmp_path / "db.sqlite3")

    result = run(env, "manage.py", "check")

    assert result.returncode != 0
    assert "keep their public dev defaults" in result.stderr


def read_env_file(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_the_first_run_writes_debug_and_fresh_secrets_and_prints_none(tmp_path: Path) -> None:
    env_file, other_file = tmp_path / ".env", tmp_path / "other.env"

    result = run(newcomer_env(env_file, tmp_path / "db"), "scripts/dev_env.py")
    run(newcomer_env(other_file, tmp_path / "db"), "scripts/dev_env.py")

    values, others = read_env_file(env_file), read_env_file(other_file)
    assert result.returncode == 0
    assert set(values) == {"DEBUG", "SECRET_KEY", "CRYPTOGRAPHY_KEY"}
    assert values["DEBUG"] == "1"
    assert len(values["SECRET_KEY"]) >= 50 and len(values["CRYPTOGRAPHY_KEY"]) >= 50
    assert values["SECRET_KEY"] != values["CRYPTOGRAPHY_KEY"]
    assert (values["SECRET_KEY"], values["CRYPTOGRAPHY_KEY"]) != (
        others["SECRET_KEY"],
        others["CRYPTOGRAPHY_KEY"],
    )
    assert values["SECRET_KEY"] != settings.DEV_SECRET_KEY
    assert values["CRYPTOGRAPHY_KEY"] != settings.DEV_CRYPTOGRAPHY_KEY
    assert env_file.stat().st_mode & 0o777 == 0o600
    for secret in (values["SECRET_KEY"], values["CRYPTOGRAPHY_KEY"]):
        assert secret not in result.stdout + result.stderr


def test_the_first_run_never_overwrites_an_existing_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DEBUG=1\nSECRET_KEY=mine\n")

    result = run(newcomer_env(env_file, tmp_path / "db"), "scripts/dev_env.py")

    assert result.returncode == 0
    assert env_file.read_text() == "DEBUG=1\nSECRET_KEY=mine\n"
    assert "Kept" in result.stdout


def test_the_real_environment_wins_over_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DEBUG=1\nALLOWED_HOSTS=from-the-file\nLIVEKIT_AGENT_NAME=file-agent\n")
    env = {
        **newcomer_env(env_file, tmp_path / "db"),
        "ALLOWED_HOSTS": "from-the-environment",
        "DJANGO_SETTINGS_MODULE": "voicecalls.settings",
    }

    result = run(
        env,
        "-c",
        "from django.conf import settings;"
        " print(settings.ALLOWED_HOSTS, settings.LIVEKIT_AGENT_NAME, settings.DEBUG)",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "['from-the-environment'] file-agent True"
