from __future__ import annotations

import functools
from collections.abc import Mapping

from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from calls.idempotency import IDEMPOTENCY_KEY, idempotency_key, idempotent_call
from voicecalls.errors import Conflict, error_responses
from voicecalls.pagination import PagePagination
from voicecalls.routing import UUID_PATTERN
from voicecalls.throttling import create_uncount
from webhooks import selectors, services
from webhooks.delivery import (
    DeliveryPending,
    EndpointRefusesEvent,
    EventErased,
    webhook_delivery_replay,
)
from webhooks.models import (
    MAX_PREVIOUS_SECRETS,
    ToolSigningSecret,
    WebhookDelivery,
    WebhookEndpoint,
)
from webhooks.serializers import (
    RotationLimitErrorResponseSerializer,
    ToolSigningSecretSerializer,
    ToolSigningSecretWithSecretSerializer,
    WebhookDeliveriesQuerySerializer,
    WebhookDeliverySerializer,
    WebhookEndpointSerializer,
    WebhookEndpointWithSecretSerializer,
    WebhookEndpointWriteSerializer,
)

# Rotations keep every secret they replaced signing for its own 24 hours, up to a bound.
ROTATION_GRACE_TEXT = (
    "For 24 hours after a rotation the secret it replaced keeps signing beside the new one, "
    "and so does each secret an earlier rotation replaced, until its own 24 hours end: a "
    "rotation retried because its answer was lost drops no secret your receiver still "
    f"verifies with. At most {MAX_PREVIOUS_SECRETS} replaced secrets sign at once: a rotation "
    "past them is refused (429 `rotation_limit_reached`)."
)
ROTATION_LIMIT_REACHED = OpenApiResponse(
    RotationLimitErrorResponseSerializer,
    description=f"`rotation_limit_reached`: {MAX_PREVIOUS_SECRETS} secrets replaced within "
    "the last 24 hours still sign; nothing changed. `meta.next_rotation_at` (and "
    "`Retry-After`, in seconds) says when the oldest of them stops signing and a rotation "
    "is taken again. `throttled`: too many requests; wait `Retry-After` seconds.",
    examples=[
        OpenApiExample(
            "Rotation limit reached",
            value={
                "type": "client_error",
                "errors": [
                    {
                        "code": services.RotationLimitReached.code,
                        "detail": services.RotationLimitReached.detail,
                        "attr": None,
                    }
                ],
                "meta": {
                    "previous_secrets": MAX_PREVIOUS_SECRETS,
                    "max_previous_secrets": MAX_PREVIOUS_SECRETS,
                    "next_rotation_at": "2026-01-17T10:33:00.123456Z",
                },
            },
        )
    ],
)


