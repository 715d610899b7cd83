"""The LiveKit job: one call room, one AgentSession running the call's workflow."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

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
from agent.providers import ComponentCache, ComponentError
from agent.reporter import EventReporter
from agent.workflow import ToolRunner

logger = logging.getLogger("voicecalls.agent")

# The job's shutdown callbacks get `shutdown_process_timeout` (10 s) in all: the final
# flush must fit in it.
FLUSH_TIMEOUT = 7.0
SESSION_FETCH_ATTEMPTS = 4
# Endpointing on voice activity needs no model download and no LiveKit Cloud.
TURN_HANDLING = {"turn_detection": "vad", "interruption": {"mode": "vad"}}
# Tool calls the model may chain in one turn (several meals, then a handoff).
MAX_TOOL_STEPS = 5


def call_id_from_metadata(metadata: str | None) -> str:
    """The call id from the dispatch metadata (`{"call_id": ...}`, set by the API)."""
    try:
        call_id = json.loads(metadata or "")["call_id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"job metadata has no call_id: {metadata!r}") from exc
    if not isinstance(call_id, str) or not call_id:
        raise ValueError(f"job metadata has no call_id: {metadata!r}")
    return call_id


async def fetch_session(api: AgentAPI, call_id: str) -> dict:
    """The call's session, retrying briefly while the API is unreachable or failing."""
    for attempt in range(SESSION_FETCH_ATTEMPTS):
        try:
            return await api.get_session(call_id)
        except AgentAPIError as exc:
            if not exc.retryable or attempt == SESSION_FETCH_ATTEMPTS - 1:
                raise
            logger.warning("call %s: fetching the session failed (%s); retrying", call_id, exc)
            await asyncio.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def prewarm(proc: JobProcess) -> None:
    from livekit.plugins import silero

    proc.userdata["vad"] = silero.VAD.load()


async def entrypoint(ctx: JobContext) -> None:
    config = Config.from_env()
    try:
        call_id = call_id_from_metadata(ctx.job.metadata)
    except ValueError as exc:
        logger.error("%s; leaving room %s", exc, ctx.job.room.name)
        ctx.shutdown(reason="no call_id")
        return

    api = AgentAPI(config.api_url, config.agent_key)
    reporter = EventReporter(api, call_id)
    reporter.start()
    runner = ToolRunner(call_id=call_id, allow_private_urls=config.tools_allow_private_urls)

    async def flush_on_shutdown(reason: str) -> None:
        await runner.aclose()
        await reporter.aclose(timeout=FLUSH_TIMEOUT)

    ctx.add_shutdown_callback(flush_on_shutdown)

    try:
        data = await fetch_session(api, call_id)
    except AgentAPIError as exc:
        # Without a session there is nothing to run, and nobody to report to.
        logger.error("call %s: cannot fetch its session: %s %s", call_id, exc, exc.body)
        ctx.shutdown(reason="session unavailable")
        return

    runtime = CallRuntime(
        data,
        reporter,
        components=ComponentCache(),
        runner=runner,
    )
    try:
        start_agent = runtime.build()
    except ComponentError as exc:
        runtime.fail(str(exc))
        ctx.shutdown(reason="agent_error")
        return

    try:
        await ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
        user_identity = f"user-{call_id}"
        await ctx.wait_for_participant(identity=user_identity)

        session = AgentSession(
            vad=ctx.proc.userdata["vad"],
            turn_handling=TURN_HANDLING,
            max_tool_steps=MAX_TOOL_STEPS,
        )
        runtime.attach(session)

        async def end_job(reason: str) -> None:
            if runtime.hung_up:
                # The agent hung up: close the room, which disconnects the user.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ctx.delete_room(), 5)
            ctx.shutdown(reason=reason)

        @session.on("close")
        def _closed(event: object) -> None:
            asyncio.create_task(end_job(f"session closed: {getattr(event, 'reason', '')}"))

        runtime.started()
        await session.start(
            start_agent,
            room=ctx.room,
            room_options=room_io.RoomOptions(
                participant_identity=user_identity, close_on_disconnect=True
            ),
            record=False,
        )
    except Exception as exc:
        logger.exception("call %s: the session failed", call_id)
        runtime.fail(f"{type(exc).__name__}: {exc}")
        ctx.shutdown(reason="agent_error")


def worker_options(config: Config) -> WorkerOptions:
    """LiveKit URL and credentials come from LIVEKIT_URL, LIVEKIT_API_KEY and
    LIVEKIT_API_SECRET; `agent_name` makes dispatch explicit (the call's token asks for
    this agent by name)."""
    return WorkerOptions(
        entrypoint_fnc=entrypoint,
        prewarm_fnc=prewarm,
        agent_name=config.agent_name,
    )
