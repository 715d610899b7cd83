"""`GET/PATCH /organization`: the one resource for an organization's settings.

Settings that bound money or abuse have ceilings only staff set (admin); a client
key reads them and may lower its own settings under them, never raise them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import RETENTION_DAYS, Organization
from accounts.services import organization_settings_update
from telephony.serializers import E164TextField
from voicecalls.fields import JSONTypedSerializer

STAFF_ONLY = (
    "allowed_destination_countries",
    "max_outbound_calls_per_minute",
    "max_outbound_calls_per_day",
)
OUTBOUND_LIMITS = ("outbound_calls_per_minute", "outbound_calls_per_day")
READ_ONLY = ("id", "slug", "name", "concurrency_limit", *STAFF_ONLY)


RETENTION_HELP = {
    "transcript_retention_days": "Days after a call ended its transcript lines and tool "
    "calls are deleted (and the analysis's summary); null: kept.",
    "recording_retention_days": "Days after a call ended its recording is deleted; null: kept.",
    "user_data_retention_days": "Days after a call ended its user_id, user_data, metadata "
    "and the caller's or callee's phone number are removed; null: kept.",
}


def _retention_field(name: str) -> serializers.IntegerField:
    return serializers.IntegerField(
        min_value=RETENTION_DAYS[0],
        max_value=RETENTION_DAYS[1],
        allow_null=True,
        required=False,
        help_text=RETENTION_HELP[name],
    )


def _outbound_limit_field() -> serializers.IntegerField:
    return serializers.IntegerField(
        min_value=1,
        required=False,
        allow_null=True,
        help_text="At most the maximum support set; null: follow that maximum.",
    )


class OrganizationSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    slug = serializers.CharField()
    name = serializers.CharField()
    concurrency_limit = serializers.IntegerField(
        source="effective_concurrency_limit", help_text="Most calls not yet ended at once."
    )
    default_caller_number = serializers.CharField(
        allow_null=True, help_text="Caller id of phone calls without `from_number` (E.164)."
    )
    outbound_calls_per_minute = serializers.IntegerField(
        source="effective_outbound_calls_per_minute",
        help_text="Phone calls you may start per minute (≤ the maximum).",
    )
    outbound_calls_per_day = serializers.IntegerField(
        source="effective_outbound_calls_per_day",
        help_text="Phone calls you may start, and transfers to numbers, per UTC day (≤ the "
        "maximum).",
    )
    max_outbound_calls_per_minute = serializers.IntegerField(help_text="Set by support.")
    max_outbound_calls_per_day = serializers.IntegerField(help_text="Set by support.")
    allowed_destination_countries = serializers.ListField(
        child=serializers.CharField(),
        help_text="Countries (ISO 3166 codes) phone calls may reach; set by support.",
    )
    transcript_retention_days = serializers.IntegerField(
        allow_null=True, help_text=RETENTION_HELP["transcript_retention_days"]
    )
    recording_retention_days = serializers.IntegerField(
        allow_null=True, help_text=RETENTION_HELP["recording_retention_days"]
    )
    user_data_retention_days = serializers.IntegerField(
        allow_null=True, help_text=RETENTION_HELP["user_data_retention_days"]
    )


class OrganizationUpdateSerializer(JSONTypedSerializer):
    default_caller_number = E164TextField(
        required=False,
        allow_null=True,
        help_text="One of your outbound SIP trunks' numbers (E.164), or null.",
    )
    outbound_calls_per_minute = _outbound_limit_field()
    outbound_calls_per_day = _outbound_limit_field()
    transcript_retention_days = _retention_field("transcript_retention_days")
    recording_retention_days = _retention_field("recording_retention_days")
    user_data_retention_days = _retention_field("user_data_retention_days")

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            # A limit sent back as GET shows it (the ceiling for one never set, or one
            # above it) is no change, else it stays there when support raises the
            # ceiling; dropped before the field's checks: under a ceiling of 0 (support
            # stopped the organization's calls) GET shows 0, less than may be set.
            organization: Organization = self.context["organization"]
            data = {
                name: value
                for name, value in data.items()
                if not (
                    name in OUTBOUND_LIMITS
                    and type(value) is int
                    and value == getattr(organization, f"effective_{name}")
                )
            }
        return super().to_internal_value(data)

    def validate(self, data: dict) -> dict:
        organization: Organization = self.context["organization"]
        errors: dict[str, list] = {}
        # A support field sent back as it is (a GET, changed, PATCHed whole) is no
        # change; only a change is refused.
        current = OrganizationSerializer(organization).data
        for name in set(self.initial_data) & set(READ_ONLY):
            if self.initial_data[name] != current[name]:
                errors[name] = [
                    serializers.ErrorDetail("Read-only; support sets it.", code="read_only")
                ]
        for name in OUTBOUND_LIMITS:
            ceiling = getattr(organization, f"max_{name}")
            if data.get(name) is not None and data[name] > ceiling:
                errors[name] = [
                    serializers.ErrorDetail(
                        f"Must be at most {ceiling}, your organization's maximum.",
                        code="above_maximum",
                    )
                ]
        number = data.get("default_caller_number")
        if number is not None:
            from telephony.guard import caller_id_pick

            try:
                data["default_caller_number"] = caller_id_pick(
                    organization=organization, from_number=number
                ).number
            except serializers.ValidationError as exc:
                errors["default_caller_number"] = exc.detail.get("from_number") or exc.detail
        if errors:
            raise serializers.ValidationError(errors)
        return data


class OrganizationView(APIView):
    @extend_schema(
        summary="Get organization settings",
        operation_id="organization_retrieve",
        responses={200: OrganizationSerializer},
        tags=["organization"],
    )
    def get(self, request: Request) -> Response:
        return Response(OrganizationSerializer(request.user.organization).data)

    @extend_schema(
        summary="Update organization settings",
        description="Change your own settings. Limits may be lowered under the maximum "
        "support set, never raised above it (400); support's fields are read-only: sent "
        "as they are they change nothing, a change is a 400 (`read_only`). A limit reads as "
        "the maximum when you never set it (or set it above); sent back as it reads, it "
        "stays as it was, so it follows the maximum when support raises it.",
        operation_id="organization_partial_update",
        request=OrganizationUpdateSerializer,
        responses={200: OrganizationSerializer},
        tags=["organization"],
    )
    @transaction.atomic
    def patch(self, request: Request) -> Response:
        # Checked and saved holding the row, as a trunk's deletion clears a default
        # caller number holding it: a number checked while its trunk went is not kept.
        organization = Organization.objects.select_for_update().get(pk=request.user.organization.pk)
        params = OrganizationUpdateSerializer(
            data=request.data, context={"organization": organization}
        )
        params.is_valid(raise_exception=True)
        organization = organization_settings_update(
            organization=organization, **params.validated_data
        )
        return Response(OrganizationSerializer(organization).data)
