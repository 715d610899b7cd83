"""`GET /api/v1/calls/{id}/stream` and the admin's staff-only stream of a call.

Both views are sync: they authenticate, find the call and open a lease in a thread,
then hand an iterator to the server (streams.stream), so the API's authentication,
tenancy and error shape apply unchanged, and under ASGI no thread is held while the
stream waits.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from calls import selectors
from calls.models import Call
from streams.selectors import call_end_heard_at
from streams.services import StreamLimitReached, stream_lease_open
from streams.stream import StreamStart, catch_up_stream, live_stream, live_stream_count
from voicecalls.errors import ErrorResponseSerializer, ServiceUnavailable

LAST_EVENT_ID = OpenApiParameter(
    "Last-Event-ID",
    {"type": "string", "pattern": r"^[0-9]{1,18}$"},
    OpenApiParameter.HEADER,
    description="Resume after this event id (EventSource sends it when it reconnects): "
    "the events after it, none twice, none skipped. An id beyond the call's last event "
    "(another call's) is 400 `unknown_event_id`.",
)


class StreamLimitMetaSerializer(serializers.Serializer):
    """The numbers behind a refused stream (`stream_limit_reached`)."""

    open_streams = serializers.IntegerField(help_text="Streams your organization has open.")
    stream_limit = serializers.IntegerField(help_text="How many it may have open at once.")


class StreamLimitErrorResponseSerializer(ErrorResponseSerializer):
    """429: `stream_limit_reached` (with `meta`)."""

    meta = StreamLimitMetaSerializer(required=False, help_text="With `stream_limit_reached`.")


STREAM_DESCRIPTION = """\
Server-Sent Events (`text/event-stream`) of the call as it happens: first what exists
(or what follows `Last-Event-ID`), then each event as it is recorded. Every event has an
`id` (per call, increasing in the order the events were recorded) and a type (`event:`);
its `data` is JSON in the API's own shapes:

- `transcript`: a transcript line, as `GET /calls/{id}/transcript` lists it.
- `status`: `{call_id, from_status, to_status, end_reason, at}` (as the
  `call.status_changed` webhook, with the time of the change).
