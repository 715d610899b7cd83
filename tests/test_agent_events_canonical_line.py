"""`calls.agent_events_api.canonical_transcript_line` takes a transcript line already in
canonical form without DRF's field machinery; TranscriptEventSerializer stays the judge.
For any input the check either declines (None) or returns exactly the serializer's data
(and `canonical_transcript_batch` a batch's events)."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calls.agent_events_api import (
    AgentEventsBatchSerializer,
    TranscriptEventSerializer,
    canonical_transcript_batch,
    canonical_transcript_line,
)
from tests.test_agent_events_api import metrics

_ID = "0b6e7a3c-3c1f-4b8e-9a55-1f0c5e2d9a10"
_PLAIN = {"id": _ID, "type": "transcript", "timestamp": "2026-01-17T10:30:00Z", "role": "user"}


def _serializer_result(event: object) -> dict | None:
    if not isinstance(event, dict):
        return None
    serializer = TranscriptEventSerializer(data=event)
    return dict(serializer.validated_data) if serializer.is_valid() else None


def _assert_agrees(event: object) -> dict | None:
    line = canonical_transcript_line(event, timezone.get_current_timezone())
    expected = _serializer_result(event)
    if line is not None:
        assert line == expected
        # Same instant is not enough: the same time zone and spelling too.
        assert str(line["timestamp"]) == str(expected["timestamp"])
        assert list(line) == list(expected)
    return line


@pytest.mark.parametrize(
    "changes",
    [
        {"content": "Hello"},
        {"content": ""},
        {"content": "héllo wörld ✓"},
        {"content": "Hello", "agent_name": "greeter-agent"},
        {"content": "Hello", "agent_name": None},
        {"content": "Hello", "tool_call": None},
        {"content": "Hello", "tool_call": {"name": "save_meal", "arguments": {"n": 1.5}}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": {}, "is_error": True}},
        {"content": "Hello", "role": "assistant", "interrupted": True},
        {"content": "Hello", "role": "assistant", "interrupted": False},
        {"content": "Hello", "interrupted": None},
        {"content": "Hello", "id": _ID.upper()},
        {"content": "Hello", "timestamp": "2026-01-17T12:30:00.123456+02:00"},
        {"content": "x" * 65536},
    ],
)
def test_the_canonical_check_accepts_canonical_lines_as_the_serializer_does(changes):
    assert _assert_agrees({**_PLAIN, **changes}) is not None


@pytest.mark.parametrize(
    "changes",
    [
        {"content": "Hello", "id": _ID.replace("-", "")},  # valid, but not canonical
        {"content": "Hello", "id": f"urn:uuid:{_ID}"},
        {"content": "Hello", "id": 12345},
        {"content": "Hello", "id": "not-a-uuid"},
        {"content": "Hello", "timestamp": "2026-01-17T10:30:00"},  # naive
        {"content": "Hello", "timestamp": "2026-01-17"},
        {"content": "Hello", "timestamp": "9999-12-31T23:59:59-05:00"},  # overflows UTC
        {"content": "Hello", "timestamp": "yesterday"},
        {"content": "Hello", "timestamp": 1768645800},
        {"content": "Hello", "agent_name": " greeter "},  # the serializer strips it
        {"content": "Hello", "agent_name": ""},
        {"content": "Hello", "agent_name": "   "},
        {"content": "Hello", "agent_name": "a" * 101},
        {"content": "Hello", "agent_name": 7},
        {"content": "nul \x00 inside"},
        {"content": "lone \ud800 surrogate"},
        {"content": "x" * 65537},
        {"content": 42},
        {"content": None},
        {"content": "Hello", "role": "robot"},
        {"content": "Hello", "type": "metrics"},
        {"content": "Hello", "extra": "ignored by the serializer"},
        {"content": "Hello", "tool_call": {"name": " save ", "arguments": {}}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": []}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": None}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": {}, "id": "x"}},
        # false is valid but left out of what is kept
        {"content": "Hello", "tool_call": {"name": "save", "arguments": {}, "is_error": False}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": {}, "is_error": None}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": {}, "is_error": 1}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": {}, "is_error": "true"}},
        {"content": "Hello", "tool_call": {"name": "s" * 65, "arguments": {}}},
        {"content": "Hello", "tool_call": {"name": "save", "arguments": {"a": "\x00"}}},
        {"content": "Hello", "tool_call": "save"},
        {"content": "Hello", "interrupted": 1},
        {"content": "Hello", "interrupted": "true"},
    ],
)
def test_the_canonical_check_leaves_everything_else_to_the_serializer(changes):
    assert _assert_agrees({**_PLAIN, **changes}) is None


_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_short_names = st.text(min_size=1, max_size=12)
# Values the serializer mostly accepts, and values it mostly refuses.
_usual_values = {
    "id": st.uuids().map(str),
    "type": st.just("transcript"),
    "timestamp": st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    "role": st.sampled_from(["user", "assistant", "system", "tool"]),
    "content": st.text(max_size=30),
    "agent_name": st.none() | _short_names,
    "tool_call": st.none()
    | st.fixed_dictionaries(
        {"name": _short_names, "arguments": st.dictionaries(st.text(max_size=3), _json_scalars)},
        optional={"is_error": st.booleans()},
    ),
    "interrupted": st.none() | st.booleans(),
}
_odd_values = {
    "id": st.sampled_from([_ID.upper(), _ID[:-1], _ID.replace("-", ""), "", 1]),
    "type": st.sampled_from(["metrics", "Transcript", None]),
    "timestamp": st.datetimes().map(lambda d: d.isoformat()) | _json_scalars,
    "role": _json_scalars,
    "content": _json_scalars,
    "agent_name": _json_scalars | st.text(max_size=3).map(" {} ".format),
    "tool_call": _json_scalars
    | st.fixed_dictionaries(
        {"name": _json_scalars, "arguments": _json_scalars}, optional={"is_error": _json_scalars}
    ),
    "interrupted": _json_scalars,
}
_REQUIRED = ("id", "type", "timestamp", "role", "content")


def _events(values: dict) -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {k: values[k] for k in _REQUIRED},
        optional={k: v for k, v in values.items() if k not in _REQUIRED},
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events(_usual_values))
def test_the_canonical_check_gives_the_serializers_data_for_generated_lines(event):
    _assert_agrees(event)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events({k: v | _odd_values[k] for k, v in _usual_values.items()}))
def test_the_canonical_check_never_disagrees_with_the_serializer(event):
    _assert_agrees(event)


# Lines the canonical check exists for: storable text, names without surrounding blanks.
_storable = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"))
_bare_names = _storable.map(str.strip).filter(lambda name: 0 < len(name) <= 12)
_fast_values = {
    **_usual_values,
    "content": _storable,
    "agent_name": st.none() | _bare_names,
    "tool_call": st.none()
    | st.fixed_dictionaries(
        {"name": _bare_names, "arguments": st.dictionaries(_bare_names, _json_scalars)},
        optional={"is_error": st.just(True)},
    ),
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events(_fast_values))
def test_the_canonical_check_takes_every_canonical_line_the_serializer_takes(event):
    """Without this the agreement tests above pass for a check that declines everything."""
    if _serializer_result(event) is not None:
        assert _assert_agrees(event) is not None


def _batch_result(data: object) -> list[dict] | None:
    serializer = AgentEventsBatchSerializer(data=data)
    return serializer.validated_data["events"] if serializer.is_valid() else None


def test_a_batch_of_canonical_lines_gets_the_serializers_events():
    data = {"events": [{**_PLAIN, "id": str(uuid.uuid4()), "content": f"{i}"} for i in range(500)]}

    assert canonical_transcript_batch(data) == _batch_result(data)


@pytest.mark.parametrize(
    "data",
    [
        {"events": []},
        {"events": [{**_PLAIN, "content": "x", "id": str(uuid.uuid4())} for _ in range(501)]},
        {"events": [{**_PLAIN, "content": "x"}, {**_PLAIN, "content": "x", "role": "robot"}]},
        {"events": [{**_PLAIN, "content": "x"}, metrics(tokens=3)]},
        {"events": [{**_PLAIN, "content": "x"}], "extra": 1},
        {"events": {"0": {**_PLAIN, "content": "x"}}},
        [{**_PLAIN, "content": "x"}],
    ],
)
def test_any_other_batch_is_left_to_the_serializer(data):
    assert canonical_transcript_batch(data) is None
