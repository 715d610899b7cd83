"""Inbound phone calls: a caller dialed one of an organization's verified numbers.

LiveKit's SIP dispatch rule made a room for the caller (`inbound-…`) and dispatched
this agent with metadata naming the number (`{"phone_number", "phone_number_id"}`,
no call yet). The job finds the caller's SIP participant in the room, asks the API
for the room's call (`POST /api/v1/agent/inbound-calls`, get-or-create, so asking
again is safe) and then runs it as any call (agent/worker.py's CallJob), with the SIP
participant as the user. A number that is not ours (404 `unknown_number`) or a call
already over (409 `call_ended`): the room is closed without a word. A call over the
organization's concurrency limit is answered `failed`/`concurrency_limit`: the
caller hears the workflow's `busy_message`, then the room closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from livekit.agents import Agent, AgentSession, AutoSubscribe, JobContext, room_io

from agent.api import AgentAPI, AgentAPIError
from agent.config import Config
from agent.languages import call_language
from agent.phone import (
    SIP_PHONE_NUMBER,
    SIP_TRUNK_ID,
    SIP_TRUNK_PHONE_NUMBER,
    CalleeGone,
    masked,
    room_masked,
    wait_for_sip_caller,
)
from agent.providers import ComponentCache, ComponentError, build_component, connect_options
from agent.worker import (
    SESSION_FETCH_DEADLINE,
    SESSION_LATE_AFTER,
    CallJob,
    close_room,
    with_retries,
)

logger = logging.getLogger("voicecalls.agent.inbound")

# LiveKit puts the caller in the room as it creates it; past this, nobody is coming.
CALLER_TIMEOUT = 30.0
# How long the busy message may take to play before the room closes anyway.
BUSY_MESSAGE_TIMEOUT = 20.0
BUSY_REASON = "concurrency_limit"
# The longest caller id the API takes (it keeps 64 characters at most, answering a
# longer one as from an unknown caller): past this one is sent as none, not refused.
CALLER_ID_SENT_MAX = 1024


def caller_request(room_name: str, participant: Any) -> dict:
    """The inbound-calls request for the caller's SIP participant."""
    attributes = participant.attributes
    caller = attributes.get(SIP_PHONE_NUMBER, "")
    return {
        "room_name": room_name,
        "participant_identity": participant.identity,
        "phone_number": attributes.get(SIP_TRUNK_PHONE_NUMBER, ""),
        "caller": caller if len(caller) <= CALLER_ID_SENT_MAX else "",
        "sip_trunk_id": attributes.get(SIP_TRUNK_ID, ""),
    }


def is_busy(session_data: dict) -> bool:
    """The API answered a call it ended at once: over the concurrency limit."""
    return session_data.get("status") == "failed" and session_data.get("end_reason") == BUSY_REASON


