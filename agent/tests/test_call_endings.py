"""How a call ends, with the voice pipeline running (stand-ins for the caller's audio and
the providers, see voice.py) and the worker's own job against the live API: the goodbye
plays out before the hang-up, a failing provider gets an apology, silence gets one
question then a hang-up, and every close deletes the room."""

from __future__ import annotations

import asyncio
import datetime
import json
import time

import httpx
import pytest

from agent.api import AgentAPI
from agent.call import SILENCE_INSTRUCTIONS
from agent.tests.conftest import Web, deleted_rooms
from agent.tests.harness import (
    Providers,
    call_job,
    live_job,
    start_voice_call,
    wait_until,
)
from agent.tests.scripted_llm import ScriptedLLM, call, fail
from agent.tests.voice import RefusingSTT
from agent.worker import entrypoint

pytestmark = pytest.mark.api

GREETING = "Hello Ada! How are you today?"


class RecordingTransport(httpx.AsyncBaseTransport):
    """Real HTTP to the live API; keeps every event the worker posted, and when."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.events: list[dict] = []
        self.sent_at: dict[str, float] = {}  # event id: when the API had answered it

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/events"):
            events = json.loads(request.content)["events"]
            self.events.extend(events)
            self.sent_at.update(dict.fromkeys((e["id"] for e in events), time.time()))
        return response


def said(lines: list[dict]) -> list[tuple[str, str]]:
    return [(line["role"], line["content"]) for line in lines]


async def test_the_goodbye_plays_out_before_completed_and_nothing_is_answered_after(
    web: Web, fake_livekit
) -> None:
    created = web.create_call(user_data={"name": "Ada"})
    call_id, room = created["call_id"], created["room_name"]
    providers = Providers(
        llm=ScriptedLLM([["Goodbye Ada, take good care of yourself!", call("end_call")]])
    )
    providers.tts.ttfb = 0.2
    transport = RecordingTransport()
    async with live_job(room_name=room, call_id=call_id) as live:
        api = AgentAPI(web.base_url, web.agent_key, transport=transport)
        job = call_job(web, live, call_id, providers, api=api)
        runtime, session = await start_voice_call(job, providers)
        await wait_until(lambda: providers.speaker.finished)  # the greeting played
        providers.stt.hear("That's all, bye", speaking=0.2)
        await wait_until(lambda: runtime.hanging_up)
        # The caller speaks while the goodbye is still playing: no answer.
        providers.stt.hear("Oh wait, one more thing", speaking=0.2)
        assert await live.finish() == "session closed: user_initiated"

    goodbye_ended, cut_off = providers.speaker.finished[-1]
    assert not cut_off
    completed = [e for e in transport.events if e["type"] == "status" and e["status"] != "active"]
    assert [(e["status"], e["reason"]) for e in completed] == [("completed", "agent_hangup")]
    reported_at = datetime.datetime.fromisoformat(completed[0]["timestamp"]).timestamp()
    assert reported_at >= goodbye_ended
    assert len(providers.llm.requests) == 1  # nothing after the goodbye
    assert providers.tts.spoken == [GREETING, "Goodbye Ada, take good care of yourself!"]
    ended = web.call(call_id)
    assert (ended["status"], ended["end_reason"]) == ("completed", "agent_hangup")
    # The tool ran as the goodbye began to be voiced, before it was heard: its line
    # follows the goodbye all the same.
    assert said(web.transcript(call_id))[-2:] == [
        ("assistant", "Goodbye Ada, take good care of yourself!"),
        ("tool", ""),
    ]
    assert deleted_rooms(fake_livekit, room) == 1


async def test_a_provider_that_keeps_failing_gets_an_apology_then_the_call_fails_and_closes(
    web: Web, fake_livekit
) -> None:
    created = web.create_call(user_data={"name": "Ada"})
    call_id, room = created["call_id"], created["room_name"]
    providers = Providers(llm=ScriptedLLM([fail(401, retryable=False)]))
    async with live_job(room_name=room, call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        runtime, _ = await start_voice_call(job, providers)
        await wait_until(lambda: providers.speaker.finished)
        providers.stt.hear("I'm fine, thanks")
        assert await live.finish() == "session closed: user_initiated"

    apology = runtime.settings["error_message"]
    assert apology.startswith("I'm sorry, something went wrong")
    # The TTS is given the apology sentence by sentence.
    assert providers.tts.spoken[0] == GREETING
    assert " ".join(providers.tts.spoken[1:]) == apology
    assert providers.speaker.finished[-1][1] is False  # played to the end
    ended = web.call(call_id)
    assert (ended["status"], ended["end_reason"]) == ("failed", "agent_error")
    lines = said(web.transcript(call_id))
    assert lines[:3] == [
        ("assistant", GREETING),
        ("user", "I'm fine, thanks"),
        ("assistant", apology),
    ]
    assert lines[3][0] == "system"
    assert lines[3][1].startswith("agent_error: llm_error in ")
    assert "scripted provider error 401" in lines[3][1]
    assert deleted_rooms(fake_livekit, room) == 1


async def test_an_stt_that_keeps_failing_gets_the_apology_and_the_failure_before_the_room_goes(
    web: Web, fake_livekit
) -> None:
    """livekit-agents closes the session itself (reason `error`) at its fourth
    unrecoverable error in a row; a refused STT key gives one every half second. That
    close must neither cut the apology short nor delete the room before `failed` is
    at the API (the room's own webhooks would relabel the call's end)."""
    created = web.create_call(user_data={"name": "Ada"})
    call_id, room = created["call_id"], created["room_name"]
    providers = Providers()
    providers.stt = RefusingSTT()  # the call's STT, whichever provider
    transport = RecordingTransport()
    async with live_job(room_name=room, call_id=call_id) as live:
        deleted_at: list[float] = []
        delete_room = live.ctx.delete_room

        def recorded_delete_room(**kwargs: object):
            deleted_at.append(time.time())
            return delete_room(**kwargs)

        live.ctx.delete_room = recorded_delete_room  # type: ignore[method-assign]
        api = AgentAPI(web.base_url, web.agent_key, transport=transport)
        job = call_job(web, live, call_id, providers, api=api)
        runtime, _ = await start_voice_call(job, providers)
        assert (await live.finish()).startswith("session closed")

    apology = runtime.settings["error_message"]
    assert " ".join(providers.tts.spoken[1:]) == apology
    assert providers.speaker.finished[-1][1] is False  # played to the end
    failed = [e for e in transport.events if e["type"] == "status" and e["status"] == "failed"]
    assert [e["reason"] for e in failed] == ["agent_error"]
    assert transport.sent_at[failed[0]["id"]] < deleted_at[0]
    ended = web.call(call_id)
    assert (ended["status"], ended["end_reason"]) == ("failed", "agent_error")
    assert deleted_rooms(fake_livekit, room) == 1


async def test_the_session_closing_for_any_reason_ends_the_job_and_deletes_the_room(
    web: Web, fake_livekit
) -> None:
    """The close chain: the session's `close` event → what was reported reaches the API
    → the room is deleted → the job shuts down and flushes."""
    created = web.create_call(user_data={"name": "Ada"})
    call_id, room = created["call_id"], created["room_name"]
    providers = Providers()
    async with live_job(room_name=room, call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        _, session = await start_voice_call(job, providers)
        await wait_until(lambda: providers.speaker.finished)
        # What RoomIO does when the caller leaves (close_on_disconnect).
        await session.aclose()
        assert await live.finish() == "session closed: user_initiated"

    assert deleted_rooms(fake_livekit, room) == 1
    assert web.call(call_id)["status"] == "active"  # the caller's leaving is LiveKit's to tell
    assert said(web.transcript(call_id)) == [("assistant", GREETING)]
    assert job.reporter.pending == 0


async def test_a_missing_key_fails_the_call_and_deletes_the_room_before_anyone_speaks(
    web: Web, fake_livekit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real entrypoint: the job stops before connecting, and closes the room."""
    created = web.create_call(org="nollm")
    call_id, room = created["call_id"], created["room_name"]
    monkeypatch.setenv("VOICECALLS_API_URL", web.base_url)
    monkeypatch.setenv("VOICECALLS_AGENT_KEY", web.agent_key)
    async with live_job(room_name=room, call_id=call_id) as live:
        await entrypoint(live.ctx)
        assert await live.finish() == "agent_error"

    ended = web.call(call_id, org="nollm")
    assert (ended["status"], ended["end_reason"]) == ("failed", "agent_error")
    assert said(web.transcript(call_id, org="nollm")) == [
        ("system", "agent_error: missing key for llm")
    ]
    assert deleted_rooms(fake_livekit, room) == 1


