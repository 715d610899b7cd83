"""The call state machine: every status change goes through `call_transition`.

```
pending ──→ connecting ──→ active ──→ completed | disconnected | timeout | failed
   └───────────┴──→ completed (hang-up) | failed | timeout
```

Each change is one conditional UPDATE (`WHERE status IN (allowed from-states)`), so
concurrent webhooks, agent events, hang-ups and `expire_calls` cannot race a call
into two states: whoever updates first wins, the others update nothing. Terminal
states never change again, so `ended_at` is written exactly once.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from calls.limits import open_call_release
from calls.models import ENDED_STATUSES, Call, CallStatus, start_bound
from calls.signals import call_status_changed
from voicecalls.logging import log_context

S = CallStatus

# to-status → the states it may be reached from.
ALLOWED_FROM: dict[str, frozenset[str]] = {
    S.CONNECTING: frozenset({S.PENDING}),
    S.ACTIVE: frozenset({S.CONNECTING}),
    S.COMPLETED: frozenset({S.PENDING, S.CONNECTING, S.ACTIVE}),
    S.FAILED: frozenset({S.PENDING, S.CONNECTING, S.ACTIVE}),
    S.TIMEOUT: frozenset({S.PENDING, S.CONNECTING, S.ACTIVE}),
    S.DISCONNECTED: frozenset({S.ACTIVE}),
}


class EndReason:
    """The precise causes kept in `Call.end_reason`."""

    USER_HANGUP = "user_hangup"
    AGENT_HANGUP = "agent_hangup"
    API_REQUEST = "api_request"
    CONNECTION_LOST = "connection_lost"
    CONNECT_TIMEOUT = "connect_timeout"
    MAX_DURATION = "max_duration"
    AGENT_ERROR = "agent_error"
    JOIN_FAILURE = "join_failure"
    ROOM_CLOSED = "room_closed"
    RECONCILED = "reconciled"
    # Our voice agent failed the user (`failed`): no agent joined within
    # CALL_AGENT_JOIN_TIMEOUT_SECONDS, or before the user hung up; or the agent left
    # unexpectedly (its process died) and the user then hung up on the silence.
    AGENT_NOT_JOINED = "agent_not_joined"
    AGENT_LOST = "agent_lost"
    # Phone calls (telephony.dialing.SIP_END_REASONS maps SIP statuses to these).
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    REJECTED = "rejected"
    INVALID_NUMBER = "invalid_number"
    SIP_ERROR = "sip_error"
    DIAL_TIMEOUT = "dial_timeout"
    # An inbound call over the organization's concurrency limit.
    CONCURRENCY_LIMIT = "concurrency_limit"
    # A phone call whose organization staff suspended before it was dialed.
    ORGANIZATION_SUSPENDED = "organization_suspended"
    # Handed to a person (a transfer tool's destination), or answered by a machine.
    TRANSFERRED = "transferred"
    VOICEMAIL = "voicemail"
    # Our agent hung up after the caller stayed silent (agent/call.py).
    SILENCE_TIMEOUT = "silence_timeout"


# Every end reason the platform and its agent record, in the order above (the list's
# `end_reason` filter names them).
END_REASONS = tuple(
    value for name, value in vars(EndReason).items() if name.isupper() and isinstance(value, str)
)
# Any end reason there may be: an agent worker may end a call with one of its own (a
# status event's `reason`; Call.end_reason holds up to 50 characters), and the list's
# `end_reason` filter takes what the calls it lists can carry.
END_REASON_PATTERN = r"^[a-z0-9_]{1,50}$"


def requested_end(
    hangup_requested_at: datetime.datetime | None, end_reason: str | None
) -> str | None:
    """The end we asked LiveKit for (recorded before asking: an API hang-up, a
    transfer), or None: what a departure or a closed room then means."""
    if hangup_requested_at is None:
        return None
    return end_reason or EndReason.API_REQUEST


def call_transition(
    *,
    call_id: UUID | str,
    to_status: str,
    end_reason: str | None = None,
    at: datetime.datetime | None = None,
    only_from: Iterable[str] | None = None,
) -> bool:
    """Move a call to `to_status` if its current state allows it; True if it moved.

    `only_from` narrows the allowed from-states further (e.g. a connect timeout
    applies only to calls that have not started). Entering `active` sets
    `started_at`, `agent_history = [start agent]` and `current_agent`, and only within
    the call's start delay after its creation (DESIGN.md "Call lifecycle"); entering a
    terminal state sets `ended_at`, `end_reason` and clears `current_agent`.
    Ending a call releases its place in the organization's open-call counter, and
    `call_status_changed` is sent, in the same transaction (customer webhooks).
    """
    if to_status not in ALLOWED_FROM:
        raise ValueError(f"No transition leads to {to_status!r}.")
    from_states = ALLOWED_FROM[to_status]
    if only_from is not None:
        from_states = from_states & frozenset(only_from)
    if not from_states:
        return False
    at = at or timezone.now()
    changes = _changes(call_id=call_id, to_status=to_status, end_reason=end_reason, at=at)
    if changes is None:
        return False
    at = changes.get("started_at", at)
    with transaction.atomic(savepoint=False):
        # Receivers need the exact from-state: the only one allowed, else read under a
        # row lock. What they write commits (or rolls back) with the change.
        if to_status in ENDED_STATUSES:
            from_status, at = _end_read(call_id=call_id, at=at)
            changes["ended_at"] = at
        elif len(from_states) == 1:
            from_status = str(next(iter(from_states)))
        else:
            locked = Call.objects.select_for_update().filter(pk=call_id)
            from_status = locked.values_list("status", flat=True).first()
        updated = Call.objects.filter(pk=call_id, status__in=from_states).update(**changes)
        if updated and to_status in ENDED_STATUSES:
            open_call_release(call_id=call_id)  # every from-state is an open one
        if updated:
            # What the receivers log (pricing, webhooks, recordings) names the call,
            # whoever moved it (expire_calls, a command, a task).
            with log_context(call_id=call_id):
                call_status_changed.send(
                    sender=Call,
                    call_id=call_id,
                    from_status=from_status,
                    to_status=to_status,
                    end_reason=changes.get("end_reason"),
                    at=at,
                )
    return updated == 1


def _changes(
    *, call_id: UUID | str, to_status: str, end_reason: str | None, at: datetime.datetime
) -> dict[str, object] | None:
    """The columns entering `to_status` sets; None when the call does not exist."""
    changes: dict[str, object] = {"status": to_status}
    if to_status == S.ACTIVE:
        # What this reads never changes after creation, so reading it first races with
        # nothing.
        row = (
            Call.objects.filter(pk=call_id)
            .values_list(
                "workflow_version__definition__start_agent",
                "created_at",
                "connect_timeout_seconds",
                "dial_attempted_at",
            )
            .first()
        )
        if row is None or row[0] is None:
            return None
        start_agent, created_at, connect_timeout, dialed_at = row
        if at > start_bound(created_at, connect_timeout):
            return None  # past its start delay: the connect timeout ends it, a join never
        # A start stamped before the call existed (another host's clock), or a phone's
        # answer before its dial, counts from then, so `created_at <= started_at <=
        # created_at + start delay` always holds, and a phone's start follows its dial.
        at = max(at, dialed_at or created_at, created_at)
        changes.update(
            started_at=at, last_event_at=at, agent_history=[start_agent], current_agent=start_agent
        )
    elif to_status in ENDED_STATUSES:
        if not end_reason:
            raise ValueError("Ending a call needs an end_reason.")
        changes.update(end_reason=end_reason, current_agent=None)  # ended_at: _end_read
    elif end_reason:
        changes["end_reason"] = end_reason
    return changes


def _end_read(
    *, call_id: UUID | str, at: datetime.datetime
) -> tuple[str | None, datetime.datetime]:
    """The call's status, read under its row lock, and the end to stamp: `at`, but never
    before the start (or, never started, the creation), nor before the agent's join or
    departure recorded on the open call, so with another host's clock behind (or a late
    webhook's whole-second stamp) `started_at <= ended_at` and the agent's times before
    it still hold, in the row and in what receivers send. A call that never started
    timed out at its start bound: an agent joining after it (before `expire_calls` ran)
    does not move that end later, as it would not have once the call was timed out."""
    row = (
        Call.objects.select_for_update()
        .filter(pk=call_id)
        .values_list(
            "status",
            "started_at",
            "created_at",
            "connect_timeout_seconds",
            "agent_joined_at",
            "agent_left_at",
        )
        .first()
    )
    if row is None:
        return None, at
    status, started_at, created_at, connect_timeout, *agent = row
    agent_times = [time for time in agent if time]
    if started_at is None:
        timed_out_at = start_bound(created_at, connect_timeout)
        agent_times = [min(time, timed_out_at) for time in agent_times]
    return status, max(at, started_at or created_at, *agent_times)
