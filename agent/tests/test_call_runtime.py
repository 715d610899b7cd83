"""Session events → agent events, for what a text-only session cannot produce (speech
timings from a voice pipeline, usage snapshots)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from livekit.agents import llm
from livekit.agents.metrics.usage import LLMModelUsage, TTSModelUsage

from agent.call import CallRuntime
from agent.providers import ComponentCache
from agent.workflow import ToolRunner

DATA = {"call_id": "c1", "workflow": {"start_agent": "greeter-agent", "agents": []}}


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def report(self, event_type: str, **fields: object) -> dict:
        event = {"type": event_type, **{k: v for k, v in fields.items() if v is not None}}
        event.pop("timestamp", None)
        self.events.append(event)
        return event

    def transcript(self, **fields: object) -> dict:
        return self.report("transcript", **fields)

    def handoff(self, **fields: object) -> dict:
        return self.report("agent_handoff", **fields)

    def metrics(self, **fields: object) -> dict:
        return self.report("metrics", **fields)

    def status(self, status: str, reason: str | None = None) -> dict:
        return self.report("status", status=status, reason=reason)


def runtime_with(recorder: Recorder, agent: str = "meal-agent") -> CallRuntime:
    runtime = CallRuntime(
        DATA, recorder, components=ComponentCache(), runner=ToolRunner(call_id="c1")
    )
    runtime.session = SimpleNamespace(current_agent=SimpleNamespace(id=agent))
    return runtime


def added(item: object) -> SimpleNamespace:
    return SimpleNamespace(item=item)


def test_a_voice_turn_becomes_one_latency_sample():
    recorder = Recorder()
    runtime = runtime_with(recorder)
    now = time.time()
    runtime._on_item_added(
        added(
            llm.ChatMessage(
                role="user",
                content=["I had soup"],
                metrics={"started_speaking_at": now, "transcription_delay": 0.21},
            )
        )
    )
    runtime._on_item_added(
        added(
            llm.ChatMessage(
                role="assistant",
                content=["Noted."],
                metrics={
                    "started_speaking_at": now + 2,
                    "llm_node_ttft": 0.3456,
                    "tts_node_ttfb": 0.15,
                    "e2e_latency": 0.9,
                },
            )
        )
    )
    assert recorder.events == [
        {"type": "transcript", "role": "user", "content": "I had soup", "agent_name": "meal-agent"},
        {
            "type": "transcript",
            "role": "assistant",
            "content": "Noted.",
            "agent_name": "meal-agent",
        },
        {
            "type": "metrics",
            "stt_latency_ms": 210.0,
            "llm_latency_ms": 345.6,
            "tts_latency_ms": 150.0,
            "e2e_latency_ms": 900.0,
            "agent_name": "meal-agent",
            "turn_index": 1,
        },
    ]


def test_a_user_turn_without_a_reply_still_reports_its_stt_latency():
    recorder = Recorder()
    runtime = runtime_with(recorder)
    for text in ("hello", "hello?"):
        runtime._on_item_added(
            added(
                llm.ChatMessage(role="user", content=[text], metrics={"transcription_delay": 0.1})
            )
        )
    assert recorder.events[-1] == {
        "type": "metrics",
        "stt_latency_ms": 100.0,
        "agent_name": "meal-agent",
        "turn_index": 0,
    }


def test_implausible_latencies_are_left_out():
    recorder = Recorder()
    runtime = runtime_with(recorder)
    runtime._on_item_added(
        added(
            llm.ChatMessage(
                role="assistant",
                content=["x"],
                metrics={"llm_node_ttft": -1.0, "tts_node_ttfb": 3600.0, "e2e_latency": 1.0},
            )
        )
    )
    assert recorder.events[-1]["e2e_latency_ms"] == 1000.0
    assert "llm_latency_ms" not in recorder.events[-1]
    assert "tts_latency_ms" not in recorder.events[-1]


def test_token_counts_are_deltas_of_the_cumulative_usage():
    recorder = Recorder()
    runtime = runtime_with(recorder)

    def usage(input_tokens: int, output_tokens: int) -> SimpleNamespace:
        return SimpleNamespace(
            usage=SimpleNamespace(
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

    runtime._on_usage_updated(usage(40, 7))
    runtime._on_usage_updated(usage(40, 7))  # a TTS/STT update: no new LLM tokens
    runtime._on_usage_updated(usage(100, 20))
    assert [e["tokens"] for e in recorder.events] == [47, 73]


def test_the_first_agent_is_not_a_handoff():
    recorder = Recorder()
    runtime = runtime_with(recorder)
    runtime._on_item_added(added(llm.AgentHandoff(old_agent_id=None, new_agent_id="greeter-agent")))
    runtime._on_item_added(
        added(llm.AgentHandoff(old_agent_id="greeter-agent", new_agent_id="meal-agent"))
    )
    assert recorder.events == [
        {"type": "agent_handoff", "from_agent": "greeter-agent", "to_agent": "meal-agent"}
    ]


def test_a_fatal_session_error_fails_the_call_once():
    recorder = Recorder()
    runtime = runtime_with(recorder)
    error = llm.LLMError(
        timestamp=0, label="openai.LLM", error=RuntimeError("401 Unauthorized"), recoverable=False
    )
    runtime._on_close(SimpleNamespace(error=error))
    runtime._on_close(SimpleNamespace(error=error))
    assert recorder.events == [
        {
            "type": "transcript",
            "role": "system",
            "content": "agent_error: llm_error in openai.LLM: RuntimeError('401 Unauthorized')",
            "agent_name": "meal-agent",
        },
        {"type": "status", "status": "failed", "reason": "agent_error"},
    ]