- `handoff`: `{from_agent, to_agent, timestamp}`.
- `metrics`: one turn's sample as the agent reported it: `{agent_name, turn_index,
  stt_latency_ms, llm_latency_ms, tts_latency_ms, eou_latency_ms, e2e_latency_ms,
  tokens, providers, timestamp}`.
- `end`: `{status, end_reason}`, once the call has ended and everything was sent
  (a few seconds after the end, for the agent's last lines), after `retry: 3600000`;
  then the server closes.

A comment line (`: ping`) comes every 15 seconds. The stream closes within a heartbeat
of the key's revocation, and when the client reads nothing for 30 seconds. Each
organization may have a limited number of streams open at once (429 beyond it).
"""

STREAM_EXAMPLE = (
    "retry: 2000\n\n"
    'id: 7\nevent: transcript\ndata: {"role":"assistant","content":"Hello John!",'
    '"timestamp":"2026-01-01T10:00:02Z","agent_name":"greeter-agent","sequence":42,'
    '"interrupted":false}\n\n'
    ": ping\n\n"
)


class _IgnoreAccept(BaseContentNegotiation):
    """EventSource asks for `text/event-stream`: errors are JSON whatever was asked."""

    def select_renderer(self, request: Request, renderers: list, format_suffix: str | None = None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request: Request, parsers: list):
        return parsers[0] if parsers else None


def _last_event_id(request: HttpRequest, fallback: str | None = None) -> int:
    value = request.headers.get("Last-Event-ID", fallback)
    if value is None:
        return 0
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise serializers.ValidationError({"Last-Event-ID": ["An event id: a whole number."]})
    return int(value)


# What a stream's start reads of its call.
_START_FIELDS = ("id", "status", "end_reason", "ended_at", "stream_seq")


def _start(call: Call, request: HttpRequest, fallback: str | None = None) -> StreamStart:
    """Where the stream of `call` starts: after the client's Last-Event-ID (or
    `fallback`), which must be one of the call's events: resuming after an id the call
    never gave (another call's, or made up) would hide its next events."""
    after = _last_event_id(request, fallback)
    if after > call.stream_seq:
        raise serializers.ValidationError(
            {"Last-Event-ID": ["No event of this call has this id yet."]},
            code="unknown_event_id",
        )
    return StreamStart(
        call_id=call.pk,
        after=after,
        status=call.status,
        end_reason=call.end_reason,
        ended_at=call_end_heard_at(call=call),
    )


class StreamCapacityReached(ServiceUnavailable):
    default_detail = "This server holds as many live streams as it may; retry shortly."
    default_code = "stream_capacity_reached"


def event_stream_response(
    request: HttpRequest,
    start: StreamStart,
    *,
    lease: Callable[[], uuid.UUID] | None,
    session_key: str | None = None,
) -> StreamingHttpResponse:
    """The response: live under ASGI, catching up under WSGI (see streams.stream).
    StreamCapacityReached when this process serves STREAMS_PER_PROCESS streams."""
    if isinstance(request, ASGIRequest):
        if live_stream_count() >= settings.STREAMS_PER_PROCESS:
            raise StreamCapacityReached()
        content = live_stream(start, lease_id=lease() if lease else None, session_key=session_key)
    else:
        content = catch_up_stream(start)
    response = StreamingHttpResponse(content, content_type="text/event-stream")
    response["Cache-Control"] = "no-store"
    # nginx and other proxies must pass each event on at once.
    response["X-Accel-Buffering"] = "no"
    return response


# Under ASGI every request runs in a thread of its own with a connection of its own: a
# burst of a thousand clients (reconnecting after a deploy) would open a thousand
# database connections at once. Openings take turns instead, a few at a time.
_OPENINGS = threading.BoundedSemaphore(8)


@contextmanager
def _opening(request: HttpRequest) -> Iterator[None]:
    """One of the few openings at a time (ASGI), its thread's connection closed after:
    the stream reads with connections of its own, each closed after its read."""
    if not isinstance(request, ASGIRequest):
        yield
        return
    with _OPENINGS:
        try:
            yield
        finally:
            if not connection.in_atomic_block:
                connection.close()


class CallStreamView(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _IgnoreAccept
    # No HEAD: Django answers it with GET's response, a live stream (and a place of the
    # organization's cap) that nobody reads.
    http_method_names = ["get", "options"]

    def dispatch(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        with _opening(request):
            return super().dispatch(request, *args, **kwargs)

    @extend_schema(
        summary="Watch a call live (Server-Sent Events)",
        operation_id="calls_stream",
        tags=["calls"],
        description=STREAM_DESCRIPTION,
        parameters=[LAST_EVENT_ID],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                OpenApiTypes.STR,
                description="The call's events (see above).",
                examples=[OpenApiExample("A line and a heartbeat", value=STREAM_EXAMPLE)],
            ),
            429: OpenApiResponse(
                StreamLimitErrorResponseSerializer,
                description="`stream_limit_reached`: your organization has as many streams "
                "open as it may (`meta`: `open_streams`, `stream_limit`); close one, or "
                "retry after `Retry-After` seconds.",
                examples=[
                    OpenApiExample(
                        "Stream limit reached",
                        value={
                            "type": "client_error",
                            "errors": [
                                {
                                    "code": "stream_limit_reached",
                                    "detail": StreamLimitReached.detail,
                                    "attr": None,
                                }
                            ],
                            "meta": {"open_streams": 200, "stream_limit": 200},
                        },
                    )
                ],
            ),
            503: OpenApiResponse(
                ErrorResponseSerializer,
                description="`stream_capacity_reached`: the server holds as many streams as "
                "it may, every organization's; or `service_unavailable`: the service is "
                "busy or its database is unavailable. Retry after `Retry-After` seconds.",
            ),
        },
    )
    def get(self, request: Request, pk: uuid.UUID) -> StreamingHttpResponse:
        organization = request.user.organization
        queryset = selectors.call_queryset(organization=organization)
        call = get_object_or_404(queryset.only(*_START_FIELDS), pk=pk)
        start = _start(call, request)

        def lease() -> uuid.UUID:
            opened = stream_lease_open(
                organization=organization, api_key_id=request.user.api_key_id, call_id=call.pk
            )
            return opened.pk

        return event_stream_response(request._request, start, lease=lease)


@require_GET  # not HEAD: it would start a stream nobody reads
def staff_call_stream(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    """The admin's call page follows the call with this (session auth, no API key in the
    page; the admin site checks staff login, and the stream closes within a heartbeat
    of that login ending); `after` is where the page's transcript stopped when it was
    rendered."""
    with _opening(request):
        if not request.user.has_perm("calls.view_call"):
            raise PermissionDenied
        call = get_object_or_404(Call.objects.only(*_START_FIELDS), pk=pk)
        try:
            start = _start(call, request, fallback=request.GET.get("after"))
        except serializers.ValidationError:
            return HttpResponseBadRequest(
                "Last-Event-ID and after are ids of the call's events: whole numbers."
            )
        try:
            return event_stream_response(
                request, start, lease=None, session_key=request.session.session_key
            )
        except StreamCapacityReached as exc:  # the page's EventSource tries again
            return HttpResponse(exc.detail, status=503, headers={"Retry-After": str(exc.wait)})
