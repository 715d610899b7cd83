"""What the AgentSession does, turned into agent events: transcript lines, handoffs,
per-turn metrics, token and usage reports, and its errors and close.

Mixed into CallRuntime (agent/call.py), whose state these handlers read and keep.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from livekit.agents import AgentSession
from livekit.agents.metrics.usage import LLMModelUsage

from agent.events import tool_arguments, tool_name
from agent.provider_errors import MAX_ERROR_CHARS, cut_off_answer, describe_error, fallbacks_failed
from agent.redact import redacted
from agent.turns import agent_turn_sample, user_turn_sample
from agent.usage import usage_items

# The call's logger: these lines are the call's.
logger = logging.getLogger("voicecalls.agent.call")

# A tool line's least distance after the assistant line before it (the transcript is
# ordered by time).
TOOL_AFTER_SPEECH = 0.001


class SessionEvents:
    """The session's event handlers. CallRuntime provides the state (set in its
    `__init__`) and `agent_name`, `spawn`, `fail`, `fatal` and `_on_silence`."""

    def attach(self, session: AgentSession) -> None:
        self.session = session
        session.on("conversation_item_added", self._on_item_added)
        session.on("function_tools_executed", self._on_tools_executed)
        session.on("session_usage_updated", self._on_usage_updated)
        session.on("user_state_changed", self._on_user_state)
        session.on("error", self._on_error)
        session.on("close", self._on_close)

    def _on_item_added(self, event: Any) -> None:
        self.said(event.item)

    def said(self, item: Any) -> None:
        """A conversation item: the session's, or a turn it did not keep (one the agent
        did not answer: agent/workflow.py's `on_user_turn_completed`)."""
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
        metrics = item.metrics or {}
        # An item is added when its turn is over; order the transcript by when it began.
        spoken_at = metrics.get("started_speaking_at") or item.created_at
        if item.text_content:
            self.reporter.transcript(
                role=item.role,
                content=item.text_content,
                agent_name=self.agent_name(),
                interrupted=(item.interrupted or item.created_at < self._cut_off_at)
                if item.role == "assistant"
                else None,
                timestamp=spoken_at,
            )
        if item.role == "user":
            self._on_user_turn(metrics)
        else:
            self._assistant_spoken_at = max(self._assistant_spoken_at, spoken_at)
            self._on_agent_turn(metrics, spoken_at)

    def _on_user_turn(self, metrics: dict) -> None:
        self._silence_prompted = False
        self._answer_asked_again = False
        if self._pending_user is not None:  # a user turn that got no reply
            self._report_turn(self._pending_user)
        self._pending_user = user_turn_sample(metrics, self._components.provider_names)

    def _on_agent_turn(self, metrics: dict, spoken_at: float) -> None:
        user, self._pending_user = self._pending_user, None
        self.turn_index += 1
        sample = agent_turn_sample(user, metrics, self._components.provider_names)
        self._report_turn(sample, timestamp=spoken_at)

    def _report_turn(self, sample: dict, timestamp: float | None = None) -> None:
        providers = {k: v for k, v in sample.pop("providers").items() if v}
        self.reporter.metrics(
            **sample,
            providers=providers or None,
            agent_name=self.agent_name(),
            turn_index=self.turn_index,
            timestamp=timestamp,
        )

    def _on_tools_executed(self, event: Any) -> None:
        """Each call a `tool` line. livekit-agents runs a tool as soon as the speech said
        before it is scheduled (its `created_at`), before that speech is heard (the
        assistant line's time): the line goes after what the agent said before it, which
        is always reported first (the message is added once played, then the tools are
        awaited)."""
        agent_name = self.agent_name()
        after_speech = self._assistant_spoken_at + TOOL_AFTER_SPEECH
        for call, output in event.zipped():
            content = output.output if output is not None else ""
            tool_call = {"name": tool_name(call.name), "arguments": tool_arguments(call.arguments)}
            if output is not None and output.is_error:
                # The content is the error the model was told: a run dispatched again
                # mid-call tells it the same (agent/resume.py).
                tool_call["is_error"] = True
            self.reporter.transcript(
                role="tool",
                content=content if isinstance(content, str) else str(content),
                agent_name=agent_name,
                tool_call=tool_call,
                timestamp=max(call.created_at, after_speech),
            )

    def _on_usage_updated(self, event: Any) -> None:
        self._report_usage(event.usage.model_usage)
        self._report_tokens(event)

    def _report_usage(self, model_usage: Any, *, final: bool = False) -> None:
        """The usage so far per provider and model, when it changed: the session emits
        an update for every metric (VAD ones too), most of them changing nothing. The
        API keeps the newest report, so the last one at the close is sent regardless."""
        items = usage_items(model_usage, self._components.provider_names)
        if not items or (items == self._usage_reported and not final):
            return
        self._usage_reported = items
        self.reporter.usage(items)

    def _report_tokens(self, event: Any) -> None:
        """The `metrics` samples' tokens: the API sums samples, so the delta."""
        total = sum(
            usage.input_tokens + usage.output_tokens
            for usage in event.usage.model_usage
            if isinstance(usage, LLMModelUsage)
        )
        delta = total - self._tokens_seen
        if delta > 0:
            self._tokens_seen = total
            self.reporter.metrics(
                tokens=delta, agent_name=self.agent_name(), turn_index=self.turn_index
            )

    def _on_user_state(self, event: Any) -> None:
        if event.new_state == "speaking":
            self._silence_prompted = False
        elif event.new_state == "away":
            self._on_silence()

    def _on_error(self, event: Any) -> None:
        # A recoverable error is retried by livekit-agents (said once a kind: the caller
        # may leave meanwhile); any other ends the call, but for one answer cut off
        # mid-way (a network blip), asked again once a caller turn.
        component = str(getattr(event.error, "type", "")).removesuffix("_error")
        provider = self._components.named(getattr(event, "source", None))
        if getattr(event.error, "recoverable", True):
            if provider is not None:
                self._errors.record(component, provider, event.error)
            if component == "stt" and self._errors.stt_gave_up(event.error):
                self.spawn(self.fatal(self._describe(event.error)))
            return
        if cut_off_answer(event.error) and not self._answer_asked_again and not self.ended:
            self._answer_asked_again = True
            if provider is not None:
                self._errors.record(component, provider, event.error)
            self._cut_off_at = getattr(event.error, "timestamp", 0.0)
            logger.warning(
                "call %s: an answer was cut off, asked again: %s",
                self.call_id,
                redacted(describe_error(event.error))[:MAX_ERROR_CHARS],
            )
            if self.session is not None:
                with contextlib.suppress(RuntimeError):  # the session is closing already
                    self.session.generate_reply()
            return
        # The apology cannot play through a TTS that just failed: the call ends at once.
        self.spawn(self.fatal(self._describe(event.error), apologise=component != "tts"))

    def _on_close(self, event: Any) -> None:
        # Runs before the job's own close handler (attached first), so the final totals
        # are queued before the job's last flush.
        if self._max_duration is not None:
            self._max_duration.cancel()
        if self.session is not None:
            self._report_usage(self.session.usage.model_usage, final=True)
        if event.error is not None:
            self.fail(self._describe(event.error))

    def _describe(self, error: Any) -> str:
        component = str(getattr(error, "type", "")).removesuffix("_error")
        return fallbacks_failed(error, self._components.failures(component))
