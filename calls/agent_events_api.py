"""`POST /api/v1/agent/calls/{id}/events`: the voice-agent worker reports what happened.

A batch is validated whole before anything is written: one invalid event is a 400
naming it (`events.N.field`), and nothing of the batch is stored.
"""

from __future__ import annotations

import datetime
import re
import uuid

from django.utils import timezone
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from calls.agent_events import agent_events_record
from calls.lifecycle import END_REASON_PATTERN
from calls.models import LATENCY_COMPONENTS, AgentEventType, Call, CallStatus, TranscriptRole
from calls.usage_items import MAX_USAGE_ITEMS, UsageItemField
from voicecalls.auth import IsAgentKey
from voicecalls.fields import BoundedJSONObjectField, JSONTypedSerializer

MAX_EVENTS_PER_BATCH = 500
# A latency over ten minutes is a clock or unit bug, not a measurement.
MAX_LATENCY_MS = 10 * 60 * 1000
MAX_TOKENS_PER_SAMPLE = 10_000_000
MAX_TURN_INDEX = 1_000_000
MAX_TOOL_ARGUMENTS_BYTES = 16 * 1024
AGENT_STATUSES = [
    CallStatus.ACTIVE,
    CallStatus.COMPLETED,
    CallStatus.FAILED,
    CallStatus.DISCONNECTED,
    CallStatus.TIMEOUT,
]


class _EventBase(JSONTypedSerializer):
    id = serializers.UUIDField(
        help_text="Client-made event id; re-sending it to the same call is a no-op."
    )
    type = serializers.CharField()
    timestamp = serializers.DateTimeField(
        help_text="When it happened (ISO-8601); without an offset it is UTC."
    )


@extend_schema_field({"type": "object", "additionalProperties": True})
class _ToolArgumentsField(BoundedJSONObjectField):
    pass


class ToolCallInputSerializer(JSONTypedSerializer):
    name = serializers.CharField(max_length=64)
    arguments = _ToolArgumentsField(
        max_bytes=MAX_TOOL_ARGUMENTS_BYTES, help_text="JSON object, ≤ 16 KiB."
    )
    is_error = serializers.BooleanField(
        required=False,
        help_text="The tool failed: the line's `content` is its error. Kept only when true.",
    )

    def validate(self, attrs: dict) -> dict:
        # Kept only on a failed call, as the transcript shows it (an agent dispatched
        # again mid-call tells its model which answers were errors).
        if not attrs.get("is_error"):
            attrs.pop("is_error", None)
        return attrs


class TranscriptEventSerializer(_EventBase):
    type = serializers.ChoiceField(choices=[AgentEventType.TRANSCRIPT])
    role = serializers.ChoiceField(choices=TranscriptRole.choices)
    content = serializers.CharField(allow_blank=True, max_length=65536, trim_whitespace=False)
    agent_name = serializers.CharField(max_length=100, required=False, allow_null=True)
    tool_call = ToolCallInputSerializer(required=False, allow_null=True)
    interrupted = serializers.BooleanField(
        required=False,
        allow_null=True,
        help_text="Assistant lines: the caller cut the agent off. Ignored on other roles.",
    )


class AgentHandoffEventSerializer(_EventBase):
    type = serializers.ChoiceField(choices=[AgentEventType.AGENT_HANDOFF])
    from_agent = serializers.CharField(max_length=100)
    to_agent = serializers.CharField(max_length=100)


def _latency_field() -> serializers.FloatField:
    return serializers.FloatField(
        required=False, allow_null=True, min_value=0, max_value=MAX_LATENCY_MS
    )


class ServedBySerializer(JSONTypedSerializer):
    provider = serializers.CharField(max_length=50)
    model = serializers.CharField(max_length=100)


class TurnProvidersSerializer(JSONTypedSerializer):
    """Which provider and model served each component of the turn (with fallbacks, not
    always the workflow's first choice)."""

    stt = ServedBySerializer(required=False)
    llm = ServedBySerializer(required=False)
    tts = ServedBySerializer(required=False)


class MetricsEventSerializer(_EventBase):
    type = serializers.ChoiceField(choices=[AgentEventType.METRICS])
    stt_latency_ms = _latency_field()
    llm_latency_ms = _latency_field()
    tts_latency_ms = _latency_field()
    e2e_latency_ms = _latency_field()
    eou_latency_ms = _latency_field()
    providers = TurnProvidersSerializer(required=False, allow_null=True)
    tokens = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_TOKENS_PER_SAMPLE
    )
    agent_name = serializers.CharField(max_length=100, required=False, allow_null=True)
    turn_index = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_TURN_INDEX
    )

    def validate(self, attrs: dict) -> dict:
        measured = [f"{c}_latency_ms" for c in LATENCY_COMPONENTS] + ["tokens"]
        if all(attrs.get(name) is None for name in measured):
            raise serializers.ValidationError(
                "A metrics event needs at least one of: " + ", ".join(measured) + "."
            )
        return attrs


