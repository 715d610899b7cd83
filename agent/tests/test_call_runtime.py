"""Session events → agent events, for what a session here cannot produce (timings out of
range, usage snapshots of several providers), through the real reporter to a stand-in
events endpoint; and the runtime's hold on its background work."""

from __future__ import annotations

import asyncio
import datetime
import gc
import json
import time
from types import SimpleNamespace

import httpx
import pytest
from livekit.agents import APIConnectionError, llm
from livekit.agents.metrics.usage import AgentSessionUsage, LLMModelUsage, TTSModelUsage

from agent.api import AgentAPI
from agent.call import CallRuntime
from agent.providers import ComponentCache
from agent.reporter import EventReporter
from agent.workflow import ToolRunner

DATA = {"call_id": "c1", "workflow": {"start_agent": "greeter-agent", "agents": []}}


class EventsEndpoint:
    """Stands in for `POST /api/v1/agent/calls/{id}/events`: accepts and keeps events."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)["events"]
        self.events.extend(events)
        return httpx.Response(200, json={"accepted": len(events), "duplicates": 0})

    def sent(self) -> list[dict]:
        return [{k: v for k, v in e.items() if k not in ("id", "timestamp")} for e in self.events]


def runtime_with(endpoint: EventsEndpoint, agent: str = "meal-agent") -> CallRuntime:
    api = AgentAPI("http://api.invalid", "k", transport=httpx.MockTransport(endpoint))
    runtime = CallRuntime(
        DATA,
        EventReporter(api, "c1"),
        components=ComponentCache(),
        runner=ToolRunner(call_id="c1"),
    )
    runtime.session = SimpleNamespace(
        current_agent=SimpleNamespace(id=agent), usage=AgentSessionUsage(model_usage=[])
    )
    return runtime


def added(item: object) -> SimpleNamespace:
    return SimpleNamespace(item=item)


async def test_a_voice_turn_becomes_one_sample_naming_who_served_it() -> None:
    endpoint = EventsEndpoint()
    runtime = runtime_with(endpoint)
    now = time.time()
    served = {"model_name": "nova-3", "model_provider": "deepgram"}
    runtime._on_item_added(
        added(
            llm.ChatMessage(
                role="user",
                content=["I had soup"],
                metrics={
                    "started_speaking_at": now,
                    "transcription_delay": 0.21,
                    "end_of_turn_delay": 0.5,
                    "stt_metadata": served,
                },
            )
        )
    )
    runtime._on_item_added(
        added(
            llm.ChatMessage(
                role="assistant",
                content=["Noted."],
                interrupted=True,
                metrics={
                    "started_speaking_at": now + 2,
                    "llm_node_ttft": 0.3456,
                    "tts_node_ttfb": 0.15,
                    "e2e_latency": 0.9,
                    "llm_metadata": {"model_name": "gpt-4.1-mini", "model_provider": "openai"},
                    "tts_metadata": {"model_name": "", "model_provider": "cartesia"},
                },
            )
        )
    )
    await runtime.reporter.aclose()

    assert endpoint.sent() == [
        {"type": "transcript", "role": "user", "content": "I had soup", "agent_name": "meal-agent"},
        {
            "type": "transcript",
            "role": "assistant",
            "content": "Noted.",
            "agent_name": "meal-agent",
            "interrupted": True,
        },
        {
            "type": "metrics",
            "stt_latency_ms": 210.0,
            "eou_latency_ms": 500.0,
            "llm_latency_ms": 345.6,
            "tts_latency_ms": 150.0,
            "e2e_latency_ms": 900.0,
            "providers": {
                "stt": {"provider": "deepgram", "model": "nova-3"},
                "llm": {"provider": "openai", "model": "gpt-4.1-mini"},
            },
            "agent_name": "meal-agent",
            "turn_index": 1,
        },
    ]


async def test_a_user_turn_without_a_reply_still_reports_its_latencies() -> None:
    endpoint = EventsEndpoint()
    runtime = runtime_with(endpoint)
    for text in ("hello", "hello?"):
        runtime._on_item_added(
            added(
                llm.ChatMessage(
                    role="user",
                    content=[text],
                    metrics={"transcription_delay": 0.1, "end_of_turn_delay": 0.6},
                )
            )
        )
    await runtime.reporter.aclose()

    assert endpoint.sent()[-1] == {
        "type": "metrics",
        "stt_latency_ms": 100.0,
        "eou_latency_ms": 600.0,
        "agent_name": "meal-agent",
        "turn_index": 0,
    }


async def test_implausible_latencies_are_left_out() -> None:
    endpoint = EventsEndpoint()
    runtime = runtime_with(endpoint)
    runtime._on_item_added(
        added(
            llm.ChatMessage(
                role="assistant",
                content=["x"],
                metrics={"llm_node_ttft": -1.0, "tts_node_ttfb": 3600.0, "e2e_latency": 1.0},
            )
        )
    )
    await runtime.reporter.aclose()

    sample = endpoint.sent()[-1]
    assert sample["e2e_latency_ms"] == 1000.0
    assert "llm_latency_ms" not in sample and "tts_latency_ms" not in sample


def usage(input_tokens: int, output_tokens: int) -> SimpleNamespace:
    """A `session_usage_updated` event: the session's usage so far."""
    return SimpleNamespace(
        usage=AgentSessionUsage(
            model_usage=[
                LLMModelUsage(
                    provider="openai",
                    model="m",
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                ),
                TTSModelUsage(provider="cartesia", model="sonic", characters_count=99),
            ]
        )
    )


