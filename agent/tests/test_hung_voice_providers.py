"""A voice provider that stops answering, mid-call: the real Deepgram plugins
(livekit-plugins-deepgram, as the worker builds them for `deepgram` workflows) against
Deepgram's websockets on loopback (fake_deepgram.py), which hang as a real connection
does. How long the caller is left in silence, what they hear, and what the API keeps."""

from __future__ import annotations

import time

import pytest
from livekit.plugins import deepgram

from agent.tests.conftest import Web, deleted_rooms
from agent.tests.fake_deepgram import SAMPLE_RATE, FakeDeepgram
from agent.tests.harness import Providers, call_job, live_job, start_voice_call, wait_until
from agent.tests.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.api

ANSWER = "Glad to hear it."


class DeepgramProviders(Providers):
    """The call's TTS (or STT) is livekit's Deepgram plugin on the session's key, sent
    to `fake`; the rest are the usual stand-ins."""

    def __init__(self, fake: FakeDeepgram, component: str) -> None:
        super().__init__(llm=ScriptedLLM([ANSWER]))
        self.fake = fake
        self.component = component

    def build(self, component: str, config: dict, language: str | None) -> object:
        built = super().build(component, config, language)
        if component != self.component:
            return built
        if component == "tts":
            return deepgram.TTS(
                api_key=config["api_key"], base_url=self.fake.url, sample_rate=SAMPLE_RATE
            )
        return deepgram.STT(api_key=config["api_key"], base_url=self.fake.listen_url)


def system_lines(web: Web, call_id: str) -> list[str]:
    return [line["content"] for line in web.transcript(call_id) if line["role"] == "system"]


async def test_a_tts_that_stops_answering_ends_the_call_within_fifteen_seconds(
    web: Web, fake_livekit
) -> None:
    """livekit-agents' defaults (10 s for each answer, three retries) left the caller
    in silence for about 44 s, then the apology was sent to the same dead TTS (15 s
    more): most callers hung up first, and the call ended as their hang-up."""
    created = web.create_call(user_data={"name": "Ada"})
    call_id, room = created["call_id"], created["room_name"]
    async with FakeDeepgram() as fake:
        providers = DeepgramProviders(fake, "tts")
        async with live_job(room_name=room, call_id=call_id) as live:
            job = call_job(web, live, call_id, providers)
            runtime, _ = await start_voice_call(job, providers)
            await wait_until(lambda: providers.speaker.finished)  # the greeting, heard
            fake.hang = True
            providers.stt.hear("I'm fine, thanks")
            heard = time.monotonic()
            await wait_until(lambda: live.shutdowns, timeout=30)
            waited = time.monotonic() - heard
            await live.finish()

    assert waited < 15, f"the caller waited {waited:.1f} s in silence"
    assert fake.spoken[-1] == ANSWER
    # Not said through a TTS that just failed: that was only more silence.
    assert runtime.settings["error_message"] not in " ".join(fake.spoken)
    ended = web.call(call_id)
    assert (ended["status"], ended["end_reason"]) == ("failed", "agent_error")
    (failure,) = [line for line in system_lines(web, call_id) if line.startswith("agent_error")]
    assert "tts_error" in failure and "APITimeoutError" in failure
    assert deleted_rooms(fake_livekit, room) == 1


async def test_an_stt_that_never_connects_gets_the_apology_within_twenty_five_seconds(
    web: Web, fake_livekit
) -> None:
    """The STT's connection hangs from the start: the caller hears the greeting and is
    never heard. livekit-agents starts an STT stream's retries over after an attempt
    that outlived the connect timeout (it had connected, it takes it), and an attempt
    that timed out connecting did: the call went on, deaf, until the caller gave up."""
    created = web.create_call(user_data={"name": "Ada"})
    call_id, room = created["call_id"], created["room_name"]
    async with FakeDeepgram() as fake:
        providers = DeepgramProviders(fake, "stt")
        async with live_job(room_name=room, call_id=call_id) as live:
            job = call_job(web, live, call_id, providers)
            started = time.monotonic()
            runtime, _ = await start_voice_call(job, providers)
            await wait_until(lambda: live.shutdowns, timeout=45)
            waited = time.monotonic() - started
            await live.finish()

    assert waited < 25, f"the call went on {waited:.1f} s without hearing the caller"
    assert fake.connections >= 3
    apology = runtime.settings["error_message"]
    assert " ".join(providers.tts.spoken[1:]) == apology
    ended = web.call(call_id)
    assert (ended["status"], ended["end_reason"]) == ("failed", "agent_error")
    lines = system_lines(web, call_id)
    (failure,) = [line for line in lines if line.startswith("agent_error")]
    assert "stt_error" in failure and "APIConnectionError" in failure
    assert deleted_rooms(fake_livekit, room) == 1
