from __future__ import annotations

import datetime
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from accounts.models import Organization
from calls.lifecycle import EndReason, call_transition
from calls.limits import concurrency_check, concurrency_limited
from calls.models import (
    ENDED_STATUSES,
    NOT_ENDED_STATUSES,
    AgentEvent,
    AgentEventType,
    Call,
    CallDirection,
    CallStatus,
    LiveKitWebhookEvent,
    MetricSample,
    TranscriptEntry,
    TranscriptRole,
)
from calls.sql import JSONArrayAppend, insert_instance, insert_new
from voicecalls import livekit
from voicecalls.livekit import WebhookEvent
from workflows.selectors import CallTarget

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallJoinInfo:
    """What a client needs to join a call's room."""

    call: Call
    token: str

    @property
    def livekit_url(self) -> str:
        from django.conf import settings

        return settings.LIVEKIT_URL


def call_participant_token(*, call: Call) -> str:
    """A fresh LiveKit token for the call's end user (identity `user-<call_id>`)."""
    name = call.user_data.get("name") if isinstance(call.user_data, dict) else None
    return livekit.participant_token(
        room_name=call.room_name,
        identity=f"user-{call.id}",
        name=str(name) if name not in (None, "") else None,
        call_id=str(call.id),
    )


def call_create(
    *,
    organization: Organization,
    target: CallTarget,
    user_id: str | None = None,
    user_data: dict | None = None,
    metadata: dict | None = None,
    direction: str = CallDirection.INBOUND,
) -> CallJoinInfo:
    """Create a call on the workflow's current version and mint the user's token.

    No LiveKit server call: LiveKit creates the room and dispatches the agent when
    the user joins with this token, so creating calls works with LiveKit down.
    Raises ConcurrencyLimitReached when the organization has as many open calls as
    it may (checked under a lock on the organization's row, in the transaction that
    inserts the call). Without a limit to check, the insert is one statement and
    needs no transaction of its own.
    """
    call = Call(
        organization=organization,
        workflow_id=target.workflow_id,
        workflow_version_id=target.version_id,
        workflow_slug=target.workflow_slug,
        user_id=user_id,
        user_data=user_data or {},
        metadata=metadata or {},
        direction=direction,
        status=CallStatus.CONNECTING,
        connect_timeout_seconds=target.connect_timeout_seconds,
        max_duration_seconds=target.max_duration_seconds,
    )
    if concurrency_limited(organization=organization):
        with transaction.atomic():
            concurrency_check(organization=organization)
            insert_instance(call)
    else:
        insert_instance(call)
    return CallJoinInfo(call=call, token=call_participant_token(call=call))


# --- Hang-up -------------------------------------------------------------------------


def call_end(*, call: Call) -> Call:
    """Hang up: record the request, delete the LiveKit room, then mark `completed`.

    Not one transaction on purpose: the request is committed before LiveKit is asked,
    so the room's own webhooks (user left with ROOM_DELETED, room_finished) are
    attributed to it. An ended call is returned as it is, without asking LiveKit.
    If LiveKit fails, the request is withdrawn and `LiveKitError` raised; the call
    stays as it was.
    """
    requested_at = timezone.now()
    recorded = Call.objects.filter(pk=call.pk, status__in=NOT_ENDED_STATUSES).update(
        hangup_requested_at=requested_at, end_reason=EndReason.API_REQUEST
    )
    if recorded:
        try:
            livekit.room_delete(room_name=call.room_name)
        except livekit.LiveKitError:
            Call.objects.filter(
                pk=call.pk, status__in=NOT_ENDED_STATUSES, hangup_requested_at=requested_at
            ).update(hangup_requested_at=None, end_reason=None)
            raise
        call_transition(
            call_id=call.pk, to_status=CallStatus.COMPLETED, end_reason=EndReason.API_REQUEST
        )
    call.refresh_from_db()
    return call


def call_room_delete(*, call_id: uuid.UUID) -> bool:
    """Delete an ended call's room, so nobody is left in it until LiveKit's departure
    timeout; True if it was deleted or already gone. LiveKit failures are logged: the
    departure timeout and `expire_calls` remain behind it."""
    try:
        livekit.room_delete(room_name=f"{ROOM_PREFIX}{call_id}")
    except livekit.LiveKitError as exc:
        logger.warning("could not delete the room of ended call %s: %s", call_id, exc)
        return False
    return True


