"""Each response shape has one renderer (`calls.representations`); the committed schema
must describe exactly what it returns: every key a property, every required property
present, every value of the stated type (objects closed: no key the schema lacks)."""

from __future__ import annotations

import datetime
import json
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml
from django.conf import settings
from django.http import QueryDict
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from billing.services import call_usage_record
from calls import representations, selectors
from calls.listing import call_list
from calls.models import Call, CallStatus, MetricSample
from tests.factories import CallFactory, RecordingFactory, TranscriptEntryFactory

pytestmark = pytest.mark.django_db

AWKWARD_TEXT = [
    "",
    "plain",
    'quotes " and \\ backslashes',
    "line\nbreaks\tand\r\x01\x1f\x7f controls",
    "unicode: café, 日本語, emoji 🎉, separators \u2028 \u2029",
]
AWKWARD_ARGUMENTS = [
    {},
    {"meal_type": "breakfast", "items": ["eggs", "toast"]},
    {"tiny": 1e-07, "huge": 1e16, "half": 0.5, "int": 10**20, "neg": -0.0},
    {"nested": {"a": [1, None, True, {"b": "ü\u2028"}]}},
]


def _closed(schema: object) -> object:
    """An OpenAPI 3.0 schema as JSON Schema: `nullable` as a null type, and every object
    with properties closed to other keys."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _closed(value) for key, value in schema.items() if key != "nullable"}
    if schema.get("nullable"):
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
        if "allOf" in converted or "$ref" in converted:
            converted = {"anyOf": [converted, {"type": "null"}]}
    if "properties" in converted and "additionalProperties" not in converted:
        converted["additionalProperties"] = False
    return converted


@cache
def _components() -> dict:
    document = yaml.safe_load((Path(settings.BASE_DIR) / "openapi.yaml").read_text())
    return _closed(document["components"])


def assert_described(value: object, component: str, *, many: bool = False) -> None:
    """`value` (as it goes over the wire) is exactly what the schema's `component` says."""
    ref = {"$ref": f"#/components/schemas/{component}"}
    schema = {**({"type": "array", "items": ref} if many else ref), "components": _components()}
    jsonschema.validate(json.loads(json.dumps(value)), schema)


@pytest.fixture
def calls(organization) -> list[Call]:
    now = timezone.now()
    return [
        CallFactory(organization=organization, user_id=None),
        CallFactory(organization=organization, active=True, user_id=AWKWARD_TEXT[4]),
        CallFactory(
            organization=organization,
            completed=True,
            end_reason="user_hangup",
            current_agent="meal-agent",
            started_at=now - datetime.timedelta(seconds=90, microseconds=123),
            ended_at=now.replace(microsecond=0),
            user_data={"name": "Ada", "n": [1, 2.5, None]},
            metadata={"source": "app"},
        ),
        CallFactory(organization=organization, status=CallStatus.PENDING),
        CallFactory(organization=organization, status=CallStatus.TIMEOUT, end_reason="x"),
    ]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_list_items_are_what_the_schema_says(organization, calls, zone: str) -> None:
    listing = call_list(organization=organization, filters=QueryDict())
    with timezone.override(zone):
        items = representations.call_summaries(listing.page(0, 20))

    assert len(items) == 5
    assert_described(items, "CallSummary", many=True)
    ended = next(item for item in items if item["status"] == "completed")
    assert ended["current_agent"] is None
    assert ended["duration_seconds"] == calls[2].duration_seconds == 89


def test_a_call_with_its_metrics_is_what_the_schema_says(organization, calls) -> None:
    call = calls[2]
    MetricSample.objects.create(
        call=call,
        event_id="6f1c2e0a-4b7d-4c1e-9a51-0f3b2d7c8e91",
        stt_latency_ms=120,
        e2e_latency_ms=800.5,
        timestamp=timezone.now(),
    )
    samples = selectors.call_samples(call=call)
    stt = {"component": "stt", "provider": "deepgram", "model": "nova-3", "audio_seconds": 61.5}
    unpriced = {"component": "tts", "provider": "acme", "model": "x", "characters": 10}
    call_usage_record(call_id=call.id, usage=[stt, unpriced], at=timezone.now())
    call.refresh_from_db()

    recording = RecordingFactory(call=call)
    detail = representations.call_detail(
        call,
        samples=samples,
        analysis=None,
        cost=selectors.call_cost(call=call),
        recording=recording,
    )
    metrics = representations.call_metrics(call, samples=samples)

    assert_described(detail, "Call")
    assert_described(metrics, "CallMetrics")
    assert detail["metrics"] == metrics
    assert detail["user_data"] == {"name": "Ada", "n": [1, 2.5, None]}
    assert [line["component"] for line in detail["cost"]["breakdown"]] == ["stt", "tts", "room"]
    assert detail["recording"] == {"status": "complete", "duration_seconds": 2, "size_bytes": 561}
    assert metrics["latency"]["stt"] == {"p50": 120, "p95": 120, "max": 120, "count": 1}


