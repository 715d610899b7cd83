from __future__ import annotations

import datetime
import functools
import json
import math
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db import connection
from django.db.backends.utils import CursorWrapper
from django.db.models import Q, QuerySet

from accounts.models import Organization
from calls.models import (
    LATENCY_COMPONENTS,
    NOT_ENDED_STATUSES,
    AgentEvent,
    AgentEventType,
    Call,
    CallChannel,
    CallDirection,
    LiveKitWebhookEvent,
    MetricSample,
    TranscriptEntry,
    TranscriptRole,
)
from voicecalls.db import bound_cursor, timestamps_read_natively
from voicecalls.rows import ValuesStatement, instance_from_row, select_columns

# Columns the list and detail answers read; the JSON blobs stay out of lists.
LIST_FIELDS = (
    "id",
    "workflow_id",
    "workflow_slug",
    "user_id",
    "status",
    "direction",
    "channel",
    "end_reason",
    "agent_history",
    "current_agent",
    "started_at",
    "ended_at",
    "created_at",
)
ACTIVE_FIELDS = (
    "id",
    "workflow_id",
    "workflow_slug",
    "user_id",
    "status",
    "direction",
    "channel",
    "current_agent",
    "started_at",
    "created_at",
)
NEWEST_FIRST = ("-created_at", "-id")
TRANSCRIPT_COLUMNS = (
    "id",
    "role",
    "content",
    "timestamp",
    "agent_name",
    "tool_call",
    "interrupted",
)


def calls_with_number(number: str) -> Q:
    """The calls with a person at `number` (E.164): the callee of an outbound phone call,
    the caller of an inbound one (indexes call_callee, call_caller; the organization's
    own number is nobody's)."""
    phone = Q(channel=CallChannel.PHONE)
    return phone & (
        Q(direction=CallDirection.OUTBOUND, phone_number=number)
        | Q(direction=CallDirection.INBOUND, from_number=number)
    )


def call_queryset(*, organization: Organization) -> QuerySet[Call]:
    """Every call of one organization: how views reach calls through the ORM (the
    statements compiled once, `call_get` and `active_calls`, filter by organization
    the same way)."""
    return Call.objects.filter(organization=organization)


def active_calls(*, organization: Organization, limit: int) -> list[dict]:
    """Calls not yet ended, newest first, as `ACTIVE_FIELDS` rows (at most `limit`)."""
    return _active_calls_statement(connection.vendor, limit).rows(organization.pk)


@functools.lru_cache(maxsize=256)
def _active_calls_statement(vendor: str, limit: int) -> ValuesStatement:
    placeholder = uuid.UUID(int=0)
    calls = (
        Call.objects.filter(organization_id=placeholder, status__in=NOT_ENDED_STATUSES)
        .order_by(*NEWEST_FIRST)
        .values(*ACTIVE_FIELDS)[:limit]
    )
    return ValuesStatement(
        calls, field=Call._meta.get_field("organization").target_field, placeholder=placeholder
    )


def raw_rows_possible() -> bool:
    # The hand-assembled statements below are PostgreSQL's; SQLite keeps the ORM path.
    return connection.vendor == "postgresql"


def fetch_fast(sql: str, params: Sequence, *, prepared: bool = True) -> list[tuple]:
    """Rows of `sql` (PostgreSQL), timestamps read natively (`voicecalls.db`). jsonb
    comes back as text, as Django reads it. `prepared`: bound on the server, so that a
    statement whose text is the same for every request is prepared rather than planned
    again (planning was half of a one-call list's query, bench/README.md); otherwise
    planned for its own values (`planned_cursor`)."""
    with bound_cursor() if prepared else planned_cursor() as cursor:
        timestamps_read_natively(cursor)
        cursor.execute(sql, params)
        return cursor.fetchall()


def planned_cursor() -> CursorWrapper:
    """Django's own cursor, binding values into the text on the client: PostgreSQL plans
    each statement for its values, never reusing a generic plan."""
    return connection.cursor()


def call_transcript_rows(*, call: Call) -> list[tuple]:
    """The transcript as `TRANSCRIPT_COLUMNS` tuples, ordered by (timestamp, arrival order).

    A long call has thousands of lines: on PostgreSQL they are read with psycopg's C
    timestamp loader (`fetch_fast`); the tool calls' jsonb is parsed as JSONField does.
    """
    entries = (
        TranscriptEntry.objects.filter(call=call)
        .order_by("timestamp", "id")
        .values_list(*TRANSCRIPT_COLUMNS)
    )
    if not raw_rows_possible():
        return list(entries)
    rows = fetch_fast(*entries.query.sql_with_params())
    return [
        row if row[5] is None else (*row[:5], json.loads(row[5]), *row[6:])  # tool_call
        for row in rows
    ]


