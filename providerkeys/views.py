from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from providerkeys import selectors, services
from providerkeys.models import ProviderKey
from providerkeys.serializers import (
    ProviderKeyCreateSerializer,
    ProviderKeyListSerializer,
    ProviderKeySerializer,
    ProviderKeyUpdateSerializer,
)
from voicecalls import openapi_examples as examples
from voicecalls.errors import error_responses

ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Key ID.")


class ProviderKeyListView(APIView):
    @extend_schema(
        summary="List provider keys",
        description="Configured BYOK provider keys, newest first (key values are masked).",
        operation_id="provider_keys_list",
        responses={200: ProviderKeyListSerializer},
        examples=[examples.PROVIDER_KEY_LIST],
    )
    def get(self, request: Request) -> Response:
        keys = selectors.provider_key_list(organization=request.user.organization)
        return Response({"items": ProviderKeySerializer(keys, many=True).data})

    @extend_schema(
        summary="Create provider key",
        description="Add a BYOK provider key. It is stored encrypted and never shown again.",
        operation_id="provider_keys_create",
        request=ProviderKeyCreateSerializer,
        responses={201: ProviderKeySerializer, **error_responses(413)},
        examples=[examples.PROVIDER_KEY_CREATED],
    )
    def post(self, request: Request) -> Response:
        params = ProviderKeyCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        provider_key = services.provider_key_create(
            organization=request.user.organization, **params.validated_data
        )
        return Response(ProviderKeySerializer(provider_key).data, status=status.HTTP_201_CREATED)


class ProviderKeyDetailView(APIView):
    @extend_schema(
        summary="Update provider key",
        description="Make a key its type's default (the previous default stops being one), "
        "or stop it being the default. Nothing else changes: the key itself, its type or its "
        "provider name in the body is a 400 naming the field (replace a key by deleting it "
        "and creating another).",
        operation_id="provider_keys_partial_update",
        parameters=[ID],
        request=ProviderKeyUpdateSerializer,
        responses={200: ProviderKeySerializer, **error_responses(413)},
        examples=[examples.PROVIDER_KEY_CREATED],
    )
    def patch(self, request: Request, pk: str) -> Response:
        provider_key = get_object_or_404(
            selectors.provider_key_queryset(organization=request.user.organization), pk=pk
        )
        params = ProviderKeyUpdateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        if "is_default" in params.validated_data:
            try:
                provider_key = services.provider_key_update(
                    provider_key=provider_key, is_default=params.validated_data["is_default"]
                )
            except ProviderKey.DoesNotExist as exc:
                raise NotFound() from exc
        return Response(ProviderKeySerializer(provider_key).data)

    @extend_schema(
        summary="Delete provider key",
        description="Delete a provider key. Returns 204 on success; an unknown key is 404.",
        operation_id="provider_keys_destroy",
        parameters=[ID],
        responses={204: None},
    )
    def delete(self, request: Request, pk: str) -> Response:
        if not services.provider_key_delete(
            organization=request.user.organization, provider_key_id=pk
        ):
            raise NotFound()
        return Response(status=status.HTTP_204_NO_CONTENT)
