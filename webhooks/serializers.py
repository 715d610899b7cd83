from __future__ import annotations

from rest_framework import serializers

from voicecalls.errors import ErrorResponseSerializer
from voicecalls.fields import JSONTypedSerializer, QueryParamsSerializer
from webhooks.models import DeliveryStatus, EventType, SentEventType


class WebhookEndpointWriteSerializer(JSONTypedSerializer):
    url = serializers.URLField(
        max_length=2048,
        help_text="Where events are POSTed. Must be https and publicly reachable.",
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.choices),
        min_length=1,
        default=list(EventType.values),
        help_text="Event types to receive (default: all).",
    )
    enabled = serializers.BooleanField(default=True)
    description = serializers.CharField(max_length=255, allow_blank=True, default="")


class WebhookEndpointSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.URLField()
    description = serializers.CharField()
    events = serializers.ListField(child=serializers.ChoiceField(choices=EventType.choices))
    enabled = serializers.BooleanField()
    disabled_reason = serializers.CharField(
        help_text="Why the service disabled the endpoint (e.g. it answered 410 Gone); empty "
        "otherwise."
    )
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        help_text="The signing secret (`whsec_...`). Shown only in this response: store it now."
    )


class WebhookDeliveriesQuerySerializer(QueryParamsSerializer):
    status = serializers.ChoiceField(
        choices=DeliveryStatus.choices, required=False, help_text="Only deliveries in this state."
    )
    call_id = serializers.UUIDField(
        required=False, help_text="Only deliveries of this call's events."
    )


class WebhookAttemptSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    attempted_at = serializers.DateTimeField(help_text="The attempt's `webhook-timestamp`.")
    status_code = serializers.IntegerField(
        allow_null=True, help_text="The receiver's HTTP status; null when none came back."
    )
    duration_ms = serializers.IntegerField()
    error = serializers.CharField()
    response_excerpt = serializers.CharField(
        help_text="The first 200 characters of the response body."
    )


class WebhookDeliverySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    event_id = serializers.CharField(help_text="The `webhook-id`, the same on every attempt.")
    event_type = serializers.ChoiceField(
        source="event.type",
        choices=SentEventType.choices,
        help_text="The event's type: one subscribed to, or `webhook.test` (sent on request).",
    )
    call_id = serializers.UUIDField(
        source="event.call_id", allow_null=True, help_text="Null for `webhook.test`."
    )
    status = serializers.ChoiceField(choices=DeliveryStatus.choices)
    attempt_count = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When the next attempt is due. Null once the delivery ended, and while "
        "it is pending behind the endpoint's attempts in flight (its turn comes as one ends).",
    )
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    attempts = WebhookAttemptSerializer(many=True)


class ToolSigningSecretSerializer(serializers.Serializer):
    exists = serializers.BooleanField(
        help_text="Whether your organization has a tool signing secret. Until it has one, "
        "tool requests are sent unsigned."
    )
    created_at = serializers.DateTimeField(allow_null=True)
    updated_at = serializers.DateTimeField(
        allow_null=True, help_text="The last rotation (the creation until the first)."
    )
    previous_secret_expires_at = serializers.DateTimeField(
        allow_null=True,
        help_text="Until when the secret the last rotation replaced signs beside the new "
        "one (24 hours after that rotation); any replaced before it stops signing at its "
        "own rotation's 24 hours, earlier. Null when none was replaced.",
    )


class ToolSigningSecretWithSecretSerializer(ToolSigningSecretSerializer):
    # A secret shown was made, so it has both times: never null here.
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField(
        help_text="The last rotation (the creation until the first)."
    )
    secret = serializers.CharField(
        help_text="The signing secret (`whsec_...`). Shown only in this response: store it now."
    )


class RotationLimitMetaSerializer(serializers.Serializer):
    """The numbers behind a refused rotation (`rotation_limit_reached`)."""

    previous_secrets = serializers.IntegerField(help_text="Replaced secrets signing now.")
    max_previous_secrets = serializers.IntegerField(help_text="How many may sign at once.")
    next_rotation_at = serializers.DateTimeField(
        help_text="When the oldest of them stops signing, and a rotation is taken again."
    )


class RotationLimitErrorResponseSerializer(ErrorResponseSerializer):
    """429: `rotation_limit_reached` (with `meta`), or `throttled` (see Retry-After)."""

    meta = RotationLimitMetaSerializer(required=False, help_text="With `rotation_limit_reached`.")