def call_transcript(*, call: Call) -> list[dict]:
    """The transcript as dicts of `TRANSCRIPT_COLUMNS` (the admin's conversation view)."""
    return [
        dict(zip(TRANSCRIPT_COLUMNS, row, strict=True)) for row in call_transcript_rows(call=call)
    ]


# The lines a conversation is made of: the system's notes (an agent error, a DTMF
# tone) are the record's, not something anybody said.
CONVERSATION_ROLES = (TranscriptRole.USER, TranscriptRole.ASSISTANT, TranscriptRole.TOOL)


def call_conversation_recent(
    *, call: Call, max_lines: int, max_chars: int
) -> tuple[list[dict], bool]:
    """The call's most recent conversation lines as dicts of `TRANSCRIPT_COLUMNS`, in
    transcript order (timestamp, arrival), and whether earlier lines were left out.

    At most `max_lines`, and only as many, counted back from the newest, as fit in
    `max_chars` (content plus the tool call's JSON): the kept lines are the unbroken end
    of the conversation (the newest line alone over it: its content cut to fit). One
    query, whatever the transcript's length: one row past `max_lines` says whether there
    were more.
    """
    rows = (
        TranscriptEntry.objects.filter(call=call, role__in=CONVERSATION_ROLES)
        .order_by("-timestamp", "-id")
        .values(*TRANSCRIPT_COLUMNS)[: max_lines + 1]
    )
    newest_first = list(rows)
    kept: list[dict] = []
    used = 0
    cut = False
    for row in newest_first[:max_lines]:
        used += len(row["content"])
        if row["tool_call"] is not None:
            used += len(json.dumps(row["tool_call"], ensure_ascii=False))
        if used > max_chars:
            # The newest line alone over the bound: kept with its content cut (left out,
            # the conversation was empty and the agent greeted the caller again).
            room = len(row["content"]) - (used - max_chars)
            if not kept and room > 0:
                kept.append({**row, "content": row["content"][:room]})
                cut = True
            break
        kept.append(row)
    kept.reverse()
    return kept, cut or len(kept) < len(newest_first)


def agent_call_queryset(*, organization: Organization | None) -> QuerySet[Call]:
    """Calls an agent key reaches: any call for a platform key (organization None),
    else only its organization's (another organization's call is simply not found)."""
    if organization is None:
        return Call.objects.all()
    return call_queryset(organization=organization)


def _percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted samples: a value that was actually measured."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


LATENCY_COLUMNS = tuple(f"{component}_latency_ms" for component in LATENCY_COMPONENTS)


def latency_summary(rows: Iterable[tuple[float | None, ...]]) -> dict[str, dict]:
    """Per component (stt, llm, tts, e2e, eou) of LATENCY_COLUMNS rows: p50, p95, max
    (ms, rounded) and count."""
    samples: dict[str, list[float]] = {component: [] for component in LATENCY_COMPONENTS}
    for row in rows:
        for component, value in zip(LATENCY_COMPONENTS, row, strict=True):
            if value is not None:
                samples[component].append(value)
    latency = {}
    for component, values in samples.items():
        values.sort()
        latency[component] = {
            "p50": round(_percentile(values, 0.50)) if values else None,
            "p95": round(_percentile(values, 0.95)) if values else None,
            "max": round(values[-1]) if values else None,
            "count": len(values),
        }
    return latency


def providers_summary(served: Iterable[dict | None]) -> list[dict]:
    """Each (component, provider, model) that served turns, with how many, in the order
    first seen: which fallback answered when the first choice failed."""
    turns: dict[tuple[str, str, str], int] = {}
    for providers in served:
        # In pipeline order: jsonb keeps no key order.
        for component in ("stt", "llm", "tts"):
            choice = (providers or {}).get(component)
            if choice:
                key = (component, choice["provider"], choice["model"])
                turns[key] = turns.get(key, 0) + 1
    return [
        {"component": component, "provider": provider, "model": model, "turns": n}
        for (component, provider, model), n in turns.items()
    ]


def recent_latency(*, samples: int) -> dict[str, dict]:
    """Latency percentiles over the platform's most recent metric samples (bounded)."""
    rows = MetricSample.objects.order_by("-id").values_list(*LATENCY_COLUMNS)[:samples]
    return latency_summary(rows)


def call_samples(*, call: Call) -> dict:
    """What a call's metric samples add to its metrics: `latency` percentiles per
    component and the `providers` that served its turns (one query)."""
    rows = _call_samples_statement(connection.vendor).tuples(call.pk)
    return {
        "latency": latency_summary(row[:-1] for row in rows),
        "providers": providers_summary(row[-1] for row in rows),
    }


@functools.cache
def _call_samples_statement(vendor: str) -> ValuesStatement:
    placeholder = uuid.UUID(int=0)
    samples = MetricSample.objects.filter(call_id=placeholder).order_by("id")
    return ValuesStatement(
        samples.values_list(*LATENCY_COLUMNS, "providers"),
        field=MetricSample._meta.get_field("call").target_field,
        placeholder=placeholder,
    )


