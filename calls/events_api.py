"""`POST /api/v1/agent/calls/{id}/events`: the voice-agent worker reports what happened.

A batch is validated whole before anything is written: one invalid event is a 400
naming it (`events.N.field`), and nothing of the batch is stored.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from calls import selectors, services
from calls.models import AgentEventType, CallStatus, TranscriptRole
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
    id = serializers.UUIDField(help_text="Client-made event id; re-sending it is a no-op.")
    type = serializers.CharField()
    timestamp = serializers.DateTimeField(help_text="When it happened (ISO-8601).")


@extend_schema_field({"type": "object", "additionalProperties": True})
class _ToolArgumentsField(BoundedJSONObjectField):
    pass


class ToolCallInputSerializer(JSONTypedSerializer):
    name = serializers.CharField(max_length=64)
    arguments = _ToolArgumentsField(
        max_bytes=MAX_TOOL_ARGUMENTS_BYTES, help_text="JSON object, ≤ 16 KiB."
    )


class TranscriptEventSerializer(_EventBase):
    type = serializers.ChoiceField(choices=[AgentEventType.TRANSCRIPT])
    role = serializers.ChoiceField(choices=TranscriptRole.choices)
    content = serializers.CharField(allow_blank=True, max_length=65536, trim_whitespace=False)
    agent_name = serializers.CharField(max_length=100, required=False, allow_null=True)
    tool_call = ToolCallInputSerializer(required=False, allow_null=True)


class AgentHandoffEventSerializer(_EventBase):
    type = serializers.ChoiceField(choices=[AgentEventType.AGENT_HANDOFF])
    from_agent = serializers.CharField(max_length=100)
    to_agent = serializers.CharField(max_length=100)


def _latency_field() -> serializers.FloatField:
    return serializers.FloatField(
        required=False, allow_null=True, min_value=0, max_value=MAX_LATENCY_MS
    )


class MetricsEventSerializer(_EventBase):
    type = serializers.ChoiceField(choices=[AgentEventType.METRICS])
    stt_latency_ms = _latency_field()
    llm_latency_ms = _latency_field()
    tts_latency_ms = _latency_field()
    e2e_latency_ms = _latency_field()
    tokens = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_TOKENS_PER_SAMPLE
    )
    agent_name = serializers.CharField(max_length=100, required=False, allow_null=True)
    turn_index = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_TURN_INDEX
    )

    def validate(self, attrs: dict) -> dict:
        measured = [f"{c}_latency_ms" for c in services.LATENCY_COMPONENTS] + ["tokens"]
        if all(attrs.get(name) is None for name in measured):
            raise serializers.ValidationError(
                "A metrics event needs at least one of: " + ", ".join(measured) + "."
            )
        return attrs


class StatusEventSerializer(_EventBase):
    type = serializers.ChoiceField(choices=[AgentEventType.STATUS])
    status = serializers.ChoiceField(choices=AGENT_STATUSES)
    reason = serializers.RegexField(
        r"^[a-z0-9_]{1,50}$",
        required=False,
        allow_null=True,
        help_text="The precise cause, e.g. `agent_error`; kept as the call's end_reason.",
    )


EVENT_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    AgentEventType.TRANSCRIPT: TranscriptEventSerializer,
    AgentEventType.AGENT_HANDOFF: AgentHandoffEventSerializer,
    AgentEventType.METRICS: MetricsEventSerializer,
    AgentEventType.STATUS: StatusEventSerializer,
}


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
    def post(self, request: Request, call_id: str) -> Response:
        queryset = selectors.agent_call_queryset(organization=request.user.organization)
        call = get_object_or_404(queryset.only("id", "status"), pk=call_id)
        batch = AgentEventsBatchSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        result = services.agent_events_record(call=call, events=batch.validated_data["events"])
        return Response(AgentEventsResultSerializer(result).data)
