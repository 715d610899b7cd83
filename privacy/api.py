"""`POST /erasures` and `GET /erasures/{id}`: erase one user's personal data from the
organization's calls, and follow it."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from calls.serializers import UserIdField
from privacy import selectors
from privacy.erasure import erasure_create
from privacy.models import ErasureStatus
from voicecalls.fields import JSONTypedSerializer

ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Erasure ID.")


class ErasureCreateSerializer(JSONTypedSerializer):
    user_id = UserIdField(
        help_text="The user whose data is erased: calls with this `user_id`; when it is an "
        "E.164 number, also phone calls to or from it.",
    )


class ErasureSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=ErasureStatus.choices)
    calls_matched = serializers.IntegerField(help_text="The user's calls found.")
    calls_erased = serializers.IntegerField(help_text="Calls erased so far.")
    calls_waiting = serializers.IntegerField(
        help_text="Erased calls still open: their phone numbers and user id are removed "
        "when they end."
    )
    transcript_lines_erased = serializers.IntegerField()
    webhook_events_scrubbed = serializers.IntegerField(
        help_text="Stored webhook event bodies rebuilt without the erased data."
    )
    recordings_deleted = serializers.IntegerField(
        help_text="Call recordings deleted from their storage."
    )
    requested_by_key_prefix = serializers.CharField(help_text="The API key that asked.")
    requested_by_key_name = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class ErasureListView(APIView):
    @extend_schema(
        summary="Erase a user's data",
        description="Erases, in the background, the personal data of every call of this "
        "user in your organization: recordings, transcript words (a marker stays with each line's "
        "role and time), tool calls, user_data, metadata, the user id and phone numbers, "
        "the analysis's summary and structured data, and stored webhook bodies. Ids, "
        "statuses, timings, metrics and costs stay. Follow it with GET /erasures/{id}.",
        operation_id="erasures_create",
        request=ErasureCreateSerializer,
        responses={202: ErasureSerializer},
        tags=["privacy"],
    )
    def post(self, request: Request) -> Response:
        params = ErasureCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        erasure = erasure_create(
            organization=request.user.organization,
            user_id=params.validated_data["user_id"],
            api_key=request.auth,
        )
        return Response(ErasureSerializer(erasure).data, status=status.HTTP_202_ACCEPTED)


class ErasureDetailView(APIView):
    @extend_schema(
        summary="Get erasure",
        description="An erasure's progress and, once completed, what it erased.",
        operation_id="erasures_retrieve",
        parameters=[ID],
        responses={200: ErasureSerializer},
        tags=["privacy"],
    )
    def get(self, request: Request, pk: str) -> Response:
        queryset = selectors.erasure_queryset(organization=request.user.organization)
        return Response(ErasureSerializer(get_object_or_404(queryset, pk=pk)).data)
