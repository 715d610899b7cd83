from __future__ import annotations

from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from analysis.models import AnalysisStatus
from billing.models import CostComponent, CostPhase
from billing.prices import COST_UNITS
from calls.models import CallChannel, CallDirection, CallStatus, TranscriptRole
from recordings.models import RecordingStatus
from telephony.serializers import E164TextField
from voicecalls import openapi_examples as examples
from voicecalls.fields import BoundedJSONObjectField, JSONTypedSerializer, QueryParamsSerializer

USER_DATA_MAX_BYTES = 32 * 1024
METADATA_MAX_BYTES = 16 * 1024
ACTIVE_DEFAULT_LIMIT = 50
ACTIVE_MAX_LIMIT = 100


class UserIdField(serializers.CharField):
    """An end user's id, up to 255 characters, kept as sent: the list's `user_id`
    filter and erasure find it by the characters the client sent (trimmed at create,
    "user-1 " was stored as "user-1" and erasing "user-1 " matched nothing). Only
    whitespace is refused as blank."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_length=255, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: object) -> str:
        value = super().to_internal_value(data)
        if not value.strip():
            self.fail("blank")
        return value


@extend_schema_field({"type": "object", "additionalProperties": True})
class _ObjectField(BoundedJSONObjectField):
    pass


@extend_schema_serializer(examples=[examples.CALL_CREATE])
class CallCreateSerializer(JSONTypedSerializer):
    workflow_slug = serializers.CharField(
        max_length=100, help_text="Workflow to use for this call."
    )
    user_id = UserIdField(required=False, allow_null=True, help_text="External user identifier.")
    user_data = _ObjectField(
        max_bytes=USER_DATA_MAX_BYTES,
        required=False,
        help_text="User data available as {{user.*}} in templates (JSON object, ≤ 32 KiB).",
    )
    metadata = _ObjectField(
        max_bytes=METADATA_MAX_BYTES,
        required=False,
        help_text="Additional metadata stored with the call (JSON object, ≤ 16 KiB).",
    )
    # No static default: left out, it is `inbound`, or `outbound` with `phone_number`
    # (run_validation). A declared default would be sent by generated clients, and
    # `inbound` with a phone number is a 400.
    direction = serializers.ChoiceField(
        choices=CallDirection.choices,
        required=False,
        help_text="`inbound`: the user starts the call; `outbound`: your system calls the "
        "user. Left out: `inbound`, or `outbound` with `phone_number`.",
    )
    phone_number = E164TextField(
        required=False,
        help_text="Call this phone (E.164, e.g. `+14155550123`): an `outbound` phone call "
        "(`direction` left out or `outbound`; `inbound` is 400), dialed at once. Its "
        "country must be allowed for your organization; premium-rate and shared-cost "
        "numbers are refused.",
    )
    from_number = E164TextField(
        required=False,
        help_text="Caller id of a phone call: one of your outbound SIP trunks' numbers "
        "(default: your organization's `default_caller_number`).",
    )

    def run_validation(self, data: object = serializers.empty) -> dict:
        value = super().run_validation(data)
        if "phone_number" not in value:
            if "from_number" in value:
                raise serializers.ValidationError(
                    {"from_number": ["Only with `phone_number` (phone calls)."]}
                )
            value.setdefault("direction", CallDirection.INBOUND)
            return value
        if value.get("direction") == CallDirection.INBOUND:
            raise serializers.ValidationError(
                {"direction": ["A call to `phone_number` is `outbound`."]}
            )
        value["direction"] = CallDirection.OUTBOUND
        return value


# The response serializers below describe shapes for the schema; the answers themselves
# are built by `calls.representations`, one function per shape.


@extend_schema_serializer(examples=[examples.CALL_JOIN])
class CallJoinSerializer(serializers.Serializer):
    """What a client needs to join the call's LiveKit room."""

    call_id = serializers.UUIDField(help_text="Unique call identifier.")
    room_name = serializers.CharField(help_text="LiveKit room name.")
    livekit_url = serializers.CharField(help_text="LiveKit server WebSocket URL.")
    token = serializers.CharField(
        help_text="JWT for LiveKit authentication (≤ 15 minutes). Empty in a replay (same "
        "`Idempotency-Key`) of a call ended and erased since.",
        allow_blank=True,
    )
    status = serializers.ChoiceField(choices=CallStatus.choices, help_text="Initial call status.")
    channel = serializers.ChoiceField(
        choices=CallChannel.choices, help_text="`phone`: the token is listen-only."
    )


class LatencyStatsSerializer(serializers.Serializer):
    p50 = serializers.IntegerField(allow_null=True, help_text="Median, ms (null when none).")
    p95 = serializers.IntegerField(allow_null=True, help_text="95th percentile, ms.")
    max = serializers.IntegerField(allow_null=True, help_text="Slowest sample, ms.")
    count = serializers.IntegerField(help_text="Samples reported.")


