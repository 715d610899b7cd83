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
DEMO_LLM = {"provider": "openai", "model": "gpt-4.1-mini"}  # workflows/demo.py


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
    assert [line for line in lines if line[0] != "system"] == [
        ("assistant", GREETING),
        ("user", "I'm fine, thanks"),
        ("assistant", apology),
    ]
    # The retried timeout once, when it happened; then why the call failed.
    assert [content.split(":")[0] for role, content in lines if role == "system"] == [
        "provider_error",
        "agent_error",
    ]
    assert lines[-1][0] == "system" and "APITimeoutError" in lines[-1][1]
    assert deleted_rooms(fake_livekit, room) == 1


async def test_a_caller_who_hangs_up_while_the_model_is_retried_leaves_a_call_that_says_so(
    web: Web, fake_livekit, fake_llm: FakeLLM
) -> None:
    """The model timed out and was being asked again when the caller gave up: the call
    ended as their hang-up, and nothing anywhere said the provider had been failing."""
    fake_llm.default = Outcome(content="Too late.", delay=15)
    created = web.create_call(user_data={"name": "Ada"})
    call_id, room = created["call_id"], created["room_name"]
    providers = OpenAIProviders(fake_llm)
    async with live_job(room_name=room, call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        _, session = await start_voice_call(job, providers)
        await wait_until(lambda: providers.speaker.finished)  # the greeting
        providers.stt.hear("I'm fine, thanks")
        await wait_until(lambda: len(fake_llm.requests) == 2, timeout=15)  # asked again
        await session.aclose()  # the caller hangs up
        await live.finish()

    assert web.call(call_id)["status"] == "active"  # their leaving is LiveKit's to tell
    lines = said(web.transcript(call_id))
    assert lines[:2] == [("assistant", GREETING), ("user", "I'm fine, thanks")]
    (line,) = [content for role, content in lines if role == "system"]
    assert line.startswith("provider_error: llm openai gpt-4.1-mini: APITimeoutError(")


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
    # Both refusals were retried: said once, not twice.
    (line,) = [content for role, content in said(web.transcript(call_id)) if role == "system"]
    assert line.startswith("provider_error: llm openai gpt-4.1-mini: APIStatusError(")
    assert "503" in line
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
        # The last answer played out and is in the session's history before the session
        # closes: the speaker can finish before the session has counted the playout
        # done, and a close then would record the answer as cut off.
        await wait_until(lambda: len(providers.speaker.finished) == 4)
        await wait_until(lambda: _answers_kept(session) == 4)
        await wait_until(lambda: job.reporter.pending == 0)
        assert not runtime.ended
        await session.aclose()
        assert await live.finish() == "session closed: user_initiated"

    assert providers.tts.spoken == [GREETING, "Glad to hear", answer, answer]
    ended = web.call(call_id)
    assert ended["status"] == "active"  # the caller's leaving is LiveKit's to tell
    lines = [line for line in web.transcript(call_id) if line["role"] != "system"]
    assert said(lines) == [
        ("assistant", GREETING),
        ("user", "I'm fine, thanks"),
        ("assistant", "Glad to hear "),
        ("assistant", answer),
        ("user", "Some soup"),
        ("assistant", answer),
    ]
    # Why the answer was cut off, though the call went on.
    (why,) = [content for role, content in said(web.transcript(call_id)) if role == "system"]
    assert why.startswith("provider_error: llm openai gpt-4.1-mini: APIConnectionError(")
    # The caller heard those first words cut off.
    assert [line.get("interrupted") for line in lines] == [
        False,
        None,
        True,
        False,
        None,
        False,
    ]


def _answers_kept(session) -> int:
    """The assistant's messages in the session's history, each kept once its playout ended
    (or was cut off)."""
    return sum(message.role == "assistant" for message in session.history.messages())


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


async def test_a_model_given_a_longer_timeout_answers_after_five_seconds_without_an_error(
    web: Web, fake_livekit, fake_llm: FakeLLM
) -> None:
    """A model that thinks before its first token (o-series, Gemini 2.5 on a long
    prompt) took over 5 s, and every model got 5 s an attempt: its answers timed out,
    were asked again, and the call failed. The agent's `llm.timeout_seconds` is its
    wait."""
    answer = "Glad to hear it. What did you eat today?"
    fake_llm.default = Outcome(content=answer, delay=6)
    web.create_workflow("thinking-model", llm={**DEMO_LLM, "timeout_seconds": 10})
    created = web.create_call(workflow_slug="thinking-model", user_data={"name": "Ada"})
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

    assert len(fake_llm.requests) == 1
    assert providers.tts.spoken == [GREETING, answer]
    lines = said(web.transcript(call_id))
    assert lines[-1] == ("assistant", answer)
    assert [content for role, content in lines if role == "system"] == []
