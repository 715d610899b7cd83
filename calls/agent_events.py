"""Events the voice-agent worker reports (transcript lines, handoffs, metrics,
status), stored once each and applied to the call."""

from __future__ import annotations

import datetime
import functools
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from accounts.models import Organization
from calls.lifecycle import EndReason, call_transition, requested_end
from calls.models import (
    ERASED_CONTENT,
    LATENCY_COMPONENTS,
    NOT_ENDED_STATUSES,
    AgentEvent,
    AgentEventType,
    Call,
    CallStatus,
    MetricSample,
    TranscriptEntry,
    TranscriptRole,
)
from calls.services import call_room_close_later, call_start_refused, call_transfer_in_flight
from calls.signals import call_events_recorded, call_usage_reported
from calls.sql import JSONArrayAppend, insert_new, insert_new_ids
from calls.usage_items import usage_report_newer
from voicecalls.db import bound_cursor

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


@dataclass(frozen=True)
class _NewEvents:
    """The events of a batch that were stored now (not seen before), by type; `rows`
    maps the new transcript lines' and samples' event ids to their rows' ids."""

    transcript: list[dict]
    samples: list[dict]
    handoffs: list[dict]
    statuses: list[dict]
    usage: list[dict]
    rows: dict

    @property
    def count(self) -> int:
        ledger = len(self.handoffs) + len(self.statuses) + len(self.usage)
        return len(self.transcript) + len(self.samples) + ledger


@transaction.atomic
def agent_events_record(
    *, call_id: uuid.UUID, events: list[dict], organization: Organization | None = None
) -> AgentEventsResult:
    """Record a validated batch of agent events once each, all or nothing; raises
    Call.DoesNotExist, storing nothing, when `call_id` is not a call of `organization`
    (the reporting key's; any call when None).

    The call row is locked first, so concurrent batches for one call run one after
    the other (and cannot deadlock on each other's ids); finding it, locking it and
    noting the report's time are one statement. Only the events stored now move the
    call otherwise: a replayed batch changes nothing else. Transcript, metrics and
    usage events are accepted after the end (late flush).
    """
    now = timezone.now()
    status, hangup_requested_at, end_reason, erased_at, transcript_expired_at = _call_touch(
        call_id=call_id, organization=organization, now=now
    )
    # Arrived once the call's row is ours: a transfer recorded while this waited for it
    # holds these reports for its result, which applies those that arrived after it.
    now = max(now, timezone.now())
    # Read under the lock the erasure and retention take too: a line arriving after
    # either is stored without its words, so nothing removed comes back.
    keep_content = erased_at is None and transcript_expired_at is None
    new = _store(call_id=call_id, events=events, now=now, keep_content=keep_content)
    # The agent reports the call started (or hands off, which it only does in a
    # conversation): start it first, so its handoffs append to [start agent].
    started = [e["timestamp"] for e in new.statuses if e["status"] == CallStatus.ACTIVE]
    if status == CallStatus.CONNECTING and (new.handoffs or started):
        if not call_transition(call_id=call_id, to_status=CallStatus.ACTIVE, at=now):
            # Retried through an outage it may arrive past the start delay, yet have
            # happened in time (the agent's stamp), as a LiveKit join's may.
            earliest = min(started, default=None)
            call_start_refused(call_id=call_id, at=now, earliest=earliest)
    if new.transcript or new.samples or new.handoffs:
        call_events_recorded.send(
            sender=Call,
            call_id=call_id,
            lines=[(new.rows[e["id"]], e["timestamp"]) for e in new.transcript],
            samples=[(new.rows[e["id"]], e["timestamp"]) for e in new.samples],
            handoffs=new.handoffs,
        )
    _aggregate(call_id=call_id, new=new)
    if not call_transfer_in_flight(end_reason, hangup_requested_at):
        # (In flight, the transfer's result decides: `agent_statuses_held`.)
        _apply_statuses(
            call_id=call_id,
            statuses=new.statuses,
            requested=requested_end(hangup_requested_at, end_reason),
            now=now,
        )
    for session, report in _usage_newest(new.usage).items():
        call_usage_reported.send(
            sender=Call,
            call_id=call_id,
            session=session,
            usage=report["usage"],
            at=report["timestamp"],
        )
    return AgentEventsResult(accepted=new.count, duplicates=len(events) - new.count)