async def test_token_counts_are_deltas_of_the_cumulative_usage() -> None:
    endpoint = EventsEndpoint()
    runtime = runtime_with(endpoint)

    runtime._on_usage_updated(usage(40, 7))
    runtime._on_usage_updated(usage(40, 7))  # a TTS/STT update: no new LLM tokens
    runtime._on_usage_updated(usage(100, 20))
    await runtime.reporter.aclose()

    assert [e["tokens"] for e in endpoint.sent() if e["type"] == "metrics"] == [47, 73]


async def test_usage_is_reported_when_it_changed_and_once_more_when_the_session_closes() -> None:
    endpoint = EventsEndpoint()
    runtime = runtime_with(endpoint)

    for update in (usage(40, 7), usage(40, 7), usage(100, 20)):
        runtime._on_usage_updated(update)
        await runtime.reporter.flush()
    runtime.session.usage = usage(100, 20).usage
    runtime._on_close(SimpleNamespace(error=None))
    await runtime.reporter.aclose()

    reports = [e["usage"] for e in endpoint.sent() if e["type"] == "usage"]
    tts = {"component": "tts", "provider": "cartesia", "model": "sonic", "characters": 99}
    llm_usage = {"component": "llm", "provider": "openai", "model": "m", "cached_tokens": 0}
    assert reports == [
        [{**llm_usage, "prompt_tokens": 40, "completion_tokens": 7}, tts],
        [{**llm_usage, "prompt_tokens": 100, "completion_tokens": 20}, tts],
        [{**llm_usage, "prompt_tokens": 100, "completion_tokens": 20}, tts],
    ]


async def test_the_first_agent_is_not_a_handoff() -> None:
    endpoint = EventsEndpoint()
    runtime = runtime_with(endpoint)
    runtime._on_item_added(added(llm.AgentHandoff(old_agent_id=None, new_agent_id="greeter-agent")))
    runtime._on_item_added(
        added(llm.AgentHandoff(old_agent_id="greeter-agent", new_agent_id="meal-agent"))
    )
    await runtime.reporter.aclose()

    assert endpoint.sent() == [
        {"type": "agent_handoff", "from_agent": "greeter-agent", "to_agent": "meal-agent"}
    ]


async def test_a_session_closed_by_an_error_fails_the_call_once() -> None:
    endpoint = EventsEndpoint()
    runtime = runtime_with(endpoint)
    error = llm.LLMError(
        timestamp=0, label="openai.LLM", error=RuntimeError("401 Unauthorized"), recoverable=False
    )
    runtime._on_close(SimpleNamespace(error=error))
    runtime._on_close(SimpleNamespace(error=error))
    await runtime.reporter.aclose()

    assert endpoint.sent() == [
        {
            "type": "transcript",
            "role": "system",
            "content": "agent_error: llm_error in openai.LLM: RuntimeError('401 Unauthorized')",
            "agent_name": "meal-agent",
        },
        {"type": "status", "status": "failed", "reason": "agent_error"},
    ]


async def test_background_work_is_held_until_it_is_done() -> None:
    """A task only the event loop knows of can be garbage-collected mid-way: the runtime
    keeps a reference to what it starts from session callbacks."""
    runtime = runtime_with(EventsEndpoint())
    release = asyncio.Event()
    finished: list[str] = []

    async def work() -> None:
        await release.wait()
        finished.append("done")

    runtime.spawn(work())  # the caller keeps nothing
    gc.collect()
    assert len(runtime.background) == 1
    release.set()
    await asyncio.sleep(0.01)

    assert finished == ["done"]
    assert runtime.background == frozenset()
    await runtime.reporter.aclose()


