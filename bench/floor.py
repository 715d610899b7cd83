"""The raw floors: the same answers built by hand — plain SQL through psycopg, rows
turned into the contract's dicts, `json.dumps` with DRF's settings. Written from the
API contract, independently of the application's code, so it can check the stack's
bodies too (`bench.runner` compares them byte for byte before timing anything)."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import os
from collections.abc import Sequence

import psycopg

LIST_COLUMNS = (
    "id, workflow_id, workflow_slug, user_id, status, direction, end_reason, agent_history,"
    " current_agent, started_at, ended_at, created_at"
)
ENDED = ("completed", "failed", "disconnected", "timeout")


def connect(*, prepare: bool = False) -> psycopg.Connection:
    """Autocommit, UTC, and planned as the stack plans: reads are never prepared (Django's
    ORM never prepares); with `prepare`, for the writes, statements are prepared once run
    5 times, as the stack's hot statements are (`voicecalls.db`, psycopg's default)."""
    conn = psycopg.connect(
        os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=5 if prepare else None
    )
    conn.execute("SET TIME ZONE 'UTC'")
    return conn


def dumps(payload: object) -> bytes:
    # DRF's JSONRenderer: compact separators, UTF-8 as is (UNICODE_JSON).
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def iso(value: datetime.datetime | None) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def duration(started: datetime.datetime | None, ended: datetime.datetime | None) -> int | None:
    if started is None:
        return None
    end = ended or datetime.datetime.now(datetime.UTC)
    return max(0, int((end - started).total_seconds()))


def list_item(row: Sequence) -> dict:
    (id_, workflow_id, slug, user_id, status, direction, end_reason, history, agent) = row[:9]
    started, ended, created = row[9:12]
    return {
        "id": str(id_),
        "workflow_id": str(workflow_id),
        "workflow_slug": slug,
        "user_id": user_id,
        "status": status,
        "direction": direction,
        "duration_seconds": duration(started, ended),
        "agent_history": history,
        "current_agent": None if status in ENDED else agent,
        "end_reason": end_reason,
        "started_at": iso(started),
        "ended_at": iso(ended),
        "created_at": iso(created),
    }


def call_list(
    conn: psycopg.Connection, *, organization_id: str, where: str, params: list, page: int
) -> bytes:
    """GET /calls: the exact count, then the page (skipped past the end)."""
    page_size = 20
    scope = f"organization_id = %s{where}"
    total = conn.execute(
        f"SELECT count(*) FROM calls_call WHERE {scope}", [organization_id, *params]
    ).fetchone()[0]
    offset = (page - 1) * page_size
    items = []
    if offset < total:
        rows = conn.execute(
            f"SELECT {LIST_COLUMNS}, channel FROM calls_call WHERE {scope} "
            "ORDER BY created_at DESC, id DESC LIMIT %s OFFSET %s",
            [organization_id, *params, page_size, offset],
        )
        items = [{**list_item(row), "channel": row[12]} for row in rows]
    return dumps(
        {
            "items": items,
            "total": total,
            "page": page,
            "page_size": page_size,
            "pages": math.ceil(total / page_size),
        }
    )


def active_calls(conn: psycopg.Connection, *, organization_id: str, limit: int = 50) -> bytes:
    rows = conn.execute(
        "SELECT id, workflow_id, workflow_slug, user_id, status, direction, current_agent,"
        " started_at, created_at, channel FROM calls_call WHERE organization_id = %s"
        " AND status IN ('pending', 'connecting', 'active')"
        " ORDER BY created_at DESC, id DESC LIMIT %s",
        [organization_id, limit],
    )
    return dumps(
        [
            {
                "id": str(row[0]),
                "workflow_id": str(row[1]),
                "workflow_slug": row[2],
                "user_id": row[3],
                "status": row[4],
                "direction": row[5],
                "channel": row[9],
                "current_agent": row[6],
                "started_at": iso(row[7]),
                "created_at": iso(row[8]),
            }
            for row in rows
        ]
    )


def _mean(total: float, count: int) -> int | None:
    return round(total / count) if count else None


def _percentiles(values: list[float]) -> dict:
    # Nearest rank, as the API reports them.
    def rank(fraction: float) -> int:
        return round(values[max(1, math.ceil(fraction * len(values))) - 1])

    return {
        "p50": rank(0.50) if values else None,
        "p95": rank(0.95) if values else None,
        "max": round(values[-1]) if values else None,
        "count": len(values),
    }


# The metrics' twelve columns of the call's row: latency sums and counts, tokens, handoffs.
METRICS_COLUMNS = (
    "stt_latency_ms_sum, stt_latency_count, llm_latency_ms_sum, llm_latency_count,"
    " tts_latency_ms_sum, tts_latency_count, total_tokens, agent_handoffs,"
    " eou_latency_ms_sum, eou_latency_count, e2e_latency_ms_sum, e2e_latency_count"
)


def call_detail(conn: psycopg.Connection, *, organization_id: str, call_id: str) -> bytes:
    row = conn.execute(
        f"SELECT {LIST_COLUMNS}, user_data, metadata, {METRICS_COLUMNS}, channel, room_name,"
        " phone_number, from_number, sip_status_code, sip_status, transfer_destination,"
        " agent_joined_at, agent_left_at, end_reason_detail"
        " FROM calls_call WHERE id = %s AND organization_id = %s",
        [call_id, organization_id],
    ).fetchone()
    body = list_item(row)
    user_data, metadata = row[12:14]
    samples = _samples(conn, call_id=call_id)
    body["channel"], body["room_name"] = row[26:28]
    for name, value in zip(
        ("phone_number", "from_number", "sip_status_code", "sip_status", "transfer_destination"),
        row[28:33],
        strict=True,
    ):
        body[name] = value
    body["agent_joined_at"], body["agent_left_at"] = iso(row[33]), iso(row[34])
    body["end_reason_detail"] = row[35]
    body["metrics"] = _metrics(row[14:26], samples, duration_seconds=body["duration_seconds"])
    body["metadata"] = metadata
    body["user_data"] = user_data
    body.update(_detail_after_the_call(conn, call_id=call_id))
    return dumps(body)


def call_metrics(conn: psycopg.Connection, *, organization_id: str, call_id: str) -> bytes:
    """`GET /calls/{id}/metrics`: the detail's `metrics` alone."""
    row = conn.execute(
        f"SELECT started_at, ended_at, {METRICS_COLUMNS}"
        " FROM calls_call WHERE id = %s AND organization_id = %s",
        [call_id, organization_id],
    ).fetchone()
    samples = _samples(conn, call_id=call_id)
    return dumps(_metrics(row[2:], samples, duration_seconds=duration(row[0], row[1])))


