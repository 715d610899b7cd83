"""The hot paths' answers built from rows and plain objects: call lists, active calls,
transcripts (5,000 lines in a long call) and a new call's join details.

Each function returns exactly what its DRF serializer in `calls.serializers` (still the
schema, and still used for single objects) returns for the same row, without a field
object call per value; tests/test_representations.py holds them to it. Measured at a
million calls in bench/README.md.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

import orjson
from django.utils import timezone

from calls.models import ENDED_STATUSES, TranscriptRole

if TYPE_CHECKING:
    from calls.services import CallJoinInfo


def _datetime(value: datetime.datetime | None, tz: datetime.tzinfo) -> str | None:
    # DRF's DateTimeField: in the current time zone, ISO 8601, UTC spelled `Z`.
    if value is None:
        return None
    text = value.astimezone(tz).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _duration(started: datetime.datetime | None, ended: datetime.datetime | None) -> int | None:
    # Call.duration_seconds, from the row.
    if started is None:
        return None
    return max(0, int(((ended or timezone.now()) - started).total_seconds()))


def call_join(joined: CallJoinInfo) -> dict:
    """CallJoinSerializer(joined).data: what `POST /calls` answers."""
    return {
        "call_id": str(joined.call.id),
        "room_name": joined.call.room_name,
        "livekit_url": joined.livekit_url,
        "token": joined.token,
        "status": str(joined.call.status),
    }


def call_list_items(rows: Iterable[dict]) -> list[dict]:
    """CallListItemSerializer(many=True).data for `selectors.LIST_FIELDS` rows."""
    tz = timezone.get_current_timezone()
    return [
        {
            "id": str(row["id"]),
            "workflow_id": str(row["workflow_id"]),
            "workflow_slug": str(row["workflow_slug"]),
            "user_id": _str(row["user_id"]),
            "status": row["status"],
            "direction": row["direction"],
            "duration_seconds": _duration(row["started_at"], row["ended_at"]),
            "agent_history": [_str(agent) for agent in row["agent_history"]],
            "current_agent": None if row["status"] in ENDED_STATUSES else row["current_agent"],
            "end_reason": _str(row["end_reason"]),
            "started_at": _datetime(row["started_at"], tz),
            "ended_at": _datetime(row["ended_at"], tz),
            "created_at": _datetime(row["created_at"], tz),
        }
        for row in rows
    ]


def active_call_items(rows: Iterable[dict]) -> list[dict]:
    """ActiveCallSerializer(many=True).data for `selectors.ACTIVE_FIELDS` rows."""
    tz = timezone.get_current_timezone()
    return [
        {
            "id": str(row["id"]),
            "workflow_id": str(row["workflow_id"]),
            "workflow_slug": str(row["workflow_slug"]),
            "user_id": _str(row["user_id"]),
            "status": row["status"],
            "direction": row["direction"],
            "current_agent": _str(row["current_agent"]),
            "started_at": _datetime(row["started_at"], tz),
            "created_at": _datetime(row["created_at"], tz),
        }
        for row in rows
    ]


def transcript_json(rows: Iterable[tuple]) -> bytes:
    """JSONRenderer().render(TranscriptEntrySerializer(many=True).data), byte for byte,
    for `selectors.TRANSCRIPT_COLUMNS` rows.

    Serialized by orjson, which writes strings, integers and null exactly as DRF's
    renderer (compact, UTF-8 as is); the tool-call arguments, free JSON that may hold
    floats (orjson writes 1e-07 as 1e-7), go through the standard library as DRF would,
    and DRF's escaping of U+2028/U+2029 is applied at the end.
    """
    tz = timezone.get_current_timezone()
    # In UTC (the setting), a UTC timestamp is written by orjson itself (OPT_UTC_Z:
    # ISO 8601, microseconds only when non-zero, `Z`), exactly as DRF spells it: no
    # astimezone() and isoformat() per line, a fifth of a 5,000-line transcript.
    utc = str(tz) == "UTC"
    items = []
    for id_, role, content, timestamp, agent_name, tool_call, interrupted in rows:
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
            item["tool_call"] = orjson.Fragment(
                _stdlib_json({"name": str(tool_call["name"]), "arguments": arguments})
            )
        if role == TranscriptRole.ASSISTANT:
            item["interrupted"] = bool(interrupted)
        items.append(item)
    body = orjson.dumps(items, option=orjson.OPT_UTC_Z)
    if b"\xe2\x80\xa8" in body or b"\xe2\x80\xa9" in body:
        body = body.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return body


def _stdlib_json(value: object) -> bytes:
    # JSONRenderer's own settings: compact, UTF-8 as is, no NaN.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
