"""Phone calls: the agent waits for the callee's answer before greeting.

The room is a stand-in for what LiveKit SIP does in it (tests have no LiveKit server):
the SIP participant `user-<call_id>` joins while the phone rings and its
`sip.callStatus` attribute changes as the call progresses. The job and the session
endpoint are the real ones, for a web call: a real phone call would need the dial
worker and a trunk, so `PhoneSession` sets `channel`/`phone_number` in the answer as
the API does for a phone call (tests/test_agent_session.py checks the API's side).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from livekit import rtc

from agent.api import AgentAPI
from agent.phone import CalleeGone, answer_timeout, wait_for_callee
from agent.tests.conftest import Web, deleted_rooms
from agent.tests.harness import (
    NUMBER,
    Providers,
    Room,
    call_job,
    live_job,
    wait_until,
)
from agent.tests.scripted_llm import ScriptedLLM
from agent.tests.voice import SilentMic

GREETING = "Hello Ada! How are you today?"
APOLOGY = "Sorry for the wait."


async def test_a_phone_ringing_in_the_room_is_not_yet_the_callee() -> None:
    room = Room()
    waiting = asyncio.create_task(wait_for_callee(room, identity="user-c1", timeout=5))
    room.join("user-c1", status="dialing")
    room.call_status("user-c1", "ringing")
    await asyncio.sleep(0.05)
    assert not waiting.done()

    room.call_status("user-c1", "active")
    callee = await waiting

    assert callee.identity == "user-c1"
    assert callee.phone_number == NUMBER
    assert callee.answered_before_wait is False
    assert room.listeners() == 0


async def test_a_phone_answered_before_the_agent_looked_is_the_callee_at_once() -> None:
    room = Room()
    room.join("user-c1", status="active")

    callee = await wait_for_callee(room, identity="user-c1", timeout=5)

    assert callee.answered_before_wait is True


async def test_only_the_calls_own_sip_participant_is_the_callee() -> None:
    room = Room()
    waiting = asyncio.create_task(wait_for_callee(room, identity="user-c1", timeout=5))
    room.join("user-c1", kind=rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD)
    room.leave("user-c1")
    room.join("user-c2", status="active")  # another call's phone
    await asyncio.sleep(0.05)
    assert not waiting.done()

    room.join("user-c1", status="active")
    assert (await waiting).identity == "user-c1"


@pytest.mark.parametrize(
    ("ending", "message"),
    [
        (lambda room: room.call_status("user-c1", "hangup"), "hung up before it was answered"),
        (lambda room: room.leave("user-c1"), "left before answering"),
        (
            lambda room: room.emit(
                "connection_state_changed", rtc.ConnectionState.CONN_DISCONNECTED
            ),
            "room closed",
        ),
    ],
    ids=["hangup", "left", "room closed"],
)
async def test_a_phone_that_is_never_answered_is_no_callee(ending, message) -> None:
    room = Room()
    room.join("user-c1", status="ringing")
    waiting = asyncio.create_task(wait_for_callee(room, identity="user-c1", timeout=5))
    await asyncio.sleep(0.01)
    ending(room)

    with pytest.raises(CalleeGone, match=message):
        await waiting
    assert room.listeners() == 0


async def test_the_wait_for_an_answer_is_bounded() -> None:
    room = Room()
    room.join("user-c1", status="ringing")

    with pytest.raises(CalleeGone, match="not answered within"):
        await wait_for_callee(room, identity="user-c1", timeout=0.05)


def test_the_wait_covers_the_dial_deadline_and_the_workflows_ring_timeout() -> None:
    assert answer_timeout({}) == 60 + 30 + 15
    assert answer_timeout({"ring_timeout_seconds": 45}) == 60 + 45 + 15


class PhoneSession(httpx.AsyncBaseTransport):
    """Real HTTP to the real server; its session answer says the call is a phone call."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.event_posts: list[list[dict]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.method == "POST":
            self.event_posts.append(json.loads(request.content)["events"])
        if request.method != "GET" or not request.url.path.endswith("/session"):
            return response
        session = json.loads(await response.aread())
        session.update(channel="phone", phone_number=NUMBER)
        return httpx.Response(response.status_code, json=session)

    async def aclose(self) -> None:
        await self._inner.aclose()


