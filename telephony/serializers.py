from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from providerkeys.serializers import SecretKeyField
from telephony import numbers
from telephony.fields import TransferDestinationField
from telephony.models import PASSWORD_MAX_LENGTH, PhoneNumberStatus, TrunkDirection
from voicecalls.fields import JSONTypedSerializer

MAX_TRUNK_NUMBERS = 100


@extend_schema_field({"type": "string", "pattern": numbers.E164_PATTERN, "maxLength": 16})
class E164TextField(serializers.CharField):
    """A phone number the schema states as E.164; the toll-fraud guard parses it (so
    every refusal is its, and logged)."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("max_length", 16)
        super().__init__(**kwargs)


@extend_schema_field({"type": "string", "pattern": numbers.E164_PATTERN, "maxLength": 16})
class E164Field(serializers.CharField):
    """A valid phone number in E.164 (`+14155550123`), parsed with `phonenumbers`."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("max_length", 16)
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> str:
        value = super().to_internal_value(data)
        try:
            return numbers.number_e164(numbers.number_parse(value))
        except numbers.InvalidNumber as exc:
            raise serializers.ValidationError([exc.detail]) from None


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "string", "pattern": numbers.E164_PATTERN, "maxLength": 16},
        "minItems": 1,
        "maxItems": MAX_TRUNK_NUMBERS,
        "uniqueItems": True,
    }
)
class TrunkNumbersField(serializers.ListField):
    """A trunk's numbers, each once (the schema states it)."""


class SipTrunkCreateSerializer(JSONTypedSerializer):
    name = serializers.CharField(max_length=100)
    direction = serializers.ChoiceField(choices=TrunkDirection.choices)
    address = serializers.RegexField(
        rf"^{numbers.SIP_HOST_PATTERN}$",
        max_length=255,
        required=False,
        default="",
        allow_blank=True,
        help_text="The carrier's SIP host (outbound trunks), e.g. `example.pstn.twilio.com`, "
        "with a port (1-65535) if not 5060.",
    )
    numbers = TrunkNumbersField(
        child=E164Field(), min_length=1, max_length=MAX_TRUNK_NUMBERS, help_text="E.164, each once."
    )
    auth_username = serializers.CharField(
        max_length=255, required=False, default="", allow_blank=True
    )
    auth_password = SecretKeyField(
        max_length=PASSWORD_MAX_LENGTH,
        required=False,
        default="",
        allow_blank=True,
        help_text="Write-only: stored encrypted, never shown again.",
    )

    def validate(self, data: dict) -> dict:
        if data["direction"] == TrunkDirection.OUTBOUND and not data["address"]:
            raise serializers.ValidationError(
                {"address": ["An outbound trunk needs its carrier's SIP address."]}
            )
        if len(set(data["numbers"])) != len(data["numbers"]):
            raise serializers.ValidationError({"numbers": ["Numbers must not repeat."]})
        return data


class SipTrunkSerializer(serializers.Serializer):
    """A trunk as the API shows it: never the password, only whether there is one."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    direction = serializers.ChoiceField(choices=TrunkDirection.choices)
    address = serializers.CharField()
    numbers = serializers.ListField(child=serializers.CharField())
    auth_username = serializers.CharField()
    auth_password_masked = serializers.CharField(
        allow_null=True, help_text="`••••` when a password is set, else null."
    )
    livekit_trunk_id = serializers.CharField()
    created_at = serializers.DateTimeField()


class SipTrunkListSerializer(serializers.Serializer):
    items = SipTrunkSerializer(many=True)


class PhoneNumberCreateSerializer(JSONTypedSerializer):
    number = E164Field(help_text="E.164; one of the trunk's numbers.")
    trunk_id = serializers.UUIDField(help_text="One of your inbound trunks.")
    workflow_slug = serializers.SlugField(max_length=100, help_text="The workflow callers reach.")


class PhoneNumberSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    number = serializers.CharField()
    trunk_id = serializers.UUIDField()
    workflow_slug = serializers.CharField(source="workflow.slug")
    status = serializers.ChoiceField(
        choices=PhoneNumberStatus.choices,
        help_text="`unverified` (no calls reach it) until staff verify it.",
    )
    livekit_dispatch_rule_id = serializers.CharField(
        allow_null=True, help_text="LiveKit's dispatch rule once verified, else null."
    )
    verified_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["livekit_dispatch_rule_id"] = data["livekit_dispatch_rule_id"] or None
        return data


class PhoneNumberListSerializer(serializers.Serializer):
    items = PhoneNumberSerializer(many=True)


class PhoneNumberUpdateSerializer(JSONTypedSerializer):
    workflow_slug = serializers.SlugField(
        max_length=100, required=False, help_text="The workflow callers reach."
    )

    def validate(self, data: dict) -> dict:
        # Sent back as they are (a client editing what it read), they change nothing.
        current = self.context["phone_number"]
        for fixed, value in (("number", current.number), ("trunk_id", str(current.trunk_id))):
            sent = self.initial_data.get(fixed, value)
            if not (isinstance(sent, str) and sent.lower() == value.lower()):
                raise serializers.ValidationError(
                    {fixed: ["A number's number and trunk do not change: delete it and add it."]}
                )
        return data


class CallTransferSerializer(JSONTypedSerializer):
    destination = TransferDestinationField(
        help_text="An E.164 number or `sip:` URI listed in a `transfer` tool of the call's "
        "workflow version.",
    )


class AgentCallTransferSerializer(CallTransferSerializer):
    tool = serializers.RegexField(
        r"^[A-Za-z0-9_-]{1,64}$",
        max_length=64,
        help_text="The transfer tool the model called: `destination` must be one of its.",
    )


class AgentCallTransferResultSerializer(serializers.Serializer):
    call_id = serializers.UUIDField()
    status = serializers.CharField(help_text="`completed`: the caller is on their way.")
    end_reason = serializers.CharField(help_text="`transferred`.")
    transfer_destination = serializers.CharField()