class LatencySerializer(serializers.Serializer):
    stt = LatencyStatsSerializer()
    llm = LatencyStatsSerializer()
    tts = LatencyStatsSerializer()
    e2e = LatencyStatsSerializer(help_text="User stopped speaking → agent audio started.")
    eou = LatencyStatsSerializer(help_text="User stopped speaking → their turn was committed.")


class ServedBySummarySerializer(serializers.Serializer):
    component = serializers.ChoiceField(choices=["stt", "llm", "tts"])
    provider = serializers.CharField()
    model = serializers.CharField()
    turns = serializers.IntegerField(help_text="Turns it served.")


@extend_schema_serializer(examples=[examples.CALL_METRICS])
class CallMetricsSerializer(serializers.Serializer):
    duration_seconds = serializers.IntegerField(allow_null=True)
    stt_latency_ms = serializers.IntegerField(allow_null=True)
    llm_latency_ms = serializers.IntegerField(allow_null=True)
    tts_latency_ms = serializers.IntegerField(allow_null=True)
    total_tokens = serializers.IntegerField()
    agent_handoffs = serializers.IntegerField()
    eou_latency_ms = serializers.IntegerField(
        allow_null=True,
        help_text="Mean end-of-utterance delay: the caller stopped → their turn was committed.",
    )
    e2e_latency_ms = serializers.IntegerField(
        allow_null=True,
        help_text="Mean end-to-end turn latency: the caller stopped → the agent's audio began.",
    )
    latency = LatencySerializer(
        help_text="Per-component latency percentiles over the samples (nearest rank)."
    )
    providers = ServedBySummarySerializer(
        many=True,
        help_text="Which provider and model served the turns, per component, in order of "
        "first use (a fallback shows here when the first choice failed).",
    )


class _CallBaseSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    workflow_id = serializers.UUIDField()
    workflow_slug = serializers.CharField()
    user_id = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=CallStatus.choices)
    direction = serializers.ChoiceField(choices=CallDirection.choices)
    channel = serializers.ChoiceField(choices=CallChannel.choices)
    duration_seconds = serializers.IntegerField(allow_null=True)
    agent_history = serializers.ListField(child=serializers.CharField())
    current_agent = serializers.CharField(read_only=True, allow_null=True)
    end_reason = serializers.CharField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


@extend_schema_serializer(component_name="CallSummary", examples=[examples.CALL_SUMMARY])
class CallListItemSerializer(_CallBaseSerializer):
    pass


class CallAnalysisSerializer(serializers.Serializer):
    """The post-call analysis (`representations.call_analysis`)."""

    status = serializers.ChoiceField(
        choices=AnalysisStatus.choices,
        help_text="pending (waiting for the transcript to settle or for a retry), running, "
        "completed, failed (`error` says why) or skipped (`error` says why, e.g. no LLM key).",
    )
    summary = serializers.CharField(allow_null=True)
    structured_data = serializers.JSONField(
        allow_null=True, help_text="Matches the workflow's `structured_data_schema`."
    )
    success = serializers.BooleanField(
        allow_null=True, help_text="Whether the call met the workflow's `success_criteria`."
    )
    error = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True, help_text="The model that answered.")


class CostLineSerializer(serializers.Serializer):
    component = serializers.ChoiceField(choices=CostComponent.choices)
    provider = serializers.CharField()
    model = serializers.CharField()
    quantity = serializers.DecimalField(
        max_digits=30, decimal_places=6, help_text="In `unit`s: minutes, tokens or characters."
    )
    unit = serializers.ChoiceField(choices=COST_UNITS)
    unit_price_usd = serializers.DecimalField(
        max_digits=30,
        decimal_places=12,
        allow_null=True,
        help_text="Null when the price table has no line for this model.",
    )
    amount_usd = serializers.DecimalField(
        max_digits=30,
        decimal_places=6,
        allow_null=True,
        help_text="quantity × unit price, shown rounded to a millionth of a dollar.",
    )
    phase = serializers.ChoiceField(
        choices=CostPhase.choices,
        help_text="What used it. `analysis` lines are the post-call analysis's requests "
        "(every run's, on your key), priced with the same price lines as the conversation's "
        "LLM.",
    )


class CallCostSerializer(serializers.Serializer):
    """What the call cost (`representations.call_cost`)."""

    total_usd = serializers.DecimalField(
        max_digits=16,
        decimal_places=6,
        help_text="The exact sum of the lines' amounts, rounded once to a millionth.",
    )
    breakdown = CostLineSerializer(many=True)
    complete = serializers.BooleanField(
        help_text="False when some usage had no price: its amount is null and not in the total."
    )


RECORDING_STATUS_HELP = (
    "starting (asked of LiveKit), recording, processing (the file is being written), "
    "complete (downloadable), failed (see GET /calls/{id}/recording) or deleted."
)


