"""What the calls API answers: one function per response shape, used by every endpoint
(and customer webhook) that returns that shape.

`calls.serializers` describes the same shapes for the schema and SDKs;
tests/test_representations.py holds each function to its schema component, key for key.
The functions read rows (`selectors.LIST_FIELDS`, `ACTIVE_FIELDS`, `TRANSCRIPT_COLUMNS`)
or a model instance and build plain dicts, with no field object per value: lists and
transcripts are the hot read paths.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from django.conf import settings
from django.utils import timezone

from calls.models import ENDED_STATUSES, Call, TranscriptRole, duration_between
from calls.selectors import LIST_FIELDS


def _datetime(value: datetime.datetime | None, tz: datetime.tzinfo) -> str | None:
    # As DRF's DateTimeField: in the current time zone, ISO 8601, UTC spelled `Z`.
    if value is None:
        return None
    text = value.astimezone(tz).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def call_join(*, call: Call, token: str) -> dict:
    """`CallJoin`: what a client needs to join the call's room (POST /calls, /token)."""
    return {
        "call_id": str(call.id),
        "room_name": call.room_name,
        "livekit_url": settings.LIVEKIT_URL,
        "token": token,
        "status": str(call.status),
        "channel": str(call.channel),
    }


def call_join_as_first_sent(stored: Mapping) -> dict:
    """A `CallJoin` kept for idempotent replays, its keys in `call_join`'s order again:
    PostgreSQL's jsonb keeps them in its own, and a replay is the first answer, byte
    for byte."""
    order = ("call_id", "room_name", "livekit_url", "token", "status", "channel")
    return {**{key: stored[key] for key in order if key in stored}, **stored}


def call_summary(row: Mapping, tz: datetime.tzinfo) -> dict:
    """`CallSummary`: a call as lists show it, from a `LIST_FIELDS` row."""
    status = row["status"]
    return {
        "id": str(row["id"]),
        "workflow_id": str(row["workflow_id"]),
        "workflow_slug": str(row["workflow_slug"]),
        "user_id": _str(row["user_id"]),
        "status": status,
        "direction": row["direction"],
        "channel": row["channel"],
        "duration_seconds": duration_between(row["started_at"], row["ended_at"]),
        "agent_history": [_str(agent) for agent in row["agent_history"]],
        # The agent speaking now; nobody speaks on an ended call.
        "current_agent": None if status in ENDED_STATUSES else row["current_agent"],
        "end_reason": _str(row["end_reason"]),
        "started_at": _datetime(row["started_at"], tz),
        "ended_at": _datetime(row["ended_at"], tz),
        "created_at": _datetime(row["created_at"], tz),
    }


def call_summaries(rows: Iterable[Mapping]) -> list[dict]:
    tz = timezone.get_current_timezone()
    return [call_summary(row, tz) for row in rows]


def call_metrics(call: Call, *, samples: dict) -> dict:
    """`CallMetrics`: the seed's means, tokens and handoffs, the turn latencies' means,
    and what the samples add (`selectors.call_samples`: percentiles, providers)."""
    return {**call.metrics(), **samples}


def call_detail(
    call: Call, *, samples: dict, analysis: Any | None, cost: Any | None, recording: Any | None
) -> dict:
    """`Call`: a call with its metrics (`selectors.call_samples` completes them), data,
    room, post-call analysis (`selectors.call_analysis`), cost (`selectors.call_cost`) and
    recording (`recordings.selectors.call_recording`)."""
    row = {name: getattr(call, name) for name in LIST_FIELDS}
    tz = timezone.get_current_timezone()
    summary = call_summary(row, tz)
    # A running call's duration is read off the clock once: twice could differ by a second.
    metrics = call_metrics(call, samples=samples) | {
        "duration_seconds": summary["duration_seconds"]
    }
    return {
        **summary,
        "room_name": call.room_name,
        "phone_number": call.phone_number,
        "from_number": call.from_number,
        "sip_status_code": call.sip_status_code,
        "sip_status": call.sip_status,
        "end_reason_detail": call.end_reason_detail,
        "transfer_destination": call.transfer_destination,
        "agent_joined_at": _datetime(call.agent_joined_at, tz),
        "agent_left_at": _datetime(call.agent_left_at, tz),
        "metrics": metrics,
        "metadata": call.metadata,
        "user_data": call.user_data,
        "analysis": call_analysis(analysis),
        "cost": call_cost(cost),
        "recording": call_recording(recording),
    }


def call_recording(recording: Any | None) -> dict | None:
    """`CallRecording` (recordings.models.Recording, or None: the call was not recorded)."""
    if recording is None:
        return None
    return {
        "status": recording.status,
        "duration_seconds": recording.duration_seconds,
        "size_bytes": recording.size_bytes,
    }