def _samples(conn: psycopg.Connection, *, call_id: str) -> list[tuple]:
    return conn.execute(
        "SELECT stt_latency_ms, llm_latency_ms, tts_latency_ms, e2e_latency_ms,"
        " eou_latency_ms, providers FROM calls_metricsample WHERE call_id = %s ORDER BY id",
        [call_id],
    ).fetchall()


def _metrics(sums: Sequence, samples: list, *, duration_seconds: int | None) -> dict:
    """`CallMetrics`: the call row's `METRICS_COLUMNS` and its samples'."""
    from calls.selectors import providers_summary  # pure Python: the floor needs it too

    stt_sum, stt_n, llm_sum, llm_n, tts_sum, tts_n, tokens, handoffs = sums[:8]
    eou_sum, eou_n, e2e_sum, e2e_n = sums[8:12]
    return {
        "duration_seconds": duration_seconds,
        "stt_latency_ms": _mean(stt_sum, stt_n),
        "llm_latency_ms": _mean(llm_sum, llm_n),
        "tts_latency_ms": _mean(tts_sum, tts_n),
        "total_tokens": tokens,
        "agent_handoffs": handoffs,
        "eou_latency_ms": _mean(eou_sum, eou_n),
        "e2e_latency_ms": _mean(e2e_sum, e2e_n),
        "latency": {
            component: _percentiles(sorted(s[i] for s in samples if s[i] is not None))
            for i, component in enumerate(("stt", "llm", "tts", "e2e", "eou"))
        },
        "providers": providers_summary(s[5] for s in samples),
    }


def _detail_after_the_call(conn: psycopg.Connection, *, call_id: str) -> dict:
    """The detail's `analysis`, `cost` and `recording` (in that order), one query each."""
    analysis = conn.execute(
        "SELECT status, summary, structured_data, success, error, model"
        " FROM analysis_callanalysis WHERE call_id = %s",
        [call_id],
    ).fetchone()
    cost = conn.execute(
        "SELECT total_usd, breakdown, complete FROM billing_callcost WHERE call_id = %s",
        [call_id],
    ).fetchone()
    recording = conn.execute(
        "SELECT status, duration_seconds, size_bytes FROM recordings_recording WHERE call_id = %s",
        [call_id],
    ).fetchone()
    return {
        "analysis": None
        if analysis is None
        else {
            "status": analysis[0],
            "summary": analysis[1],
            "structured_data": analysis[2],
            "success": analysis[3],
            "error": analysis[4] or None,
            "model": analysis[5] or None,
        },
        "cost": None
        if cost is None or cost[0] is None
        else {"total_usd": str(cost[0]), "breakdown": cost[1], "complete": cost[2]},
        "recording": None
        if recording is None
        else {
            "status": recording[0],
            "duration_seconds": recording[1],
            "size_bytes": recording[2],
        },
    }


