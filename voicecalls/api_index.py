"""`GET /api/v1/`: where the API's documentation, schema and resources live; and the
schema's own view.

The README sends a newcomer here first, so it answers without a key: it names only
public paths, never anything of an organization.
"""

from __future__ import annotations

from types import SimpleNamespace

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework import serializers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

# Each resource's field in the answer and its URL name.
RESOURCES = {
    "calls": "call-list",
    "active_calls": "call-active",
    "workflows": "workflow-list",
    "provider_keys": "provider-key-list",
    "webhook_endpoints": "webhook-endpoint-list",
    "tool_signing_secret": "tool-signing-secret",
    "sip_trunks": "sip-trunk-list",
    "phone_numbers": "phone-number-list",
    "organization": "organization",
    "usage": "usage",
    "prices": "prices",
    "erasures": "erasure-list",
    "livekit_webhooks": "livekit-webhook",
}


class ApiResourcesSerializer(serializers.Serializer):
    calls = serializers.URLField(help_text="Start a call (POST) and list calls.")
    active_calls = serializers.URLField(help_text="Calls not yet ended, newest first.")
    workflows = serializers.URLField(help_text="The workflows calls start from.")
    provider_keys = serializers.URLField(help_text="Bring-your-own STT/LLM/TTS keys.")
    webhook_endpoints = serializers.URLField(help_text="Where call events are delivered.")
    tool_signing_secret = serializers.URLField(
        help_text="The secret signing your tools' requests (rotate it with POST …/rotate)."
    )
    sip_trunks = serializers.URLField(help_text="Your carrier's SIP trunks, for phone calls.")
    phone_numbers = serializers.URLField(help_text="Inbound numbers and their workflows.")
    organization = serializers.URLField(help_text="Your organization's settings and limits.")
    usage = serializers.URLField(help_text="The organization's calls against its limits.")
    prices = serializers.URLField(help_text="The price table your calls are priced with.")
    erasures = serializers.URLField(help_text="Erase a user's personal data (POST).")
    livekit_webhooks = serializers.URLField(
        help_text="Where LiveKit's signed webhooks go (LiveKit's own signature, no key)."
    )


class ApiIndexSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The API's title.")
    version = serializers.CharField(help_text="The API's version (openapi.yaml `info.version`).")
    docs = serializers.URLField(help_text="Swagger UI: the reference, to read and try.")
    schema = serializers.URLField(help_text="The OpenAPI 3 schema (YAML).")
    resources = ApiResourcesSerializer(help_text="Each resource's root.")


class ApiIndexView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []
    reads_database = False  # so no 503 in its schema (voicecalls.schema.AutoSchema)

    @extend_schema(
        summary="Find the docs, schema and resources",
        operation_id="api_index",
        tags=["index"],
        auth=[],
        responses={200: ApiIndexSerializer},
    )
    def get(self, request: Request) -> Response:
        def url(name: str) -> str:
            return request.build_absolute_uri(reverse(name))

        body = {
            "name": settings.SPECTACULAR_SETTINGS["TITLE"],
            "version": settings.SPECTACULAR_SETTINGS["VERSION"],
            "docs": url("swagger-ui"),
            "schema": url("schema"),
            "resources": {field: url(url_name) for field, url_name in RESOURCES.items()},
        }
        return Response(ApiIndexSerializer(body).data)


class _SchemaNegotiation(DefaultContentNegotiation):
    settings = SimpleNamespace(URL_FORMAT_OVERRIDE="format")


class SchemaView(SpectacularAPIView):
    """The OpenAPI document, YAML unless `?format=json` (drf-spectacular's way, which
    the rest of the API, JSON only, does not read)."""

    content_negotiation_class = _SchemaNegotiation
