"""`GET /api/v1/usage`: the organization's calls against its limits."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from calls.limits import organization_usage


class UsageSerializer(serializers.Serializer):
    active_calls = serializers.IntegerField(
        min_value=0, help_text="Calls not yet ended (pending, connecting or active)."
    )
    concurrency_limit = serializers.IntegerField(
        min_value=0, help_text="Most calls not yet ended at once; creating one more is a 429."
    )
    calls_today = serializers.IntegerField(
        min_value=0, help_text="Calls created since 00:00 UTC today."
    )


class UsageView(APIView):
    @extend_schema(
        summary="Get usage and limits",
        operation_id="usage_retrieve",
        responses={200: UsageSerializer},
    )
    def get(self, request: Request) -> Response:
        usage = organization_usage(organization=request.user.organization)
        return Response(UsageSerializer(usage).data)
