"""One call: its agents built from the session payload, how it ends (hang-up after the
goodbye, an apology on a fatal error, silence), and what the AgentSession does turned
into agent events (transcript, handoffs, per-turn metrics, status: agent/session_events.py).

Kept free of the LiveKit room so tests can drive it with a room-less AgentSession.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Coroutine
from typing import Any

from livekit.agents import AgentSession, RunContext

from agent.api import AgentAPI
from agent.phone import Callee, masked
from agent.provider_errors import MAX_ERROR_CHARS, ProviderErrors
from agent.providers import ComponentCache
from agent.redact import log_secrets_add, redacted, session_keys
from agent.reporter import EventReporter
from agent.session_events import SessionEvents
from agent.telephony import PhoneLine
from agent.workflow import ToolRunner, WorkflowAgent, build_agents

logger = logging.getLogger("voicecalls.agent.call")

# How long the apology for a fatal error may take to play before the call closes.
APOLOGY_TIMEOUT = 15.0
SILENCE_INSTRUCTIONS = (
    "The caller has said nothing for a while. Ask, in one short sentence, whether they "
    "are still there."
)


class CallRuntime(SessionEvents):
    def __init__(
        self,
        session_data: dict,
        reporter: EventReporter,
        *,
        components: ComponentCache,
        runner: ToolRunner,
        api: AgentAPI | None = None,
        room: Any = None,
        late: bool = False,
    ) -> None:
        self.data = session_data
        self.call_id = str(session_data["call_id"])
        self.workflow = session_data["workflow"]
        # Sessions from an API before phone calls say neither: those calls are web calls.
        self.channel: str = session_data.get("channel") or "web"
        self.direction: str | None = session_data.get("direction")
        self.phone_number: str | None = session_data.get("phone_number")
        self.settings: dict = self.workflow.get("settings") or {}
        self.reporter = reporter
        self.runner = runner
        self._components = components
        # Errors the call gets past, each kind said once (a fallback's too).
        self._errors = ProviderErrors(
            reporter, secrets=session_keys(session_data), agent_name=self.agent_name
        )
        components.on_failure = self._errors.record
        self.session: AgentSession | None = None
        self.agents: dict[str, WorkflowAgent] = {}
        self.ended = False
        self.hanging_up = False
        self.turn_index = 0
        self._late = late
        self._silence_prompted = False
        # An answer cut off this caller turn was asked again (`_on_error`).
        self._answer_asked_again = False
        # When the last answer was cut off: one whose reply began before (the session
        # adds its first words as an item after the error) was heard cut off.
        self._cut_off_at = 0.0
        self._max_duration: asyncio.TimerHandle | None = None
        self._pending_user: dict | None = None
        self._tokens_seen = 0
        # When the last assistant line reported began to be heard (see `_on_tools_executed`).
        self._assistant_spoken_at = 0.0
        self._usage_reported: list[dict] | None = None
        # Background work started from sync session callbacks, referenced until done.
        self._tasks: set[asyncio.Task] = set()
        # Transfers, DTMF and answering machines: phone calls only (transfers need the
        # API, which runs them).
        self.phone: PhoneLine | None = (
            PhoneLine(self, api=api, room=room)
            if self.channel == "phone" and api is not None
            else None
        )

    # -- building ------------------------------------------------------------------------

    def build(self) -> WorkflowAgent:
        """Every agent; the start agent. Raises ComponentError (unknown provider, no key)."""
        self.agents = build_agents(
            self.workflow,
            components=self._components,
            runner=self.runner,
            call=self,
            phone=self.phone,
        )
        return self.agents[self.first_agent_name()]

    @property
    def components(self) -> ComponentCache:
        return self._components

    def first_agent_name(self) -> str:
        """The start agent; for an agent dispatched again mid-call (its worker died), the
        agent the call was with, so the caller is not sent back to the first one."""
        current = self.data.get("current_agent")
        names = {agent.get("name") for agent in self.workflow.get("agents", [])}
        if self.data.get("status") == "active" and current in names:
            return current
        return self.workflow["start_agent"]

    def agent_name(self) -> str | None:
        """The agent speaking now (the start agent before the session runs)."""
        try:
            agent = self.session.current_agent if self.session is not None else None
        except RuntimeError:
            agent = None
        return agent.id if agent is not None else self.first_agent_name()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def background(self) -> frozenset[asyncio.Task]:
        """Work started from session callbacks (a hang-up, a fatal error) not yet done."""
        return frozenset(self._tasks)

    def take_late_apology(self) -> bool:
        """True once when the caller waited for the session: the first agent apologises."""
        late, self._late = self._late, False
        return late

    async def screen(self, llm: Any) -> bool:
        """Before the first greeting: True when a person is there to greet (on an
        outbound phone call an answering machine may be: agent/telephony.py)."""
        return True if self.phone is None else await self.phone.screen(llm)

    def answered_by_greeting(self, message: Any) -> bool:
        """A turn said while the agent found out who answered: the greeting answers it."""
        return self.phone is not None and self.phone.answered_by_greeting(message)

    def answered(self, callee: Callee) -> None:
        """The phone was answered. A callee who picked up after the agent was ready
        heard no silence, so a late session needs no apology."""
        if not callee.answered_before_wait:
            self._late = False
        if callee.phone_number and self.phone_number and callee.phone_number != self.phone_number:
            logger.warning(
                "call %s: the callee's sip.phoneNumber (%s) is not the call's number (%s)",
                self.call_id,
                masked(callee.phone_number),
                masked(self.phone_number),
            )

    # -- how the call ends ---------------------------------------------------------------

    def started(self) -> None:
        """The session runs with the user in the room, for the workflow's
        `max_duration_seconds` at most: then the call ends `timeout`/`max_duration` on
        time (the API's `expire_calls` would end it up to a pass later)."""
        self.reporter.status("active")
        limit = self.settings.get("max_duration_seconds")
        if limit:
            self._max_duration = asyncio.get_running_loop().call_later(
                self._duration_left(limit), self._on_max_duration
            )

    def _duration_left(self, limit: float) -> float:
        """`limit` less the time the call has been active: an agent dispatched again
        mid-call (its worker died) has only what the first run left. A start stamped
        ahead of this clock is taken as now."""
        started_at = self.data.get("started_at")
        if not started_at:
            return limit
        try:
            started = datetime.datetime.fromisoformat(started_at)
            active = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
        except (TypeError, ValueError):  # not a time, or one without its zone
            logger.warning(
                "call %s: the session's started_at %r is no time", self.call_id, started_at
            )
            return limit
        return min(limit, max(0.0, limit - active))

    def _on_max_duration(self) -> None:
        if not self.ended:
            self.spawn(self.hang_up(reason="max_duration", status="timeout"))

    def fail(self, detail: str) -> None:
        """Report a fatal error: why in the transcript, the call `failed`/`agent_error`.

        The API keeps `reason` as a machine code (`^[a-z0-9_]+$`), so the human detail
        goes in a system transcript line ("agent_error: missing key for llm")."""
        if self.ended:
            return
        self.ended = self.hanging_up = True
        self._report_failure(detail)

    def _report_failure(self, detail: str) -> None:
        # A provider's error may quote the key it was sent (an "incorrect API key" body).
        log_secrets_add(session_keys(self.data))
        detail = redacted(detail)[:MAX_ERROR_CHARS]
        logger.error("call %s failed: %s", self.call_id, detail)
        self.reporter.transcript(
            role="system", content=f"agent_error: {detail}", agent_name=self.agent_name()
        )
        self.reporter.status("failed", reason="agent_error")

    async def fatal(self, detail: str, *, apologise: bool = True) -> None:
        """A provider keeps failing: say the workflow's `error_message` when the session
        still can (not when the TTS is what failed), fail the call, close the session."""
        if self.ended:
            return
        self.ended = self.hanging_up = True
        message = self.settings.get("error_message")
        if message and apologise and self.session is not None:
            with contextlib.suppress(Exception):  # closing already, or nothing can speak
                handle = self.session.say(message, allow_interruptions=False)
                await asyncio.wait_for(handle.wait_for_playout(), APOLOGY_TIMEOUT)
        self._report_failure(detail)
        if self.session is not None:
            self.session.shutdown(drain=True)

    async def hang_up(
        self,
        context: RunContext | None = None,
        *,
        reason: str = "agent_hangup",
        status: str = "completed",
    ) -> None:
        """The agent ends the call (its `end_call` tool, silence, the maximum duration):
        once the goodbye said before it has played, report `status` and close the
        session, which closes the room (agent/worker.py). From the decision on, nothing
        is answered."""
        if self.ended:
            return
        self.ended = self.hanging_up = True
        if context is not None:
            with contextlib.suppress(RuntimeError):  # already cut off by the caller
                context.disallow_interruptions()
            await context.wait_for_playout()
        self.reporter.status(status, reason=reason)
        if self.session is not None:
            self.session.shutdown(drain=True)

    def _on_silence(self) -> None:
        """Nobody spoke for `silence_timeout_seconds`: ask once, then hang up."""
        if not self.settings.get("silence_timeout_seconds") or self.ended or not self.session:
            return
        if self._silence_prompted:
            self.spawn(self.hang_up(reason="silence_timeout"))
            return
        self._silence_prompted = True
        self.session.generate_reply(instructions=SILENCE_INSTRUCTIONS, tool_choice="none")
        # The caller is "away" until they speak; the second silence counts from here.
        self.session.reset_away_timer()
