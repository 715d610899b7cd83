"""DTMF on outbound phone calls: `send_dtmf` presses keys on the agent's participant
(`publish_dtmf`, recorded by the harness's room stand-in), each press a system line
in the transcript; anything but keypad keys and `w` pauses is refused to the model."""

from __future__ import annotations

import pytest
from livekit.agents import ToolError

from agent.api import AgentAPI
from agent.call import CallRuntime
from agent.providers import ComponentCache
from agent.reporter import EventReporter
from agent.telephony import DTMF_DIGITS
from agent.tests.conftest import Web
from agent.tests.harness import Providers, Room, outbound_call, wait_until
from agent.tests.scripted_llm import ScriptedLLM, call
from agent.workflow import ToolRunner

GREETING = "Hello Ada! How are you today?"
MENU = "Welcome to Acme. For sales press 1, for support press 2, then the pound key."


def runtime_for(room: Room, *, direction: str = "outbound") -> CallRuntime:
    """A phone call's runtime, from a session as the API gives it (no server needed:
    nothing is sent)."""
    data = {
        "call_id": "6f1c0000-0000-4000-8000-000000000000",
        "channel": "phone",
        "direction": direction,
        "workflow": {"start_agent": "greeter-agent", "agents": [], "settings": {}},
    }
    api = AgentAPI("http://127.0.0.1:9", "unused")
    return CallRuntime(
        data,
        EventReporter(api, data["call_id"]),
        components=ComponentCache(),
        runner=ToolRunner(call_id=data["call_id"]),
        api=api,
        room=room,
    )


@pytest.mark.parametrize("digits", ["1", "0123456789", "*#", "12w34", "w" * 32])
def test_keypad_keys_and_pauses_are_digits(digits: str) -> None:
    assert DTMF_DIGITS.fullmatch(digits)


@pytest.mark.parametrize("digits", ["", "12a", "1 2", "A", "+1", "1" * 33, None, 12, ["1"], "１"])
async def test_anything_else_is_refused_to_the_model_and_nothing_is_pressed(digits) -> None:
    room = Room()
    phone = runtime_for(room).phone

    with pytest.raises(ToolError, match="digits must be"):
        await phone.send_dtmf(digits)

    assert room.dtmf == []
    assert phone.call.reporter.pending == 0


async def test_each_key_is_published_with_its_code_and_written_in_the_transcript() -> None:
    room = Room()
    phone = runtime_for(room).phone

    assert await phone.send_dtmf("1*#0") == "Pressed 1*#0."

    assert room.dtmf == [(1, "1"), (10, "*"), (11, "#"), (0, "0")]
    lines = [event for event, _ in phone.call.reporter._pending]
    assert [(e["type"], e["role"], e["content"]) for e in lines] == [
        ("transcript", "system", "DTMF 1"),
        ("transcript", "system", "DTMF *"),
        ("transcript", "system", "DTMF #"),
        ("transcript", "system", "DTMF 0"),
    ]


def test_only_outbound_phone_calls_get_the_keypad_and_the_voicemail_tool() -> None:
    outbound = runtime_for(Room()).phone
    inbound = runtime_for(Room(), direction="inbound").phone

    assert [t.info.name for t in outbound.tools(set())] == ["send_dtmf", "voicemail_detected"]
    assert [t.info.name for t in outbound.tools({"send_dtmf"})] == ["voicemail_detected"]
    assert inbound.tools(set()) == []


@pytest.mark.api
async def test_a_phone_menu_answering_gets_the_model_pressing_keys(
    web: Web,
    voicemail_workflows: dict[str, str],
) -> None:
    room = Room()
    providers = Providers(
        llm=ScriptedLLM(
            [
                call("save_prediction", label="machine-ivr"),
                call("send_dtmf", digits="2w#"),
                "",
            ]
        )
    )
    async with outbound_call(web, providers, voicemail_workflows["hang_up"], room) as (
        job,
        live,
        _,
    ):
        providers.stt.hear(MENU, speaking=0.5)
        await wait_until(lambda: len(room.dtmf) == 2, timeout=20)
        await wait_until(lambda: providers.llm.remaining == 0)
        job.ctx.shutdown(reason="test over")
        await live.finish()

    assert room.dtmf == [(2, "2"), (11, "#")]
    assert providers.tts.spoken == []  # no greeting to a machine
    assert "send_dtmf" in providers.llm.requests[1].tools
    lines = [
        (line["role"], line["content"])
        for line in web.transcript(job.call_id)
        if line["role"] in ("system", "tool")
    ]
    assert lines == [("tool", "Pressed 2w#."), ("system", "DTMF 2"), ("system", "DTMF #")]
    assert web.call(job.call_id)["status"] not in ("completed", "failed")


@pytest.mark.api
async def test_bad_digits_from_the_model_press_nothing_and_it_is_told_why(
    web: Web,
    voicemail_workflows: dict[str, str],
) -> None:
    room = Room()
    providers = Providers(
        llm=ScriptedLLM(
            [call("save_prediction", label="human"), call("send_dtmf", digits="1-2"), "Sorry."]
        )
    )
    async with outbound_call(web, providers, voicemail_workflows["hang_up"], room) as (
        job,
        live,
        _,
    ):
        providers.stt.hear("Hello?")
        await wait_until(lambda: GREETING in providers.tts.spoken, timeout=15)
        await wait_until(lambda: providers.speaker.finished)
        providers.stt.hear("Press one two please")
        await wait_until(lambda: "Sorry." in providers.tts.spoken)
        job.ctx.shutdown(reason="test over")
        await live.finish()

    assert room.dtmf == []
    (tool_line,) = [line for line in web.transcript(job.call_id) if line["role"] == "tool"]
    assert tool_line["tool_call"] == {
        "name": "send_dtmf",
        "arguments": {"digits": "1-2"},
        "is_error": True,
    }
    assert tool_line["content"].startswith("digits must be")