def _usage_figures(calls: int, seconds: decimal.Decimal, cost: decimal.Decimal) -> dict:
    minutes = (seconds / 60).quantize(decimal.Decimal("0.01"), rounding=decimal.ROUND_HALF_EVEN)
    micro = decimal.Decimal("0.000001")
    return {
        "calls": calls,
        "minutes": str(minutes),
        "cost_usd": str(cost.quantize(micro, rounding=decimal.ROUND_HALF_EVEN)),
    }


def _exact_seconds(value: datetime.timedelta | None) -> decimal.Decimal:
    if value is None:
        return decimal.Decimal(0)
    microseconds = (value.days * 86400 + value.seconds) * 10**6 + value.microseconds
    return decimal.Decimal(microseconds).scaleb(-6)


def usage_daily(
    conn: psycopg.Connection, *, organization_id: str, start: datetime.date, end: datetime.date
) -> bytes:
    """GET /usage/daily: calls and minutes per (UTC day, workflow), and their cost."""
    days = _usage_days(conn, organization_id=organization_id, start=start, end=end)
    zero = decimal.Decimal(0)
    body_days, total = [], [0, zero, zero]
    for day, rows in days.items():
        sums = [
            sum(r[2] for r in rows),
            sum((r[3] for r in rows), zero),
            sum((r[4] for r in rows), zero),
        ]
        total = [a + b for a, b in zip(total, sums, strict=True)]
        body_days.append(
            {
                "date": day.isoformat(),
                **_usage_figures(*sums),
                "workflows": [
                    {"workflow_id": str(r[0]), "workflow_slug": r[1], **_usage_figures(*r[2:])}
                    for r in rows
                ],
            }
        )
    return dumps(
        {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "days": body_days,
            "total": _usage_figures(*total),
        }
    )


def _usage_days(
    conn: psycopg.Connection, *, organization_id: str, start: datetime.date, end: datetime.date
) -> dict[datetime.date, list[tuple]]:
    """Every day from `start` to `end` → its (workflow, slug, calls, seconds, cost) rows,
    in the documented order."""
    first = datetime.datetime.combine(start, datetime.time.min, tzinfo=datetime.UTC)
    after = datetime.datetime.combine(end, datetime.time.min, tzinfo=datetime.UTC)
    bounds = [organization_id, first, after + datetime.timedelta(days=1)]
    calls = conn.execute(
        "SELECT (created_at AT TIME ZONE 'UTC')::date, workflow_id, workflow_slug, count(*),"
        " sum(greatest(ended_at - started_at, interval '0')), max(created_at) FROM calls_call"
        " WHERE organization_id = %s AND created_at >= %s AND created_at < %s"
        " GROUP BY 1, 2, 3",
        bounds,
    ).fetchall()
    costs = dict(
        ((day, workflow), cost)
        for day, workflow, cost in conn.execute(
            "SELECT (call_created_at AT TIME ZONE 'UTC')::date, workflow_id, sum(total_usd)"
            " FROM billing_callcost WHERE organization_id = %s AND call_created_at >= %s"
            " AND call_created_at < %s AND total_usd IS NOT NULL GROUP BY 1, 2",
            bounds,
        )
    )
    zero = decimal.Decimal(0)
    # (day, workflow) → [slug of its latest call, latest, count, seconds, cost]
    merged: dict = {}
    for day, workflow, slug, count, duration, latest in calls:
        row = merged.setdefault((day, workflow), [slug, latest, 0, zero, zero])
        if latest > row[1]:
            row[:2] = slug, latest
        row[2] += count
        row[3] += _exact_seconds(duration)
        row[4] += costs.pop((day, workflow), None) or zero
    days = {start + datetime.timedelta(days=i): [] for i in range((end - start).days + 1)}
    for (day, workflow), (slug, _, count, seconds, cost) in merged.items():
        days[day].append((workflow, slug, count, seconds, cost))
    for rows in days.values():
        rows.sort(key=lambda r: (r[1], str(r[0])))  # slug, id: as documented
    return days


def transcript(conn: psycopg.Connection, *, organization_id: str, call_id: str) -> bytes:
    conn.execute(
        "SELECT id FROM calls_call WHERE id = %s AND organization_id = %s",
        [call_id, organization_id],
    ).fetchone()
    rows = conn.execute(
        "SELECT id, role, content, timestamp, agent_name, tool_call, interrupted"
        " FROM calls_transcriptentry WHERE call_id = %s ORDER BY timestamp, id",
        [call_id],
    )
    entries = []
    for id_, role, content, timestamp, agent_name, tool_call, interrupted in rows:
        entry = {
            "role": role,
            "content": content,
            "timestamp": iso(timestamp),
            "agent_name": agent_name,
            "sequence": id_,
        }
        if tool_call is not None:
            entry["tool_call"] = tool_call
        if role == "assistant":
            entry["interrupted"] = interrupted
        entries.append(entry)
    return dumps(entries)
