"""Answering machines on outbound phone calls: livekit-agents' detector (AMD) listens
to whoever picked up, on the call's own model (the scripted LLM answers its
`save_prediction` question) and transcripts, before the first agent greets. A
voicemail gets the workflow's `voicemail` action and the call ends
`completed`/`voicemail`; a person gets the greeting. Later, the model's
`voicemail_detected` tool does the same.

The calls are real outbound phone calls of the API (its dial job is not run: the room
is the harness's stand-in, where the callee's SIP participant answers).
"""

from __future__ import annotations

import pytest

from agent.tests.conftest import Web, deleted_rooms
from agent.tests.harness import Providers, outbound_call, wait_until
from agent.tests.scripted_llm import ScriptedLLM, call

pytestmark = pytest.mark.api

GREETING = "Hello Ada! How are you today?"
VOICEMAIL = "Hi Ada, this is your daily call. We will try again tomorrow."
MACHINE = "Hi, you have reached Ada. Please leave a message after the beep."
AMD_TOOLS = ["postpone_termination", "save_prediction"]


def said(lines: list[dict]) -> list[tuple[str, str]]:
    return [(line["role"], line["content"]) for line in lines]


async def test_a_voicemail_greeting_gets_the_workflows_message_then_the_call_ends_voicemail(
    web: Web, fake_livekit, voicemail_workflows: dict[str, str]
) -> None:
    providers = Providers(llm=ScriptedLLM([call("save_prediction", label="machine-vm")]))
    async with outbound_call(web, providers, voicemail_workflows["leave_message"]) as (
        job,
        live,
        room,
    ):
        providers.stt.hear(MACHINE, speaking=0.5)
        assert (await live.finish(timeout=30)).startswith("session closed")

    # No greeting to the machine: the message alone, played to the end.
    assert " ".join(providers.tts.spoken) == VOICEMAIL
    assert providers.speaker.finished[-1][1] is False
    assert [request.tools for request in providers.llm.requests] == [AMD_TOOLS]
    ended = web.call(job.call_id)
    assert (ended["status"], ended["end_reason"]) == ("completed", "voicemail")
    assert ("assistant", VOICEMAIL) in said(web.transcript(job.call_id))
    assert deleted_rooms(fake_livekit, room) == 1


async def test_with_hang_up_a_voicemail_greeting_gets_no_word(
    web: Web, fake_livekit, voicemail_workflows: dict[str, str]
) -> None:
    providers = Providers(llm=ScriptedLLM([call("save_prediction", label="machine-vm")]))
    async with outbound_call(web, providers, voicemail_workflows["hang_up"]) as (job, live, room):
        providers.stt.hear(MACHINE, speaking=0.5)
        assert (await live.finish(timeout=30)).startswith("session closed")

    assert providers.tts.spoken == []
    ended = web.call(job.call_id)
    assert (ended["status"], ended["end_reason"]) == ("completed", "voicemail")
    assert [line["role"] for line in web.transcript(job.call_id)] == ["user"]
    assert deleted_rooms(fake_livekit, room) == 1


async def test_a_mailbox_that_takes_no_message_is_hung_up_on(
    web: Web, voicemail_workflows: dict[str, str]
) -> None:
    providers = Providers(llm=ScriptedLLM([call("save_prediction", label="machine-unavailable")]))
    async with outbound_call(web, providers, voicemail_workflows["leave_message"]) as (
        job,
        live,
        _,
    ):
        providers.stt.hear("The mailbox is full. Goodbye.")
        assert (await live.finish(timeout=30)).startswith("session closed")

    assert providers.tts.spoken == []
    ended = web.call(job.call_id)
    assert (ended["status"], ended["end_reason"]) == ("completed", "voicemail")


async def test_a_person_who_answers_is_greeted_and_their_hello_is_kept_but_not_answered_twice(
    web: Web, voicemail_workflows: dict[str, str]
) -> None:
    """The greeting answers the callee's "Hello?", so the model does not; it is still
    in the transcript (livekit-agents keeps no turn a StopResponse ends)."""
    providers = Providers(
        llm=ScriptedLLM([call("save_prediction", label="human"), "It's your daily call."])
    )
    async with outbound_call(web, providers, voicemail_workflows["leave_message"]) as (
        job,
        live,
        _,
    ):
        providers.stt.hear("Hello?", speaking=0.3)
        await wait_until(lambda: GREETING in providers.tts.spoken, timeout=15)
        await wait_until(lambda: providers.speaker.finished)
        assert len(providers.llm.requests) == 1  # the detector's question alone
        providers.stt.hear("Who is this?")
        await wait_until(lambda: "It's your daily call." in providers.tts.spoken)
        job.ctx.shutdown(reason="test over")
        await live.finish()

    assert providers.tts.spoken == [GREETING, "It's your daily call."]
    assert web.call(job.call_id)["status"] != "completed"
    assert said(web.transcript(job.call_id)) == [
        ("user", "Hello?"),
        ("assistant", GREETING),
        ("user", "Who is this?"),
        ("assistant", "It's your daily call."),
    ]


async def test_a_machine_the_detector_missed_is_left_the_message_when_the_model_says_so(
    web: Web, voicemail_workflows: dict[str, str]
) -> None:
    providers = Providers(
        llm=ScriptedLLM([call("save_prediction", label="human"), call("voicemail_detected")])
    )
    async with outbound_call(web, providers, voicemail_workflows["leave_message"]) as (
        job,
        live,
        _,
    ):
        providers.stt.hear("Hello?")
        await wait_until(lambda: providers.speaker.finished, timeout=15)
        providers.stt.hear("Please record your message after the tone. Beep.")
        assert (await live.finish(timeout=30)).startswith("session closed")

    assert "voicemail_detected" in providers.llm.requests[1].tools
    assert providers.tts.spoken[0] == GREETING
    assert " ".join(providers.tts.spoken[1:]) == VOICEMAIL
    ended = web.call(job.call_id)
    assert (ended["status"], ended["end_reason"]) == ("completed", "voicemail")