class CallRecordingSerializer(serializers.Serializer):
    """The call's recording (`representations.call_recording`)."""

    status = serializers.ChoiceField(
        choices=RecordingStatus.choices, help_text=RECORDING_STATUS_HELP
    )
    duration_seconds = serializers.IntegerField(
        allow_null=True, help_text="Length of the file; null until it is complete."
    )
    size_bytes = serializers.IntegerField(
        allow_null=True, help_text="Size of the OGG file; null until it is complete."
    )


@extend_schema_serializer(examples=[examples.CALL])
class CallSerializer(_CallBaseSerializer):
    room_name = serializers.CharField()
    phone_number = serializers.CharField(allow_null=True, help_text="Phone calls: whom (E.164).")
    from_number = serializers.CharField(allow_null=True, help_text="Phone calls: caller id.")
    sip_status_code = serializers.IntegerField(
        allow_null=True,
        help_text="Phone calls that failed: the carrier's SIP status code. Null when no "
        "carrier answered: the phone rang out (`no_answer`), was never dialed, or LiveKit "
        "itself failed to place the call (`sip_error` without a code).",
    )
    sip_status = serializers.CharField(
        allow_null=True, help_text="Phone calls that failed: the SIP status text."
    )
    end_reason_detail = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="A few words on what `end_reason` alone does not say (≤ 200 characters): "
        "why LiveKit itself failed to place a phone call (`sip_error` without a "
        "`sip_status_code`), e.g. `LiveKit unreachable` or `LiveKit refused "
        "CreateSIPParticipant: internal`. Null otherwise.",
    )
    transfer_destination = serializers.CharField(
        allow_null=True,
        help_text="Transferred calls (`end_reason` `transferred`): the E.164 number or "
        "`sip:` URI the caller was handed to.",
    )
    agent_joined_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="When the voice agent was first known in the call's room (its participant "
        "joined, or it reported events). Null until then: the agent was not dispatched, or "
        "never came (`end_reason` `agent_not_joined`).",
    )
    agent_left_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="When the voice agent left the call unexpectedly (nobody asked it to hang "
        "up or transfer: its process died; a hang-up then ends the call `agent_lost`). "
        "Null while the agent is there (cleared when an agent joins again).",
    )
    metrics = CallMetricsSerializer(read_only=True)
    metadata = serializers.DictField()
    user_data = serializers.DictField()
    analysis = CallAnalysisSerializer(
        allow_null=True, help_text="Null when the call's workflow has no `analysis` setting."
    )
    cost = CallCostSerializer(
        allow_null=True,
        help_text="Known once the call ended (repriced when the agent's last usage arrives "
        "later, and when each post-call analysis attempt ends: its tokens are added); null "
        "before, and when your prices make it $10 billion or more.",
    )
    recording = CallRecordingSerializer(
        allow_null=True,
        help_text="Null when the call is not recorded (its workflow's `recording` setting "
        "is off, or no storage was configured).",
    )


@extend_schema_serializer(examples=[examples.ACTIVE_CALL])
class ActiveCallSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    workflow_id = serializers.UUIDField()
    workflow_slug = serializers.CharField()
    user_id = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=CallStatus.choices)
    direction = serializers.ChoiceField(choices=CallDirection.choices)
    channel = serializers.ChoiceField(choices=CallChannel.choices)
    current_agent = serializers.CharField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()


class ActiveCallsQuerySerializer(QueryParamsSerializer):
    limit = serializers.IntegerField(
        min_value=1, max_value=ACTIVE_MAX_LIMIT, default=ACTIVE_DEFAULT_LIMIT
    )


class ToolCallSerializer(serializers.Serializer):
    name = serializers.CharField()
    arguments = serializers.DictField()
    is_error = serializers.BooleanField(
        required=False,
        help_text="Present (true) only when the tool failed: the line's `content` is its error.",
    )


@extend_schema_serializer(examples=[examples.TRANSCRIPT_ENTRY])
class TranscriptEntrySerializer(serializers.Serializer):
    """One line; `tool_call` is present only on entries that have one, `interrupted` only
    on assistant lines."""

    role = serializers.ChoiceField(choices=TranscriptRole.choices)
    content = serializers.CharField(allow_blank=True)
    timestamp = serializers.DateTimeField()
    agent_name = serializers.CharField(allow_null=True)
    sequence = serializers.IntegerField(source="id", help_text="Server arrival order.")
    tool_call = ToolCallSerializer(required=False)
    interrupted = serializers.BooleanField(
        required=False,
        help_text="Assistant lines only: the caller cut the agent off before it finished.",
    )

    def to_representation(self, instance: dict) -> dict:
        # A `TRANSCRIPT_COLUMNS` row, as representations.transcript_json writes it.
        line = super().to_representation(instance)
        if line.get("tool_call") is None:
            line.pop("tool_call", None)
        if line["role"] != TranscriptRole.ASSISTANT:
            line.pop("interrupted", None)
        return line
