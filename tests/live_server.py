"""The web app under gunicorn with gunicorn.conf.py, as production runs it, on a fresh
SQLite file: for what only the real server shows (its access log, how it hands a
chunked request body to Django). Started once per test session, on first use. The live
call streams' service (voicecalls.asgi under gunicorn.streams.conf.py's uvicorn
workers) likewise, for what only it shows."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_SECONDS = 60


@dataclass
class LiveServer:
    url: str
    client_key: str
    access_log: Path
    server_log: Path
    pid: int = 0  # gunicorn's master

    def logs(self) -> str:
        """Everything both logs hold so far (gunicorn writes each line as it goes)."""
        return self.access_log.read_text() + self.server_log.read_text()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(workdir: Path, port: int) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PYTEST_", "GUNICORN_"))
        and key not in ("DATABASE_URL", "CACHE_URL", "WEB_CONCURRENCY")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'live.sqlite3'}",
        DEBUG="1",
        LOG_LEVEL="INFO",
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
        GUNICORN_BIND=f"127.0.0.1:{port}",
        STREAMS_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="1",
        STREAMS_WORKERS="1",
        GUNICORN_THREADS="2",
    )
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


# What `gunicorn_server` serves: the API (sync workers) or the live call streams (ASGI).
API = ("voicecalls.wsgi:application", "gunicorn.conf.py")
STREAMS = ("voicecalls.asgi:application", "gunicorn.streams.conf.py")


@contextmanager
def gunicorn_server(workdir: Path, service: tuple[str, str] = API) -> Iterator[LiveServer]:
    application, conf = service
    port = _free_port()
    env = _environment(workdir, port)
    _manage(env, "migrate", "--noinput", "-v", "0")
    _manage(env, "createcachetable")
    client_key = _manage(env, "create_api_key", "live", "--org", "live").strip().splitlines()[-1]
    live = LiveServer(
        url=f"http://127.0.0.1:{port}",
        client_key=client_key,
        access_log=workdir / "access.log",
        server_log=workdir / "server.log",
    )
    with open(live.server_log, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", application]
            + ["-c", conf, "--no-control-socket"]
            + ["--access-logfile", str(live.access_log)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        live.pid = server.pid
        try:
            _wait_until_ready(live, server)
            yield live
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_until_ready(live: LiveServer, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{live.server_log.read_text()}")
        try:
            with urllib.request.urlopen(f"{live.url}/readyz", timeout=2):
                return
        # A worker still booting on a busy machine times the request out: wait on.
        except OSError:  # URLError, ConnectionError and TimeoutError alike
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def process_serving(
    command: list[str], env: dict[str, str], port: int, log: Path
) -> subprocess.Popen:
    """`command` started with its output in `log`, once it accepts connections on `port`."""
    with open(log, "w") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"{command[:3]} exited:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.2)


def run_dev_option(name: str) -> str:
    """The value of uvicorn's option `name` as `make run` (scripts/run_dev.sh) passes it."""
    script = (ROOT / "scripts" / "run_dev.sh").read_text()
    return re.search(rf"{name} (\S+)", script).group(1)
