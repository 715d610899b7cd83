"""Transfer tools: on a phone call the model hands the caller to a person (one of the
tool's destinations); the real API asks LiveKit (the web service's stand-in, whose SIP
side plays the transfer's outcome) and ends the call itself. Driven on inbound calls:
the stand-in holds their caller in its room, as LiveKit does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from agent.api import AgentAPI
from agent.inbound import InboundCall
from agent.tests.conftest import INBOUND_NUMBER, Web, deleted_rooms
from agent.tests.harness import (
    LiveJob,
    Providers,
    TextProviders,
    call_job,
    config_for,
    dial_in,
    live_job,
    start_voice_call,
    wait_until,
)
from agent.tests.scripted_llm import ScriptedLLM, call
from agent.worker import CallJob
from tests.fake_livekit_sip import BUSY

pytestmark = pytest.mark.api

GREETING = "Hello there! How are you today?"
DESK, DESK_SIP = "+14155550199", "sip:desk@example.com"
MESSAGE = "Transferring you now."
TRANSFER_TOOL = {
    "type": "transfer",
    "name": "front_desk",
    "description": "Hand the caller to a person at the front desk.",
    "destinations": [DESK, DESK_SIP],
    "message": MESSAGE,
}


class RecordingTransport(httpx.AsyncBaseTransport):
    """Real HTTP to the live API; keeps every event the worker posted."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.events: list[dict] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/events"):
            self.events.extend(json.loads(request.content)["events"])
        return await self._inner.handle_async_request(request)


@pytest.fixture(scope="module")
def desk_workflow(web: Web) -> str:
    web.create_workflow("front-desk", tools=[TRANSFER_TOOL])
    return "front-desk"


@asynccontextmanager
async def inbound_voice_call(
    web: Web, fake_livekit, providers: Providers, transport: httpx.AsyncBaseTransport
) -> AsyncIterator[tuple[CallJob, LiveJob, str]]:
    """An inbound call to the front desk's number, greeted; the job, the job process
    and the room's name."""
    dial = dial_in(fake_livekit, INBOUND_NUMBER)
    async with live_job(room_name=dial.room_name, metadata=dial.metadata) as live:
        api = AgentAPI(web.base_url, web.agent_key, transport=transport)
        inbound = InboundCall(live.ctx, config=config_for(web), api=api, build=providers.build)
        caller = await inbound.caller(dial.room)
        job = inbound.job(await inbound.session(caller), caller)
        await start_voice_call(job, providers)
        await wait_until(lambda: GREETING in providers.tts.spoken)
        yield job, live, dial.room_name


def said(lines: list[dict]) -> list[tuple[str, str]]:
    return [(line["role"], line["content"]) for line in lines]


def transfers(fake_livekit, room_name: str) -> list[dict]:
    return [
        r.body
        for r in fake_livekit.calls("TransferSIPParticipant")
        if r.body["roomName"] == room_name
    ]


async def test_the_model_sees_the_transfer_tool_with_its_destinations(
    web: Web, fake_livekit, desk_workflow: str
) -> None:
    web.route_number(INBOUND_NUMBER, desk_workflow)
    providers = Providers(llm=ScriptedLLM(["Sure."]))
    async with inbound_voice_call(web, fake_livekit, providers, httpx.AsyncHTTPTransport()) as (
        job,
        live,
        _,
    ):
        providers.stt.hear("Hi")
        await wait_until(lambda: providers.llm.requests)
        agent = job.runtime.agents[job.runtime.workflow["start_agent"]]
        (tool,) = [t for t in agent.tools if t.info.name == "front_desk"]
        job.ctx.shutdown(reason="test over")
        await live.finish()

    assert "front_desk" in providers.llm.requests[0].tools
    assert tool.info.raw_schema["description"] == TRANSFER_TOOL["description"]
    assert tool.info.raw_schema["parameters"] == {
        "type": "object",
        "properties": {
            "destination": {
                "type": "string",
                "enum": [DESK, DESK_SIP],
                "description": "Where to transfer the caller.",
            }
        },
        "required": ["destination"],
        "additionalProperties": False,
    }


