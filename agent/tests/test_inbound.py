"""Inbound phone calls: LiveKit's dispatch rule sends the agent into the caller's room
with the number's metadata and no call; the agent finds the caller's SIP participant,
asks the real API for the room's call and runs it with the caller as its user.

LiveKit is the web service's stand-in: its SIP side makes the room, puts the caller in
it and dispatches the agent as a verified number's dispatch rule does (the numbers are
seeded by conftest). The room the agent sees is the harness's stand-in, with the
caller's SIP participant and the attributes LiveKit gives it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

import pytest
from livekit import rtc

from agent.config import Config
from agent.inbound import InboundCall, caller_request
from agent.phone import CalleeGone, wait_for_sip_caller
from agent.tests.conftest import BUSY_NUMBER, INBOUND_NUMBER, Web, deleted_rooms
from agent.tests.harness import (
    CALLER,
    ConnectedRoom,
    Providers,
    Room,
    config_for,
    dial_in,
    live_job,
    no_room_media,
    start_voice_call,
    wait_until,
)
from agent.tests.scripted_llm import ScriptedLLM
from agent.worker import inbound_number_from_metadata

GREETING = "Hello there! How are you today?"
BUSY_MESSAGE = "All our lines are busy right now. Please call again later."


def said(lines: list[dict]) -> list[tuple[str, str]]:
    return [(line["role"], line["content"]) for line in lines]


def test_an_inbound_dispatch_is_told_by_its_metadata() -> None:
    rule_metadata = json.dumps({"phone_number": INBOUND_NUMBER, "phone_number_id": "c0ffee"})

    assert inbound_number_from_metadata(rule_metadata) == INBOUND_NUMBER
    assert inbound_number_from_metadata(json.dumps({"call_id": "6f1c"})) is None
    assert inbound_number_from_metadata("not json") is None
    assert inbound_number_from_metadata(None) is None


async def test_the_caller_is_the_first_sip_participant_in_the_room() -> None:
    room = Room()
    waiting = asyncio.create_task(wait_for_sip_caller(room, timeout=5))
    room.join("someone", kind=rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD)
    await asyncio.sleep(0.05)
    assert not waiting.done()

    room.join("sip_+12025550177", attributes={"sip.phoneNumber": CALLER})

    assert (await waiting).identity == "sip_+12025550177"
    assert room.listeners() == 0


async def test_no_caller_in_the_room_is_given_up_on() -> None:
    room = Room()
    with pytest.raises(CalleeGone, match="no caller within"):
        await wait_for_sip_caller(room, timeout=0.05)

    waiting = asyncio.create_task(wait_for_sip_caller(room, timeout=5))
    await asyncio.sleep(0.01)
    room.emit("connection_state_changed", rtc.ConnectionState.CONN_DISCONNECTED)
    with pytest.raises(CalleeGone, match="room closed"):
        await waiting


def test_the_request_names_the_room_the_caller_and_the_number_called() -> None:
    room = Room()
    room.join(
        "sip_x",
        attributes={
            "sip.phoneNumber": CALLER,
            "sip.trunkPhoneNumber": INBOUND_NUMBER,
            "sip.trunkID": "ST_1",
        },
    )
    room.join("sip_anonymous", attributes={})

    assert caller_request("inbound-_x", room.remote_participants["sip_x"]) == {
        "room_name": "inbound-_x",
        "participant_identity": "sip_x",
        "phone_number": INBOUND_NUMBER,
        "caller": CALLER,
        "sip_trunk_id": "ST_1",
    }
    anonymous = caller_request("inbound-_y", room.remote_participants["sip_anonymous"])
    assert (anonymous["caller"], anonymous["sip_trunk_id"]) == ("", "")


@pytest.mark.api
async def test_an_inbound_caller_gets_the_rooms_call_and_is_greeted_as_its_user(
    web: Web, fake_livekit
) -> None:
    web.route_number(INBOUND_NUMBER, "daily-call")
    dial = dial_in(fake_livekit, INBOUND_NUMBER)
    providers = Providers(llm=ScriptedLLM(["Glad to hear it."]))
    async with live_job(room_name=dial.room_name, metadata=dial.metadata) as live:
        inbound = InboundCall(live.ctx, config=config_for(web), build=providers.build)
        caller = await inbound.caller(dial.room)
        data = await inbound.session(caller)
        assert data is not None
        job = inbound.job(data, caller)
        assert (job.call_id, job.user_identity) == (str(data["call_id"]), dial.identity)
        runtime, session = await start_voice_call(job, providers)
        assert await job.wait_for_user(runtime, dial.room) is True  # already in the room
        await wait_until(lambda: GREETING in providers.tts.spoken)
        providers.stt.hear("Fine, thanks")
        # The reply's line is recorded once it has played, not when it is synthesized.
        await wait_until(lambda: len(providers.speaker.finished) == 2)
        await session.aclose()
        assert (await live.finish()).startswith("session closed")

    call = web.call(job.call_id)
    assert (call["direction"], call["channel"], call["phone_number"]) == (
        "inbound",
        "phone",
        INBOUND_NUMBER,
    )
    assert (call["room_name"], call["user_id"]) == (dial.room_name, CALLER)
    assert said(web.transcript(job.call_id))[:3] == [
        ("assistant", GREETING),
        ("user", "Fine, thanks"),
        ("assistant", "Glad to hear it."),
    ]
    assert deleted_rooms(fake_livekit, dial.room_name) == 1


@pytest.mark.api
async def test_a_number_that_is_not_ours_closes_the_room_without_a_word(
    web: Web, fake_livekit
) -> None:
    before = web.ok("GET", "/api/v1/calls", web.orgs["demo"].client_key)["total"]
    room = Room()
    room.join("sip_x", attributes={"sip.phoneNumber": CALLER, "sip.trunkPhoneNumber": "+1415"})
    metadata = json.dumps({"phone_number": "+1415", "phone_number_id": "gone"})
    async with live_job(room_name="inbound-_stray", metadata=metadata) as live:
        inbound = InboundCall(live.ctx, config=config_for(web))
        assert await inbound.session(await inbound.caller(room)) is None
        assert await live.finish() == "no inbound call"

    assert web.ok("GET", "/api/v1/calls", web.orgs["demo"].client_key)["total"] == before
    assert deleted_rooms(fake_livekit, "inbound-_stray") == 1


@pytest.mark.api
async def test_a_dispatch_for_an_inbound_call_already_over_closes_the_room(
    web: Web, fake_livekit
) -> None:
    web.route_number(INBOUND_NUMBER, "daily-call")
    dial = dial_in(fake_livekit, INBOUND_NUMBER)
    async with live_job(room_name=dial.room_name, metadata=dial.metadata) as first:
        inbound = InboundCall(first.ctx, config=config_for(web))
        data = await inbound.session(await inbound.caller(dial.room))
        await inbound.api.aclose()
        first.ctx.shutdown(reason="test over")
        await first.finish()
    web.end_call(str(data["call_id"]))

    async with live_job(room_name=dial.room_name, metadata=dial.metadata) as again:
        inbound = InboundCall(again.ctx, config=config_for(web))
        assert await inbound.session(await inbound.caller(dial.room)) is None
        assert await again.finish() == "no inbound call"

    assert web.transcript(str(data["call_id"])) == []


@pytest.mark.api
async def test_a_caller_over_the_concurrency_limit_hears_the_busy_message_then_the_room_closes(
    web: Web, fake_livekit
) -> None:
    dial = dial_in(fake_livekit, BUSY_NUMBER)
    providers = Providers()
    room = ConnectedRoom()
    async with live_job(room_name=dial.room_name, metadata=dial.metadata, room=room) as live:
        inbound = InboundCall(live.ctx, config=config_for(web), build=providers.build)
        data = await inbound.session(await inbound.caller(dial.room))
        assert data is not None, "the API answered no busy session"
        assert (data["status"], data["end_reason"]) == ("failed", "concurrency_limit")
        session = inbound.busy_session(data)
        session.output.audio = providers.speaker
        await inbound.say_busy(data, session, room=room, room_options=no_room_media(dial.identity))
        assert await live.finish() == "all lines busy"

    # The caller can neither drive the session nor hear its events (as on any call).
    assert room.sent == []
    assert not room.listens_to("lk.agent.session")

    # The TTS is given the message sentence by sentence.
    assert " ".join(providers.tts.spoken) == BUSY_MESSAGE
    assert providers.speaker.finished[-1][1] is False  # played to the end
    assert providers.llm.requests == []  # no workflow ran
    # The start agent's voice, on the busy organization's key.
    assert ("tts", "cartesia", "test-cartesia-tts-key", None) in providers.builds
    call = web.call(str(data["call_id"]), org="busy")
    assert (call["status"], call["end_reason"]) == ("failed", "concurrency_limit")
    assert web.transcript(str(data["call_id"]), org="busy") == []
    assert deleted_rooms(fake_livekit, dial.room_name) == 1


@pytest.mark.api
async def test_a_caller_id_longer_than_the_api_takes_is_answered_as_an_unknown_caller(
    web: Web, fake_livekit
) -> None:
    """The API answers a caller id too long to keep (LiveKit's participant_joined
    webhook, or the agent's request) as an unknown caller, but refuses a request whose
    `caller` is over 1024 characters: the agent sent `sip.phoneNumber` as it came, got a
    400, and closed the room on a caller the webhook had already made a call for."""
    web.route_number(INBOUND_NUMBER, "daily-call")
    dial = dial_in(fake_livekit, INBOUND_NUMBER)
    participant = dial.room.remote_participants[dial.identity]
    participant.attributes["sip.phoneNumber"] = "+1" + "2" * 2000
    async with live_job(room_name=dial.room_name, metadata=dial.metadata) as live:
        inbound = InboundCall(live.ctx, config=config_for(web))
        caller = await inbound.caller(dial.room)
        data = await inbound.session(caller)
        assert data is not None, "the room was closed on the caller"
        assert (data["status"], data["user_id"]) == ("active", None)


class _Job:
    """LiveKit's JobContext as an inbound dispatch sees it before it connects: its
    room's name (LiveKit made it from the caller's number), and the room's closing."""

    def __init__(self, room_name: str) -> None:
        self.job = SimpleNamespace(room=SimpleNamespace(name=room_name))
        self.closed: list[str] = []

    async def delete_room(self, *, room_name: str) -> None:
        pass

    def shutdown(self, *, reason: str) -> None:
        self.closed.append(reason)


async def test_the_logs_of_an_inbound_dispatch_keep_no_callers_number_from_the_room_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """docs/privacy.md: logs carry no numbers; an inbound room is `inbound-_<caller>_<random>`."""
    caplog.set_level(logging.INFO)
    room_name = "inbound-_+12025550177_Xy7Qa2"
    # Nobody answers at this address: the session request is retried, then given up.
    config = Config(api_url="http://127.0.0.1:9", agent_key="k")
    job = _Job(room_name)
    caller = SimpleNamespace(identity="sip_+12025550177", attributes={"sip.phoneNumber": CALLER})

    gone = InboundCall(job, config=config)
    empty = Room()
    waiting = asyncio.create_task(gone.caller(empty))
    await asyncio.sleep(0.01)
    empty.emit("connection_state_changed", rtc.ConnectionState.CONN_DISCONNECTED)
    assert await waiting is None
    unanswered = InboundCall(job, config=config, fetch_deadline=0.2)
    assert await unanswered.session(caller) is None

    assert job.closed == ["no caller", "no inbound call"]
    assert "inbound room" in caplog.text
    assert "POST inbound-calls" in caplog.text
    assert "5550177" not in caplog.text
    assert "…0177" in caplog.text
