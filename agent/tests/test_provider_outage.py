"""A provider's bad hour, mid-call: the real OpenAI plugin (livekit-plugins-openai, as
the worker builds it for `openai` workflows) against the LLM providers' stand-in
(tests/fake_llm.py of the web root: OpenAI's chat-completions API on loopback,
streamed), answering errors, nothing, or an answer cut off. What the caller hears, how
soon, and what the API keeps of the call."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from livekit.plugins import openai

from agent.tests.conftest import Web, deleted_rooms
from agent.tests.harness import Providers, call_job, live_job, start_voice_call, wait_until
from tests.fake_llm import COMPLETION_TOKENS, PROMPT_TOKENS, FakeLLM, Outcome

pytestmark = pytest.mark.api

GREETING = "Hello Ada! How are you today?"


class OpenAIProviders(Providers):
    """The call's LLM is livekit's OpenAI plugin on the session's key, sent to `fake`."""

    def __init__(self, fake: FakeLLM) -> None:
        super().__init__()
        self.fake = fake

    def build(self, component: str, config: dict, language: str | None) -> object:
        built = super().build(component, config, language)
        if component != "llm":
            return built
        return openai.LLM(api_key=config["api_key"], model=config["model"], base_url=self.fake.url)


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    with FakeLLM(default=Outcome(content="Glad to hear it. What did you eat today?")) as fake:
        yield fake


def said(lines: list[dict]) -> list[tuple[str, str]]:
    return [(line["role"], line["content"]) for line in lines]