async def test_a_transfer_says_its_message_then_the_api_hands_the_caller_over_and_the_job_closes(
    web: Web, fake_livekit, desk_workflow: str
) -> None:
    web.route_number(INBOUND_NUMBER, desk_workflow)
    providers = Providers(llm=ScriptedLLM([["Of course.", call("front_desk", destination=DESK)]]))
    transport = RecordingTransport()
    async with inbound_voice_call(web, fake_livekit, providers, transport) as (job, live, room):
        providers.stt.hear("Can I talk to a person?")
        assert (await live.finish()).startswith("session closed")

    assert providers.tts.spoken == [GREETING, "Of course.", MESSAGE]
    assert providers.speaker.finished[-1][1] is False  # the message played to the end
    ((transfer),) = transfers(fake_livekit, room)
    assert DESK in transfer["transferTo"]
    ended = web.call(job.call_id)
    assert (ended["status"], ended["end_reason"]) == ("completed", "transferred")
    # The API ended the call: the agent reported no end of its own.
    assert [e["status"] for e in transport.events if e["type"] == "status"] == ["active"]
    lines = said(web.transcript(job.call_id))
    assert ("assistant", MESSAGE) in lines
    assert deleted_rooms(fake_livekit, room) == 1


async def test_a_refused_transfer_goes_back_to_the_model_and_the_call_goes_on(
    web: Web, fake_livekit, desk_workflow: str
) -> None:
    web.route_number(INBOUND_NUMBER, desk_workflow)
    fake_livekit.transfer_outcomes.update({DESK: BUSY, f"tel:{DESK}": BUSY})
    sorry = "Nobody is free right now, sorry."
    providers = Providers(llm=ScriptedLLM([call("front_desk", destination=DESK), sorry]))
    try:
        async with inbound_voice_call(web, fake_livekit, providers, RecordingTransport()) as (
            job,
            live,
            room,
        ):
            providers.stt.hear("Can I talk to a person?")
            await wait_until(lambda: sorry in providers.tts.spoken, timeout=15)
            assert web.call(job.call_id)["status"] == "active"
            assert job.runtime.hanging_up is False  # the caller is answered again
            job.ctx.shutdown(reason="test over")
            await live.finish()
    finally:
        fake_livekit.transfer_outcomes.clear()

    assert providers.tts.spoken == [GREETING, MESSAGE, sorry]
    assert len(transfers(fake_livekit, room)) == 1
    (tool_line,) = [line for line in web.transcript(job.call_id) if line["role"] == "tool"]
    assert tool_line["tool_call"] == {
        "name": "front_desk",
        "arguments": {"destination": DESK},
        "is_error": True,
    }
    assert tool_line["content"].startswith("The transfer failed: ")


async def test_a_destination_not_in_the_tool_is_refused_before_anything_is_asked(
    web: Web, fake_livekit, desk_workflow: str
) -> None:
    web.route_number(INBOUND_NUMBER, desk_workflow)
    providers = Providers(
        llm=ScriptedLLM([call("front_desk", destination="+19005550100"), "One moment."])
    )
    async with inbound_voice_call(web, fake_livekit, providers, httpx.AsyncHTTPTransport()) as (
        job,
        live,
        room,
    ):
        providers.stt.hear("Put me through to +19005550100")
        await wait_until(lambda: "One moment." in providers.tts.spoken)
        job.ctx.shutdown(reason="test over")
        await live.finish()

    assert transfers(fake_livekit, room) == []
    (tool_line,) = [line for line in web.transcript(job.call_id) if line["role"] == "tool"]
    assert tool_line["content"] == f"destination must be one of: {DESK}, {DESK_SIP}"
    assert MESSAGE not in providers.tts.spoken


async def test_a_web_call_has_no_transfer_tools(web: Web, desk_workflow: str) -> None:
    created = web.create_call(workflow_slug=desk_workflow)
    async with live_job(room_name=created["room_name"], call_id=created["call_id"]) as live:
        job = call_job(web, live, created["call_id"], TextProviders())
        runtime = await job.prepare()
        names = {tool.info.name for agent in runtime.agents.values() for tool in agent.tools}
        job.ctx.shutdown(reason="test over")
        await live.finish()

    assert "front_desk" not in names
    assert "end_call" in names
    assert not {"send_dtmf", "voicemail_detected"} & names
