"""Turn-taking on a real call, from the workflow's settings: how soon the caller's turn
ends, whether they can cut the agent off (the transcript's `interrupted`), and the
latency a caller feels per turn (end of utterance, end to end) in the call's metrics.
The worker's own job and the voice pipeline (stand-ins: voice.py) against the live API."""

from __future__ import annotations

import logging

import pytest
from livekit.agents.cli.log import JsonFormatter

from agent.tests.conftest import Web
from agent.tests.harness import Providers, call_job, live_job, start_voice_call, wait_until
from agent.tests.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.api

LONG_REPLY = (
    "Let me tell you everything about today's menu, starting with the soup, then the "
    "salad, the main course, and finally the dessert."
)


async def _two_turns(web: Web, slug: str) -> tuple[str, dict]:
    created = web.create_call(workflow_slug=slug, user_data={"name": "Ada"})
    call_id = created["call_id"]
    providers = Providers(llm=ScriptedLLM(["Glad to hear.", "Noted."]))
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        _, session = await start_voice_call(job, providers)
        for turn, words in enumerate(["I'm fine", "I had soup"], start=2):
            await wait_until(lambda n=turn - 1: len(providers.speaker.finished) == n)
            providers.stt.hear(words, speaking=0.2)
        await wait_until(lambda: len(providers.speaker.finished) == 3)
        await session.aclose()
        await live.finish()
    return call_id, web.metrics(call_id)


async def test_each_turn_reports_end_of_utterance_and_end_to_end_latency_as_set(
    web: Web,
) -> None:
    web.create_workflow("quick-turns", settings={"min_endpointing_delay": 0.2})

    _, quick = await _two_turns(web, "quick-turns")
    _, default = await _two_turns(web, "daily-call")

    # The turn ends once the caller has been silent for the workflow's minimum delay.
    assert 180 <= quick["eou_latency_ms"] <= 400
    assert 480 <= default["eou_latency_ms"] <= 800
    for metrics in (quick, default):
        assert metrics["latency"]["eou"]["count"] == 2
        assert metrics["latency"]["e2e"]["count"] == 2
        # End to end: from the caller's last word to the agent's first sound.
        assert metrics["eou_latency_ms"] < metrics["e2e_latency_ms"] < 3000


async def _interrupted_reply(web: Web, slug: str) -> tuple[list[dict], bool]:
    created = web.create_call(workflow_slug=slug, user_data={"name": "Ada"})
    call_id = created["call_id"]
    providers = Providers(llm=ScriptedLLM([LONG_REPLY, "Of course."]))
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers)
        _, session = await start_voice_call(job, providers)
        await wait_until(lambda: providers.speaker.finished)
        providers.stt.hear("What's for lunch?", speaking=0.2)
        await wait_until(lambda: providers.tts.spoken[-1:] != ["Hello Ada! How are you today?"])
        # Into the long reply, the caller talks over the agent.
        await wait_until(lambda: session.agent_state == "speaking")
        providers.stt.hear("Sorry, just the soup please", speaking=0.8)
        await wait_until(lambda: len(providers.speaker.finished) >= 2, timeout=15)
        cut_off = providers.speaker.finished[1][1]
        await wait_until(lambda: session.agent_state == "listening", timeout=15)
        await session.aclose()
        await live.finish()
    return web.transcript(call_id), cut_off


async def test_a_caller_can_cut_the_agent_off_and_the_transcript_says_so(web: Web) -> None:
    lines, cut_off = await _interrupted_reply(web, "daily-call")

    assert cut_off
    replies = [line for line in lines if line["role"] == "assistant"]
    assert replies[1]["interrupted"] is True
    assert LONG_REPLY.startswith(replies[1]["content"].rstrip(". "))
    assert replies[0]["interrupted"] is False  # the greeting
    assert all("interrupted" not in line for line in lines if line["role"] == "user")


async def test_a_workflow_that_allows_no_interruptions_plays_every_reply_out(
    web: Web,
) -> None:
    web.create_workflow("no-interruptions", settings={"allow_interruptions": False})

    lines, cut_off = await _interrupted_reply(web, "no-interruptions")

    assert not cut_off
    replies = [line for line in lines if line["role"] == "assistant"]
    assert (replies[1]["content"], replies[1]["interrupted"]) == (LONG_REPLY, False)


async def test_what_a_caller_says_over_a_reply_that_cannot_be_interrupted_is_not_logged(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/privacy.md: logs carry no transcript words. livekit-agents logs the words it
    does not answer (said over a reply that cannot be interrupted, or while agents hand
    over) in fields it marks as personal (`lk.pii.*`), at WARNING."""
    caplog.set_level(logging.INFO)
    web.create_workflow("uninterrupted", settings={"allow_interruptions": False})

    await _interrupted_reply(web, "uninterrupted")

    skipped = [r for r in caplog.records if "cannot be interrupted" in r.getMessage()]
    assert skipped
    logged = "".join(JsonFormatter().format(record) for record in caplog.records)
    assert "just the soup" not in logged
