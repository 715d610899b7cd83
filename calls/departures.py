"""How the end user's departure, or the room closing, ends a call: LiveKit's word
(its DisconnectReason), what we asked LiveKit for, and whether an agent was with the
user. Pure decisions; calls.livekit_events applies them."""

from __future__ import annotations

from calls.lifecycle import EndReason
from calls.models import CallStatus

# A participant_left for the user with these reasons does not mean the user left:
# DUPLICATE_IDENTITY — the same user joined again (new tab, reconnect) and the older
# session was closed; MIGRATION — the session moved to another LiveKit node.
USER_STILL_THERE = frozenset({"DUPLICATE_IDENTITY", "MIGRATION"})

Outcome = tuple[str, str] | None  # (to_status, end_reason), or None: no change


def user_departure_outcome(
    *, reason: str, status: str, requested: str | None, no_agent: str | None
) -> Outcome:
    """How the end user's departure ends the call, by LiveKit's DisconnectReason;
    `requested` is the end we asked LiveKit for (an API hang-up, a transfer), if any;
    `no_agent` why no agent is with the user (calls.agent_presence), if none is."""
    if reason in USER_STILL_THERE:
        return None
    if requested == EndReason.TRANSFERRED:
        # A transferred caller leaves the room for the transfer's destination.
        return CallStatus.COMPLETED, EndReason.TRANSFERRED
    started = status == CallStatus.ACTIVE
    if reason == "CLIENT_INITIATED":
        if started and no_agent:
            # They hung up on silence: our agent never came, or is gone.
            return CallStatus.FAILED, no_agent
        return CallStatus.COMPLETED, EndReason.USER_HANGUP
    if reason == "ROOM_DELETED":
        # We delete rooms on API hang-ups (recorded first); otherwise the agent did.
        cause = requested or EndReason.AGENT_HANGUP
        return CallStatus.COMPLETED, cause
    if reason == "AGENT_ERROR":
        return CallStatus.FAILED, EndReason.AGENT_ERROR
    if reason == "JOIN_FAILURE" and not started:
        return CallStatus.FAILED, EndReason.JOIN_FAILURE
    # Any other reason is a dropped connection. A call we never saw start (its
    # participant_joined was lost) cannot be `disconnected`: it failed to connect.
    return (CallStatus.DISCONNECTED if started else CallStatus.FAILED), EndReason.CONNECTION_LOST


def room_finished_outcome(*, status: str, requested: str | None, no_agent: str | None) -> Outcome:
    """The room closed while the call was not ended (its user's departure was lost,
    or nobody ever joined): completed if it ran (failed if no agent was with the
    user: see `user_departure_outcome`), else failed to connect."""
    if requested:
        return CallStatus.COMPLETED, requested
    if status == CallStatus.ACTIVE:
        if no_agent:
            return CallStatus.FAILED, no_agent
        return CallStatus.COMPLETED, EndReason.ROOM_CLOSED
    return CallStatus.FAILED, EndReason.ROOM_CLOSED