def _usage_newest(reports: list[dict]) -> dict[str, dict]:
    """Each agent session's newest report of a batch (in time order): reports are
    cumulative per session, so only that one matters."""
    newest: dict[str, dict] = {}
    for report in reports:
        session = report.get("session") or ""
        kept = newest.get(session)
        if kept is None or usage_report_newer(
            report["usage"], report["timestamp"], kept["usage"], kept["timestamp"]
        ):
            newest[session] = report
    return newest


def _call_touch(
    *, call_id: uuid.UUID, organization: Organization | None, now: datetime.datetime
) -> tuple:
    """Lock the call (of `organization`, unless None) and set its `last_event_at` (and,
    the agent reporting, its `agent_joined_at` if none and it is open), in
    one plain statement, prepared on PostgreSQL (it runs on every batch; the ORM's
    lock and update were two, compiled each time); its status, hangup request, end
    reason, erasure and transcript expiry. Raises Call.DoesNotExist."""
    pk = Call._meta.pk
    at = Call._meta.get_field("last_event_at").get_db_prep_save(now, connection)
    params = [at, at, pk.get_db_prep_value(call_id, connection)]
    if organization is not None:
        params.append(Organization._meta.pk.get_db_prep_value(organization.pk, connection))
    with bound_cursor() as cursor:
        statement = _call_touch_statement(
            connection.vendor, by_organization=organization is not None
        )
        cursor.execute(statement, params)
        row = cursor.fetchone()
    if row is None:
        raise Call.DoesNotExist
    status, requested_at, *rest = row
    if requested_at is not None and timezone.is_naive(requested_at):  # SQLite's plain row
        requested_at = timezone.make_aware(requested_at, datetime.UTC)
    return (status, requested_at, *rest)


_CALL_TOUCH_RETURNS = (
    "status",
    "hangup_requested_at",
    "end_reason",
    "erased_at",
    "transcript_expired_at",
)


@functools.cache
def _call_touch_statement(vendor: str, *, by_organization: bool) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(quote(name) for name in _CALL_TOUCH_RETURNS)
    joined, open_statuses = (
        quote("agent_joined_at"),
        ", ".join(f"'{s}'" for s in NOT_ENDED_STATUSES),
    )
    return (
        f"UPDATE {quote(Call._meta.db_table)} SET {quote('last_event_at')} = %s,"
        f" {joined} = CASE WHEN {joined} IS NULL AND {quote('status')} IN ({open_statuses})"
        f" THEN %s ELSE {joined} END"
        f" WHERE {quote('id')} = %s"
        + (f" AND {quote('organization_id')} = %s" if by_organization else "")
        + f" RETURNING {columns}"
    )


