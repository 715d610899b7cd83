from __future__ import annotations

import functools
from typing import Any

from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Organization
from analysis import services as analysis_services
from calls import listing as call_listing
from calls import representations, selectors, services
from calls.filters import CallFilter
from calls.idempotency import IDEMPOTENCY_KEY, idempotency_key, idempotent_call
from calls.limits import ConcurrencyLimitReached
from calls.models import ENDED_STATUSES, Call
from calls.serializers import (
    ActiveCallSerializer,
    ActiveCallsQuerySerializer,
    CallAnalysisSerializer,
    CallCreateSerializer,
    CallJoinSerializer,
    CallListItemSerializer,
    CallMetricsSerializer,
    CallSerializer,
    TranscriptEntrySerializer,
)
from recordings import selectors as recording_selectors
from recordings.serializers import RecordingAccessSerializer, recording_access
from telephony.dialing import phone_call_create
from voicecalls.errors import BadGateway, Conflict, LimitErrorResponseSerializer, error_responses
from voicecalls.livekit import LiveKitError
from voicecalls.pagination import PagePagination
from voicecalls.routing import UUID_PATTERN
from voicecalls.throttling import create_uncount
from workflows.selectors import workflow_call_target


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

    def idempotent_body(self, request: Request) -> object | None:
        """What the create stores its answer for, per Idempotency-Key: a replay gets
        through the create throttle (voicecalls.throttling), creating nothing."""
        return request.data if self.action == "create" else None

    def get_queryset(self):
        return selectors.call_queryset(organization=self.request.user.organization)

    def _get_call(self, related: tuple[str, ...] = ()) -> Call:
        call = selectors.call_get(
            organization=self.request.user.organization, call_id=self.kwargs["pk"], related=related
        )
        if call is None:
            raise Http404
        return call

    @extend_schema(
        summary="Initiate call",
        operation_id="calls_create",
        description="Start a call from a workflow. The response carries the LiveKit room and "
        "a join token for the end user (valid up to 15 minutes); the agent is dispatched when "
        "the user joins. With `phone_number` the call is a phone call: answered `pending` "
        "at once and dialed in the background; its token is listen-only. Send an "
        "`Idempotency-Key` to retry safely.",
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
                    "`outbound_rate_limited`: a phone call over the organization's calls "
                    "per minute or per day (`meta`: which, and its value). "
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
                                    "code": ConcurrencyLimitReached.code,
                                    "detail": ConcurrencyLimitReached.detail,
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
    @method_decorator(never_cache)  # the join token is a credential, replays' too
    def create(self, request: Request) -> Response:
        organization = request.user.organization
        key = idempotency_key(request.headers)
        data = _CALL_CREATE.run_validation(request.data)
        # The slug is looked up inside the idempotent run: a retry after the workflow was
        # renamed or deleted gets the first answer, not a 400 about the slug.
        create = functools.partial(_call_of_slug, organization=organization, **data)
        if key is None:
            code, body = create()
        else:
            code, body = idempotent_call(
                organization=organization,
                key=key,
                body=request.data,
                run=create,
                on_replay=functools.partial(create_uncount, request),
            )
            body = representations.call_join_as_first_sent(body)
        return Response(body, status=code)

    def list(self, request: Request) -> Response:
        listing = call_listing.call_list(
            organization=request.user.organization, filters=request.query_params
        )
        page = self.paginator.paginate(request, count=listing.total, fetch=listing.page)
        return self.get_paginated_response(representations.call_summaries(page))

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(call_detail_data(self._get_call(selectors.DETAIL_RELATED)))

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
        params = _ACTIVE_QUERY.run_validation(request.query_params)
        calls = selectors.active_calls(
            organization=request.user.organization, limit=params["limit"]
        )
        return Response(representations.active_calls(calls))

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
        # Already JSON bytes (content negotiation has run: JSON is all the API speaks).
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
        call = self._get_call()
        samples = selectors.call_samples(call=call)
        return Response(representations.call_metrics(call, samples=samples))

    @extend_schema(
        methods=["GET"],
        summary="Get call analysis",
        operation_id="calls_analysis_retrieve",
        description="The post-call analysis of the call; 404 while the call has not ended, "
        "and when its workflow has no `analysis` setting.",
        responses={200: CallAnalysisSerializer},
        filters=False,
    )
    @extend_schema(
        methods=["POST"],
        summary="Re-run call analysis",
        operation_id="calls_analysis_rerun",
        description="Analyse an ended call again (with the workflow version it ran). While a "
        "run is pending or running, that run is returned (idempotent); a call not yet ended "
        "is 409; a workflow with no `analysis` setting is 409; a call whose transcript was "
        "erased or is past its retention is 409 (its verdict stays).",
        request=None,
        responses={202: CallAnalysisSerializer, **error_responses(409)},
        filters=False,
    )
    @action(
        detail=True,
        methods=["get", "post"],
        pagination_class=None,
        filterset_class=None,
        url_path="analysis",
    )
    def analysis(self, request: Request, pk: str) -> Response:
        call = self._get_call()
        if request.method == "GET":
            analysis = selectors.call_analysis(call=call)
            if analysis is None and call.status not in ENDED_STATUSES:
                raise NotFound("This call has not ended; its analysis runs once it has.")
            if analysis is None:
                raise NotFound("This call's workflow has no analysis setting.")
            return Response(representations.call_analysis(analysis))
        try:
            analysis = analysis_services.call_analysis_rerun(call=call)
        except analysis_services.CallNotEnded as exc:
            raise Conflict("This call has not ended yet.", code="call_not_ended") from exc
        except analysis_services.AnalysisNotConfigured as exc:
            raise Conflict(
                "This call's workflow has no analysis setting.", code="analysis_not_configured"
            ) from exc
        except analysis_services.CallTranscriptRemoved as exc:
            raise Conflict(
                "This call's transcript was erased or is past its retention: nothing is left "
                "to analyse.",
                code="transcript_removed",
            ) from exc
        return Response(representations.call_analysis(analysis), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Get call recording",
        operation_id="calls_recording_retrieve",
        description="The call's recording: its status and, once the file is complete, a "
        "download link (`url`, an OGG/Opus file) that works until `expires_at` (at most 15 "
        "minutes; ask again for a fresh one). 404 when the call is not recorded.",
        responses={200: RecordingAccessSerializer},
        filters=False,
    )
    @action(detail=True, methods=["get"], pagination_class=None, filterset_class=None)
    @method_decorator(never_cache)  # the presigned link downloads the file, to anyone
    def recording(self, request: Request, pk: str) -> Response:
        call = self._get_call(("recording",))
        recording = recording_selectors.call_recording(call=call)
        if recording is None:
            raise NotFound("This call has no recording.")
        retention_days = request.user.organization.recording_retention_days
        return Response(recording_access(recording, call=call, retention_days=retention_days))

    @extend_schema(
        summary="Issue a fresh join token",
        operation_id="calls_token",
        description="A fresh join token for a call that has not ended (a call may outlive "
        "its 15-minute token); for a phone call a fresh listen-only one. An ended call is "
        "409.",
        request=None,
        responses={200: CallJoinSerializer, **error_responses(409)},
        filters=False,
    )
    @action(detail=True, methods=["post"], pagination_class=None, filterset_class=None)
    @method_decorator(never_cache)  # the join token is a credential
    def token(self, request: Request, pk: str) -> Response:
        call = self._get_call()
        if call.is_ended:
            raise Conflict("This call has ended.", code="call_ended")
        token = services.call_participant_token(call=call)
        return Response(representations.call_join(call=call, token=token))

    @extend_schema(
        summary="End call (hang up)",
        operation_id="calls_end",
        request=None,
        responses={200: CallSerializer, **error_responses(409, 502)},
        filters=False,
    )
    @action(detail=True, methods=["post"], pagination_class=None, filterset_class=None)
    def end(self, request: Request, pk: str) -> Response:
        """Hang up: LiveKit closes the room, the call becomes `completed` (`api_request`).

        An ended call is returned unchanged. LiveKit unreachable or failing: 502 and
        the call stays as it was. While the call is being transferred: 409
        `call_transferring` (it ends when the transfer does).
        """
        try:
            call = services.call_end(call=self._get_call())
        except LiveKitError as exc:
            raise BadGateway("LiveKit could not close the room; the call is unchanged.") from exc
        return Response(call_detail_data(call))


# Built once and used by every request: building a serializer deep-copies its fields.
_CALL_CREATE = CallCreateSerializer()
_ACTIVE_QUERY = ActiveCallsQuerySerializer()


def _call_of_slug(
    *, organization: Organization, workflow_slug: str, **data: Any
) -> tuple[int, dict]:
    """Create the call on the slug's workflow as it is now: (201, the join answer)."""
    target = workflow_call_target(organization=organization, slug=workflow_slug)
    if target is None:
        raise serializers.ValidationError(
            {"workflow_slug": ["No workflow with this slug in your organization."]}
        )
    if "phone_number" in data:
        joined = phone_call_create(organization=organization, target=target, **data)
    else:
        joined = services.call_create(organization=organization, target=target, **data)
    return status.HTTP_201_CREATED, representations.call_join(call=joined.call, token=joined.token)


def call_detail_data(call: Call) -> dict:
    return representations.call_detail(
        call,
        samples=selectors.call_samples(call=call),
        analysis=selectors.call_analysis(call=call),
        cost=selectors.call_cost(call=call),
        recording=recording_selectors.call_recording(call=call),
    )