class StatusEventSerializer(_EventBase):
    type = serializers.ChoiceField(choices=[AgentEventType.STATUS])
    status = serializers.ChoiceField(choices=AGENT_STATUSES)
    reason = serializers.RegexField(
        END_REASON_PATTERN,
        required=False,
        allow_null=True,
        help_text="The precise cause, e.g. `agent_error`; kept as the call's end_reason.",
    )


class UsageEventSerializer(_EventBase):
    """The agent's usage so far, per provider and model; the newest report of each
    session is kept (the one holding more of every quantity; the later `timestamp` only
    where neither does), and the call's usage is the sum of its sessions'."""

    type = serializers.ChoiceField(choices=[AgentEventType.USAGE])
    session = serializers.RegexField(
        r"^[A-Za-z0-9_-]{1,64}$",
        required=False,
        allow_null=True,
        help_text="The agent's run of this call, counting from zero (a re-dispatched "
        "agent is a new session). Reports without one are one session.",
    )
    usage = serializers.ListField(
        child=UsageItemField(), max_length=MAX_USAGE_ITEMS, allow_empty=True
    )

    def validate_usage(self, items: list[dict]) -> list[dict]:
        keys = [(i["component"], i["provider"], i["model"]) for i in items]
        if len(set(keys)) != len(keys):
            raise serializers.ValidationError("One item per component, provider and model.")
        return items


EVENT_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    AgentEventType.TRANSCRIPT: TranscriptEventSerializer,
    AgentEventType.AGENT_HANDOFF: AgentHandoffEventSerializer,
    AgentEventType.METRICS: MetricsEventSerializer,
    AgentEventType.STATUS: StatusEventSerializer,
    AgentEventType.USAGE: UsageEventSerializer,
}


# --- Transcript lines already in canonical form ---------------------------------------
# Agents flush transcript lines in batches of up to 500, and the serializer's field
# machinery costs more per batch than storing it (bench/README.md). A line already in
# the form the serializer returns (canonical uuid, aware ISO timestamp, a known role,
# storable text, names without surrounding blanks) is taken as it is; any other event
# goes through the serializer, the one judge of what is valid and of every message.
# tests/test_agent_events_api.py holds the two to the same validated data.

_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
_TRANSCRIPT_KEYS = frozenset(
    {"id", "type", "timestamp", "role", "content", "agent_name", "tool_call", "interrupted"}
)
_TRANSCRIPT_ROLES = frozenset(TranscriptRole.values)
# The limits are the serializers' own.
_TRANSCRIPT_FIELDS = TranscriptEventSerializer().fields
_TRANSCRIPT_CONTENT_MAX = _TRANSCRIPT_FIELDS["content"].max_length
_AGENT_NAME_MAX = _TRANSCRIPT_FIELDS["agent_name"].max_length
_TOOL_CALL_FIELDS = ToolCallInputSerializer().fields
_TOOL_NAME_MAX = _TOOL_CALL_FIELDS["name"].max_length
_TOOL_ARGUMENTS = _TOOL_CALL_FIELDS["arguments"]


_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable_text(value: object, max_length: int) -> bool:
    """Whether a CharField's validators take `value` as it is: a string (not coerced) of
    at most `max_length` characters, without U+0000 or lone surrogates."""
    return (
        type(value) is str
        and len(value) <= max_length
        and "\x00" not in value
        and (value.isascii() or not _SURROGATE.search(value))
    )


def _trimmed_text(value: object, max_length: int) -> bool:
    """Whether a trimming, not-blank CharField (DRF's default) returns `value` unchanged."""
    return _storable_text(value, max_length) and bool(value) and value == value.strip()


def _aware_timestamp(value: str, tz: datetime.tzinfo) -> datetime.datetime | None:
    # DateTimeField: parse_datetime tries fromisoformat first, and enforce_timezone
    # moves an aware value to the current time zone. Naive or odd values: the field.
    try:
        parsed = datetime.datetime.fromisoformat(value)
        return parsed.astimezone(tz) if parsed.utcoffset() is not None else None
    except (ValueError, OverflowError):
        return None


def canonical_transcript_line(data: object, tz: datetime.tzinfo) -> dict | None:
    """TranscriptEventSerializer's validated data for a line in canonical form (`tz`: the
    current time zone), or None for any other line (the serializer then decides, and
    explains)."""
    if type(data) is not dict or data.get("type") != AgentEventType.TRANSCRIPT:
        return None
    if not data.keys() <= _TRANSCRIPT_KEYS:
        return None
    event_id, timestamp, role, content = (
        data.get("id"),
        data.get("timestamp"),
        data.get("role"),
        data.get("content"),
    )
    if type(event_id) is not str or not _CANONICAL_UUID.match(event_id):
        return None
    if type(role) is not str or role not in _TRANSCRIPT_ROLES:
        return None
    if not _storable_text(content, _TRANSCRIPT_CONTENT_MAX) or type(timestamp) is not str:
        return None
    aware = _aware_timestamp(timestamp, tz)
    if aware is None:
        return None
    validated = {
        "id": uuid.UUID(event_id),
        "type": AgentEventType.TRANSCRIPT,
        "timestamp": aware,
        "role": role,
        "content": content,
    }
    if "agent_name" in data:
        agent_name = data["agent_name"]
        if agent_name is not None and not _trimmed_text(agent_name, _AGENT_NAME_MAX):
            return None
        validated["agent_name"] = agent_name
    if "tool_call" in data:
        tool_call = data["tool_call"]
        if tool_call is not None:
            tool_call = _canonical_tool_call(tool_call)
            if tool_call is None:
                return None
        validated["tool_call"] = tool_call
    if "interrupted" in data:
        interrupted = data["interrupted"]
        if interrupted is not None and type(interrupted) is not bool:
            return None
        validated["interrupted"] = interrupted
    return validated