def _store(
    *, call_id: uuid.UUID, events: list[dict], now: datetime.datetime, keep_content: bool
) -> _NewEvents:
    """Insert each event once (ON CONFLICT DO NOTHING RETURNING: a row already there is
    a duplicate); the new handoffs and statuses in time order."""
    first_of_each: dict[uuid.UUID, dict] = {}
    for event in events:
        first_of_each.setdefault(event["id"], event)
    by_type: dict[str, list[dict]] = defaultdict(list)
    for event in first_of_each.values():
        by_type[event["type"]].append(event)
    lines, samples = by_type[AgentEventType.TRANSCRIPT], by_type[AgentEventType.METRICS]
    ledger = (
        by_type[AgentEventType.AGENT_HANDOFF]
        + by_type[AgentEventType.STATUS]
        + by_type[AgentEventType.USAGE]
    )
    per_call = {"unique": "event_id", "unique_with": ("call",)}
    rows = _transcript_rows(call_id, lines, now)
    if not keep_content:
        rows = [{**row, "content": ERASED_CONTENT, "tool_call": None} for row in rows]
    transcript_ids = insert_new_ids(TranscriptEntry, rows, **per_call)
    metric_ids = insert_new_ids(MetricSample, _sample_rows(call_id, samples, now), **per_call)
    ledger_ids = _ledger_insert(call_id=call_id, rows=_ledger_rows(call_id, ledger, now))

    def new_in_time_order(items: list[dict], ids: set) -> list[dict]:
        return sorted((e for e in items if e["id"] in ids), key=lambda e: e["timestamp"])

    return _NewEvents(
        transcript=[e for e in lines if e["id"] in transcript_ids],
        samples=[e for e in samples if e["id"] in metric_ids],
        handoffs=new_in_time_order(by_type[AgentEventType.AGENT_HANDOFF], ledger_ids),
        statuses=new_in_time_order(by_type[AgentEventType.STATUS], ledger_ids),
        usage=new_in_time_order(by_type[AgentEventType.USAGE], ledger_ids),
        rows={**transcript_ids, **metric_ids},
    )


def _transcript_rows(call_id: uuid.UUID, events: list[dict], now: datetime.datetime) -> list:
    return [
        {
            "call": call_id,
            "event_id": e["id"],
            "role": e["role"],
            "content": e["content"],
            "agent_name": e.get("agent_name"),
            "tool_call": e.get("tool_call"),
            "interrupted": e["role"] == TranscriptRole.ASSISTANT and bool(e.get("interrupted")),
            "timestamp": e["timestamp"],
            "created_at": now,
        }
        for e in events
    ]


def _sample_rows(call_id: uuid.UUID, events: list[dict], now: datetime.datetime) -> list:
    return [
        {
            "call": call_id,
            "event_id": e["id"],
            "agent_name": e.get("agent_name"),
            "turn_index": e.get("turn_index"),
            **{f"{c}_latency_ms": e.get(f"{c}_latency_ms") for c in LATENCY_COMPONENTS},
            "providers": e.get("providers"),
            "tokens": e.get("tokens"),
            "timestamp": e["timestamp"],
            "created_at": now,
        }
        for e in events
    ]


def _ledger_rows(call_id: uuid.UUID, events: list[dict], now: datetime.datetime) -> list:
    # Handoffs and statuses: kept whole, by their event id, for idempotency.
    return [
        {
            "id": e["id"],
            "call": call_id,
            "type": e["type"],
            "payload": {k: v for k, v in e.items() if k not in ("id", "type", "timestamp")},
            "timestamp": e["timestamp"],
            "created_at": now,
        }
        for e in events
    ]


def _ledger_insert(*, call_id: uuid.UUID, rows: list[dict]) -> set:
    """Store handoffs, statuses and usage reports once per call; the event ids stored
    now. A row is keyed by its event id, or, when another call holds that id (ids are
    unique per call, as the API says), by one derived from both (uuid5): a replay to
    this call finds it there. Only a conflict costs more than the one insert."""
    new = insert_new(AgentEvent, rows, unique="id")
    taken = [row["id"] for row in rows if row["id"] not in new]
    if not taken:
        return new
    ours = set(
        AgentEvent.objects.filter(call_id=call_id, pk__in=taken).values_list("pk", flat=True)
    )
    namespace = uuid.UUID(str(call_id))
    elsewhere = {uuid.uuid5(namespace, str(row["id"])): row for row in rows if row["id"] in taken}
    derived = [{**row, "id": key} for key, row in elsewhere.items() if row["id"] not in ours]
    stored = insert_new(AgentEvent, derived, unique="id")
    return new | {elsewhere[key]["id"] for key in stored}


