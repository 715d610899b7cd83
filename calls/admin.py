"""The staff's call console: browse, search, read transcripts, watch and end live calls.

Calls and transcripts are evidence, so the admin never edits them: every page is
read-only, and the only write (ending a live call) goes through `call_end`, the
same service the API uses.
"""

from __future__ import annotations

import json
import uuid

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from calls import representations, selectors
from calls.admin_display import call_page_context, format_seconds, status_badge
from calls.admin_paging import CappedCountPaginator, ProbedDatesQuerySet
from calls.models import NOT_ENDED_STATUSES, Call
from recordings import selectors as recording_selectors
from telephony.numbers import number_typed_e164
from workflows.models import Workflow


class WorkflowFilter(admin.RelatedFieldListFilter):
    """Each workflow named with its organization (slugs repeat across organizations),
    and only the chosen organization's once one is chosen."""

    def field_choices(self, field: object, request: HttpRequest, model_admin: object) -> list:
        workflows = Workflow.objects.order_by("organization__slug", "slug")
        try:
            organization = uuid.UUID(request.GET.get("organization__id__exact", ""))
        except ValueError:
            pass
        else:
            workflows = workflows.filter(organization_id=organization)
        rows = workflows.values_list("pk", "organization__slug", "slug")
        return [(pk, f"{organization_slug} / {slug}") for pk, organization_slug, slug in rows]