def call_room_close_later(*, call_id: uuid.UUID) -> None:
    """Delete the call's room once the current transaction commits, in the task queue:
    never a LiveKit request inside a transaction or on the request that ended the call."""
    from calls.tasks import call_room_close

    # robust: a failed enqueue must not undo the end that already committed.
    transaction.on_commit(lambda: call_room_close.enqueue(str(call_id)), robust=True)


# --- LiveKit webhooks ----------------------------------------------------------------

ROOM_PREFIX = "call-"
USER_IDENTITY_PREFIX = "user-"


def _call_id_from_room(room_name: str) -> uuid.UUID | None:
    if not room_name.startswith(ROOM_PREFIX):
        return None
    try:
        return uuid.UUID(room_name.removeprefix(ROOM_PREFIX))
    except ValueError:
        return None


def _is_user(call_id: uuid.UUID, identity: str) -> bool:
    return identity == f"{USER_IDENTITY_PREFIX}{call_id}"


# A participant_left for the user with these reasons does not mean the user left:
# DUPLICATE_IDENTITY — the same user joined again (new tab, reconnect) and the older
# session was closed; MIGRATION — the session moved to another LiveKit node.
_USER_STILL_THERE = frozenset({"DUPLICATE_IDENTITY", "MIGRATION"})

Outcome = tuple[str, str] | None  # (to_status, end_reason), or None: no change


def _user_departure_outcome(*, reason: str, status: str, hangup_requested: bool) -> Outcome:
    """How the end user's departure ends the call, by LiveKit's DisconnectReason."""
    if reason in _USER_STILL_THERE:
        return None
    started = status == CallStatus.ACTIVE
    if reason == "CLIENT_INITIATED":
        return CallStatus.COMPLETED, EndReason.USER_HANGUP
    if reason == "ROOM_DELETED":
        # We delete rooms on API hang-ups (recorded first); otherwise the agent did.
        cause = EndReason.API_REQUEST if hangup_requested else EndReason.AGENT_HANGUP
        return CallStatus.COMPLETED, cause
    if reason == "AGENT_ERROR":
        return CallStatus.FAILED, EndReason.AGENT_ERROR
    if reason == "JOIN_FAILURE" and not started:
        return CallStatus.FAILED, EndReason.JOIN_FAILURE
    # Any other reason is a dropped connection. A call we never saw start (its
    # participant_joined was lost) cannot be `disconnected`: it failed to connect.
    return (CallStatus.DISCONNECTED if started else CallStatus.FAILED), EndReason.CONNECTION_LOST


def _room_finished_outcome(*, status: str, hangup_requested: bool) -> Outcome:
    """The room closed while the call was not ended (its user's departure was lost,
    or nobody ever joined): completed if it ran, else failed to connect."""
    if hangup_requested:
        return CallStatus.COMPLETED, EndReason.API_REQUEST
    if status == CallStatus.ACTIVE:
        return CallStatus.COMPLETED, EndReason.ROOM_CLOSED
    return CallStatus.FAILED, EndReason.ROOM_CLOSED


def _transition_by_state(
    *, call_id: uuid.UUID, decide: Callable[[str, bool], Outcome], at: datetime.datetime
) -> bool:
    """Apply the outcome `decide(status, hangup_requested)` picks for the call's
    current state; if the state changed meanwhile, decide again for the new one.
    True if the call moved."""
    for _ in range(3):
        row = Call.objects.filter(pk=call_id).values_list("status", "hangup_requested_at").first()
        if row is None or row[0] in ENDED_STATUSES:
            return False
        status, hangup_requested_at = row
        outcome = decide(status, hangup_requested_at is not None)
        if outcome is None:
            return False
        to_status, end_reason = outcome
        if call_transition(
            call_id=call_id, to_status=to_status, end_reason=end_reason, at=at, only_from={status}
        ):
            return True
    return False


def _on_participant_joined(call_id: uuid.UUID, event: WebhookEvent, at: datetime.datetime) -> None:
    if _is_user(call_id, event.participant_identity):
        call_transition(call_id=call_id, to_status=CallStatus.ACTIVE, at=at)


def _on_participant_left(call_id: uuid.UUID, event: WebhookEvent, at: datetime.datetime) -> None:
    # The agent participant's own departure never ends the call; the user's does.
    if not _is_user(call_id, event.participant_identity):
        return
    if _transition_by_state(
        call_id=call_id,
        decide=lambda status, hangup: _user_departure_outcome(
            reason=event.disconnect_reason, status=status, hangup_requested=hangup
        ),
        at=at,
    ):
        # The user left a room the agent may still be in.
        call_room_close_later(call_id=call_id)