def canonical_transcript_batch(data: object) -> list[dict] | None:
    """AgentEventsBatchSerializer's validated events for a batch of canonical transcript
    lines only (the usual flush), without its per-item machinery; else None."""
    if type(data) is not dict or data.keys() != {"events"}:
        return None
    events = data["events"]
    if type(events) is not list or not 1 <= len(events) <= MAX_EVENTS_PER_BATCH:
        return None
    tz = timezone.get_current_timezone()
    validated = []
    for event in events:
        line = canonical_transcript_line(event, tz)
        if line is None:
            return None
        validated.append(line)
    return validated


def _canonical_tool_call(data: object) -> dict | None:
    # ToolCallInputSerializer's validated data, or None: the serializer decides.
    if type(data) is not dict or data.keys() - {"is_error"} != {"name", "arguments"}:
        return None
    if "is_error" in data and data["is_error"] is not True:
        return None  # false is left out of what is kept: not canonical
    name = data["name"]
    if not _trimmed_text(name, _TOOL_NAME_MAX):
        return None
    try:
        arguments = _TOOL_ARGUMENTS.run_validation(data["arguments"])
    except serializers.ValidationError:
        return None
    if "is_error" in data:
        return {"name": name, "arguments": arguments, "is_error": True}
    return {"name": name, "arguments": arguments}


@extend_schema_field(
    PolymorphicProxySerializer(
        component_name="AgentEvent",
        # type value → serializer: the discriminator mapping generated clients dispatch on.
        serializers={str(t): s for t, s in EVENT_SERIALIZERS.items()},
        resource_type_field_name="type",
    )
)
class AgentEventField(serializers.Field):
    """One event, validated by the serializer of its `type`."""

    def to_internal_value(self, data: object) -> dict:
        # The current time zone once per batch (a context-local lookup each time).
        tz = self.__dict__.get("_timezone")
        if tz is None:
            tz = self.__dict__["_timezone"] = timezone.get_current_timezone()
        line = canonical_transcript_line(data, tz)
        if line is not None:
            return line
        if not isinstance(data, dict):
            raise serializers.ValidationError("Expected an object.", code="invalid")
        event_type = data.get("type")
        serializer_class = (
            EVENT_SERIALIZERS.get(event_type) if isinstance(event_type, str) else None
        )
        if serializer_class is None:
            raise serializers.ValidationError(
                {"type": [f"Unknown event type; one of: {', '.join(EVENT_SERIALIZERS)}."]},
                code="invalid_choice",
            )
        # One serializer per type for the whole batch: building a DRF serializer
        # deep-copies its fields, which would dominate a 500-event batch.
        by_type = self.__dict__.setdefault("_serializers_by_type", {})
        if event_type not in by_type:
            by_type[event_type] = serializer_class()
        return dict(by_type[event_type].run_validation(data))

    def to_representation(self, value: dict) -> dict:
        return value


class AgentEventsBatchSerializer(JSONTypedSerializer):
    events = serializers.ListField(
        child=AgentEventField(), min_length=1, max_length=MAX_EVENTS_PER_BATCH
    )


class AgentEventsResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Events stored now.")
    duplicates = serializers.IntegerField(help_text="Events already stored (re-sent).")


class AgentCallEventsView(APIView):
    permission_classes = [IsAgentKey]

    @extend_schema(
        summary="Report call events (agent worker)",
        operation_id="agent_calls_events",
        description="Up to 500 events, validated whole: one invalid event is a 400 naming it "
        "(`events.N.field`) and nothing is stored. Re-sent event ids are counted as "
        "duplicates and change nothing. Agent keys only.",
        request=AgentEventsBatchSerializer,
        responses={200: AgentEventsResultSerializer},
    )
    def post(self, request: Request, call_id: uuid.UUID) -> Response:
        events = canonical_transcript_batch(request.data)
        if events is None:
            batch = AgentEventsBatchSerializer(data=request.data)
            batch.is_valid(raise_exception=True)
            events = batch.validated_data["events"]
        # The call is found as it is locked: a batch is validated before it is known.
        try:
            result = agent_events_record(
                call_id=call_id, events=events, organization=request.user.organization
            )
        except Call.DoesNotExist:
            raise NotFound from None
        return Response(AgentEventsResultSerializer(result).data)
