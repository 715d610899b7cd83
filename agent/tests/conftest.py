"""A live voicecalls web server for the worker's tests: the real Django app from this
repository, in its own (web) venv, on a fresh SQLite file, served by a threaded WSGI
server subprocess. Nothing of the API is mocked.

`VOICECALLS_WEB_ROOT` (default: the repo root) and `VOICECALLS_WEB_PYTHON` (default:
`<root>/.venv/bin/python`) say which app and interpreter to run.

LiveKit is the web service's own Twirp stand-in (`<web root>/tests/fake_livekit.py`,
the one of the app under test), one for the session: the web server and the worker's
jobs both point at it, and it records every DeleteRoom (by room name, so each test
reads its own call's). Its SIP side makes inbound calls (`inbound_call`) and
transfers them as LiveKit's SIP service would.

Organizations: `demo` (phone lines: outbound calls to the US, and `INBOUND_NUMBER`
reaching its `daily-call`), `nollm` (no LLM key) and `busy` (`BUSY_NUMBER`, and a
concurrency limit of 0: every inbound call is over it).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

LIVEKIT_KEY, LIVEKIT_SECRET = "devkey", "secret"

AGENT_DIR = Path(__file__).resolve().parent.parent
WEB_ROOT = Path(os.environ.get("VOICECALLS_WEB_ROOT") or AGENT_DIR.parent)
WEB_PYTHON = os.environ.get("VOICECALLS_WEB_PYTHON") or str(WEB_ROOT / ".venv" / "bin" / "python")
START_TIMEOUT = 60.0
INBOUND_NUMBER = "+14155550140"
BUSY_NUMBER = "+14155550150"


def _web_tests_package() -> None:
    """`tests` is the web root's test package: its LiveKit stand-in knows what the app
    under test asks LiveKit, which another checkout's may not (a new SIP method)."""
    package = WEB_ROOT / "tests"
    spec = importlib.util.spec_from_file_location(
        "tests", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tests"] = module
    spec.loader.exec_module(module)


_web_tests_package()
from tests import fake_livekit as fake_livekit_server  # noqa: E402

# The demo workflow's components (workflows/demo.py) and another org without an LLM key.
DEMO_KEYS = {"stt": "deepgram", "llm": "openai", "tts": "cartesia"}


@dataclass
class Org:
    slug: str
    client_key: str


class Web:
    """The live server, and a tiny client for its public API."""

    def __init__(self, base_url: str, agent_key: str, orgs: dict[str, Org]) -> None:
        self.base_url = base_url
        self.agent_key = agent_key
        self.orgs = orgs
        self._http = httpx.Client(base_url=base_url, timeout=15)

    def request(self, method: str, path: str, key: str, **kwargs: object) -> httpx.Response:
        return self._http.request(
            method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs
        )

    def ok(self, method: str, path: str, key: str, **kwargs: object) -> object:
        response = self.request(method, path, key, **kwargs)
        assert response.is_success, (method, path, response.status_code, response.text)
        return response.json()

    def create_call(self, org: str = "demo", **body: object) -> dict:
        body.setdefault("workflow_slug", "daily-call")
        return self.ok("POST", "/api/v1/calls", self.orgs[org].client_key, json=body)

    def call(self, call_id: str, org: str = "demo") -> dict:
        return self.ok("GET", f"/api/v1/calls/{call_id}", self.orgs[org].client_key)

    def transcript(self, call_id: str, org: str = "demo") -> list[dict]:
        return self.ok("GET", f"/api/v1/calls/{call_id}/transcript", self.orgs[org].client_key)

    def metrics(self, call_id: str, org: str = "demo") -> dict:
        return self.ok("GET", f"/api/v1/calls/{call_id}/metrics", self.orgs[org].client_key)

    def end_call(self, call_id: str, org: str = "demo") -> dict:
        return self.ok("POST", f"/api/v1/calls/{call_id}/end", self.orgs[org].client_key)

    def add_key(self, component: str, provider: str, org: str = "demo") -> str:
        key = f"test-{provider}-{component}-key"
        body = {"provider_type": component, "provider_name": provider, "api_key": key}
        self.ok("POST", "/api/v1/provider-keys", self.orgs[org].client_key, json=body)
        return key

    def create_workflow(
        self,
        slug: str,
        *,
        settings: dict | None = None,
        org: str = "demo",
        **components: dict | list,
    ) -> dict:
        """The demo workflow as `slug`, with `settings` and every agent's `components`
        (e.g. `llm={...}`, or `tools=[...]`) replaced."""
        key = self.orgs[org].client_key
        demo = next(
            w
            for w in self.ok("GET", "/api/v1/workflows", key, params={"page_size": 100})["items"]
            if w["slug"] == "daily-call"
        )
        agents = copy.deepcopy(demo["agents"])
        for agent in agents:
            agent.update(copy.deepcopy(components))
        body = {
            "slug": slug,
            "name": slug,
            "start_agent": demo["start_agent"],
            "agents": agents,
            "settings": settings or {},
        }
        return self.ok("POST", "/api/v1/workflows", key, json=body)

    def route_number(self, number: str, workflow_slug: str, org: str = "demo") -> None:
        """Callers of `number` reach `workflow_slug` from now on."""
        key = self.orgs[org].client_key
        numbers = self.ok("GET", "/api/v1/phone-numbers", key, params={"page_size": 100})
        (found,) = [n for n in numbers["items"] if n["number"] == number]
        self.ok(
            "PATCH",
            f"/api/v1/phone-numbers/{found['id']}",
            key,
            json={"workflow_slug": workflow_slug},
        )

    def close(self) -> None:
        self._http.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def fake_livekit() -> Iterator[fake_livekit_server.FakeLiveKit]:
    fake, server = fake_livekit_server.start(LIVEKIT_KEY, LIVEKIT_SECRET)
    yield fake
    fake.stop()
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _livekit_env(
    monkeypatch: pytest.MonkeyPatch, fake_livekit: fake_livekit_server.FakeLiveKit
) -> None:
    """What the worker's job process exports for `ctx.api` (livekit-agents reads it)."""
    monkeypatch.setenv("LIVEKIT_URL", fake_livekit.url)
    monkeypatch.setenv("LIVEKIT_API_KEY", LIVEKIT_KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", LIVEKIT_SECRET)


def deleted_rooms(fake: fake_livekit_server.FakeLiveKit, room_name: str) -> int:
    """How many DeleteRoom requests LiveKit got for `room_name`."""
    return sum(1 for r in fake.calls("DeleteRoom") if r.body.get("room") == room_name)


def _prepare_database(env: dict[str, str]) -> tuple[dict[str, Org], str]:
    """Migrate and seed the web database (tests/web_setup.py): the organizations with
    their client keys, and the agent key."""
    setup = subprocess.run(
        [
            WEB_PYTHON,
            str(AGENT_DIR / "tests" / "web_setup.py"),
            *("demo", "nollm", "busy"),
            *("--phone", f"demo={INBOUND_NUMBER}", "--phone", f"busy={BUSY_NUMBER}"),
            *("--concurrency-limit", "busy=0"),
        ],
        cwd=WEB_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if setup.returncode != 0:
        raise RuntimeError(f"preparing the web database failed:\n{setup.stdout}{setup.stderr}")
    keys = json.loads(setup.stdout.strip().splitlines()[-1])
    orgs = {slug: Org(slug, key) for slug, key in keys["client_keys"].items()}
    return orgs, keys["agent_key"]


@pytest.fixture(scope="session")
def web(
    tmp_path_factory: pytest.TempPathFactory, fake_livekit: fake_livekit_server.FakeLiveKit
) -> Iterator[Web]:
    if not Path(WEB_PYTHON).exists():
        pytest.fail(f"the web venv is missing ({WEB_PYTHON}): run `make install` first")
    workdir = tmp_path_factory.mktemp("web")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "VOICECALLS_", "LIVEKIT_", "PYTEST_"))
        and key not in ("DATABASE_URL", "CACHE_URL", "VIRTUAL_ENV", "PYTHONPATH")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'web.sqlite3'}",
        DEBUG="1",
        WEBHOOKS_ALLOW_PRIVATE_URLS="1",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        LIVEKIT_URL=fake_livekit.url,
        LIVEKIT_API_KEY=LIVEKIT_KEY,
        LIVEKIT_API_SECRET=LIVEKIT_SECRET,
    )
    orgs, agent_key = _prepare_database(env)

    port = _free_port()
    log = open(workdir / "server.log", "w")
    server = subprocess.Popen(
        [WEB_PYTHON, str(AGENT_DIR / "tests" / "wsgi_server.py"), str(port)],
        cwd=WEB_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    web = Web(f"http://127.0.0.1:{port}", agent_key, orgs)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if server.poll() is not None:
                raise RuntimeError(
                    f"the web server exited:\n{(workdir / 'server.log').read_text()}"
                )
            try:
                web.request("GET", "/api/v1/calls", orgs["demo"].client_key)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for slug in orgs:
            for component, provider in DEMO_KEYS.items():
                if slug == "nollm" and component == "llm":
                    continue
                web.ok(
                    "POST",
                    "/api/v1/provider-keys",
                    orgs[slug].client_key,
                    json={
                        "provider_type": component,
                        "provider_name": provider,
                        "api_key": f"test-{provider}-{component}-key",
                        "is_default": True,
                    },
                )
        yield web
    finally:
        web.close()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        if sys.exc_info()[0] is not None:
            print((workdir / "server.log").read_text()[-5000:])


@pytest.fixture(scope="session")
def voicemail_workflows(web: Web) -> dict[str, str]:
    """A workflow per voicemail action, by action."""
    message = "Hi {{ user.name }}, this is your daily call. We will try again tomorrow."
    web.create_workflow(
        "vm-leave", settings={"voicemail": {"action": "leave_message", "message": message}}
    )
    web.create_workflow("vm-hang-up", settings={"voicemail": {"action": "hang_up"}})
    return {"leave_message": "vm-leave", "hang_up": "vm-hang-up"}
