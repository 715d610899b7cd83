"""The LiveKit job: one call room, one AgentSession running the call's workflow.

`entrypoint` is what LiveKit runs: a dispatch names its call (`{"call_id"}`, from the
API), or is an inbound phone call's (agent/inbound.py finds its call first). `CallJob`
is the job's life, in steps tests can drive without a LiveKit server: `prepare` (the
session, bounded in time; a late or duplicate dispatch leaves here), `start` (the
AgentSession with the workflow's turn-taking), and `close` (whenever the session
closes: every event delivered, the room deleted, the job shut down, so nobody is left
in a silent room).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from livekit import rtc
from livekit.agents import (
    AgentSession,
    AutoSubscribe,
    JobContext,
    JobProcess,
    WorkerOptions,
    room_io,
)

from agent.api import AgentAPI, AgentAPIError
from agent.call import CallRuntime
from agent.config import Config
from agent.languages import call_language
from agent.phone import CalleeGone, answer_timeout, masked, room_masked, wait_for_callee
from agent.providers import ComponentCache, ComponentError, build_component, connect_options
from agent.redact import log_redaction_install
from agent.reporter import EventReporter
from agent.resume import resume
from agent.workflow import ToolRunner

logger = logging.getLogger("voicecalls.agent")

# The job's shutdown callbacks get `shutdown_process_timeout` (10 s) in all: the final
# flush must fit in it.
FLUSH_TIMEOUT = 7.0
# All of the shutdown callback (the session's close, the job's, then the flush), and
# what the flush keeps at least of it.
SHUTDOWN_BUDGET = 9.0
FLUSH_MINIMUM = 2.0
# Before the room is deleted, what the call reported must be at the API.
CLOSE_FLUSH_TIMEOUT = 5.0
ROOM_DELETE_TIMEOUT = 5.0
# The whole session fetch, retries included; each try gets what is left, at most
# SESSION_ATTEMPT_TIMEOUT. A caller hears nothing until it is over.
SESSION_FETCH_DEADLINE = 12.0
SESSION_ATTEMPT_TIMEOUT = 5.0
# A session fetched later than this: the first agent apologises for the wait.
SESSION_LATE_AFTER = 2.5
# livekit-agents' away timer when the workflow sets no silence timeout (its default).
DEFAULT_USER_AWAY_TIMEOUT = 15.0
# Tool calls the model may chain in one turn (several meals, then a handoff).
MAX_TOOL_STEPS = 5
# The call ends at its first unrecoverable provider error, once the apology is said
# (agent/call.py's `fatal`, at most 15 s). livekit-agents closes the session itself at
# its 4th in a row (`max_unrecoverable_errors`, 3), and a refused STT key fails again
# every half second: that close cut the apology short. Past this many, it still does.
MAX_UNRECOVERABLE_ERRORS = 100
ENDED_STATUSES = frozenset({"completed", "failed", "disconnected", "timeout"})


def call_id_from_metadata(metadata: str | None) -> str:
    """The call id from the dispatch metadata (`{"call_id": ...}`, set by the API)."""
    try:
        call_id = json.loads(metadata or "")["call_id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"job metadata has no call_id: {metadata!r}") from exc
    if not isinstance(call_id, str) or not call_id:
        raise ValueError(f"job metadata has no call_id: {metadata!r}")
    return call_id


def inbound_number_from_metadata(metadata: str | None) -> str | None:
    """The number called, from the metadata LiveKit's SIP dispatch rule gives an inbound
    call's dispatch (`{"phone_number": ..., "phone_number_id": ...}`, no call yet)."""
    try:
        number = json.loads(metadata or "").get("phone_number")
    except (ValueError, AttributeError):
        return None
    return number if isinstance(number, str) and number else None