def call_cost(cost: Any | None) -> dict | None:
    """`CallCost` (billing.models.CallCost, or None: not priced yet). Lines priced before
    they named their `phase` were all the call's: the analysis had none."""
    if cost is None or cost.total_usd is None:
        return None
    return {
        "total_usd": str(cost.total_usd),
        "breakdown": [
            line if "phase" in line else {**line, "phase": "call"} for line in cost.breakdown
        ],
        "complete": cost.complete,
    }


def call_analysis(analysis: Any | None) -> dict | None:
    """`CallAnalysis` (analysis.models.CallAnalysis, or None: the call's workflow asked
    for none)."""
    if analysis is None:
        return None
    return {
        "status": analysis.status,
        "summary": analysis.summary,
        "structured_data": analysis.structured_data,
        "success": analysis.success,
        "error": analysis.error or None,
        "model": analysis.model or None,
    }


def active_calls(rows: Iterable[Mapping]) -> list[dict]:
    """`ActiveCall` items from `ACTIVE_FIELDS` rows."""
    tz = timezone.get_current_timezone()
    return [
        {
            "id": str(row["id"]),
            "workflow_id": str(row["workflow_id"]),
            "workflow_slug": str(row["workflow_slug"]),
            "user_id": _str(row["user_id"]),
            "status": row["status"],
            "direction": row["direction"],
            "channel": row["channel"],
            "current_agent": _str(row["current_agent"]),
            "started_at": _datetime(row["started_at"], tz),
            "created_at": _datetime(row["created_at"], tz),
        }
        for row in rows
    ]


def transcript_json(rows: Iterable[tuple]) -> bytes:
    """`[TranscriptEntry]` as JSON bytes (what DRF's JSONRenderer would write), from
    `TRANSCRIPT_COLUMNS` rows; `tool_call` only on lines that have one, `interrupted` on
    assistant lines only.

    orjson writes strings, integers and null as DRF's renderer does (compact, UTF-8 as
    is); the tool calls' arguments are free JSON that may hold floats (orjson spells
    1e-07 as 1e-7), so they go through the standard library as DRF's renderer would,
    and its escaping of U+2028/U+2029 is applied at the end.
    """
    tz = timezone.get_current_timezone()
    return _json_bytes([_transcript_item(row, tz) for row in rows])


def transcript_line_json(row: tuple) -> bytes:
    """One `TranscriptEntry` as `transcript_json` writes it in the list (the live stream)."""
    return _json_bytes(_transcript_item(row, timezone.get_current_timezone()))


def _transcript_item(row: tuple, tz: datetime.tzinfo) -> dict:
    id_, role, content, timestamp, agent_name, tool_call, interrupted = row
    # orjson writes a UTC datetime as DRF spells it (OPT_UTC_Z); other zones are converted.
    utc = str(tz) == "UTC"
    item = {
        "role": role,
        "content": str(content),
        "timestamp": (
            timestamp if utc and timestamp.tzinfo is datetime.UTC else _datetime(timestamp, tz)
        ),
        "agent_name": _str(agent_name),
        "sequence": id_,
    }
    if tool_call is not None:
        arguments = {str(key): value for key, value in tool_call["arguments"].items()}
        shown = {"name": str(tool_call["name"]), "arguments": arguments}
        if tool_call.get("is_error"):
            shown["is_error"] = True
        item["tool_call"] = orjson.Fragment(_stdlib_json(shown))
    if role == TranscriptRole.ASSISTANT:
        item["interrupted"] = bool(interrupted)
    return item


def _json_bytes(value: object) -> bytes:
    body = orjson.dumps(value, option=orjson.OPT_UTC_Z)
    if b"\xe2\x80\xa8" in body or b"\xe2\x80\xa9" in body:
        body = body.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return body


# Per-turn metrics as the agent reported them (`MetricSample` columns; the live stream).
METRIC_SAMPLE_COLUMNS = (
    "agent_name",
    "turn_index",
    "stt_latency_ms",
    "llm_latency_ms",
    "tts_latency_ms",
    "eou_latency_ms",
    "e2e_latency_ms",
    "tokens",
    "providers",
    "timestamp",
)


def metric_sample(row: Mapping) -> dict:
    """`MetricSample`: one turn's metrics, from a `METRIC_SAMPLE_COLUMNS` row."""
    tz = timezone.get_current_timezone()
    return {**row, "timestamp": _datetime(row["timestamp"], tz)}


def agent_handoff(data: Mapping) -> dict:
    """`AgentHandoff`: who handed the call to whom, and when (ISO 8601, as stored)."""
    return {
        "from_agent": data.get("from_agent"),
        "to_agent": data["to_agent"],
        "timestamp": data["timestamp"],
    }


def call_status_change(call_id: object, data: Mapping) -> dict:
    """`CallStatusChange`: the `call.status_changed` webhook's data, and when."""
    return {
        "call_id": str(call_id),
        "from_status": data.get("from_status"),
        "to_status": data["to_status"],
        "end_reason": data.get("end_reason"),
        "at": data["at"],
    }


def _stdlib_json(value: object) -> bytes:
    # JSONRenderer's own settings: compact, UTF-8 as is, no NaN.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