def _on_room_finished(call_id: uuid.UUID, event: WebhookEvent, at: datetime.datetime) -> None:
    _transition_by_state(
        call_id=call_id,
        decide=lambda status, hangup: _room_finished_outcome(
            status=status, hangup_requested=hangup
        ),
        at=at,
    )


_WEBHOOK_HANDLERS: dict[str, Callable[[uuid.UUID, WebhookEvent, datetime.datetime], None]] = {
    "participant_joined": _on_participant_joined,
    "participant_left": _on_participant_left,
    "room_finished": _on_room_finished,
}


class WebhookResult:
    HANDLED = "handled"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    UNKNOWN_ROOM = "unknown_room"


def livekit_webhook_receive(*, body: str, authorization: str) -> str:
    """Verify a LiveKit webhook (raises `WebhookSignatureError`) and apply it."""
    event = livekit.webhook_event_verify(body=body, authorization=authorization)
    return livekit_webhook_handle(event=event)


@transaction.atomic
def livekit_webhook_handle(*, event: WebhookEvent) -> str:
    """Apply a verified webhook event once: its id is recorded in the same transaction."""
    handler = _WEBHOOK_HANDLERS.get(event.event)
    if handler is None:
        return WebhookResult.IGNORED
    if event.id:
        new = insert_new(
            LiveKitWebhookEvent,
            [
                {
                    "event_id": event.id,
                    "event": event.event,
                    "room_name": event.room_name[:200],
                    "participant_identity": event.participant_identity[:200],
                    "received_at": timezone.now(),
                }
            ],
            unique="event_id",
        )
        if not new:
            return WebhookResult.DUPLICATE
    call_id = _call_id_from_room(event.room_name)
    now = timezone.now()
    if call_id is None or not Call.objects.filter(pk=call_id).update(last_event_at=now):
        return WebhookResult.UNKNOWN_ROOM
    handler(call_id, event, now)
    return WebhookResult.HANDLED


# --- Agent events --------------------------------------------------------------------

LATENCY_COMPONENTS = ("stt", "llm", "tts", "e2e", "eou")
# Components whose means the call keeps as running sums (the seed's metrics, and the
# end-of-utterance and end-to-end turn latencies).
_SUMMED_COMPONENTS = ("stt", "llm", "tts", "e2e", "eou")

_DEFAULT_END_REASON = {
    CallStatus.COMPLETED: EndReason.AGENT_HANGUP,
    CallStatus.FAILED: EndReason.AGENT_ERROR,
    CallStatus.DISCONNECTED: EndReason.CONNECTION_LOST,
    CallStatus.TIMEOUT: EndReason.MAX_DURATION,
}


@dataclass(frozen=True)
class AgentEventsResult:
    accepted: int
    duplicates: int


