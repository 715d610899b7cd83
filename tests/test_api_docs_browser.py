"""Swagger UI at /api/docs/ works with nothing but this host: its assets come from the
pinned drf-spectacular-sidecar package, served by the app itself (WhiteNoise), under
gunicorn with DEBUG off as under the development server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from django.conf import settings
from playwright.sync_api import Page, Route, expect

pytestmark = pytest.mark.browser

ROOT = Path(settings.BASE_DIR)
PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "a-real-secret-key-with-many-different-characters-0123456789-abcdefghij",
    "CRYPTOGRAPHY_KEY": "a-real-cryptography-key-" + "y" * 40,
    "LIVEKIT_API_KEY": "APIrealkey",
    "LIVEKIT_API_SECRET": "a-real-livekit-secret-" + "z" * 30,
    # Plain http on loopback: no TLS in this test.
    "SECURE_SSL_REDIRECT": "0",
    "CACHE_URL": "locmemcache://",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gunicorn_debug_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The production server (`make serve`) with DEBUG off, nothing of this process's
    environment but PATH and HOME."""
    port = _free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        **PRODUCTION_ENV,
        "VOICECALLS_ENV_FILE": os.devnull,
        "DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('docs') / 'db.sqlite3'}",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "voicecalls.wsgi:application", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"gunicorn exited with {server.returncode}"
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start within 60 s"
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(params=["gunicorn, DEBUG off", "development server"])
def server_url(request: pytest.FixtureRequest) -> str:
    if request.param == "development server":
        request.getfixturevalue("transactional_db")  # its requests reach the test database
        return request.getfixturevalue("live_server").url
    return request.getfixturevalue("gunicorn_debug_off")


def _operation_count() -> int:
    schema = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    return sum(
        method in {"get", "post", "put", "patch", "delete"}
        for item in schema["paths"].values()
        for method in item
    )


def test_swagger_ui_lists_the_operations_with_every_other_host_blocked(
    page: Page, server_url: str
) -> None:
    own_host = urlsplit(server_url).netloc
    blocked: list[str] = []

    def only_this_host(route: Route) -> None:
        if urlsplit(route.request.url).netloc == own_host:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_host)
    page.goto(f"{server_url}/api/docs/")

    operations = page.locator(".opblock")
    expect(operations).to_have_count(_operation_count())
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/calls/active")).to_be_visible()
    expect(page.locator(".info .title")).to_contain_text("voicecalls API")
    # Nothing even tried to leave the host (no CDN, no validator badge).
    assert blocked == []
