"""A live server for the generated SDKs: gunicorn on a loopback port, backed by the
PostgreSQL that scripts/with_postgres.sh started (DATABASE_URL), with the fake LiveKit
server beside it for hang-ups.

These tests need `make sdk` first and run only under `make sdk-test`
(VOICECALLS_SDK_TESTS=1); the ordinary pytest passes leave this directory alone.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections

if os.environ.get("VOICECALLS_SDK_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "sdk"


@dataclass
class LiveServer:
    url: str
    env: dict[str, str]
    db_blocker: Any

    def manage(self, *args: str) -> str:
        """Run a management command against the server's database, in this process (the
        Django start-up of a subprocess costs seconds); return its stdout."""
        out = io.StringIO()
        with self.db_blocker.unblock():
            call_command(*args, stdout=out)
        return out.getvalue()

    def client_key(self, org: str) -> str:
        """A fresh organization with the demo workflow and a client API key for it."""
        self.manage("load_demo", "--org", org)
        return self.manage("create_api_key", "sdk-tests", "--org", org).strip().splitlines()[-1]

    def simulate_call(self, org: str, call_id: str) -> None:
        """`python manage.py simulate_call`, as a user would run it beside the server."""
        subprocess.run(
            [sys.executable, "manage.py", "simulate_call", "--org", org, "--call", call_id],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_ready(url: str, server: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server at {url} was not ready within {timeout} s")


@pytest.fixture(scope="session")
def fake_livekit_url() -> Iterator[str]:
    from tests import fake_livekit

    fake, server = fake_livekit.start("devkey", "secret")
    yield fake.url
    fake.stop()
    server.shutdown()


@pytest.fixture(scope="session")
def api_server(fake_livekit_url: str, django_db_blocker: Any) -> Iterator[LiveServer]:
    database_url = os.environ.get("DATABASE_URL", "")
    assert database_url.startswith("postgres"), "run through scripts/with_postgres.sh"
    assert (SDK / "python").is_dir() and (SDK / "build").is_dir(), "run `make sdk` first"
    port = _free_port()
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": database_url,
        "LIVEKIT_URL": fake_livekit_url,
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": "secret",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "WEBHOOKS_ALLOW_PRIVATE_URLS": "1",  # a loopback receiver is fine here
    }
    live = LiveServer(url=f"http://127.0.0.1:{port}", env=env, db_blocker=django_db_blocker)
    live.manage("migrate", "--noinput")
    live.manage("createcachetable")
    log = open(SDK / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "voicecalls.wsgi:application", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_ready(live.url, server)
        yield live
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        with django_db_blocker.unblock():
            connections.close_all()
