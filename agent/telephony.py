"""What a phone call can do beyond talking.

- **Transfer** (a workflow tool of `type: "transfer"`, phone calls): the tool's message,
  then the API asks LiveKit to hand the caller to the destination (a SIP REFER) and
  ends the call itself (`completed`/`transferred`); a refusal goes back to the model.
- **Answering machines** (outbound phone calls): livekit-agents' own detector (`AMD`)
  listens to whoever picked up before the first agent greets, on the call's own
  model and transcripts (no LiveKit Cloud). A voicemail greeting gets the workflow's
  `voicemail` action; a phone menu, the model (with `send_dtmf`); a person, the
  greeting. Later, the model can still say so (`voicemail_detected`).
- **DTMF** (outbound phone calls): `send_dtmf` presses keys, each one a system line in
  the transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from livekit.agents import (
    AMD,
    AMDCategory,
    AMDPredictionEvent,
    RunContext,
    StopResponse,
    ToolError,
    function_tool,
)

from agent.api import AgentAPI, AgentAPIError

if TYPE_CHECKING:
    from agent.call import CallRuntime

logger = logging.getLogger("voicecalls.agent.telephony")

SEND_DTMF_TOOL = "send_dtmf"
VOICEMAIL_TOOL = "voicemail_detected"
DTMF_DIGITS = re.compile(r"^[0-9*#w]{1,32}$")
DTMF_CODES = {**{str(digit): digit for digit in range(10)}, "*": 10, "#": 11}
DTMF_PAUSE = 0.5  # "w": half a second, as in LiveKit SIP's own `dtmf` dial string
# Between two tones: tones sent back to back can merge into one (livekit-agents' own
# send_dtmf tool waits as long).
DTMF_GAP = 0.3
# How long a message (before a transfer, on a voicemail) may take to play.
MESSAGE_TIMEOUT = 30.0
# The API waits for LiveKit's transfer for the workflow's ring timeout and a margin.
DEFAULT_RING_TIMEOUT = 30.0
TRANSFER_MARGIN = 30.0
# A callee who picks up and says nothing is greeted after this long (livekit-agents
# waits 10 s by default: a long silence on a phone).
AMD_NO_SPEECH_SECONDS = 5.0
IVR_INSTRUCTIONS = (
    "An automated phone menu answered the call, saying: {transcript!r}. Use the "
    "send_dtmf tool to press the keys that lead where your instructions need to go, "
    "or answer it in words if it asks you to speak."
)


class PhoneLine:
    """The phone side of one call (agent/call.py's CallRuntime holds it)."""

    def __init__(self, call: CallRuntime, *, api: AgentAPI, room: Any) -> None:
        self.call = call
        self.api = api
        self.room = room  # the job's rtc.Room, whose local participant sends DTMF
        self.outbound = call.direction == "outbound"
        self._screened = False
        self._screening = False
        self._screened_at: float | None = None

    def tools(self, defined: set[str]) -> list:
        """The built-in tools of an agent on this call; a workflow tool of the same
        name (in `defined`) wins."""
        if not self.outbound:
            return []
        tools = [send_dtmf_tool(self), voicemail_tool(self)]
        return [tool for tool in tools if tool.info.name not in defined]

    # -- who answered (outbound) -------------------------------------------------------

    def screened_before(self) -> None:
        """A call resumed mid-call (agent/resume.py): the run before found out who
        answered, and the conversation is under way; nothing is screened again."""
        self._screened = True

    async def screen(self, llm: Any) -> bool:
        """Once, as the first agent enters on an outbound call: who answered. True when
        a person did (or nobody can tell): the agent greets. False: a machine did, and
        this call deals with it."""
        if not self.outbound or self._screened:
            return True
        self._screened = self._screening = True
        try:
            verdict = await self._detect(llm)
        finally:
            self._screening = False
            self._screened_at = time.time()
        category = verdict.category if verdict is not None else AMDCategory.UNCERTAIN
        logger.info("call %s was answered by: %s", self.call.call_id, category.value)
        if category in (AMDCategory.HUMAN, AMDCategory.UNCERTAIN):
            return True
        if category == AMDCategory.MACHINE_IVR:
            assert self.call.session is not None
            self.call.session.generate_reply(
                instructions=IVR_INSTRUCTIONS.format(transcript=verdict.transcript)
            )
            return False
        # A mailbox that cannot take a message is hung up on all the same.
        self.call.spawn(self.voicemail(leave_message=category == AMDCategory.MACHINE_VM))
        return False

    async def _detect(self, llm: Any) -> AMDPredictionEvent | None:
        try:
            async with AMD(
                self.call.session,
                llm=llm,  # the agent's own: livekit-agents would pick its Cloud model
                stt=None,  # the session's transcripts, not a second STT
                ivr_detection=False,  # phone menus are the model's, with send_dtmf
                participant_identity=f"user-{self.call.call_id}",
                suppress_compatibility_warning=True,
                detection_options={"no_speech_threshold": AMD_NO_SPEECH_SECONDS},
            ) as detector:
                return await detector.execute()
        except Exception as exc:
            # Never keep a person from the greeting because the detector broke (or the
            # session closed under it: the callee hung up).
            logger.warning("call %s: no answering machine verdict: %r", self.call.call_id, exc)
            return None

    def answered_by_greeting(self, message: Any) -> bool:
        """A turn the greeting answers: the callee's "Hello?" while the detector
        listened (the model must not answer it too)."""
        if self._screening:
            return True
        if self._screened_at is None:
            return False
        metrics = getattr(message, "metrics", None) or {}
        spoken = metrics.get("stopped_speaking_at") or message.created_at
        return spoken < self._screened_at

    async def voicemail(self, *, leave_message: bool = True) -> None:
        """A machine answered: the workflow's message after the beep (`leave_message`),
        then hang up, `completed`/`voicemail`."""
        call = self.call
        if call.ended:
            return
        call.ended = call.hanging_up = True
        settings = call.settings.get("voicemail") or {}
        if leave_message and settings.get("action") == "leave_message" and settings.get("message"):
            await self._say(settings["message"])
        call.reporter.status("completed", reason="voicemail")
        if call.session is not None:
            call.session.shutdown(drain=True)

    async def _say(self, text: str) -> None:
        assert self.call.session is not None
        handle = self.call.session.say(text, allow_interruptions=False)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handle.wait_for_playout(), MESSAGE_TIMEOUT)

    # -- transfer ----------------------------------------------------------------------

    async def transfer(
        self, context: RunContext, *, tool: str, destination: str, message: str
    ) -> None:
        """Hand the caller over; raises ToolError (for the model) when that fails."""
        call = self.call
        if call.ended:
            raise StopResponse()
        call.hanging_up = True  # nothing is answered while the caller is handed over
        with contextlib.suppress(RuntimeError):  # already cut off by the caller
            context.disallow_interruptions()
        await context.wait_for_playout()
        if message:
            await self._say(message)
        ring = call.settings.get("ring_timeout_seconds") or DEFAULT_RING_TIMEOUT
        try:
            await self.api.post_transfer(
                call.call_id,
                tool=tool,
                destination=destination,
                timeout=float(ring) + TRANSFER_MARGIN,
            )
        except AgentAPIError as exc:
            call.hanging_up = False
            logger.warning("call %s: transfer by %s failed: %s", call.call_id, tool, exc)
            raise ToolError(f"The transfer failed: {exc.detail}") from exc
        # The API ended the call (`completed`/`transferred`) and wrote its transcript
        # line: this job only closes.
        call.ended = True
        if call.session is not None:
            call.session.shutdown(drain=True)
        raise StopResponse()

    # -- DTMF --------------------------------------------------------------------------

    async def send_dtmf(self, digits: object) -> str:
        if not isinstance(digits, str) or not DTMF_DIGITS.fullmatch(digits):
            raise ToolError(
                "digits must be 1 to 32 of 0-9, * and #, with w for a half-second pause."
            )
        for digit in digits:
            if digit == "w":
                await asyncio.sleep(DTMF_PAUSE)
                continue
            try:
                await self.room.local_participant.publish_dtmf(code=DTMF_CODES[digit], digit=digit)
            except Exception as exc:  # PublishDTMFError, or a room already gone
                logger.warning("call %s: DTMF %s not sent: %r", self.call.call_id, digit, exc)
                raise ToolError(f"Could not press {digit}.") from exc
            self.call.reporter.transcript(
                role="system", content=f"DTMF {digit}", agent_name=self.call.agent_name()
            )
            await asyncio.sleep(DTMF_GAP)
        return f"Pressed {digits}."