async def test_silence_gets_one_question_then_a_hang_up_as_silence_timeout(
    web: Web, fake_livekit
) -> None:
    web.create_workflow("quiet-call", settings={"silence_timeout_seconds": 5})
    created = web.create_call(workflow_slug="quiet-call", user_data={"name": "Ada"})
    call_id, room = created["call_id"], created["room_name"]
    providers = Providers(llm=ScriptedLLM(["Are you still there?"]))
    async with live_job(room_name=room, call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        runtime, _ = await start_voice_call(job, providers)
        await wait_until(lambda: providers.llm.requests, timeout=8)
        assert providers.llm.requests[0].messages[-1] == ("system", SILENCE_INSTRUCTIONS)
        await wait_until(lambda: runtime.hanging_up, timeout=8)
        assert await live.finish() == "session closed: user_initiated"

    assert providers.tts.spoken == [GREETING, "Are you still there?"]
    assert len(providers.llm.requests) == 1
    ended = web.call(call_id)
    assert (ended["status"], ended["end_reason"]) == ("completed", "silence_timeout")
    assert deleted_rooms(fake_livekit, room) == 1


async def test_a_job_shut_down_mid_call_still_delivers_what_the_closing_session_reports(
    web: Web, fake_livekit
) -> None:
    """The job shuts down while the session runs (a worker drain, the room deleted by
    an API hang-up). livekit-agents runs the shutdown callbacks concurrently
    (job_proc_lazy_main: asyncio.gather), the session's own close among them: what the
    session reports as it closes (its last line, the final usage) must still go out."""
    created = web.create_call(user_data={"name": "Ada"})
    call_id, room = created["call_id"], created["room_name"]
    providers = Providers()
    transport = RecordingTransport()
    async with live_job(room_name=room, call_id=call_id) as live:
        api = AgentAPI(web.base_url, web.agent_key, transport=transport)
        job = call_job(web, live, call_id, providers, api=api)
        await start_voice_call(job, providers)
        await wait_until(lambda: providers.speaker.finished)  # the greeting played
        await wait_until(lambda: job.reporter.pending == 0)
        live.ctx.shutdown(reason="worker draining")
        # As the job process runs them: all at once.
        await asyncio.gather(
            *(asyncio.create_task(cb(live.shutdowns[0])) for cb in live.ctx._shutdown_callbacks)
        )
        if job._closing is not None:
            await job._closing

    usage_posts = [e for e in transport.events if e["type"] == "usage"]
    assert job.reporter.pending == 0
    assert job.reporter.dropped == []
    assert usage_posts  # at least the final totals reported at the close
