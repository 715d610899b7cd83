"""The job's plumbing: call id from the dispatch metadata, settings, session fetch."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from livekit.agents import AgentSession

from agent.api import AgentAPI, AgentAPIError
from agent.config import Config, ConfigError
from agent.tests.conftest import Web
from agent.tests.harness import (
    ConnectedRoom,
    TextProviders,
    call_job,
    live_job,
    no_room_media,
    wait_until,
)
from agent.tests.scripted_llm import ScriptedLLM
from agent.worker import (
    call_id_from_metadata,
    fetch_session,
    prewarm,
    session_options,
    worker_options,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_call_id_comes_from_the_job_metadata():
    assert call_id_from_metadata('{"call_id": "6f1c"}') == "6f1c"


@pytest.mark.parametrize("metadata", ["", None, "{}", "not json", '{"call_id": 3}', "[]"])
def test_metadata_without_a_call_id_is_refused(metadata):
    with pytest.raises(ValueError, match="no call_id"):
        call_id_from_metadata(metadata)


def test_settings_come_from_the_environment():
    config = Config.from_env(
        {"VOICECALLS_API_URL": "https://api.example.com/", "VOICECALLS_AGENT_KEY": "k"}
    )
    assert config == Config(api_url="https://api.example.com", agent_key="k")
    assert config.agent_name == "voicecalls-agent"
    named = Config.from_env({"VOICECALLS_AGENT_KEY": "k", "LIVEKIT_AGENT_NAME": "acme"})
    assert worker_options(named).agent_name == "acme"
    with pytest.raises(ConfigError, match="VOICECALLS_AGENT_KEY"):
        Config.from_env({})


async def test_fetching_the_session_retries_server_errors_only():
    answers = [httpx.Response(503), httpx.Response(200, json={"call_id": "c1"})]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    api = AgentAPI("http://api.invalid", "agent-key", transport=httpx.MockTransport(handler))
    assert await fetch_session(api, "c1") == {"call_id": "c1"}
    assert [str(r.url) for r in seen] == ["http://api.invalid/api/v1/agent/calls/c1/session"] * 2
    assert seen[0].headers["Authorization"] == "Bearer agent-key"

    api = AgentAPI(
        "http://api.invalid",
        "k",
        transport=httpx.MockTransport(lambda r: httpx.Response(404, json={})),
    )
    with pytest.raises(AgentAPIError) as raised:
        await fetch_session(api, "c1")
    assert raised.value.status_code == 404


async def test_the_whole_session_fetch_is_bounded_by_its_deadline():
    """Before, 4 tries of up to 10 s each: ~43 s of silence for a caller."""
    tries: list[float] = []

    async def hangs(request: httpx.Request) -> httpx.Response:
        tries.append(asyncio.get_running_loop().time())
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    api = AgentAPI("http://api.invalid", "k", transport=httpx.MockTransport(hangs))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AgentAPIError) as raised:
        await fetch_session(api, "c1", deadline=1.0)

    assert loop.time() - started < 1.5
    assert raised.value.retryable
    assert 1 <= len(tries) <= 2


def test_the_worker_cli_starts():
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "dev" in result.stdout and "start" in result.stdout


def test_the_worker_refuses_to_start_without_an_agent_key():
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "agent", "dev"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert result.returncode != 0
    assert "VOICECALLS_AGENT_KEY is not set" in result.stderr


async def test_the_voice_session_options_are_valid_offline():
    """The job's AgentSession settings: Silero VAD (shipped in the wheel) and VAD turn
    detection, so a call needs neither a model download nor LiveKit Cloud inference."""
    proc = SimpleNamespace(userdata={})
    prewarm(proc)
    session = AgentSession(vad=proc.userdata["vad"], **session_options({}))
    assert session.turn_detection == "vad"
    await session.aclose()


async def test_the_workflows_turn_taking_settings_become_the_sessions_options():
    settings = {
        "allow_interruptions": False,
        "min_endpointing_delay": 0.2,
        "max_endpointing_delay": 1.5,
        "false_interruption_timeout": None,
        "resume_false_interruption": False,
        "silence_timeout_seconds": 20,
    }
    session = AgentSession(vad=None, **session_options(settings, turn_detection="stt"))

    assert session.options.endpointing["min_delay"] == 0.2
    assert session.options.endpointing["max_delay"] == 1.5
    assert session.options.interruption["enabled"] is False
    assert session.options.interruption["false_interruption_timeout"] is None
    assert session.options.interruption["resume_false_interruption"] is False
    assert session.options.user_away_timeout == 20
    await session.aclose()


async def test_without_settings_the_session_keeps_livekit_agents_defaults():
    session = AgentSession(vad=None, **session_options({}, turn_detection="stt"))

    assert session.options.endpointing["min_delay"] == 0.5
    assert session.options.endpointing["max_delay"] == 3.0
    assert session.options.interruption["enabled"] is True
    assert session.options.interruption["false_interruption_timeout"] == 2.0
    assert session.options.user_away_timeout == 15.0
    await session.aclose()


@pytest.mark.api
async def test_the_caller_can_neither_read_nor_drive_the_agents_session(web: Web) -> None:
    """livekit-agents 1.8.9 hosts the primary session for remote control by default
    (`session_host`): it would answer anyone in the room its agent's instructions, tools
    and chat context, take their turns and mute its input, and send every session event
    (tool arguments and answers, usage) to all of them. The call's user is in that room."""
    created = web.create_call(user_data={"name": "Ada"})
    call_id = created["call_id"]
    room = ConnectedRoom()
    async with live_job(room_name=created["room_name"], call_id=call_id, room=room) as live:
        job = call_job(web, live, call_id, TextProviders(llm=ScriptedLLM([])))
        runtime = await job.prepare()
        assert runtime is not None
        session = job.session(runtime, vad=None, turn_detection="stt")
        options = no_room_media(f"user-{call_id}")
        await job.start(runtime, session, room=room, room_options=options)
        await wait_until(lambda: len(session.history.items) >= 2)  # the greeting was said
        await asyncio.sleep(0.2)  # what a session host sends goes out from a task

        assert room.sent == []  # was every session event, to everyone in the room
        assert not room.listens_to("lk.agent.session")  # nor takes anybody's requests
        await session.aclose()
