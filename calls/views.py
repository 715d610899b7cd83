from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django_filters.rest_framework import DjangoFilterBackend
from django_filters.utils import translate_validation
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from calls import representations, selectors, services
from calls.filters import CallFilter
from calls.idempotency import MAX_KEY_LENGTH, idempotent_call
from calls.limits import ConcurrencyLimitReached
from calls.models import Call
from calls.serializers import (
    ActiveCallSerializer,
    ActiveCallsQuerySerializer,
    CallCreateSerializer,
    CallJoinSerializer,
    CallListItemSerializer,
    CallMetricsSerializer,
    CallSerializer,
    TranscriptEntrySerializer,
    call_create_plain,
)
from voicecalls.errors import (
    BadGateway,
    Conflict,
    LimitErrorResponseSerializer,
    LimitReached,
    error_responses,
)
from voicecalls.livekit import LiveKitError
from voicecalls.pagination import PagePagination
from voicecalls.routing import UUID_PATTERN
from workflows.selectors import workflow_call_target

CONCURRENCY_LIMIT_DETAIL = (
    "Your organization has as many calls in progress as it may; end one or wait for one to end."
)

# A slot frees when a call ends, which nobody can predict: a short, fixed wait.
CONCURRENCY_RETRY_AFTER_SECONDS = 5

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description=(
        "Up to 255 characters. The same key and body within 24 hours return the first "
        "response; another body → 422; while the first is still running → 409."
    ),
)