def _aggregate(*, call_id: uuid.UUID, new: _NewEvents) -> None:
    """Move the call's running sums, tokens and agent history by the new events, in one
    atomic UPDATE (F() expressions: no read-modify-write); none when they move nothing
    (a batch of transcript lines: `_call_touch` noted its time)."""
    changes: dict[str, object] = {}
    for component in LATENCY_COMPONENTS:
        name = f"{component}_latency_ms"
        values = [e[name] for e in new.samples if e.get(name) is not None]
        if values:
            changes[f"{name}_sum"] = F(f"{name}_sum") + sum(values)
            changes[f"{component}_latency_count"] = F(f"{component}_latency_count") + len(values)
    tokens = sum(e.get("tokens") or 0 for e in new.samples)
    if tokens:
        changes["total_tokens"] = F("total_tokens") + tokens
    if new.handoffs:
        history = _history_rebuilt(call_id=call_id, handoffs=new.handoffs)
        changes["agent_history"] = (
            JSONArrayAppend("agent_history", [e["to_agent"] for e in new.handoffs])
            if history is None
            else history
        )
        changes["agent_handoffs"] = F("agent_handoffs") + len(new.handoffs)
        # Nobody speaks on an ended call: a late handoff extends the history only.
        latest = new.handoffs[-1]["to_agent"] if history is None else history[-1]
        changes["current_agent"] = Case(
            When(status=CallStatus.ACTIVE, then=Value(latest)), default=F("current_agent")
        )
    if changes:
        Call.objects.filter(pk=call_id).update(**changes)


def _history_rebuilt(*, call_id: uuid.UUID, handoffs: list[dict]) -> list[str] | None:
    """The agent history in time order when a batch of handoffs arrived after a later
    one (batches can cross in transit); None when they are the newest, to be appended."""
    stored = AgentEvent.objects.filter(call_id=call_id, type=AgentEventType.AGENT_HANDOFF)
    new_ids = [e["id"] for e in handoffs]
    if not stored.filter(timestamp__gt=handoffs[0]["timestamp"]).exclude(pk__in=new_ids).exists():
        return None
    history, count = Call.objects.values_list("agent_history", "agent_handoffs").get(pk=call_id)
    before = history[: len(history) - count]  # [start agent]: what no handoff added
    ordered = stored.order_by("timestamp", "created_at").values_list("payload", flat=True)
    return before + [payload["to_agent"] for payload in ordered]


def agent_statuses_held(
    *, call_id: uuid.UUID, since: datetime.datetime
) -> list[tuple[datetime.datetime, Callable[[], None]]]:
    """The agent's end reports that arrived from `since` on, held meanwhile for a
    transfer's result (the ledger keeps them): when each arrived, and how to apply it
    (the transfer failed, so the call ends as the agent said, when it said it)."""
    held = (
        AgentEvent.objects.filter(
            call_id=call_id, type=AgentEventType.STATUS, created_at__gte=since
        )
        .order_by("created_at", "timestamp", "id")
        .values_list("payload", "created_at")
    )
    return [
        (
            arrived_at,
            functools.partial(
                _apply_statuses, call_id=call_id, statuses=[payload], requested=None, now=arrived_at
            ),
        )
        for payload, arrived_at in held
    ]


def _apply_statuses(
    *, call_id: uuid.UUID, statuses: list[dict], requested: str | None, now: datetime.datetime
) -> None:
    """The agent ends the call: the first terminal status wins (terminal is final).
    `requested`: the end we asked LiveKit for (an API hang-up, a transfer), if any."""
    for event in statuses:
        if event["status"] == CallStatus.ACTIVE:
            continue
        end_reason = event.get("reason") or _DEFAULT_END_REASON[event["status"]]
        if event["status"] == CallStatus.COMPLETED and requested:
            # The agent saw the room close (or the caller leave) because we asked.
            end_reason = requested
        if call_transition(
            call_id=call_id, to_status=event["status"], end_reason=end_reason, at=now
        ):
            call_room_close_later(call_id=call_id)