async def test_a_call_past_its_maximum_duration_ends_timeout_max_duration_on_time() -> None:
    """Only `expire_calls` ended it, up to a pass of that job after the limit."""
    endpoint = EventsEndpoint()
    runtime = runtime_with(endpoint)
    runtime.settings = {"max_duration_seconds": 0.05}
    closed: list[bool] = []
    runtime.session.shutdown = lambda drain: closed.append(drain)

    runtime.started()
    await asyncio.sleep(0.2)
    await runtime.reporter.flush()

    statuses = [e for e in endpoint.sent() if e["type"] == "status"]
    assert statuses == [
        {"type": "status", "status": "active"},
        {"type": "status", "status": "timeout", "reason": "max_duration"},
    ]
    assert (runtime.ended, closed) == (True, [True])


@pytest.mark.parametrize(
    ("active_for", "limit", "left"),
    [
        (None, 600, 600),  # a first dispatch: the call starts now
        (datetime.timedelta(seconds=450), 600, 150),
        (datetime.timedelta(seconds=900), 600, 0),  # past it already: hang up now
        (datetime.timedelta(seconds=-30), 600, 600),  # a start ahead of this clock
    ],
)
def test_an_agent_dispatched_mid_call_has_only_the_time_the_first_run_left(
    active_for, limit, left
) -> None:
    runtime = runtime_with(EventsEndpoint())
    if active_for is not None:
        started = datetime.datetime.now(datetime.UTC) - active_for
        runtime.data = {**DATA, "started_at": started.isoformat().replace("+00:00", "Z")}

    assert runtime._duration_left(limit) == pytest.approx(left, abs=1)


@pytest.mark.parametrize(
    ("status", "current_agent", "first"),
    [
        ("active", "meal-agent", "meal-agent"),  # dispatched again mid-call: resumes
        ("connecting", None, "greeter-agent"),  # a first dispatch
        ("active", None, "greeter-agent"),  # an API before current_agent was sent
        ("active", "gone-agent", "greeter-agent"),  # a name the version does not have
    ],
)
def test_an_agent_dispatched_mid_call_resumes_with_the_agent_the_call_was_with(
    status, current_agent, first
) -> None:
    """Its worker died: starting again at the start agent sent the caller back to the
    greeting, and the API's `current_agent` no longer named who spoke."""
    runtime = runtime_with(EventsEndpoint())
    agents = [{"name": "greeter-agent"}, {"name": "meal-agent"}]
    runtime.workflow = {**DATA["workflow"], "agents": agents}
    runtime.data = {**DATA, "status": status, "current_agent": current_agent}

    assert runtime.first_agent_name() == first


@pytest.mark.parametrize("started_at", ["yesterday", "2026-01-01T10:00:00", 17])
def test_a_started_at_that_is_no_time_leaves_the_whole_duration(started_at) -> None:
    runtime = runtime_with(EventsEndpoint())
    runtime.data = {**DATA, "started_at": started_at}

    assert runtime._duration_left(600) == 600


async def test_a_call_that_ended_before_its_maximum_duration_is_left_alone() -> None:
    endpoint = EventsEndpoint()
    runtime = runtime_with(endpoint)
    runtime.settings = {"max_duration_seconds": 0.05}
    runtime.started()

    runtime._on_close(SimpleNamespace(error=None))
    await asyncio.sleep(0.2)
    await runtime.reporter.flush()

    assert [e["status"] for e in endpoint.sent() if e["type"] == "status"] == ["active"]


async def test_an_answer_cut_off_as_the_session_closes_is_left_alone() -> None:
    """The model is asked again for an answer a lost connection cut off, unless the
    session is closing already (the caller left): nothing to answer, nothing raised."""
    endpoint = EventsEndpoint()
    runtime = runtime_with(endpoint)

    def closing(**kwargs: object) -> None:
        raise RuntimeError("AgentSession isn't running")

    runtime.session.generate_reply = closing
    cut_off = llm.LLMError(
        timestamp=time.time(),
        label="openai.LLM",
        error=APIConnectionError(retryable=False),
        recoverable=False,
    )
    runtime._on_error(SimpleNamespace(error=cut_off))
    await runtime.reporter.aclose()

    assert not runtime.ended
    assert endpoint.sent() == []