@transaction.atomic
def agent_events_record(*, call: Call, events: list[dict]) -> AgentEventsResult:
    """Record a validated batch of agent events once each, all or nothing.

    Every event is inserted with ON CONFLICT DO NOTHING RETURNING, and aggregates
    move only by the rows that were new, in one F()-expression UPDATE: a replayed
    batch changes nothing. The call row is locked first, so concurrent batches for
    one call run one after the other (and cannot deadlock on each other's ids).
    Transcript and metrics events are accepted after the end (late flush).
    """
    now = timezone.now()
    status, hangup_requested_at = (
        Call.objects.select_for_update()
        .filter(pk=call.pk)
        .values_list("status", "hangup_requested_at")
        .get()
    )
    unique: dict[uuid.UUID, dict] = {}
    for event in events:
        unique.setdefault(event["id"], event)
    by_type: dict[str, list[dict]] = defaultdict(list)
    for event in unique.values():
        by_type[event["type"]].append(event)

    new_ids: set = set()
    new_ids |= insert_new(
        TranscriptEntry,
        [
            {
                "call": call.pk,
                "event_id": e["id"],
                "role": e["role"],
                "content": e["content"],
                "agent_name": e.get("agent_name"),
                "tool_call": e.get("tool_call"),
                "interrupted": e["role"] == TranscriptRole.ASSISTANT and bool(e.get("interrupted")),
                "timestamp": e["timestamp"],
                "created_at": now,
            }
            for e in by_type[AgentEventType.TRANSCRIPT]
        ],
        unique="event_id",
        unique_with=("call",),
    )
    metric_ids = insert_new(
        MetricSample,
        [
            {
                "call": call.pk,
                "event_id": e["id"],
                "agent_name": e.get("agent_name"),
                "turn_index": e.get("turn_index"),
                **{f"{c}_latency_ms": e.get(f"{c}_latency_ms") for c in LATENCY_COMPONENTS},
                "providers": e.get("providers"),
                "tokens": e.get("tokens"),
                "timestamp": e["timestamp"],
                "created_at": now,
            }
            for e in by_type[AgentEventType.METRICS]
        ],
        unique="event_id",
        unique_with=("call",),
    )
    new_ids |= metric_ids
    ledger_events = by_type[AgentEventType.AGENT_HANDOFF] + by_type[AgentEventType.STATUS]
    ledger_ids = insert_new(
        AgentEvent,
        [
            {
                "id": e["id"],
                "call": call.pk,
                "type": e["type"],
                "payload": {k: v for k, v in e.items() if k not in ("id", "type", "timestamp")},
                "timestamp": e["timestamp"],
                "created_at": now,
            }
            for e in ledger_events
        ],
        unique="id",
    )
    new_ids |= ledger_ids

    def by_time(items: list[dict]) -> list[dict]:
        return sorted(items, key=lambda e: e["timestamp"])

    handoffs = by_time([e for e in by_type[AgentEventType.AGENT_HANDOFF] if e["id"] in ledger_ids])
    statuses = by_time([e for e in by_type[AgentEventType.STATUS] if e["id"] in ledger_ids])

    # 1. The agent reports the call started (or hands off, which it only does in a
    # conversation): start it first, so its handoffs append to [start agent].
    if status == CallStatus.CONNECTING and (
        handoffs or any(e["status"] == CallStatus.ACTIVE for e in statuses)
    ):
        call_transition(call_id=call.pk, to_status=CallStatus.ACTIVE, at=now)

    # 2. Aggregates, by the new rows only, in one atomic UPDATE.
    changes: dict[str, object] = {"last_event_at": now}
    samples = [e for e in by_type[AgentEventType.METRICS] if e["id"] in metric_ids]
    for component in _SUMMED_COMPONENTS:
        values = [
            e[f"{component}_latency_ms"]
            for e in samples
            if e.get(f"{component}_latency_ms") is not None
        ]
        if values:
            changes[f"{component}_latency_ms_sum"] = F(f"{component}_latency_ms_sum") + sum(values)
            changes[f"{component}_latency_count"] = F(f"{component}_latency_count") + len(values)
    tokens = sum(e.get("tokens") or 0 for e in samples)
    if tokens:
        changes["total_tokens"] = F("total_tokens") + tokens
    if handoffs:
        changes["agent_history"] = JSONArrayAppend(
            "agent_history", [e["to_agent"] for e in handoffs]
        )
        changes["agent_handoffs"] = F("agent_handoffs") + len(handoffs)
        # Nobody speaks on an ended call: a late handoff extends the history only.
        changes["current_agent"] = Case(
            When(status=CallStatus.ACTIVE, then=Value(handoffs[-1]["to_agent"])),
            default=F("current_agent"),
        )
    Call.objects.filter(pk=call.pk).update(**changes)

    # 3. The agent ends the call (the first terminal status wins; terminal is final).
    for event in statuses:
        if event["status"] != CallStatus.ACTIVE:
            end_reason = event.get("reason") or _DEFAULT_END_REASON[event["status"]]
            if event["status"] == CallStatus.COMPLETED and hangup_requested_at is not None:
                # The agent saw the room close because we hung up through the API.
                end_reason = EndReason.API_REQUEST
            if call_transition(
                call_id=call.pk, to_status=event["status"], end_reason=end_reason, at=now
            ):
                call_room_close_later(call_id=call.pk)
    return AgentEventsResult(accepted=len(new_ids), duplicates=len(events) - len(new_ids))


# --- Timeouts and reconciliation (expire_calls) ---------------------------------------


@dataclass
class ExpireResult:
    connect_timeouts: int = 0
    max_durations: int = 0
    reconciled: int = 0
    livekit_errors: int = 0
    webhook_ids_pruned: int = 0


# LiveKit retries a webhook for well under a minute; ids older than this cannot recur.
WEBHOOK_DEDUP_WINDOW = datetime.timedelta(days=1)