@extend_schema_view(
    list=extend_schema(
        summary="List calls",
        operation_id="calls_list",
        description="Your calls, newest first, filtered and paginated; `total` is exact and a "
        "page past the end is empty.",
        responses=CallListItemSerializer(many=True),
    ),
    retrieve=extend_schema(
        summary="Get call",
        operation_id="calls_retrieve",
        description="Status, agents, metrics and times of a call; `current_agent` is null "
        "before it starts and once it has ended.",
    ),
)
class CallViewSet(viewsets.GenericViewSet):
    lookup_value_regex = UUID_PATTERN
    filterset_class = CallFilter
    pagination_class = PagePagination
    serializer_class = CallSerializer
    queryset = Call.objects.none()  # for schema generation; real reads are scoped below

    def get_queryset(self):
        return selectors.call_queryset(organization=self.request.user.organization)

    def _get_call(self) -> Call:
        return get_object_or_404(self.get_queryset(), pk=self.kwargs["pk"])

    @extend_schema(
        summary="Initiate call",
        operation_id="calls_create",
        description="Start a call from a workflow. The response carries the LiveKit room and "
        "a join token for the end user (valid up to 15 minutes); the agent is dispatched when "
        "the user joins. Send an `Idempotency-Key` to retry safely.",
        request=CallCreateSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={
            201: CallJoinSerializer,
            **error_responses(409, 413, 422),
            429: OpenApiResponse(
                LimitErrorResponseSerializer,
                description=(
                    "`concurrency_limit_reached`: the organization has as many calls not "
                    "yet ended as it may (`meta` has the numbers; see GET /usage). "
                    "`throttled`: too many creations. Either way, wait `Retry-After` "
                    "seconds."
                ),
                examples=[
                    OpenApiExample(
                        "Concurrency limit reached",
                        value={
                            "type": "client_error",
                            "errors": [
                                {
                                    "code": "concurrency_limit_reached",
                                    "detail": CONCURRENCY_LIMIT_DETAIL,
                                    "attr": None,
                                }
                            ],
                            "meta": {"active_calls": 100, "concurrency_limit": 100},
                        },
                    ),
                    OpenApiExample(
                        "Throttled",
                        value={
                            "type": "client_error",
                            "errors": [
                                {
                                    "code": "throttled",
                                    "detail": "Request was throttled. Expected available "
                                    "in 12 seconds.",
                                    "attr": None,
                                }
                            ],
                        },
                    ),
                ],
            ),
        },
    )
    def create(self, request: Request) -> Response:
        organization = request.user.organization
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
            raise serializers.ValidationError(
                {"Idempotency-Key": [f"Must be 1 to {MAX_KEY_LENGTH} characters."]}
            )
        data = call_create_plain(request.data)
        if data is None:
            params = CallCreateSerializer(data=request.data)
            params.is_valid(raise_exception=True)
            data = dict(params.validated_data)
        target = workflow_call_target(organization=organization, slug=data.pop("workflow_slug"))
        if target is None:
            raise serializers.ValidationError(
                {"workflow_slug": ["No workflow with this slug in your organization."]}
            )

        def run() -> tuple[int, dict]:
            try:
                joined = services.call_create(organization=organization, target=target, **data)
            except ConcurrencyLimitReached as exc:
                raise LimitReached(
                    CONCURRENCY_LIMIT_DETAIL,
                    code="concurrency_limit_reached",
                    meta={
                        "active_calls": exc.active_calls,
                        "concurrency_limit": exc.concurrency_limit,
                    },
                    retry_after=CONCURRENCY_RETRY_AFTER_SECONDS,
                ) from exc
            return status.HTTP_201_CREATED, representations.call_join(joined)

        if key is None:
            code, body = run()
        else:
            code, body = idempotent_call(
                organization=organization, key=key, body=request.data, run=run
            )
        return Response(body, status=code)

    def list(self, request: Request) -> Response:
        organization = request.user.organization
        filterset = DjangoFilterBackend().get_filterset(
            request, selectors.call_list(organization=organization), self
        )
        if not filterset.is_valid():
            raise translate_validation(filterset.errors)
        listing = selectors.CallListing(
            organization=organization, calls=filterset.qs, filters=filterset.form.cleaned_data
        )
        page = self.paginator.paginate(request, count=listing.total, fetch=listing.page)
        return self.get_paginated_response(representations.call_list_items(page))

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(CallSerializer(self._get_call()).data)

    @extend_schema(
        summary="List active calls",
        operation_id="calls_active",
        description="Calls not yet ended (`pending`, `connecting`, `active`), newest first.",
        parameters=[ActiveCallsQuerySerializer],
        responses={200: ActiveCallSerializer(many=True)},
        filters=False,
    )
    @action(detail=False, methods=["get"], pagination_class=None, filterset_class=None)
    def active(self, request: Request) -> Response:
        params = ActiveCallsQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        calls = selectors.active_calls(
            organization=request.user.organization, limit=params.validated_data["limit"]
        )
        return Response(representations.active_call_items(calls))

    @extend_schema(
        summary="Get call transcript",
        operation_id="calls_transcript",
        description="The whole transcript in time order (ties in server arrival order, "
        "`sequence`); `tool_call` appears only on lines that have one.",
        responses={200: TranscriptEntrySerializer(many=True)},
        filters=False,
    )
    @action(detail=True, methods=["get"], pagination_class=None, filterset_class=None)
    def transcript(self, request: Request, pk: str) -> Response:
        # Only the call's existence in this organization matters here, not its blobs.
        call = get_object_or_404(self.get_queryset().only("id"), pk=pk)
        rows = selectors.call_transcript_rows(call=call)
        # Already the JSONRenderer's bytes (content negotiation has run): see
        # representations.transcript_json.
        return HttpResponse(representations.transcript_json(rows), content_type="application/json")

    @extend_schema(
        summary="Get call metrics",
        operation_id="calls_metrics",
        description="Latencies are means over the samples the agent reported (null when none), "
        "tokens are summed and handoffs counted; `duration_seconds` is whole seconds.",
        responses={200: CallMetricsSerializer},
        filters=False,
    )
    @action(detail=True, methods=["get"], pagination_class=None, filterset_class=None)
    def metrics(self, request: Request, pk: str) -> Response:
        return Response(CallMetricsSerializer(selectors.call_metrics(call=self._get_call())).data)

    @extend_schema(
        summary="Issue a fresh join token",
        operation_id="calls_token",
        description="A fresh join token for a call that has not ended (a call may outlive "
        "its 15-minute token); an ended call is 409.",
        request=None,
        responses={200: CallJoinSerializer, **error_responses(409)},
        filters=False,
    )
    @action(detail=True, methods=["post"], pagination_class=None, filterset_class=None)
    def token(self, request: Request, pk: str) -> Response:
        call = self._get_call()
        if call.is_ended:
            raise Conflict("This call has ended.", code="call_ended")
        joined = services.CallJoinInfo(call=call, token=services.call_participant_token(call=call))
        return Response(CallJoinSerializer(joined).data)

    @extend_schema(
        summary="End call (hang up)",
        operation_id="calls_end",
        request=None,
        responses={200: CallSerializer, **error_responses(502)},
        filters=False,
    )
    @action(detail=True, methods=["post"], pagination_class=None, filterset_class=None)
    def end(self, request: Request, pk: str) -> Response:
        """Hang up: LiveKit closes the room, the call becomes `completed` (`api_request`).

        An ended call is returned unchanged. LiveKit unreachable or failing: 502 and
        the call stays as it was.
        """
        try:
            call = services.call_end(call=self._get_call())
        except LiveKitError as exc:
            raise BadGateway("LiveKit could not close the room; the call is unchanged.") from exc
        return Response(CallSerializer(call).data)
