"""One call: its agents built from the session payload, and what the AgentSession does
turned into agent events (transcript, handoffs, per-turn metrics, status).

Kept free of the LiveKit room so tests can drive it with a text-only AgentSession.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from livekit.agents import AgentSession
from livekit.agents.metrics.usage import LLMModelUsage

from agent.providers import ComponentCache
from agent.reporter import EventReporter
from agent.workflow import ToolRunner, WorkflowAgent, build_agents

logger = logging.getLogger("voicecalls.agent.call")

MAX_LATENCY_MS = 10 * 60 * 1000  # the API refuses more: a clock or unit bug
MAX_ERROR_CHARS = 300
HANGUP_FLUSH_TIMEOUT = 5.0


def _ms(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    value = round(seconds * 1000, 1)
    return value if 0 <= value <= MAX_LATENCY_MS else None


def _arguments(raw: str) -> dict:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_value": value}


class CallRuntime:
    def __init__(
        self,
        session_data: dict,
        reporter: EventReporter,
        *,
        components: ComponentCache,
        runner: ToolRunner,
        on_hangup: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.data = session_data
        self.call_id = str(session_data["call_id"])
        self.workflow = session_data["workflow"]
        self.reporter = reporter
        self.runner = runner
        self._components = components
        self._on_hangup = on_hangup
        self.session: AgentSession | None = None
        self.agents: dict[str, WorkflowAgent] = {}
        self.ended = False
        self.hung_up = False
        self.turn_index = 0
        self._pending_stt_ms: float | None = None
        self._tokens_seen = 0

    # -- building ------------------------------------------------------------------------

    def build(self) -> WorkflowAgent:
        """Every agent; the start agent. Raises ComponentError (unknown provider, no key)."""
        self.agents = build_agents(
            self.workflow, components=self._components, runner=self.runner, hang_up=self.hang_up
        )
        return self.agents[self.workflow["start_agent"]]

    # -- status --------------------------------------------------------------------------

    def started(self) -> None:
        """The session runs with the user in the room."""
        self.reporter.status("active")

    def fail(self, detail: str) -> None:
        """A fatal error: say why in the transcript, end the call `failed`/`agent_error`.

        The API keeps `reason` as a machine code (`^[a-z0-9_]+$`), so the human detail
        goes in a system transcript line ("agent_error: missing key for llm")."""
        if self.ended:
            return
        self.ended = True
        detail = detail[:MAX_ERROR_CHARS]
        logger.error("call %s failed: %s", self.call_id, detail)
        self.reporter.transcript(
            role="system", content=f"agent_error: {detail}", agent_name=self._agent_name()
        )
        self.reporter.status("failed", reason="agent_error")

    async def hang_up(self) -> None:
        """The agent ends the call (its `end_call` tool): after the goodbye is spoken."""
        if self.ended:
            return
        self.ended = True
        self.hung_up = True
        self.reporter.status("completed", reason="agent_hangup")
        # Recorded before the room goes: the API then ends the call as an agent hang-up.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reporter.flush(), HANGUP_FLUSH_TIMEOUT)
        if self.session is not None:
            self.session.shutdown(drain=True)
        if self._on_hangup is not None:
            await self._on_hangup()

    # -- session events → agent events ---------------------------------------------------

    def attach(self, session: AgentSession) -> None:
        self.session = session
        session.on("conversation_item_added", self._on_item_added)
        session.on("function_tools_executed", self._on_tools_executed)
        session.on("session_usage_updated", self._on_usage_updated)
        session.on("close", self._on_close)

    def _agent_name(self) -> str | None:
        try:
            agent = self.session.current_agent if self.session is not None else None
        except RuntimeError:
            agent = None
        return agent.id if agent is not None else self.workflow.get("start_agent")

    def _on_item_added(self, event: Any) -> None:
        item = event.item
        if item.type == "agent_handoff":
            # The session's first agent arrives as a handoff from nobody: not a handoff.
            if item.old_agent_id:
                self.reporter.handoff(
                    from_agent=item.old_agent_id,
                    to_agent=item.new_agent_id,
                    timestamp=item.created_at,
                )
            return
        if item.type != "message" or item.role not in ("user", "assistant"):
            return
        text = item.text_content or ""
        agent_name = self._agent_name()
        metrics = item.metrics or {}
        # An item is added when its turn is over; order the transcript by when it began.
        spoken_at = metrics.get("started_speaking_at") or item.created_at
        if text:
            self.reporter.transcript(
                role=item.role, content=text, agent_name=agent_name, timestamp=spoken_at
            )
        if item.role == "user":
            if self._pending_stt_ms is not None:  # a user turn that got no reply
                self.reporter.metrics(
                    stt_latency_ms=self._pending_stt_ms,
                    agent_name=agent_name,
                    turn_index=self.turn_index,
                )
            self._pending_stt_ms = _ms(metrics.get("transcription_delay"))
            return
        self.turn_index += 1
        self.reporter.metrics(
            stt_latency_ms=self._pending_stt_ms,
            llm_latency_ms=_ms(metrics.get("llm_node_ttft")),
            tts_latency_ms=_ms(metrics.get("tts_node_ttfb")),
            e2e_latency_ms=_ms(metrics.get("e2e_latency")),
            agent_name=agent_name,
            turn_index=self.turn_index,
            timestamp=spoken_at,
        )
        self._pending_stt_ms = None

    def _on_tools_executed(self, event: Any) -> None:
        agent_name = self._agent_name()
        for call, output in event.zipped():
            content = output.output if output is not None else ""
            self.reporter.transcript(
                role="tool",
                content=content if isinstance(content, str) else str(content),
                agent_name=agent_name,
                tool_call={"name": call.name, "arguments": _arguments(call.arguments)},
                timestamp=call.created_at,
            )

    def _on_usage_updated(self, event: Any) -> None:
        """The session's usage is cumulative; the API sums samples: report the delta."""
        total = sum(
            usage.input_tokens + usage.output_tokens
            for usage in event.usage.model_usage
            if isinstance(usage, LLMModelUsage)
        )
        delta = total - self._tokens_seen
        if delta > 0:
            self._tokens_seen = total
            self.reporter.metrics(
                tokens=delta, agent_name=self._agent_name(), turn_index=self.turn_index
            )

    def _on_close(self, event: Any) -> None:
        error = event.error
        if error is not None:
            cause = getattr(error, "error", error)
            self.fail(f"{error.type} in {getattr(error, 'label', '?')}: {cause!r}")