def _room_close(*, call_id: uuid.UUID, result: ExpireResult) -> None:
    """Delete an ended call's room; LiveKit failures are logged, not fatal."""
    try:
        livekit.room_delete(room_name=f"{ROOM_PREFIX}{call_id}")
    except livekit.LiveKitError as exc:
        result.livekit_errors += 1
        logger.warning("expire_calls: could not delete the room of call %s: %s", call_id, exc)


def calls_expire(*, now: datetime.datetime | None = None) -> ExpireResult:
    """Apply connect timeouts and max durations, and reconcile silent active calls.

    Each call is moved to its terminal state *before* its room is deleted, so the
    room's own webhooks (user left with ROOM_DELETED) find it ended and cannot
    relabel it. Every move is a conditional UPDATE: several runs at once (cron on
    two hosts) end each call once.
    """
    now = now or timezone.now()
    result = ExpireResult()
    # Calls not yet ended are few (a partial index serves this scan).
    open_calls = Call.objects.filter(status__in=NOT_ENDED_STATUSES).values_list(
        "id",
        "status",
        "created_at",
        "started_at",
        "last_event_at",
        "connect_timeout_seconds",
        "max_duration_seconds",
    )
    silent: list[uuid.UUID] = []
    silence = datetime.timedelta(seconds=settings.CALL_RECONCILE_AFTER_SECONDS)
    for (
        call_id,
        status,
        created_at,
        started_at,
        last_event_at,
        connect,
        max_duration,
    ) in list(open_calls):
        if status != CallStatus.ACTIVE:
            if now - created_at >= datetime.timedelta(seconds=connect) and call_transition(
                call_id=call_id,
                to_status=CallStatus.TIMEOUT,
                end_reason=EndReason.CONNECT_TIMEOUT,
                at=now,
                only_from={CallStatus.PENDING, CallStatus.CONNECTING},
            ):
                result.connect_timeouts += 1
                _room_close(call_id=call_id, result=result)
        elif started_at and now - started_at >= datetime.timedelta(seconds=max_duration):
            if call_transition(
                call_id=call_id,
                to_status=CallStatus.TIMEOUT,
                end_reason=EndReason.MAX_DURATION,
                at=now,
                only_from={CallStatus.ACTIVE},
            ):
                result.max_durations += 1
                _room_close(call_id=call_id, result=result)
        elif now - (last_event_at or started_at or created_at) >= silence:
            silent.append(call_id)
    if silent:
        _calls_reconcile(call_ids=silent, now=now, result=result)
    result.webhook_ids_pruned, _ = LiveKitWebhookEvent.objects.filter(
        received_at__lt=now - WEBHOOK_DEDUP_WINDOW
    ).delete()
    return result


def _calls_reconcile(
    *, call_ids: list[uuid.UUID], now: datetime.datetime, result: ExpireResult
) -> None:
    """End silent active calls whose room or user LiveKit no longer has.

    Webhooks can be lost (LiveKit drops events it cannot deliver within 30 s); a
    call whose end we never heard of would stay `active` forever. One ListRooms
    for all of them, then ListParticipants for the rooms that still exist.
    """
    try:
        rooms = livekit.rooms_existing(room_names=[f"{ROOM_PREFIX}{c}" for c in call_ids])
    except livekit.LiveKitError as exc:
        result.livekit_errors += 1
        logger.warning("expire_calls: cannot reconcile, ListRooms failed: %s", exc)
        return
    for call_id in call_ids:
        room_name = f"{ROOM_PREFIX}{call_id}"
        identities: set[str] | None = None
        if room_name in rooms:
            try:
                identities = livekit.room_participant_identities(room_name=room_name)
            except livekit.LiveKitError as exc:
                result.livekit_errors += 1
                logger.warning("expire_calls: ListParticipants failed for %s: %s", room_name, exc)
                continue
        if identities is not None and f"{USER_IDENTITY_PREFIX}{call_id}" in identities:
            # Still talking, just quiet: look again after another silent stretch.
            Call.objects.filter(pk=call_id, status=CallStatus.ACTIVE).update(last_event_at=now)
            continue
        # We cannot know how it ended, only that it did: `completed`, `reconciled`.
        if call_transition(
            call_id=call_id,
            to_status=CallStatus.COMPLETED,
            end_reason=EndReason.RECONCILED,
            at=now,
            only_from={CallStatus.ACTIVE},
        ):
            result.reconciled += 1
            if identities is not None:  # the room lingers (agent still in it): close it
                _room_close(call_id=call_id, result=result)
