"""Which dispatches run a call, and how soon: a late or duplicate dispatch leaves without
a word, the session fetch is bounded, and a caller who waited hears an apology first.
The worker's own entrypoint and job, against the live API."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from agent.api import AgentAPI, AgentAPIError
from agent.tests.conftest import Web, deleted_rooms
from agent.tests.harness import Providers, call_job, live_job, start_voice_call, wait_until
from agent.tests.scripted_llm import ScriptedLLM
from agent.worker import entrypoint
from agent.workflow import LATE_INSTRUCTIONS

pytestmark = pytest.mark.api

GREETING = "Hello Ada! How are you today?"


class SlowSession(httpx.AsyncBaseTransport):
    """Real HTTP to the live API; the session answer is held back `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.delay = delay

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/session"):
            await asyncio.sleep(self.delay)
        return await self._inner.handle_async_request(request)


@pytest.fixture
def worker_env(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICECALLS_API_URL", web.base_url)
    monkeypatch.setenv("VOICECALLS_AGENT_KEY", web.agent_key)


async def test_the_api_answers_409_call_ended_for_an_ended_call(web: Web) -> None:
    call_id = web.create_call()["call_id"]
    web.end_call(call_id)
    api = AgentAPI(web.base_url, web.agent_key)

    with pytest.raises(AgentAPIError) as raised:
        await api.get_session(call_id)
    await api.aclose()

    assert (raised.value.status_code, raised.value.code) == (409, "call_ended")
    assert "api_key" not in str(raised.value.body)


async def test_a_late_dispatch_for_an_ended_call_leaves_without_a_word(
    web: Web, fake_livekit, worker_env: None
) -> None:
    created = web.create_call(user_data={"name": "Ada"})
    call_id, room = created["call_id"], created["room_name"]
    web.end_call(call_id)  # the API deletes the room itself
    before = web.call(call_id)

    async with live_job(room_name=room, call_id=call_id) as live:
        await entrypoint(live.ctx)
        assert await live.finish() == "call ended"

    assert web.call(call_id) == before
    assert web.transcript(call_id) == []
    assert deleted_rooms(fake_livekit, room) == 1  # the API's, not the worker's


async def test_a_dispatch_into_another_room_leaves_without_a_word(
    web: Web, fake_livekit, worker_env: None
) -> None:
    call_id = web.create_call(user_data={"name": "Ada"})["call_id"]
    other_room = web.create_call()["room_name"]

    async with live_job(room_name=other_room, call_id=call_id) as live:
        await entrypoint(live.ctx)
        assert await live.finish() == "not this job's call"

    assert web.call(call_id)["status"] == "connecting"
    assert web.transcript(call_id) == []
    assert deleted_rooms(fake_livekit, other_room) == 0


async def test_a_call_it_cannot_fetch_is_left(web: Web, worker_env: None) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    async with live_job(room_name=f"call-{unknown}", call_id=unknown) as live:
        await entrypoint(live.ctx)
        assert await live.finish() == "session unavailable"


async def test_an_api_that_does_not_answer_is_given_up_on_at_the_deadline(web: Web) -> None:
    created = web.create_call()
    call_id = created["call_id"]
    providers = Providers()
    api = AgentAPI(web.base_url, web.agent_key, transport=SlowSession(delay=30))
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers, api=api, fetch_deadline=1.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await job.prepare() is None
        assert loop.time() - started < 2.0
        assert await live.finish() == "session unavailable"
    assert providers.builds == []


async def test_a_caller_who_waited_for_the_session_hears_an_apology_before_the_greeting(
    web: Web,
) -> None:
    created = web.create_call(user_data={"name": "Ada"})
    call_id = created["call_id"]
    providers = Providers(llm=ScriptedLLM(["Sorry to keep you waiting."]))
    api = AgentAPI(web.base_url, web.agent_key, transport=SlowSession(delay=0.5))
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers, api=api, late_after=0.2)
        _, session = await start_voice_call(job, providers)
        await wait_until(lambda: len(providers.speaker.finished) == 2)
        await session.aclose()
        await live.finish()

    assert providers.llm.requests[0].messages[-1] == ("system", LATE_INSTRUCTIONS)
    assert providers.tts.spoken == ["Sorry to keep you waiting.", GREETING]
    assert [line["content"] for line in web.transcript(call_id)] == [
        "Sorry to keep you waiting.",
        GREETING,
    ]


async def test_a_session_on_time_goes_straight_to_the_greeting(web: Web) -> None:
    created = web.create_call(user_data={"name": "Ada"})
    call_id = created["call_id"]
    providers = Providers()
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        _, session = await start_voice_call(job, providers)
        await wait_until(lambda: providers.speaker.finished)
        await session.aclose()
        await live.finish()

    assert providers.llm.requests == []
    assert providers.tts.spoken == [GREETING]
