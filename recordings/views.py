"""`PUT/GET/DELETE /organization/recording-storage`: the organization's own bucket."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from recordings import selectors, services
from recordings.serializers import (
    RecordingStorageSerializer,
    RecordingStorageWriteSerializer,
    recording_storage_data,
)
from voicecalls.errors import error_responses

NOT_SET = "Your organization has no recording storage of its own."


class RecordingStorageView(APIView):
    @extend_schema(
        summary="Get recording storage",
        operation_id="recording_storage_retrieve",
        description="Your own bucket for call recordings; 404 when you use the platform's. "
        "The secret is never shown, the access key id only masked.",
        responses={200: RecordingStorageSerializer, **error_responses(404)},
        tags=["organization"],
    )
    def get(self, request: Request) -> Response:
        storage = selectors.recording_storage_of(organization_id=request.user.organization.pk)
        if storage is None:
            raise NotFound(NOT_SET)
        return Response(recording_storage_data(storage))

    @extend_schema(
        summary="Set recording storage",
        operation_id="recording_storage_update",
        description="Record your calls into your own S3-compatible bucket (replaces any "
        "earlier one for the next recordings; earlier recordings stay where they are and "
        "are served and deleted with these credentials: one in a bucket they do not reach "
        "is left there when retention or an erasure deletes it). The credentials are "
        "stored encrypted and go "
        "only to LiveKit's egress and to voicecalls' own signing; they are never shown.",
        request=RecordingStorageWriteSerializer,
        responses={200: RecordingStorageSerializer},
        tags=["organization"],
    )
    def put(self, request: Request) -> Response:
        params = RecordingStorageWriteSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        storage = services.recording_storage_set(
            organization_id=request.user.organization.pk, **params.validated_data
        )
        return Response(recording_storage_data(storage))

    @extend_schema(
        summary="Remove recording storage",
        operation_id="recording_storage_destroy",
        description="Later recordings go to the platform's storage (if it has one; else "
        "calls are not recorded). Files already in your bucket stay there; voicecalls can no "
        "longer serve or delete them.",
        responses={204: None, **error_responses(404)},
        tags=["organization"],
    )
    def delete(self, request: Request) -> Response:
        if not services.recording_storage_delete(organization_id=request.user.organization.pk):
            raise NotFound(NOT_SET)
        return Response(status=status.HTTP_204_NO_CONTENT)
