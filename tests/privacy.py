"""Calls full of personal data, and the privacy bot's API key that erases them, for the
retention and erasure tests."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.utils import timezone

from accounts.models import APIKey, Organization
from accounts.services import api_key_create
from analysis.models import AnalysisStatus, CallAnalysis
from calls.models import Call, CallChannel, CallDirection, CallStatus, TranscriptRole
from tests.factories import CallFactory, TranscriptEntryFactory
from workflows.models import Workflow

CALLEE = "+14155550123"
OUR_NUMBER = "+14155550100"
CALLER = "+14155550177"


@pytest.fixture
def key(organization: Organization) -> APIKey:
    api_key, _ = api_key_create(name="privacy-bot", organization=organization)
    return api_key


def personal_call(
    organization: Organization,
    *,
    workflow: Workflow | None = None,
    ended_at: datetime.datetime | None = None,
    open_call: bool = False,
    **fields: object,
) -> Call:
    """A call with a user id, user data, metadata, two transcript lines (one with a tool
    call) and a completed analysis; ended at `ended_at` (default: now) unless open."""
    extra: dict[str, object] = {"organization": organization}
    if workflow is not None:
        extra["workflow"] = workflow
    if open_call:
        extra.update(status=CallStatus.ACTIVE, started_at=timezone.now())
    else:
        ended_at = ended_at or timezone.now()
        extra.update(
            status=CallStatus.COMPLETED,
            end_reason="user_hangup",
            created_at=ended_at - datetime.timedelta(minutes=5),
            started_at=ended_at - datetime.timedelta(minutes=4),
            ended_at=ended_at,
        )
    defaults = {
        "user_id": "user-123",
        "user_data": {"name": "John Doe", "allergies": "peanuts"},
        "metadata": {"session_id": "abc123"},
        "stt_latency_ms_sum": 300.0,
        "stt_latency_count": 2,
        "total_tokens": 420,
    }
    call = CallFactory(**{**defaults, **extra, **fields})
    at = call.started_at or timezone.now()
    TranscriptEntryFactory(call=call, role=TranscriptRole.USER, content="I am John", timestamp=at)
    TranscriptEntryFactory(
        call=call,
        role=TranscriptRole.ASSISTANT,
        content="Saved your meal, John.",
        tool_call={"name": "save_meal", "arguments": {"meal": "peanut soup"}},
        timestamp=at + datetime.timedelta(seconds=5),
    )
    CallAnalysis.objects.create(
        call=call,
        status=AnalysisStatus.COMPLETED,
        summary="John ate peanut soup.",
        structured_data={"meal": "peanut soup"},
        success=True,
    )
    return call


def outbound_phone_call(organization: Organization, **fields: object) -> Call:
    defaults = {
        "channel": CallChannel.PHONE,
        "direction": CallDirection.OUTBOUND,
        "phone_number": CALLEE,
        "from_number": OUR_NUMBER,
    }
    return personal_call(organization, **{**defaults, **fields})


def inbound_phone_call(organization: Organization, **fields: object) -> Call:
    """A caller's call to our number, its room and participant named by LiveKit after
    the caller's number (`<prefix>_<caller>_<random>`, `sip_<caller>`)."""
    caller = str(fields.get("from_number", CALLER))
    defaults = {
        "channel": CallChannel.PHONE,
        "direction": CallDirection.INBOUND,
        "user_id": caller,
        "user_data": {"caller": caller, "called": OUR_NUMBER},
        "phone_number": OUR_NUMBER,
        "from_number": caller,
        "room_name": f"inbound-_{caller}_{uuid.uuid4().hex[:4]}",
        "participant_identity": f"sip_{caller}",
    }
    return personal_call(organization, **{**defaults, **fields})


def transcript(call: Call) -> list[tuple[str, str, dict | None]]:
    return list(
        call.transcript.order_by("timestamp", "id").values_list("role", "content", "tool_call")
    )
