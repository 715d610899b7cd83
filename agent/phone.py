"""The other end of a phone call, as LiveKit SIP puts them in the call's room.

The API dials (`CreateSIPParticipant`, identity `user-<call_id>`) after dispatching the
agent, and the SIP participant joins the room while the phone still rings. Its
`sip.callStatus` attribute goes `dialing` → `ringing` → `active` (answered) or
`hangup`; `sip.phoneNumber` is the number on the other end. The agent greets only an
answered phone: a greeting said while it rings is lost. An inbound caller is in the
room (kind SIP) before the agent knows which call it is (agent/inbound.py).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from livekit import rtc

SIP_CALL_STATUS = "sip.callStatus"
SIP_PHONE_NUMBER = "sip.phoneNumber"
# Inbound calls: the number the caller dialed, and the LiveKit trunk it came in on.
SIP_TRUNK_PHONE_NUMBER = "sip.trunkPhoneNumber"
SIP_TRUNK_ID = "sip.trunkID"
ANSWERED = "active"
HUNG_UP = "hangup"
# The API dials within its `dial_deadline_seconds` (default 60) of creating the call;
# the phone then rings for the workflow's `ring_timeout_seconds` (default 30). Past
# both and some slack, nobody will answer: the job must not hold the room forever.
DIAL_DEADLINE = 60.0
DEFAULT_RING_TIMEOUT = 30.0
ANSWER_SLACK = 15.0


class CalleeGone(Exception):
    """The phone was never answered (busy, declined, no answer, the room closed)."""


@dataclass(frozen=True)
class Callee:
    identity: str
    phone_number: str | None
    # Already answered when the agent looked: the callee may have waited in silence.
    answered_before_wait: bool


def answer_timeout(settings: dict) -> float:
    """How long the agent waits for the phone to be answered."""
    ring = settings.get("ring_timeout_seconds") or DEFAULT_RING_TIMEOUT
    return DIAL_DEADLINE + float(ring) + ANSWER_SLACK


def masked(number: str | None) -> str:
    """A phone number for logs: its last four digits only."""
    return f"…{number[-4:]}" if number else "?"


_DIGITS = re.compile(r"\+?[0-9]{5,}")


def room_masked(room_name: str) -> str:
    """A room's name for logs: LiveKit names an inbound caller's room after their
    number (`inbound-_<caller>_<random>`), which is masked as `masked` does."""
    return _DIGITS.sub(lambda found: masked(found.group()), room_name)


def _callee(participant: Any, identity: str) -> bool:
    return (
        participant.identity == identity
        and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP
    )


async def wait_for_callee(room: rtc.Room, *, identity: str, timeout: float) -> Callee:
    """The SIP participant `identity` once its phone is answered; CalleeGone when it
    hangs up or leaves first, the room closes, or `timeout` seconds pass."""
    answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def settle(outcome: Any) -> None:
        if not answered.done():
            if isinstance(outcome, Exception):
                answered.set_exception(outcome)
            else:
                answered.set_result(outcome)

    def check(participant: Any) -> None:
        if not _callee(participant, identity):
            return
        status = participant.attributes.get(SIP_CALL_STATUS)
        if status == ANSWERED:
            settle(participant)
        elif status == HUNG_UP:
            settle(CalleeGone("the call was hung up before it was answered"))

    def on_attributes(_changed: list[str], participant: Any) -> None:
        check(participant)

    def on_left(participant: Any) -> None:
        if _callee(participant, identity):
            settle(CalleeGone("the callee left before answering"))

    def on_connection(state: int) -> None:
        if state == rtc.ConnectionState.CONN_DISCONNECTED:
            settle(CalleeGone("the room closed before the call was answered"))

    handlers = {
        "participant_connected": check,
        "participant_attributes_changed": on_attributes,
        "participant_disconnected": on_left,
        "connection_state_changed": on_connection,
    }
    for event, handler in handlers.items():
        room.on(event, handler)
    try:
        present = room.remote_participants.get(identity)
        if present is not None:
            check(present)
        before = answered.done() and answered.exception() is None
        try:
            participant = await asyncio.wait_for(answered, timeout)
        except TimeoutError as exc:
            raise CalleeGone(f"not answered within {timeout:.0f} s") from exc
    finally:
        for event, handler in handlers.items():
            room.off(event, handler)
    return Callee(
        identity=identity,
        phone_number=participant.attributes.get(SIP_PHONE_NUMBER) or None,
        answered_before_wait=before,
    )


async def wait_for_sip_caller(room: rtc.Room, *, timeout: float) -> Any:
    """The first SIP participant in the room (an inbound caller: LiveKit's dispatch
    rule made the room for them); CalleeGone when the room closes or `timeout` passes."""
    found: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def on_joined(participant: Any) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP and not found.done():
            found.set_result(participant)

    def on_connection(state: int) -> None:
        if state == rtc.ConnectionState.CONN_DISCONNECTED and not found.done():
            found.set_exception(CalleeGone("the room closed before the caller joined"))

    room.on("participant_connected", on_joined)
    room.on("connection_state_changed", on_connection)
    try:
        for participant in list(room.remote_participants.values()):
            on_joined(participant)
        try:
            return await asyncio.wait_for(found, timeout)
        except TimeoutError as exc:
            raise CalleeGone(f"no caller within {timeout:.0f} s") from exc
    finally:
        room.off("participant_connected", on_joined)
        room.off("connection_state_changed", on_connection)