def transfer_tool(spec: dict, phone: PhoneLine):
    """A workflow tool of `type: "transfer"`: the model picks one of its destinations."""
    destinations = list(spec["destinations"])

    async def _transfer(raw_arguments: dict, context: RunContext) -> None:
        destination = raw_arguments.get("destination")
        if destination not in destinations:
            raise ToolError(f"destination must be one of: {', '.join(destinations)}")
        await phone.transfer(
            context, tool=spec["name"], destination=destination, message=spec.get("message") or ""
        )

    return function_tool(
        _transfer,
        raw_schema={
            "name": spec["name"],
            "description": spec.get("description") or f"Transfer the caller ({spec['name']}).",
            "parameters": {
                "type": "object",
                "properties": {
                    "destination": {
                        "type": "string",
                        "enum": destinations,
                        "description": "Where to transfer the caller.",
                    }
                },
                "required": ["destination"],
                "additionalProperties": False,
            },
        },
    )


def send_dtmf_tool(phone: PhoneLine):
    async def _send(raw_arguments: dict, context: RunContext) -> str:
        return await phone.send_dtmf(raw_arguments.get("digits"))

    return function_tool(
        _send,
        raw_schema={
            "name": SEND_DTMF_TOOL,
            "description": (
                "Press keys on the phone's keypad, e.g. to choose in an automated phone "
                "menu. w waits half a second between keys."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "digits": {"type": "string", "pattern": DTMF_DIGITS.pattern},
                },
                "required": ["digits"],
                "additionalProperties": False,
            },
        },
    )


def voicemail_tool(phone: PhoneLine):
    async def _detected(raw_arguments: dict, context: RunContext) -> None:
        # Not awaited here: the message is said after this tool's turn, not inside it.
        phone.call.spawn(phone.voicemail())
        raise StopResponse()

    return function_tool(
        _detected,
        raw_schema={
            "name": VOICEMAIL_TOOL,
            "description": (
                "Call this as soon as you hear an answering machine or voicemail greeting "
                "or a beep instead of a person."
            ),
            "parameters": {"type": "object", "properties": {}},
        },
    )
