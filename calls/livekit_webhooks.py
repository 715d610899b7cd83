"""`POST /api/v1/webhooks/livekit`: LiveKit's room and participant events.

LiveKit sends `application/webhook+json`, and the signature covers the raw body, so
no parser runs: the exact bytes are verified before anything is parsed. A DRF view
only so that the schema documents it (and its errors keep the one shape); it has no
API-key authentication, throttle or parser of its own.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from calls.livekit_events import WebhookResult, livekit_webhook_receive
from voicecalls.errors import ErrorResponseSerializer
from voicecalls.livekit import WebhookPayloadError, WebhookSignatureError

WEBHOOK_MEDIA_TYPE = "application/webhook+json"


class WebhookSignatureInvalid(APIException):
    # Not DRF's AuthenticationFailed: a view without authenticators turns that into 403.
    status_code = status.HTTP_401_UNAUTHORIZED
    default_detail = "Invalid or missing webhook signature."
    default_code = "authentication_failed"


class _WebhookRoomSerializer(serializers.Serializer):
    sid = serializers.CharField(required=False)
    name = serializers.CharField(help_text="`call-<call_id>` for our calls.")


class _WebhookParticipantSerializer(serializers.Serializer):
    sid = serializers.CharField(required=False)
    identity = serializers.CharField(help_text="`user-<call_id>` for the end user.")
    kind = serializers.CharField(required=False, help_text="e.g. `STANDARD`, `AGENT`.")
    disconnectReason = serializers.CharField(
        required=False, help_text="On `participant_left`, e.g. `CLIENT_INITIATED`."
    )


class _WebhookEgressInfoSerializer(serializers.Serializer):
    egressId = serializers.CharField()
    roomName = serializers.CharField(required=False)
    status = serializers.CharField(help_text="e.g. `EGRESS_ACTIVE`, `EGRESS_COMPLETE`.")
    error = serializers.CharField(required=False, help_text="Why a failed egress failed.")


class LiveKitWebhookEventSerializer(serializers.Serializer):
    """A LiveKit `WebhookEvent` (protobuf JSON); unknown fields are ignored."""

    id = serializers.CharField(help_text="Event id; a re-delivered id changes nothing.")
    event = serializers.CharField(
        help_text="`participant_joined`, `participant_left`, `room_finished` and the "
        "recordings' `egress_started`, `egress_updated`, `egress_ended` are handled; other "
        "events are acknowledged and ignored."
    )
    createdAt = serializers.CharField(required=False, help_text="Unix seconds.")
    room = _WebhookRoomSerializer(required=False)
    participant = _WebhookParticipantSerializer(required=False)
    egressInfo = _WebhookEgressInfoSerializer(required=False)


class LiveKitWebhookResultSerializer(serializers.Serializer):
    result = serializers.ChoiceField(
        choices=[
            WebhookResult.HANDLED,
            WebhookResult.DUPLICATE,
            WebhookResult.IGNORED,
            WebhookResult.UNKNOWN_ROOM,
        ],
        help_text="What was done with the event.",
    )


class LiveKitWebhookView(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []
    parser_classes: list = []  # the raw body is read and verified as it is

    @extend_schema(
        summary="Receive a LiveKit webhook",
        operation_id="livekit_webhook",
        description=(
            "For LiveKit only. The body is a LiveKit `WebhookEvent` as "
            "`application/webhook+json`; the `Authorization` header holds a bare JWT "
            "(no `Bearer`) signed HS256 with the LiveKit API secret, issuer the API key, "
            "whose `sha256` claim is the base64 SHA-256 of the exact body. Anything "
            "unsigned, tampered or signed by another key is a 401 and changes nothing."
        ),
        auth=[{"LiveKitWebhookSignature": []}],
        request={WEBHOOK_MEDIA_TYPE: LiveKitWebhookEventSerializer},
        responses={
            200: LiveKitWebhookResultSerializer,
            400: OpenApiResponse(
                ErrorResponseSerializer,
                description="Signed, but the body is not UTF-8, not a LiveKit event, or holds "
                "text that cannot be stored (U+0000); nothing changed.",
            ),
            401: OpenApiResponse(
                ErrorResponseSerializer,
                description="Missing, invalid or foreign signature; nothing changed.",
                examples=[
                    OpenApiExample(
                        "Unsigned",
                        value={
                            "type": "client_error",
                            "errors": [
                                {
                                    "code": "authentication_failed",
                                    "detail": WebhookSignatureInvalid.default_detail,
                                    "attr": None,
                                }
                            ],
                        },
                    )
                ],
            ),
        },
    )
    def post(self, request: Request) -> Response:
        try:
            result = livekit_webhook_receive(
                body=request.body, authorization=request.headers.get("Authorization", "")
            )
        except WebhookSignatureError as exc:
            raise WebhookSignatureInvalid() from exc
        except WebhookPayloadError as exc:
            raise ParseError(str(exc)) from exc
        return Response({"result": result})


livekit_webhook = LiveKitWebhookView.as_view()
