"""The events the worker reports, made sendable: what the API's JSON can carry and its
bounds take, so a value that could not be sent never costs the event (or its batch)."""

from __future__ import annotations

import datetime
import json
import math
import re
import uuid

from voicecalls.json_numbers import fits_64_bits, json_float_growth

_SURROGATE = re.compile("[\ud800-\udfff]")

# The API's bounds on a tool call's arguments; past them the model's text, cut short
# (6 bytes a character at worst, escaped, stays under the bytes).
MAX_ARGUMENTS_BYTES = 16 * 1024
MAX_ARGUMENTS_DEPTH = 8
MAX_RAW_ARGUMENTS_CHARS = 2000
# The API's bound on a tool call's name (1 to 64 characters, blanks trimmed).
MAX_TOOL_NAME_CHARS = 64
UNNAMED_TOOL = "unnamed"


def iso_timestamp(epoch: float | None = None) -> str:
    if epoch is None:
        moment = datetime.datetime.now(datetime.UTC)
    else:
        moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.isoformat()


def event_new(event_type: str, timestamp: float | None, fields: dict[str, object]) -> dict:
    safe = json_safe(fields)
    return {
        "id": str(uuid.uuid4()),
        "type": event_type,
        "timestamp": iso_timestamp(timestamp),
        **{k: v for k, v in safe.items() if v is not None},
    }


def json_safe(value: object) -> object:
    """`value` as the API takes it, each part that could not be sent made the nearest
    thing that can: a lone surrogate (half of a pair split across streamed chunks: no
    UTF-8 has it) becomes U+FFFD, a NUL (refused) goes, NaN and infinities (no JSON has
    them) become null. Otherwise the whole batch would fail to encode, every time."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value.replace("\x00", ""))
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        # The API takes 64-bit numbers only (its database answers 1e20 as an integer);
        # a 400 for one would cost its event, and a parse error the whole batch.
        return value if fits_64_bits(value) else repr(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value if fits_64_bits(value) else str(value)
    if isinstance(value, dict):
        return {json_safe(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def tool_name(name: str) -> str:
    """A tool call's name as the API takes it. A model may call a tool nobody defined,
    by any name (livekit-agents answers it an error); the line must not be refused."""
    text = json_safe(name if isinstance(name, str) else str(name))
    assert isinstance(text, str)
    return text.strip()[:MAX_TOOL_NAME_CHARS] or UNNAMED_TOOL


def tool_arguments(raw: str) -> dict:
    """A tool call's arguments as the API takes them (a JSON object of at most 16 KiB and
    8 levels): otherwise the model's text itself, cut short, so the line is never refused."""
    try:
        value = json.loads(raw or "{}")
    except (ValueError, RecursionError):
        pass
    else:
        # Measured as sent: the reporter sends NaN (3 bytes here) as null (4).
        value = json_safe(value if isinstance(value, dict) else {"_value": value})
        if _depth(value) <= MAX_ARGUMENTS_DEPTH and _size(value) <= MAX_ARGUMENTS_BYTES:
            return value
    if len(raw) <= MAX_RAW_ARGUMENTS_CHARS:
        return {"_raw": raw}
    return {"_raw": raw[:MAX_RAW_ARGUMENTS_CHARS], "_truncated": True}


def _depth(value: object) -> int:
    """Nesting depth (a scalar is 0, `{}` is 1), as the API counts it, without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            children = node.values() if isinstance(node, dict) else node
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in children)
        else:
            deepest = max(deepest, depth)
    return deepest


def _size(value: object) -> int:
    """Bytes as the API counts them: the JSON sent, its floats as PostgreSQL prints
    them, in full (1e-300 as 0.000…1)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    # (Its floats were made to fit 64 bits: `json_safe`.)
    return len(text.encode("utf-8", "surrogatepass")) + (json_float_growth(value) or 0)
