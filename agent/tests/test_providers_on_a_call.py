"""Providers on a real call: a fallback answers when the first LLM fails, and the call's
language reaches the STT and TTS. The worker's own job against the live API; the
providers' plugins are stand-ins (harness.Providers), livekit-agents' FallbackAdapter
is the real one."""

from __future__ import annotations

import pytest
from livekit.agents import llm

from agent.tests.conftest import Web
from agent.tests.harness import Providers, call_job, live_job, start_voice_call, wait_until
from agent.tests.scripted_llm import ScriptedLLM, fail

pytestmark = pytest.mark.api

GREETING = "Hello Ada! How are you today?"
DEMO_LLM = {"provider": "openai", "model": "gpt-4.1-mini"}


async def test_when_the_first_llm_fails_its_fallback_answers_and_metrics_name_it(
    web: Web,
) -> None:
    anthropic_key = web.add_key("llm", "anthropic")
    web.create_workflow(
        "with-fallback",
        llm={**DEMO_LLM, "fallbacks": [{"provider": "anthropic", "model": "claude-haiku-4-5"}]},
    )
    created = web.create_call(workflow_slug="with-fallback", user_data={"name": "Ada"})
    call_id = created["call_id"]
    # The first choice is down for the whole call (the adapter probes it meanwhile).
    first = ScriptedLLM([], after=fail(503), provider="openai", model="gpt-4.1-mini")
    fallback = ScriptedLLM(
        ["Good to hear it, Ada.", "Tell me more."], provider="anthropic", model="claude-haiku-4-5"
    )
    providers = Providers(llm_openai=first, llm_anthropic=fallback)
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        runtime, session = await start_voice_call(job, providers)
        assert isinstance(runtime.agents["greeter-agent"].llm, llm.FallbackAdapter)
        await wait_until(lambda: providers.speaker.finished)
        providers.stt.hear("I'm fine, thanks")
        await wait_until(lambda: len(providers.speaker.finished) == 2)
        providers.stt.hear("I went for a walk")
        await wait_until(lambda: len(providers.speaker.finished) == 3)
        await session.aclose()
        await live.finish()

    # The fallback runs on the organization's own key for its provider.
    assert ("llm", "anthropic", anthropic_key, None) in providers.builds
    assert [r.messages[-1] for r in fallback.requests] == [
        ("user", "I'm fine, thanks"),
        ("user", "I went for a walk"),
    ]
    lines = [(line["role"], line["content"]) for line in web.transcript(call_id)]
    assert [line for line in lines if line[0] != "system"] == [
        ("assistant", GREETING),
        ("user", "I'm fine, thanks"),
        ("assistant", "Good to hear it, Ada."),
        ("user", "I went for a walk"),
        ("assistant", "Tell me more."),
    ]
    # The customer reads that their first choice was failing, once, not at each probe.
    (failing,) = [content for role, content in lines if role == "system"]
    assert failing.startswith("provider_error: llm openai gpt-4.1-mini: APIStatusError(")
    served = [p for p in web.metrics(call_id)["providers"] if p["component"] == "llm"]
    assert served == [
        {"component": "llm", "provider": "anthropic", "model": "claude-haiku-4-5", "turns": 2}
    ]
    assert web.call(call_id)["status"] == "active"


async def _language_of_a_call(web: Web, slug: str, user_data: dict) -> list[tuple]:
    created = web.create_call(workflow_slug=slug, user_data=user_data)
    providers = Providers()
    async with live_job(room_name=created["room_name"], call_id=created["call_id"]) as live:
        job = call_job(web, live, created["call_id"], providers)
        _, session = await start_voice_call(job, providers)
        await session.aclose()
        await live.finish()
    return sorted({(c, p, lang) for c, p, _, lang in providers.builds})


async def test_the_calls_language_goes_to_its_stt_and_tts(web: Web) -> None:
    web.create_workflow("in-spanish", settings={"language": "es"})

    in_workflow_language = await _language_of_a_call(web, "in-spanish", {"name": "Ada"})
    for_this_caller = await _language_of_a_call(
        web, "in-spanish", {"name": "Ada", "language": "fr-CA"}
    )
    # Cartesia states no Swahili: the workflow's language stays.
    unsupported = await _language_of_a_call(web, "in-spanish", {"language": "sw"})
    not_a_language = await _language_of_a_call(web, "in-spanish", {"language": "Spanish"})
    by_default = await _language_of_a_call(web, "daily-call", {"name": "Ada"})

    assert in_workflow_language == [
        ("llm", "openai", "es"),
        ("stt", "deepgram", "es"),
        ("tts", "cartesia", "es"),
    ]
    assert {lang for *_, lang in for_this_caller} == {"fr-CA"}
    assert {lang for *_, lang in unsupported} == {"es"}
    assert {lang for *_, lang in not_a_language} == {"es"}
    assert {lang for *_, lang in by_default} == {None}


async def test_when_every_llm_fails_the_failure_says_why_each_one_did(web: Web) -> None:
    """livekit-agents' FallbackAdapter fails with "all LLMs failed ([labels])" and
    nothing of why: a customer whose key was revoked read no 401 anywhere."""
    web.add_key("llm", "anthropic")
    web.create_workflow(
        "both-down",
        llm={**DEMO_LLM, "fallbacks": [{"provider": "anthropic", "model": "claude-haiku-4-5"}]},
    )
    created = web.create_call(workflow_slug="both-down", user_data={"name": "Ada"})
    call_id = created["call_id"]
    first = ScriptedLLM([], after=fail(401, retryable=False), provider="openai")
    fallback = ScriptedLLM([], after=fail(429), provider="anthropic")
    providers = Providers(llm_openai=first, llm_anthropic=fallback)
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        await start_voice_call(job, providers)
        await wait_until(lambda: providers.speaker.finished)
        providers.stt.hear("I'm fine, thanks")
        await live.finish()

    ended = web.call(call_id)
    assert (ended["status"], ended["end_reason"]) == ("failed", "agent_error")
    system = [line["content"] for line in web.transcript(call_id) if line["role"] == "system"]
    (failure,) = [line for line in system if line.startswith("agent_error")]
    assert failure.startswith("agent_error: llm_error, every choice failed: ")
    assert "openai gpt-4.1-mini: APIStatusError('scripted provider error 401'" in failure
    assert "anthropic claude-haiku-4-5: APIStatusError('scripted provider error 429'" in failure