@extend_schema_view(
    list=extend_schema(
        summary="List webhook endpoints",
        operation_id="webhook_endpoints_list",
        description="Your organization's webhook endpoints, paginated like calls; secrets "
        "are never listed.",
        responses={200: WebhookEndpointSerializer(many=True)},
    ),
    retrieve=extend_schema(
        summary="Get webhook endpoint",
        operation_id="webhook_endpoints_retrieve",
        description="An endpoint's URL, its events, and whether it is enabled (and if not, why).",
        responses={200: WebhookEndpointSerializer},
    ),
    create=extend_schema(
        summary="Create webhook endpoint",
        operation_id="webhook_endpoints_create",
        description="The response holds the endpoint's signing secret, shown only this once.",
        request=WebhookEndpointWriteSerializer,
        responses={201: WebhookEndpointWithSecretSerializer},
    ),
    partial_update=extend_schema(
        summary="Update webhook endpoint",
        operation_id="webhook_endpoints_partial_update",
        description="Enabling an endpoint the service disabled (410 Gone) clears the reason.",
        request=WebhookEndpointWriteSerializer(partial=True),
        responses={200: WebhookEndpointSerializer},
    ),
    destroy=extend_schema(
        summary="Delete webhook endpoint",
        operation_id="webhook_endpoints_destroy",
        description="Answers at once: the endpoint is gone and sent nothing more. Its "
        "pending deliveries, its delivery log and the events it alone was sent are "
        "deleted by the next data-retention pass, in batches.",
    ),
)
class WebhookEndpointViewSet(viewsets.GenericViewSet):
    lookup_value_regex = UUID_PATTERN
    pagination_class = PagePagination
    serializer_class = WebhookEndpointSerializer
    queryset = WebhookEndpoint.objects.none()  # for schema generation; reads are scoped below
    http_method_names = ["get", "post", "patch", "delete", "options"]

    def get_queryset(self):
        return selectors.webhook_endpoint_queryset(organization=self.request.user.organization)

    def _get_endpoint(self) -> WebhookEndpoint:
        return get_object_or_404(self.get_queryset(), pk=self.kwargs["pk"])

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(WebhookEndpointSerializer(page, many=True).data)

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(WebhookEndpointSerializer(self._get_endpoint()).data)

    @method_decorator(never_cache)  # it shows the secret
    def create(self, request: Request) -> Response:
        params = WebhookEndpointWriteSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        endpoint, secret = services.webhook_endpoint_create(
            organization=request.user.organization, **params.validated_data
        )
        body = WebhookEndpointWithSecretSerializer({**vars(endpoint), "secret": secret}).data
        return Response(body, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str) -> Response:
        endpoint = self._get_endpoint()
        params = WebhookEndpointWriteSerializer(data=request.data, partial=True)
        params.is_valid(raise_exception=True)
        endpoint = services.webhook_endpoint_update(endpoint=endpoint, **params.validated_data)
        return Response(WebhookEndpointSerializer(endpoint).data)

    def destroy(self, request: Request, pk: str) -> Response:
        services.webhook_endpoint_delete(endpoint=self._get_endpoint())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Rotate signing secret",
        operation_id="webhook_endpoints_rotate_secret",
        description="A new signing secret, shown only in this response. " + ROTATION_GRACE_TEXT,
        request=None,
        responses={200: WebhookEndpointWithSecretSerializer, 429: ROTATION_LIMIT_REACHED},
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret", pagination_class=None)
    @method_decorator(never_cache)  # it shows the secret
    def rotate_secret(self, request: Request, pk: str) -> Response:
        endpoint = self._get_endpoint()
        secret = services.webhook_endpoint_rotate_secret(endpoint=endpoint)
        body = WebhookEndpointWithSecretSerializer({**vars(endpoint), "secret": secret}).data
        return Response(body)

    @extend_schema(
        summary="List webhook deliveries",
        operation_id="webhook_endpoints_deliveries",
        description="Deliveries to this endpoint, newest first, each with its attempt log. "
        "One that ended (succeeded or failed) is kept 30 days after its last change (the "
        "platform's setting), then deleted with its log; a pending one is always listed.",
        parameters=[WebhookDeliveriesQuerySerializer],
        responses={200: WebhookDeliverySerializer(many=True)},
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request: Request, pk: str) -> Response:
        params = WebhookDeliveriesQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        deliveries = selectors.webhook_delivery_list(
            endpoint=self._get_endpoint(),
            status=params.validated_data.get("status"),
            call_id=params.validated_data.get("call_id"),
        )
        page = self.paginate_queryset(deliveries)
        return self.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)

    def _delivery_answer(self, endpoint: WebhookEndpoint, delivery_id: int) -> Response:
        delivery = selectors.webhook_delivery_get(endpoint=endpoint, delivery_id=delivery_id)
        if delivery is None:
            raise Http404("No such webhook delivery.")  # its endpoint deleted meanwhile
        body = WebhookDeliverySerializer(delivery).data
        return Response(body, status=status.HTTP_202_ACCEPTED)

    def idempotent_body(self, request: Request) -> object | None:
        """What a test event's answer is stored for, per Idempotency-Key: its endpoint
        and body (the same key on another endpoint is another request). A replay gets
        through the create throttle (voicecalls.throttling), sending nothing."""
        if self.action != "send_test":
            return None
        return {"webhook_endpoint_id": self.kwargs["pk"].lower(), "body": request.data}

    @extend_schema(
        summary="Send a test event",
        operation_id="webhook_endpoints_test",
        description=(
            "Queues a `webhook.test` event (data: the endpoint's id) to this endpoint, "
            "whatever it subscribed to: signed, retried and logged as any event. Answers "
            "its delivery, pending. A disabled endpoint is 409 `endpoint_disabled`. Send an "
            "`Idempotency-Key` to retry safely: a retry answers the first delivery, sending "
            "no second event."
        ),
        request=None,
        parameters=[IDEMPOTENCY_KEY],
        responses={202: WebhookDeliverySerializer, **error_responses(409, 422)},
    )
    @action(detail=True, methods=["post"], url_path="test", pagination_class=None)
    def send_test(self, request: Request, pk: str) -> Response:
        key = idempotency_key(request.headers)
        if key is None:
            code, body = self._test_send()
        else:
            code, body = idempotent_call(
                organization=request.user.organization,
                key=key,
                body=self.idempotent_body(request),
                run=self._test_send,
                on_replay=functools.partial(create_uncount, request),
            )
            body = _delivery_as_first_sent(body)
        return Response(body, status=code)

    def _test_send(self) -> tuple[int, dict]:
        # The endpoint is looked up in the idempotent run: a retry after it was disabled
        # gets the first answer (that event went), not a 409.
        endpoint = self._get_endpoint()
        try:
            delivery_id = services.webhook_endpoint_test(endpoint=endpoint)
        except EndpointRefusesEvent:
            raise _refused(endpoint) from None
        answer = self._delivery_answer(endpoint, delivery_id)
        return answer.status_code, answer.data

    @extend_schema(
        summary="Replay a webhook delivery",
        operation_id="webhook_endpoints_replay_delivery",
        description=(
            "Sends the delivery's event to this endpoint again: the same `webhook-id` and "
            "body, a new round of retries, attempts added to its log. Answers the "
            "delivery, pending. 409 when it has not ended yet (`delivery_pending`), the "
            "endpoint is disabled (`endpoint_disabled`) or no longer subscribed to the "
            "event's type (`event_not_subscribed`), or the event's call was erased "
            "(`event_erased`)."
        ),
        parameters=[
            OpenApiParameter(
                "delivery_id", int, OpenApiParameter.PATH, description="The delivery's `id`."
            )
        ],
        request=None,
        responses={202: WebhookDeliverySerializer, **error_responses(409)},
    )
    @action(
        detail=True,
        methods=["post"],
        # At most 18 digits: a bigger number is no delivery (and no bigint).
        url_path=r"deliveries/(?P<delivery_id>[0-9]{1,18})/replay",
        pagination_class=None,
    )
    def replay_delivery(self, request: Request, pk: str, delivery_id: str) -> Response:
        endpoint = self._get_endpoint()
        delivery = selectors.webhook_delivery_get(
            endpoint=endpoint, delivery_id=int(delivery_id), log=False
        )
        if delivery is None:
            raise Http404("No such webhook delivery.")
        try:
            webhook_delivery_replay(delivery=delivery, refuse_pending=True)
        except (WebhookEndpoint.DoesNotExist, WebhookDelivery.DoesNotExist):
            raise Http404("No such webhook delivery.") from None  # deleted meanwhile
        except DeliveryPending:
            raise Conflict(
                "The delivery has not ended yet: replay it once it succeeded or failed.",
                code="delivery_pending",
            ) from None
        except EventErased:
            raise Conflict("The event's call was erased.", code="event_erased") from None
        except EndpointRefusesEvent:
            raise _refused(endpoint) from None
        return self._delivery_answer(endpoint, delivery.pk)