async def with_retries(
    request: Callable[[float], Awaitable[dict]], *, what: str, deadline: float
) -> dict:
    """`request(attempt_timeout)`, retried on network errors and 5xx within `deadline`
    seconds in all; an AgentAPIError (retryable: no answer) once they are over."""
    try:
        async with asyncio.timeout(deadline):
            attempt = 0
            while True:
                try:
                    return await request(SESSION_ATTEMPT_TIMEOUT)
                except AgentAPIError as exc:
                    if not exc.retryable:
                        raise
                    logger.warning("%s failed (%s)", what, exc)
                    wait = max(0.5 * 2**attempt, exc.retry_after or 0.0)
                await asyncio.sleep(wait)
                attempt += 1
    except TimeoutError as exc:
        raise AgentAPIError(f"{what}: no answer within {deadline} s") from exc


async def fetch_session(
    api: AgentAPI, call_id: str, *, deadline: float = SESSION_FETCH_DEADLINE
) -> dict:
    """The call's session, retried on network errors and 5xx within `deadline` seconds
    in all; an AgentAPIError (retryable: no answer) once they are over."""
    return await with_retries(
        lambda timeout: api.get_session(call_id, timeout=timeout),
        what=f"GET calls/{call_id}/session",
        deadline=deadline,
    )


async def close_room(ctx: JobContext, reason: str) -> None:
    """Delete the job's room (by its name: before the job connects, `ctx.room` has
    none), then end the job. Nobody is left in a silent room."""
    deletion = ctx.delete_room(room_name=ctx.job.room.name)
    with contextlib.suppress(Exception):  # logged by livekit-agents
        await asyncio.wait_for(deletion, ROOM_DELETE_TIMEOUT)
    ctx.shutdown(reason=reason)


def session_options(settings: dict, *, turn_detection: str = "vad") -> dict[str, Any]:
    """AgentSession options from the workflow's settings (defaults: livekit-agents' own).
    Endpointing on voice activity (Silero) needs no model download and no LiveKit Cloud;
    `turn_detection="stt"` ends turns on the STT's end of speech instead."""
    interruption: dict[str, Any] = {
        "enabled": settings.get("allow_interruptions", True),
        "false_interruption_timeout": settings.get("false_interruption_timeout", 2.0),
        "resume_false_interruption": settings.get("resume_false_interruption", True),
    }
    if turn_detection == "vad":
        interruption["mode"] = "vad"
    return {
        "turn_handling": {
            "turn_detection": turn_detection,
            "endpointing": {
                "min_delay": settings.get("min_endpointing_delay", 0.5),
                "max_delay": settings.get("max_endpointing_delay", 3.0),
            },
            "interruption": interruption,
        },
        "user_away_timeout": settings.get("silence_timeout_seconds") or DEFAULT_USER_AWAY_TIMEOUT,
        "max_tool_steps": MAX_TOOL_STEPS,
        # Each provider's bounded wait: the caller hears nothing meanwhile.
        "conn_options": connect_options(max_unrecoverable_errors=MAX_UNRECOVERABLE_ERRORS),
    }