def phone_job(web: Web, live, call_id: str, providers: Providers, **kwargs):
    api = AgentAPI(web.base_url, web.agent_key, transport=kwargs.pop("transport"))
    return call_job(web, live, call_id, providers, api=api, **kwargs)


async def _phone_call(web: Web, *, answered_first: bool) -> tuple[str, Providers]:
    """A phone call whose session came late, answered before or after the agent was
    ready; what the agent said once it was answered."""
    created = web.create_call(user_data={"name": "Ada"})
    call_id = created["call_id"]
    providers = Providers(llm=ScriptedLLM([APOLOGY]))
    room = Room()
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = phone_job(web, live, call_id, providers, transport=PhoneSession(), late_after=0)
        runtime = await job.prepare()
        assert (runtime.channel, runtime.phone_number) == ("phone", NUMBER)
        room.join(f"user-{call_id}", status="active" if answered_first else "ringing")
        answered = asyncio.create_task(job.wait_for_user(runtime, room))
        await asyncio.sleep(0.1)
        assert answered.done() is answered_first
        room.call_status(f"user-{call_id}", "active")
        assert await answered is True

        session = job.session(runtime, turn_detection="stt", vad=None)
        session.input.audio = SilentMic()
        session.output.audio = providers.speaker
        await job.start(runtime, session)
        await wait_until(lambda: GREETING in providers.tts.spoken)
        await session.aclose()
        await live.finish()
    return call_id, providers


@pytest.mark.api
async def test_on_a_phone_call_the_agent_greets_once_the_callee_answered(web: Web) -> None:
    call_id, providers = await _phone_call(web, answered_first=False)

    # Picked up after the agent was ready: no silence to apologise for.
    assert providers.tts.spoken == [GREETING]
    assert providers.llm.requests == []
    assert web.call(call_id)["status"] == "active"


@pytest.mark.api
async def test_a_callee_already_on_the_line_when_the_session_came_late_hears_an_apology(
    web: Web,
) -> None:
    _, providers = await _phone_call(web, answered_first=True)

    assert providers.tts.spoken == [APOLOGY, GREETING]


@pytest.mark.api
async def test_a_phone_never_answered_ends_the_job_without_a_word(web: Web, fake_livekit) -> None:
    created = web.create_call(user_data={"name": "Ada"})
    call_id = created["call_id"]
    providers = Providers()
    transport = PhoneSession()
    room = Room()
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = phone_job(web, live, call_id, providers, transport=transport)
        runtime = await job.prepare()
        answered = asyncio.create_task(job.wait_for_user(runtime, room))
        room.join(f"user-{call_id}", status="ringing")
        room.call_status(f"user-{call_id}", "hangup")  # e.g. declined
        assert await answered is False
        assert await live.finish() == "phone not answered"

    # The API owns how an unanswered call ended: the agent reports nothing of it.
    assert transport.event_posts == []
    assert providers.tts.spoken == []
    assert deleted_rooms(fake_livekit, created["room_name"]) == 1


@pytest.mark.api
async def test_a_session_without_a_channel_is_a_web_call(web: Web) -> None:
    """What today's API answers: web calls run exactly as before."""
    created = web.create_call(user_data={"name": "Ada"})
    async with live_job(room_name=created["room_name"], call_id=created["call_id"]) as live:
        job = call_job(web, live, created["call_id"], Providers())
        runtime = await job.prepare()
        assert (runtime.channel, runtime.phone_number) == ("web", None)
        job.ctx.shutdown(reason="test over")
        await live.finish()