class InboundCall:
    """One dispatch for an inbound caller: `run` in a LiveKit room, or its steps in
    tests (`caller`, `session`, then `job` or `busy_session`/`say_busy`)."""

    def __init__(
        self,
        ctx: JobContext,
        *,
        config: Config,
        api: AgentAPI | None = None,
        build: Callable[[str, dict, str | None], Any] = build_component,
        fetch_deadline: float = SESSION_FETCH_DEADLINE,
        late_after: float = SESSION_LATE_AFTER,
    ) -> None:
        self.ctx = ctx
        self.config = config
        self.api = api or AgentAPI(config.api_url, config.agent_key)
        self._build = build
        self._fetch_deadline = fetch_deadline
        self._late_after = late_after
        self._late = False
        self.number = "?"  # the number called, for logs (masked)

    async def caller(self, room: Any) -> Any | None:
        """The caller's SIP participant; None (the job closed) when none comes."""
        try:
            participant = await wait_for_sip_caller(room, timeout=CALLER_TIMEOUT)
        except CalleeGone as exc:
            logger.warning("inbound room %s: %s", room_masked(self.ctx.job.room.name), exc)
            await self._close("no caller")
            return None
        self.number = masked(participant.attributes.get(SIP_TRUNK_PHONE_NUMBER))
        return participant

    async def session(self, participant: Any) -> dict | None:
        """The call's session; None (the room closed without a word) when there is no
        call to run: not our number, ended already, or the API did not answer."""
        body = caller_request(self.ctx.job.room.name, participant)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            data = await with_retries(
                lambda timeout: self.api.post_inbound_call(body, timeout=timeout),
                what=f"POST inbound-calls (room {room_masked(body['room_name'])})",
                deadline=self._fetch_deadline,
            )
        except AgentAPIError as exc:
            if exc.code == "unknown_number":
                logger.warning("inbound call to %s: not a number of ours", self.number)
            elif exc.code == "call_ended":
                logger.warning("inbound call to %s has ended: this dispatch leaves", self.number)
            else:
                logger.error("inbound call to %s: no session: %s %s", self.number, exc, exc.body)
            await self._close("no inbound call")
            return None
        # The caller has been waiting in silence: the first agent apologises.
        self._late = loop.time() - started > self._late_after
        return data

    def job(self, session_data: dict, participant: Any) -> CallJob:
        """The call's job, with the caller's SIP participant as its user."""
        return CallJob(
            self.ctx,
            config=self.config,
            call_id=str(session_data["call_id"]),
            api=self.api,
            build=self._build,
            session_data=session_data,
            user_identity=participant.identity,
            late=self._late,
        )

    def busy_session(self, session_data: dict) -> AgentSession | None:
        """A session that only speaks, with the start agent's TTS; None when it cannot
        be built (no key: the caller hears nothing, which is logged)."""
        workflow = session_data["workflow"]
        if not (workflow.get("settings") or {}).get("busy_message"):
            return None
        start = next(a for a in workflow["agents"] if a["name"] == workflow["start_agent"])
        components = ComponentCache(self._build, language=call_language(session_data))
        try:
            tts = components.get("tts", start["tts"])
        except ComponentError as exc:
            logger.error("inbound call to %s: busy, and no voice to say so: %s", self.number, exc)
            return None
        return AgentSession(tts=tts, conn_options=connect_options())

    async def say_busy(
        self, session_data: dict, session: AgentSession | None, **start: Any
    ) -> None:
        """All lines are busy (the API ended the call already, so nothing is reported):
        the caller hears the busy message, then the room closes."""
        call_id = session_data["call_id"]
        logger.warning("inbound call %s to %s: all lines busy", call_id, self.number)
        if session is not None:
            message = session_data["workflow"]["settings"]["busy_message"]
            try:
                # An agent without a model: it says what it is told and nothing else.
                # No session host (agent/worker.py's CallJob.start says why).
                await session.start(
                    Agent(instructions=""), record=False, session_host=False, **start
                )
                handle = session.say(message, allow_interruptions=False, add_to_chat_ctx=False)
                await asyncio.wait_for(handle.wait_for_playout(), BUSY_MESSAGE_TIMEOUT)
            except Exception:
                logger.exception("inbound call to %s: the busy message failed", self.number)
            finally:
                with contextlib.suppress(Exception):
                    await session.aclose()
        await self._close("all lines busy")

    async def _close(self, reason: str) -> None:
        await self.api.aclose()
        await close_room(self.ctx, reason)

    async def run(self) -> None:
        """The whole dispatch in a LiveKit room (what the tests drive step by step)."""
        await self.ctx.connect(auto_subscribe=AutoSubscribe.AUDIO_ONLY)
        participant = await self.caller(self.ctx.room)
        if participant is None:
            return
        data = await self.session(participant)
        if data is None:
            return
        if is_busy(data):
            options = room_io.RoomOptions(
                participant_identity=participant.identity,
                audio_input=False,
                text_input=False,
                close_on_disconnect=True,
            )
            await self.say_busy(
                data, self.busy_session(data), room=self.ctx.room, room_options=options
            )
            return
        await self.job(data, participant).run()