def call_analysis(*, call: Call) -> Any | None:
    """The call's post-call analysis row (analysis.models.CallAnalysis), or None when its
    workflow version asked for none. Read through the reverse relation: calls does not
    import the analysis app."""
    try:
        return call.analysis
    except ObjectDoesNotExist:
        return None


def call_cost(*, call: Call) -> Any | None:
    """The call's usage and cost row (billing.models.CallCost), or None when it has none;
    through the reverse relation, as `call_analysis`."""
    try:
        return call.cost
    except ObjectDoesNotExist:
        return None


# A call's one-to-ones the detail answer shows (analysis, cost, recording), read with
# it. Named, not imported: calls does not import the apps that own them.
DETAIL_RELATED = ("analysis", "cost", "recording")


def call_get(
    *, organization: Organization, call_id: str, related: tuple[str, ...] = ()
) -> Call | None:
    """The organization's call `call_id`, with the `related` one-to-ones loaded (each
    None when the call has none, e.g. DETAIL_RELATED), or None: what
    `call_queryset(...).select_related(*related).filter(pk=call_id).first()` returns,
    in one statement built once per process (compiling that query was most of a one-row
    answer's time: bench/README.md)."""
    pk = Call._meta.pk
    params = [pk.get_db_prep_value(pk.to_python(v), connection) for v in (organization.pk, call_id)]
    spans, statement = _call_statement(connection.vendor, related)
    with bound_cursor() as cursor:
        cursor.execute(statement, params)
        row = cursor.fetchone()
    if row is None:
        return None
    (start, end, _), *related_spans = spans
    call = instance_from_row(Call, row[start:end])
    for name, (start, end, pk_at) in zip(related, related_spans, strict=True):
        relation = Call._meta.get_field(name)
        found = None
        if row[start + pk_at] is not None:  # a LEFT JOIN that found no row
            found = instance_from_row(relation.related_model, row[start:end])
            relation.field.set_cached_value(found, call)
        relation.set_cached_value(call, found)
    return call


@functools.cache
def _call_statement(
    vendor: str, related: tuple[str, ...]
) -> tuple[list[tuple[int, int, int]], str]:
    """Per model read (the call, then each of `related`): where its columns start and end
    in the row and where its primary key is among them; and the statement."""
    quote = connection.ops.quote_name
    call_pk = Call._meta.pk.column
    models = [Call] + [Call._meta.get_field(name).related_model for name in related]
    columns: list[str] = []
    spans = []
    for index, model in enumerate(models):
        fields = model._meta.concrete_fields
        spans.append((len(columns), len(columns) + len(fields), fields.index(model._meta.pk)))
        columns += select_columns(model, f"t{index}")
    joins = "".join(
        f" LEFT JOIN {quote(model._meta.db_table)} t{index}"
        f" ON t{index}.{quote(Call._meta.get_field(name).field.column)} = t0.{quote(call_pk)}"
        for index, (name, model) in enumerate(zip(related, models[1:], strict=True), 1)
    )
    return spans, (
        f"SELECT {', '.join(columns)} FROM {quote(Call._meta.db_table)} t0{joins}"
        f" WHERE t0.{quote(Call._meta.get_field('organization').column)} = %s"
        f" AND t0.{quote(call_pk)} = %s"
    )


def call_signals(*, call: Call) -> list[dict]:
    """What moved the call, in time order, for staff: its status changes, the LiveKit
    webhooks about its room (the ledger keeps them a day: calls.expiry) and the agent's
    own status reports; each `{at, source, what}`."""
    from streams.models import CallEvent, CallEventType  # (streams builds on calls)

    changes = CallEvent.objects.filter(call_id=call.pk, type=CallEventType.STATUS)
    signals = [
        _signal(
            datetime.datetime.fromisoformat(data["at"]),
            "status",
            f"{data.get('from_status') or '—'} → {data['to_status']}",
            data.get("end_reason"),
        )
        for data in changes.order_by("seq").values_list("data", flat=True)
        if data and data.get("at")
    ]
    heard = LiveKitWebhookEvent.objects.filter(room_name=call.room_name).values_list(
        "event", "participant_identity", "disconnect_reason", "happened_at", "received_at"
    )
    signals += [
        _signal(happened or received, "LiveKit", " ".join(filter(None, [event, who, why])))
        for event, who, why, happened, received in heard
    ]
    reports = AgentEvent.objects.filter(call_id=call.pk, type=AgentEventType.STATUS)
    signals += [
        _signal(at, "agent", str(payload.get("status")), payload.get("reason"))
        for payload, at in reports.values_list("payload", "timestamp")
    ]
    return sorted(signals, key=lambda signal: signal["at"])


def _signal(at: datetime.datetime, source: str, what: str, why: str | None = None) -> dict:
    return {"at": at, "source": source, "what": f"{what} ({why})" if why else what}
