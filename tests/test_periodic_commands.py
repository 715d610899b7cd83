"""`expire_calls`, `expire_data` and the wake commands run one pass, or one every
`--every` seconds until SIGINT/SIGTERM (voicecalls/periodic.py), as `make run` and
production run them."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["expire_calls", "expire_data", "wake_analyses", "wake_webhook_deliveries"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_must_be_a_positive_number_of_seconds(db, command) -> None:
    with pytest.raises(CommandError, match="positive"):
        call_command(command, "--every", "0")


def test_make_run_keeps_every_periodic_command_looping_beside_the_server() -> None:
    """A lost wake-up (a stopped `make run`, a killed worker) is recovered only by
    these loops: without them an analysis or a delivery stayed open for good."""
    script = (ROOT / "scripts" / "run_dev.sh").read_text()

    looping = set(re.findall(r"manage\.py (\w+) --every", script))

    assert looping == set(COMMANDS)


def test_a_one_off_wake_says_what_it_woke(db) -> None:
    out = io.StringIO()

    call_command("wake_webhook_deliveries", stdout=out)

    assert out.getvalue() == "Woke 0 overdue webhook deliveries.\n"


def test_a_loop_keeps_running_and_stops_cleanly_on_sigterm(tmp_path) -> None:
    """A real process on its own SQLite database: it makes passes (`-v 2` says each)
    and leaves at once on SIGTERM with status 0. (Both commands share the loop.)"""
    command = "expire_data"
    env = {**os.environ, "DEBUG": "1", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
    loop = subprocess.Popen(
        [*manage, command, "--every", "0.2", "-v", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert loop.stdout.readline() == f"{command}: pass done\n", loop.stderr.read()
        assert loop.stdout.readline() == f"{command}: pass done\n"
        loop.send_signal(signal.SIGTERM)
        assert loop.wait(timeout=10) == 0
        assert "pass failed" not in loop.stderr.read()
    finally:
        loop.kill()


def test_the_task_worker_outlives_a_database_outage_and_still_stops_on_sigterm(
    tmp_path,
) -> None:
    """Upstream's `db_worker` ended on any database error but a locked SQLite file, so
    a PostgreSQL restart stopped every worker, and customer webhooks, for good (found by
    the soak). Here its database has no tables yet: it waits for them, runs once they
    are there, and leaves on SIGTERM with status 0."""
    env = {**os.environ, "DEBUG": "1", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    manage = [sys.executable, str(ROOT / "manage.py")]
    worker = subprocess.Popen(
        [*manage, "db_worker", "--queue-name", "*", "--interval", "0.2", "--no-reload"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        failed = "db_worker: the database failed"
        assert any(failed in line for line, _ in zip(worker.stderr, range(20), strict=False))
        subprocess.run([*manage, "migrate", "--noinput"], env=env, check=True, capture_output=True)
        assert worker.poll() is None
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
    finally:
        worker.kill()