def _delivery_as_first_sent(stored: Mapping) -> dict:
    """A delivery's answer kept for idempotent replays, its keys in the serializer's
    order again: PostgreSQL's jsonb keeps them in its own, and a replay is the first
    answer, byte for byte. (Its attempts are none: a test event's answer is pending.)"""
    order = WebhookDeliverySerializer().fields
    return {**{name: stored[name] for name in order if name in stored}, **stored}


def _refused(endpoint: WebhookEndpoint) -> Conflict:
    if not endpoint.enabled:
        return Conflict(
            "The endpoint is disabled: enable it first (PATCH enabled: true).",
            code="endpoint_disabled",
        )
    return Conflict(
        "The endpoint is no longer subscribed to the event's type.", code="event_not_subscribed"
    )


def _tool_secret_body(holder: ToolSigningSecret | None) -> dict:
    if holder is None:
        times = ("created_at", "updated_at", "previous_secret_expires_at")
        return {"exists": False, **dict.fromkeys(times)}
    return {"exists": True, **vars(holder)}


class ToolSigningSecretView(APIView):
    @extend_schema(
        summary="Get tool signing secret",
        operation_id="tool_signing_secret_retrieve",
        description="Whether your organization has a secret signing the requests your "
        "workflows' tools with a `url` are sent, and when it was made and last rotated; "
        "never the secret itself.",
        responses={200: ToolSigningSecretSerializer},
        tags=["tool-signing-secret"],
    )
    def get(self, request: Request) -> Response:
        holder = selectors.tool_signing_secret_get(organization=request.user.organization)
        return Response(ToolSigningSecretSerializer(_tool_secret_body(holder)).data)

    @extend_schema(
        summary="Delete tool signing secret",
        operation_id="tool_signing_secret_destroy",
        description="Removes your organization's tool signing secret, the new one and any "
        "old one still signing beside it: from then on tool requests are sent unsigned "
        "again. Calls already running keep the secrets they started with. 404 when there "
        "is none.",
        responses={204: None, **error_responses(404)},
        tags=["tool-signing-secret"],
    )
    def delete(self, request: Request) -> Response:
        if not services.tool_signing_secret_delete(organization=request.user.organization):
            raise NotFound("Your organization has no tool signing secret.")
        return Response(status=status.HTTP_204_NO_CONTENT)


class ToolSigningSecretRotateView(APIView):
    @extend_schema(
        summary="Create or rotate tool signing secret",
        operation_id="tool_signing_secret_rotate",
        description=(
            "Your organization's first tool signing secret (201), or a new one (200), "
            "shown only in this response. From then on every tool request the voice agent "
            "sends carries Standard Webhooks signature headers, as webhook deliveries do. "
            + ROTATION_GRACE_TEXT
            + " Calls already running keep the secrets they started with."
        ),
        request=None,
        responses={
            200: ToolSigningSecretWithSecretSerializer,
            201: ToolSigningSecretWithSecretSerializer,
            429: ROTATION_LIMIT_REACHED,
        },
        tags=["tool-signing-secret"],
    )
    @method_decorator(never_cache)  # it shows the secret
    def post(self, request: Request) -> Response:
        holder, secret, created = services.tool_signing_secret_rotate(
            organization=request.user.organization
        )
        body = ToolSigningSecretWithSecretSerializer(
            {**_tool_secret_body(holder), "secret": secret}
        ).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