async def test_a_model_that_never_answers_gets_the_apology_within_sixteen_seconds(
    web: Web, fake_livekit, fake_llm: FakeLLM
) -> None:
    """livekit-agents' own defaults (10 s an attempt, 3 retries) kept the caller in
    silence for 46 s before the apology: most would have hung up, and the call would
    have ended as their hang-up, not as the provider's failure."""
    fake_llm.default = Outcome(content="Too late.", delay=15)
    created = web.create_call(user_data={"name": "Ada"})
    call_id, room = created["call_id"], created["room_name"]
    providers = OpenAIProviders(fake_llm)
    async with live_job(room_name=room, call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        runtime, _ = await start_voice_call(job, providers)
        await wait_until(lambda: providers.speaker.finished)  # the greeting
        providers.stt.hear("I'm fine, thanks")
        heard = time.monotonic()
        await wait_until(lambda: len(providers.tts.spoken) > 1, timeout=60)
        waited = time.monotonic() - heard
        assert await live.finish() == "session closed: user_initiated"

    assert waited < 18, f"the caller waited {waited:.1f} s in silence"
    assert len(fake_llm.requests) == 3  # two retries
    apology = runtime.settings["error_message"]
    ended = web.call(call_id)
    assert (ended["status"], ended["end_reason"]) == ("failed", "agent_error")
    lines = said(web.transcript(call_id))
    assert lines[:3] == [
        ("assistant", GREETING),
        ("user", "I'm fine, thanks"),
        ("assistant", apology),
    ]
    assert lines[3][0] == "system" and "APITimeoutError" in lines[3][1]
    assert deleted_rooms(fake_livekit, room) == 1


async def test_a_burst_of_overloaded_answers_is_retried_and_the_call_goes_on(
    web: Web, fake_livekit, fake_llm: FakeLLM
) -> None:
    answer = "Glad to hear it. What did you eat today?"
    fake_llm.outcomes = [Outcome(status=503), Outcome(status=503)]
    created = web.create_call(user_data={"name": "Ada"})
    call_id, room = created["call_id"], created["room_name"]
    providers = OpenAIProviders(fake_llm)
    async with live_job(room_name=room, call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        runtime, session = await start_voice_call(job, providers)
        await wait_until(lambda: providers.speaker.finished)  # the greeting
        providers.stt.hear("I'm fine, thanks")
        await wait_until(lambda: len(providers.speaker.finished) == 2, timeout=15)
        await wait_until(lambda: job.reporter.pending == 0)
        assert not runtime.ended
        await session.aclose()
        await live.finish()

    assert len(fake_llm.requests) == 3
    assert providers.tts.spoken == [GREETING, answer]
    assert web.call(call_id)["status"] == "active"
    assert said(web.transcript(call_id))[-1] == ("assistant", answer)
    # Tokens are counted once: the refused requests used none.
    assert web.metrics(call_id)["total_tokens"] == PROMPT_TOKENS + COMPLETION_TOKENS


async def test_an_answer_cut_off_by_a_dropped_connection_is_asked_again_and_the_call_goes_on(
    web: Web, fake_livekit, fake_llm: FakeLLM
) -> None:
    """The connection drops three words into the answer. The plugin cannot retry what
    was half said (the caller would hear it twice in one breath), and an error it does
    not retry is unrecoverable: the call ended `failed` with the apology, over one
    network blip. The model is asked again instead, and the call goes on."""
    answer = "Glad to hear it. What did you eat today?"
    fake_llm.outcomes = [Outcome(content=answer, drop_after=3)]
    created = web.create_call(user_data={"name": "Ada"})
    call_id, room = created["call_id"], created["room_name"]
    providers = OpenAIProviders(fake_llm)
    async with live_job(room_name=room, call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        runtime, session = await start_voice_call(job, providers)
        await wait_until(lambda: providers.speaker.finished)  # the greeting
        providers.stt.hear("I'm fine, thanks")
        await wait_until(lambda: answer in providers.tts.spoken, timeout=15)
        # Heard: the cut-off words, then the whole answer.
        await wait_until(lambda: len(providers.speaker.finished) == 3)
        providers.stt.hear("Some soup")
        await wait_until(lambda: len(fake_llm.requests) == 3, timeout=15)
        await wait_until(lambda: job.reporter.pending == 0 and len(providers.speaker.finished) == 4)
        assert not runtime.ended
        await session.aclose()
        assert await live.finish() == "session closed: user_initiated"

    assert providers.tts.spoken == [GREETING, "Glad to hear", answer, answer]
    ended = web.call(call_id)
    assert ended["status"] == "active"  # the caller's leaving is LiveKit's to tell
    assert said(web.transcript(call_id)) == [
        ("assistant", GREETING),
        ("user", "I'm fine, thanks"),
        ("assistant", "Glad to hear "),
        ("assistant", answer),
        ("user", "Some soup"),
        ("assistant", answer),
    ]
    # The caller heard those first words cut off.
    assert [line.get("interrupted") for line in web.transcript(call_id)] == [
        False,
        None,
        True,
        False,
        None,
        False,
    ]


async def test_an_answer_cut_off_twice_in_a_row_fails_the_call_with_the_apology(
    web: Web, fake_livekit, fake_llm: FakeLLM
) -> None:
    fake_llm.default = Outcome(content="Glad to hear it. What did you eat today?", drop_after=3)
    created = web.create_call(user_data={"name": "Ada"})
    call_id, room = created["call_id"], created["room_name"]
    providers = OpenAIProviders(fake_llm)
    async with live_job(room_name=room, call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        runtime, _ = await start_voice_call(job, providers)
        await wait_until(lambda: providers.speaker.finished)  # the greeting
        providers.stt.hear("I'm fine, thanks")
        assert await live.finish() == "session closed: user_initiated"

    assert len(fake_llm.requests) == 2
    apology = runtime.settings["error_message"]
    assert " ".join(providers.tts.spoken[-2:]) == apology
    ended = web.call(call_id)
    assert (ended["status"], ended["end_reason"]) == ("failed", "agent_error")
    lines = said(web.transcript(call_id))
    assert lines[-2] == ("assistant", apology)
    assert lines[-1][0] == "system" and "APIConnectionError" in lines[-1][1]