@admin.register(Call)
class CallAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "status_badge",
        "workflow_slug",
        "organization",
        "user_id",
        "agent",
        "duration",
        "started_at",
        "created_at",
    ]
    list_filter = ["status", "direction", "channel", ("workflow", WorkflowFilter), "organization"]
    list_select_related = ["organization"]
    date_hierarchy = "started_at"
    search_fields = ["=user_id"]
    search_help_text = (
        "Call id, room name (call-…), exact user id, or a phone number with its country "
        "code (the callee of an outbound call, the caller of an inbound one)."
    )
    ordering = ["-created_at", "-id"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 50
    # The active calls page lists the newest this many calls not yet ended.
    active_rows = 200
    change_form_template = "admin/calls/call/change_form.html"
    change_list_template = "admin/calls/call/change_list.html"
    fieldsets = [
        (None, {"fields": ["id", "status_badge", "end_reason", "direction", "room_name"]}),
        ("Who and what", {"fields": ["organization", "workflow", "workflow_version", "user_id"]}),
        (
            "Phone",
            {
                "fields": [
                    "channel",
                    "phone_number",
                    "from_number",
                    "sip_status_code",
                    "sip_status",
                    "end_reason_detail",
                    "transfer_destination",
                ]
            },
        ),
        ("Time", {"fields": ["created_at", "started_at", "ended_at", "duration"]}),
        # When the voice agent joined, and when it left unexpectedly (calls.agent_presence).
        ("Agent", {"fields": ["agent_joined_at", "agent_left_at"]}),
        ("Data", {"fields": ["user_data_json", "metadata_json"]}),
        ("Post-call analysis", {"fields": ["analysis_html"]}),
        ("Cost", {"fields": ["cost_html"]}),
    ]
    readonly_fields = [
        "id",
        "status_badge",
        "end_reason",
        "direction",
        "room_name",
        "organization",
        "workflow",
        "workflow_version",
        "user_id",
        "channel",
        "phone_number",
        "from_number",
        "sip_status_code",
        "sip_status",
        "end_reason_detail",
        "transfer_destination",
        "created_at",
        "started_at",
        "ended_at",
        "duration",
        "agent_joined_at",
        "agent_left_at",
        "user_data_json",
        "metadata_json",
        "analysis_html",
        "cost_html",
        "recording_html",
    ]

    def get_fieldsets(self, request: HttpRequest, obj: Call | None = None) -> list:
        # Hearing a call is more than reading it: only staff allowed to view recordings.
        if request.user.has_perm("recordings.view_recording"):
            return [*self.fieldsets, ("Recording", {"fields": ["recording_html"]})]
        return self.fieldsets

    # --- read-only: calls are evidence ---------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Call]:
        calls = (
            super()
            .get_queryset(request)
            .select_related("organization", "workflow", "workflow_version")
        )
        return ProbedDatesQuerySet(model=Call, query=calls.query.chain(), using=calls.db)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Call], search_term: str
    ) -> tuple[QuerySet[Call], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        # Exact and case-sensitive, as the API's filter: index ranges (call_user, the room
        # name's unique index), where the admin's own `=user_id` (iexact) would read
        # every call. A user id may look like a call id; an inbound room has its own name.
        match = Q(user_id=term) | Q(room_name=term)
        try:
            match |= Q(pk=uuid.UUID(term.removeprefix("call-")))
        except ValueError:
            pass
        # A whole number however typed; the number indexes lead with it.
        number = number_typed_e164(term)
        if number is not None:
            match |= selectors.calls_with_number(number)
        return queryset.filter(match), False

    def get_ordering(self, request: HttpRequest) -> list[str]:
        # Drilled into the started_at hierarchy: latest started first, a range of the
        # call_started index (newest created first would walk every newer call).
        if any(key.startswith("started_at__") for key in request.GET):
            return ["-started_at", "-id"]
        return super().get_ordering(request)

    # --- columns -----------------------------------------------------------------

    @admin.display(description="call", ordering="id")
    def short_id(self, call: Call) -> str:
        return str(call.id)[:8]

    @admin.display(description="status", ordering="status")
    def status_badge(self, call: Call) -> str:
        return status_badge(call.status)

    @admin.display(description="agent")
    def agent(self, call: Call) -> str:
        return (None if call.is_ended else call.current_agent) or "—"

    @admin.display(description="duration")
    def duration(self, call: Call) -> str:
        return format_seconds(call.duration_seconds)

    @admin.display(description="user data")
    def user_data_json(self, call: Call) -> str:
        return format_html("<pre>{}</pre>", json.dumps(call.user_data, indent=2))

    @admin.display(description="metadata")
    def metadata_json(self, call: Call) -> str:
        return format_html("<pre>{}</pre>", json.dumps(call.metadata, indent=2))

    @admin.display(description="cost")
    def cost_html(self, call: Call) -> str:
        """What the call detail's `cost` says."""
        cost = representations.call_cost(selectors.call_cost(call=call))
        if cost is None:
            return "Not priced yet: a call is priced when it ends."
        return format_html("<pre>{}</pre>", json.dumps(cost, indent=2))

    @admin.display(description="recording")
    def recording_html(self, call: Call) -> str:
        """A player whose link is presigned for this page view (at most 15 minutes)."""
        from recordings.admin import recording_player_html

        return recording_player_html(call)

    @admin.display(description="analysis")
    def analysis_html(self, call: Call) -> str:
        """What GET /calls/{id}/analysis answers (its error never holds a key)."""
        analysis = representations.call_analysis(selectors.call_analysis(call=call))
        if analysis is None:
            return "No analysis: the call's workflow version has no analysis setting."
        return format_html("<pre>{}</pre>", json.dumps(analysis, indent=2, ensure_ascii=False))

    # --- the call page (transcript, agent timeline, metrics: calls.admin_display) ------

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        call = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if call is not None:
            context.update(call_page_context(call))
            context["can_end"] = not call.is_ended and request.user.has_perm("calls.change_call")
            if request.user.has_perm("webhooks.view_webhookdelivery"):
                # What was sent about the call (WebhookDeliveryAdmin takes this lookup).
                changelist = reverse("admin:webhooks_webhookdelivery_changelist")
                context["deliveries_url"] = f"{changelist}?event__call={call.pk}"
        return super().change_view(request, object_id, form_url, extra_context=context)

    # --- extra pages ---------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("active/", view(self.active_view), name="calls_call_active"),
            path("<uuid:pk>/json/", view(self.json_view), name="calls_call_json"),
            path("<uuid:pk>/end/", view(self.end_view), name="calls_call_end"),
            *super().get_urls(),
        ]

    def active_view(self, request: HttpRequest) -> TemplateResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        calls = list(
            self.get_queryset(request)
            .filter(status__in=NOT_ENDED_STATUSES)
            .order_by("-created_at", "-id")[: self.active_rows + 1]
        )
        # One more than it lists: whether some are left out (the oldest).
        capped = len(calls) > self.active_rows
        calls = calls[: self.active_rows]
        rows = [
            {
                "call": call,
                "badge": status_badge(call.status),
                "elapsed": format_seconds(
                    (now - (call.started_at or call.created_at)).total_seconds()
                ),
                "since": "in call" if call.started_at else "waiting",
            }
            for call in calls
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Active calls",
            "opts": self.model._meta,
            "rows": rows,
            "capped": capped,
            "active_rows": self.active_rows,
            "refresh_seconds": 5,
            "can_end": request.user.has_perm("calls.change_call"),
        }
        return TemplateResponse(request, "admin/calls/call/active.html", context)

    def json_view(self, request: HttpRequest, pk: uuid.UUID) -> JsonResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        call = get_object_or_404(self.get_queryset(request), pk=pk)
        body = representations.call_detail(
            call,
            samples=selectors.call_samples(call=call),
            analysis=selectors.call_analysis(call=call),
            cost=selectors.call_cost(call=call),
            recording=recording_selectors.call_recording(call=call),
        )
        return JsonResponse(body, json_dumps_params={"indent": 2})

    def end_view(self, request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
        """Hang up a live call through `call_end`, the same service as the API."""
        if not request.user.has_perm("calls.change_call"):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        from calls.services import CallTransferring, call_end
        from voicecalls.livekit import LiveKitError

        call = get_object_or_404(Call, pk=pk)
        try:
            call = call_end(call=call)
        except LiveKitError:
            self.message_user(
                request, "LiveKit could not be reached: the call was not ended.", messages.ERROR
            )
        except CallTransferring:
            self.message_user(
                request,
                "The call is being transferred: it ends when the transfer does.",
                messages.WARNING,
            )
        else:
            self.message_user(request, f"Call {call.id} is {call.status}.", messages.SUCCESS)
        next_url = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
            next_url = reverse("admin:calls_call_active")
        return HttpResponseRedirect(next_url)