def test_a_call_not_yet_started_is_what_the_schema_says(organization, calls) -> None:
    call = calls[0]
    detail = representations.call_detail(
        call, samples=selectors.call_samples(call=call), analysis=None, cost=None, recording=None
    )

    assert_described(detail, "Call")
    assert (detail["started_at"], detail["duration_seconds"]) == (None, None)


def test_active_calls_are_what_the_schema_says(organization, calls) -> None:
    items = representations.active_calls(
        selectors.active_calls(organization=organization, limit=50)
    )

    assert [item["status"] for item in items] == ["pending", "active", "connecting"]
    assert_described(items, "ActiveCall", many=True)


@pytest.mark.parametrize("status", [CallStatus.CONNECTING, CallStatus.PENDING])
def test_join_details_are_what_the_schema_says(organization, status) -> None:
    call = CallFactory(organization=organization, status=status)

    joined = representations.call_join(call=call, token="a.b.c")

    assert_described(joined, "CallJoin")
    assert joined["room_name"] == f"call-{call.pk}"


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_transcript_lines_are_what_the_schema_says_in_drfs_bytes(organization, zone) -> None:
    call = CallFactory(organization=organization, completed=True)
    t0 = timezone.now()
    for i, text in enumerate(AWKWARD_TEXT):
        TranscriptEntryFactory(
            call=call,
            content=text,
            agent_name=None if i == 0 else "greeter-agent",
            role=("assistant", "user", "system")[i % 3],
            interrupted=i % 2 == 0,
            timestamp=t0 + datetime.timedelta(seconds=i, microseconds=i),
        )
    for arguments in AWKWARD_ARGUMENTS:
        TranscriptEntryFactory(
            call=call,
            role="tool",
            tool_call={"name": "save_meal", "arguments": arguments},
            timestamp=t0.replace(microsecond=0),
        )
    TranscriptEntryFactory(
        call=call,
        role="tool",
        content="save_meal failed (HTTP 500).",
        tool_call={"name": "save_meal", "arguments": {}, "is_error": True},
        timestamp=t0,
    )
    TranscriptEntryFactory(
        call=call, timestamp=datetime.datetime(5, 1, 1, tzinfo=datetime.UTC), content="old"
    )

    with timezone.override(zone):
        body = representations.transcript_json(selectors.call_transcript_rows(call=call))

    lines = json.loads(body)
    assert_described(lines, "TranscriptEntry", many=True)
    assert ["tool_call" in line for line in lines].count(True) == len(AWKWARD_ARGUMENTS) + 1
    assert [line["content"] for line in lines if line.get("tool_call", {}).get("is_error")] == [
        "save_meal failed (HTTP 500)."
    ]
    assert {line["role"] for line in lines if "interrupted" in line} == {"assistant"}
    # The year-5 line sorts first; the awkward ones alternate interrupted from i = 0.
    assistant = [line for line in lines if line["role"] == "assistant"]
    assert [line["interrupted"] for line in assistant][:3] == [False, True, False]
    assert assistant[0]["content"] == "old"
    # Written as DRF's JSONRenderer writes the same values (floats, U+2028, UTF-8).
    assert body == JSONRenderer().render(lines)


def test_the_admin_reads_the_same_transcript_rows_as_dicts(organization) -> None:
    call = CallFactory(organization=organization)
    entry = TranscriptEntryFactory(call=call, tool_call={"name": "t", "arguments": {"a": 1}})

    assert selectors.call_transcript(call=call) == [
        {
            "id": entry.id,
            "role": entry.role,
            "content": entry.content,
            "timestamp": entry.timestamp,
            "agent_name": entry.agent_name,
            "tool_call": {"name": "t", "arguments": {"a": 1}},
            "interrupted": False,
        }
    ]


def test_a_schema_with_a_key_the_renderer_lacks_fails_the_check(organization) -> None:
    """The check itself: a renderer missing a required key, or adding one, is caught."""
    joined = representations.call_join(call=CallFactory(organization=organization), token="t")

    with pytest.raises(jsonschema.ValidationError):
        assert_described({**joined, "extra": 1}, "CallJoin")
    with pytest.raises(jsonschema.ValidationError):
        assert_described({k: v for k, v in joined.items() if k != "status"}, "CallJoin")
