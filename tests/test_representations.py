"""The hot read paths build their answers from rows without DRF serializers; the answer
must stay exactly what the serializers (still the schema) give, down to the bytes."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from calls import representations, selectors
from calls.models import Call, CallStatus, TranscriptEntry
from calls.serializers import (
    ActiveCallSerializer,
    CallJoinSerializer,
    CallListItemSerializer,
    TranscriptEntrySerializer,
)
from calls.services import CallJoinInfo
from tests.factories import CallFactory, TranscriptEntryFactory

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


def render(data: object) -> bytes:
    return JSONRenderer().render(data)


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
        ),
        CallFactory(organization=organization, status=CallStatus.PENDING),
        CallFactory(organization=organization, status=CallStatus.TIMEOUT, end_reason="x"),
    ]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_list_items_are_the_serializers_answer(organization, calls, zone: str) -> None:
    with timezone.override(zone):
        rows = selectors.CallListing(
            organization=organization,
            calls=selectors.call_list(organization=organization),
            filters={},
        ).page(0, 20)
        expected = CallListItemSerializer(
            selectors.call_list(organization=organization), many=True
        ).data

        assert render(representations.call_list_items(rows)) == render(expected)


def test_active_items_are_the_serializers_answer(organization, calls) -> None:
    rows = selectors.active_calls(organization=organization, limit=50)
    instances = Call.objects.filter(pk__in=[row["id"] for row in rows]).order_by(
        "-created_at", "-id"
    )

    assert len(rows) == 3
    assert render(representations.active_call_items(rows)) == render(
        ActiveCallSerializer(instances, many=True).data
    )


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
def test_transcript_items_are_the_serializers_answer(organization, zone: str) -> None:
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
    reference = (
        TranscriptEntry.objects.filter(call=call)
        .order_by("timestamp", "id")
        .values("id", "role", "content", "timestamp", "agent_name", "tool_call", "interrupted")
    )

    TranscriptEntryFactory(
        call=call, timestamp=datetime.datetime(5, 1, 1, tzinfo=datetime.UTC), content="old"
    )

    with timezone.override(zone):
        assert representations.transcript_json(selectors.call_transcript_rows(call=call)) == render(
            TranscriptEntrySerializer(reference, many=True).data
        )


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


@pytest.mark.parametrize("status", [CallStatus.CONNECTING, CallStatus.PENDING])
def test_a_new_calls_join_details_are_the_serializers(organization, status) -> None:
    joined = CallJoinInfo(call=CallFactory(organization=organization, status=status), token="a.b.c")

    assert render(representations.call_join(joined)) == render(CallJoinSerializer(joined).data)
