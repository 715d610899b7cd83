"""Usage on a real call: the worker's own job against the live API, on a scripted voice
call (harness.Providers), reports what each provider's model used so far as `usage`
events, each in a POST of its own, the last one when the session closes."""

from __future__ import annotations

import json

import httpx
import pytest

from agent.api import AgentAPI
from agent.tests.conftest import Web
from agent.tests.harness import Providers, call_job, live_job, start_voice_call, wait_until
from agent.tests.scripted_llm import COMPLETION_TOKENS, PROMPT_TOKENS, ScriptedLLM

pytestmark = pytest.mark.api

GREETING = "Hello Ada! How are you today?"
REPLY = "Good to hear it, Ada."


class RecordingTransport(httpx.AsyncBaseTransport):
    """Real HTTP to the real server; keeps each `POST .../events` batch and its status."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.posts: list[tuple[list[dict], int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/events"):
            self.posts.append((json.loads(request.content)["events"], response.status_code))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_call_reports_its_usage_per_provider_and_model(web: Web) -> None:
    created = web.create_call(user_data={"name": "Ada"})
    call_id = created["call_id"]
    providers = Providers(llm=ScriptedLLM([REPLY]))
    transport = RecordingTransport()
    api = AgentAPI(web.base_url, web.agent_key, transport=transport)
    async with live_job(room_name=created["room_name"], call_id=call_id) as live:
        job = call_job(web, live, call_id, providers, api=api)
        _, session = await start_voice_call(job, providers)
        await wait_until(lambda: providers.speaker.finished)
        providers.stt.hear("I'm fine, thanks")
        await wait_until(lambda: len(providers.speaker.finished) == 2)
        await session.aclose()
        await live.finish()

    usage_posts = [(b, s) for b, s in transport.posts if any(e["type"] == "usage" for e in b)]
    # Never mixed with transcript lines, so refusing one could not cost a line.
    assert all(len(batch) == 1 for batch, _ in usage_posts)
    assert len(usage_posts) >= 2  # during the call, and the last totals at its close
    last = usage_posts[-1][0][0]
    assert set(last) == {"id", "type", "timestamp", "session", "usage"}
    # One run of the call: the API keeps its newest report (another run would add to it).
    assert {batch[0]["session"] for batch, _ in usage_posts} == {job.reporter.session}
    items = {item["component"]: item for item in last["usage"]}
    # The stand-ins label their usage "tests"; the workflow chose these providers.
    assert items["llm"] == {
        "component": "llm",
        "provider": "openai",
        "model": "scripted",
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "cached_tokens": 0,
    }
    assert items["tts"] == {
        "component": "tts",
        "provider": "cartesia",
        "model": "scripted-tts",
        "characters": len(GREETING) + len(REPLY),
    }
    # The STT stand-in reports the seconds the caller spoke (0.3 s by default).
    assert items["stt"] == {
        "component": "stt",
        "provider": "deepgram",
        "model": "scripted-stt",
        "audio_seconds": 0.3,
    }
    # Cumulative: every report holds at least what the one before held.
    tokens = [sum(i.get("prompt_tokens", 0) for i in batch[0]["usage"]) for batch, _ in usage_posts]
    assert tokens == sorted(tokens)

    assert [status for _, status in usage_posts] == [200] * len(usage_posts)
    assert job.reporter.dropped == []
    # The API keeps the newest report: its lines are the call's cost once it ended.
    web.end_call(call_id)
    lines = {
        (line["component"], line["provider"], line["model"]): line["quantity"]
        for line in web.call(call_id)["cost"]["breakdown"]
    }
    assert float(lines[("llm_prompt", "openai", "scripted")]) == PROMPT_TOKENS
    assert float(lines[("tts", "cartesia", "scripted-tts")]) == len(GREETING) + len(REPLY)
    assert float(lines[("stt", "deepgram", "scripted-stt")]) == pytest.approx(0.3 / 60, abs=1e-6)