class CallJob:
    """One dispatch of one call: `run` in a LiveKit room, or its steps in tests."""

    def __init__(
        self,
        ctx: JobContext,
        *,
        config: Config,
        call_id: str,
        api: AgentAPI | None = None,
        build: Callable[[str, dict, str | None], Any] = build_component,
        fetch_deadline: float = SESSION_FETCH_DEADLINE,
        late_after: float = SESSION_LATE_AFTER,
        session_data: dict | None = None,
        user_identity: str | None = None,
        late: bool = False,
    ) -> None:
        self.ctx = ctx
        self.call_id = call_id
        self.api = api or AgentAPI(config.api_url, config.agent_key)
        # An inbound call's session and caller are known before the job (agent/inbound.py).
        self._session_data = session_data
        self.user_identity = user_identity or f"user-{call_id}"
        self._inbound_caller = user_identity is not None
        self._late = late
        # Where DTMF tones go on a phone call (tests put a stand-in here).
        self.room: Any = ctx.room
        self.reporter = EventReporter(self.api, call_id)
        self.runner = ToolRunner(
            call_id=call_id, allow_private_urls=config.tools_allow_private_urls
        )
        self.runtime: CallRuntime | None = None
        self._build = build  # the plugin factory (in tests: the providers' stand-ins)
        self._fetch_deadline = fetch_deadline
        self._late_after = late_after
        self._closing: asyncio.Task | None = None
        self.reporter.start()
        ctx.add_shutdown_callback(self._flush_on_shutdown)

    async def _flush_on_shutdown(self, reason: str) -> None:
        """livekit-agents runs the shutdown callbacks at once, the session's own close
        among them: what the session reports as it closes (its final usage, a failure)
        and the job's close are awaited first, then the reporter's flush and close."""
        loop = asyncio.get_running_loop()
        flush_by = loop.time() + SHUTDOWN_BUDGET - FLUSH_MINIMUM
        session = self.runtime.session if self.runtime is not None else None
        if session is not None and self._closing is None:
            # Closed here, or by its own callback: this waits for that close's lock (its
            # teardown takes seconds), under which its `close` event starts the job's.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.aclose(), max(0.0, flush_by - loop.time()))
        if self._closing is not None:
            with contextlib.suppress(Exception):
                left = max(0.0, flush_by - loop.time())
                await asyncio.wait_for(asyncio.shield(self._closing), left)
        await self.runner.aclose()
        left = flush_by + FLUSH_MINIMUM - loop.time()
        await self.reporter.aclose(timeout=min(FLUSH_TIMEOUT, max(FLUSH_MINIMUM, left)))

    async def prepare(self, *, vad: Any = None) -> CallRuntime | None:
        """The call's runtime with its agents built; None when this job must not run the
        call (ended, not this room, no session, a component missing: said and done)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        data = self._session_data
        if data is None:
            try:
                data = await fetch_session(self.api, self.call_id, deadline=self._fetch_deadline)
            except AgentAPIError as exc:
                return self._leave(exc)
        room = self.ctx.job.room.name
        if data["status"] in ENDED_STATUSES or data["room_name"] != room:
            # A late or duplicate dispatch: another job ran (or runs) this call.
            logger.warning(
                "call %s (%s, room %s) is not this job's to run in room %s",
                self.call_id,
                data["status"],
                data["room_name"],
                room,
            )
            self.ctx.shutdown(reason="not this job's call")
            return None
        # Sessions from a web service without tool signing have none: sent unsigned.
        self.runner.signing_secrets = list(data.get("tool_signing_secrets") or [])
        components = ComponentCache(self._build, language=call_language(data), vad=vad)
        late = self._late or loop.time() - started > self._late_after
        runtime = CallRuntime(
            data,
            self.reporter,
            components=components,
            runner=self.runner,
            api=self.api,
            room=self.room,
            late=late,
        )
        try:
            runtime.build()
        except ComponentError as exc:
            runtime.fail(str(exc))
            await self.close("agent_error")
            return None
        self.runtime = runtime
        return runtime

    def _leave(self, exc: AgentAPIError) -> None:
        if exc.status_code == 409 and exc.code == "call_ended":
            logger.warning("call %s has ended: this dispatch leaves", self.call_id)
            self.ctx.shutdown(reason="call ended")
        else:
            # Without a session there is nothing to run, and nobody to report to.
            logger.error("call %s: cannot fetch its session: %s %s", self.call_id, exc, exc.body)
            self.ctx.shutdown(reason="session unavailable")

    def session(
        self, runtime: CallRuntime, *, turn_detection: str = "vad", **overrides: Any
    ) -> AgentSession:
        """The AgentSession for the call, with the workflow's turn-taking settings."""
        options = session_options(runtime.settings, turn_detection=turn_detection)
        return AgentSession(**{**options, **overrides})

    async def start(self, runtime: CallRuntime, session: AgentSession, **start: Any) -> Any:
        """Run the call's first agent in `session`; closing it ends the job.

        No session host: livekit-agents (1.8.9) would otherwise host the session for
        remote control over the room, answering anyone in it (the call's user) the
        agent's instructions, tools and chat context, taking their turns and muting its
        input, and sending every session event (tool answers, usage) to all of them."""
        runtime.attach(session)
        session.on("close", self._on_close)
        runtime.started()
        first_agent = runtime.agents[runtime.first_agent_name()]
        await resume(runtime, session, first_agent)
        return await session.start(first_agent, record=False, session_host=False, **start)

    def _on_close(self, event: Any) -> None:
        reason = getattr(getattr(event, "reason", None), "value", "closed")
        self._closing = self._closing or asyncio.get_running_loop().create_task(
            self.close(f"session closed: {reason}")
        )

    async def close(self, reason: str) -> None:
        """The end of the job: what the call reported reaches the API (so the room's own
        webhooks cannot relabel its end), then the room goes, then the job."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reporter.flush(), CLOSE_FLUSH_TIMEOUT)
        await close_room(self.ctx, reason)

    async def wait_for_user(self, runtime: CallRuntime, room: rtc.Room) -> bool:
        """The user in the room: a web caller once joined, a phone once answered (its
        SIP participant joins while it rings). False when a phone was never answered:
        the job is closed without a word, since the API owns how an unanswered call
        ended (busy, no answer, ...) and nobody is there to hear the agent."""
        identity = self.user_identity
        if self._inbound_caller:
            return True  # the caller is in the room: their SIP participant asked for the call
        if runtime.channel != "phone":
            await self.ctx.wait_for_participant(identity=identity)
            return True
        try:
            callee = await wait_for_callee(
                room, identity=identity, timeout=answer_timeout(runtime.settings)
            )
        except CalleeGone as exc:
            logger.warning("call %s to %s: %s", self.call_id, masked(runtime.phone_number), exc)
            await self.close("phone not answered")
            return False
        runtime.answered(callee)
        return True

    async def run(self) -> None:
        """The whole job in a LiveKit room (what the tests drive step by step)."""
        vad = self.ctx.proc.userdata.get("vad")  # loaded by `prewarm`
        runtime = await self.prepare(vad=vad)
        if runtime is None:
            return
        try:
            await self.ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
            if not await self.wait_for_user(runtime, self.ctx.room):
                return
            session = self.session(runtime, vad=vad)
            await self.start(
                runtime,
                session,
                room=self.ctx.room,
                room_options=room_io.RoomOptions(
                    participant_identity=self.user_identity, close_on_disconnect=True
                ),
            )
        except Exception as exc:
            logger.exception("call %s: the session failed", self.call_id)
            runtime.fail(f"{type(exc).__name__}: {exc}")
            await self.close("agent_error")


def prewarm(proc: JobProcess) -> None:
    log_redaction_install()  # a job process's own lines name its room
    from livekit.plugins import silero

    proc.userdata["vad"] = silero.VAD.load()


async def entrypoint(ctx: JobContext) -> None:
    config = Config.from_env()
    try:
        call_id = call_id_from_metadata(ctx.job.metadata)
    except ValueError as exc:
        if inbound_number_from_metadata(ctx.job.metadata):
            # Imported here: an inbound call is a CallJob once the API named the call.
            from agent.inbound import InboundCall

            await InboundCall(ctx, config=config).run()
            return
        logger.error("%s; leaving room %s", exc, room_masked(ctx.job.room.name))
        ctx.shutdown(reason="no call_id")
        return
    await CallJob(ctx, config=config, call_id=call_id).run()


def worker_options(config: Config) -> WorkerOptions:
    """LiveKit URL and credentials come from LIVEKIT_URL, LIVEKIT_API_KEY and
    LIVEKIT_API_SECRET; `agent_name` makes dispatch explicit (the call's token asks for
    this agent by name)."""
    log_redaction_install()  # livekit-agents logs the room of every job it is offered
    return WorkerOptions(
        entrypoint_fnc=entrypoint,
        prewarm_fnc=prewarm,
        agent_name=config.agent_name,
    )
