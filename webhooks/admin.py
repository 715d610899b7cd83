from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from calls.admin_paging import CappedCountPaginator
from voicecalls.admin_forms import ReadAtForm
from webhooks import services
from webhooks.delivery import EndpointRefusesEvent, EventErased, webhook_delivery_replay
from webhooks.models import (
    SECRET_COLUMNS,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from webhooks.transport import url_problem


class WebhookEndpointForm(ReadAtForm, forms.ModelForm):
    """A save over a change made since the page was read (the delivery worker disabling
    the endpoint, an API PATCH) is refused."""

    url = forms.URLField(max_length=2048, assume_scheme="https")

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "description", "enabled"]

    def changed_since_read(self) -> str:
        return (
            "This endpoint changed since this page was read "
            f"(it is {'enabled' if self.instance.enabled else 'disabled'} now): "
            "reload the page and make the change again."
        )

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        problem = url_problem(url, allow_private=settings.WEBHOOKS_ALLOW_PRIVATE_URLS)
        if problem:
            raise forms.ValidationError(problem)
        return url


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    """Endpoints are created through the API, which shows the signing secret once;
    here staff can see and switch them, never read their secret."""

    form = WebhookEndpointForm
    list_display = ("url", "organization", "enabled", "event_types", "created_at")
    list_filter = ("enabled", "organization")
    list_select_related = ("organization",)
    search_fields = ("url", "description", "organization__slug")
    fields = (
        "id",
        "organization",
        "url",
        "description",
        "events",
        "enabled",
        "disabled_reason",
        "created_at",
        "updated_at",
        "read_at",
    )
    readonly_fields = (
        "id",
        "organization",
        "events",
        "disabled_reason",
        "created_at",
        "updated_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEndpoint]:
        # Pages never show the secrets: never load (or decrypt) them. One deleted (its
        # history left to the retention pass) is gone, as from the API.
        endpoints = super().get_queryset(request).filter(deleted_at__isnull=True)
        return endpoints.defer(*SECRET_COLUMNS)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple:
        """Each endpoint, said to go with its deliveries and their log, without Django's
        listing of every related row: months of deliveries and attempts read into
        memory and listed one by one."""
        endpoints = list(objs)
        names = [f"{endpoint} (with its deliveries and their attempts)" for endpoint in endpoints]
        return names, {WebhookEndpoint._meta.verbose_name_plural: len(endpoints)}, set(), []

    def delete_model(self, request: HttpRequest, obj: WebhookEndpoint) -> None:
        services.webhook_endpoint_delete(endpoint=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            services.webhook_endpoint_delete(endpoint=endpoint)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="events")
    def event_types(self, endpoint: WebhookEndpoint) -> str:
        return ", ".join(endpoint.events)

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form, change: bool) -> None:
        changed = {name: getattr(obj, name) for name in form.changed_data if name != "read_at"}
        services.webhook_endpoint_update(endpoint=obj, **changed)


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = (
        "number",
        "attempted_at",
        "status_code",
        "duration_ms",
        "error",
        "response_excerpt",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# A URL search reads the deliveries of this many endpoints at most (the first found).
ENDPOINTS_SEARCHED = 100


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "event_type",
        "event_id",
        "endpoint_url",
        "status",
        "attempt_count",
        "last_status_code",
        "next_attempt_at",
        "created_at",
    )
    list_filter = ("status", "event__type", "endpoint__organization")
    list_select_related = ("event", "endpoint")
    search_fields = ("event__id", "event__call__id", "endpoint__url")  # (see get_search_results)
    search_help_text = "Call id, event id (evt_…), or part of the endpoint's URL."
    # Several per call and endpoint: counted no further than the call list is (and no
    # date hierarchy, which groups every row).
    show_full_result_count = False
    paginator = CappedCountPaginator
    fields = (
        "event_link",
        "event_type",
        "endpoint_url",
        "status",
        "attempt_count",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "delivered_at",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields
    inlines = [WebhookAttemptInline]
    actions = ["replay"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookDelivery]:
        # A deleted endpoint's are gone, as it is (the retention pass deletes them).
        deliveries = super().get_queryset(request).filter(endpoint__deleted_at__isnull=True)
        # Pages show the endpoint: read with it (the change page's own read was whole),
        # without any of its secrets, which would be decrypted, and fail on none opening.
        secrets = [f"endpoint__{column}" for column in SECRET_COLUMNS]
        return deliveries.select_related("event", "endpoint").defer("event__body", *secrets)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WebhookDelivery], search_term: str
    ) -> tuple[QuerySet[WebhookDelivery], bool]:
        # Each term as what it is, exactly, through an index: the admin's own search was a
        # LIKE on three columns over the whole log, joined to every call.
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(event__call_id=uuid.UUID(term)), False
        except ValueError:
            pass
        endpoints = WebhookEndpoint.objects.filter(url__icontains=term).values_list("pk", flat=True)
        match = Q(event_id=term) | Q(endpoint__in=list(endpoints[:ENDPOINTS_SEARCHED]))
        return queryset.filter(match), False

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest) -> bool:
        # The call page links to the call's deliveries (by its events' index).
        return lookup == "event__call" or super().lookup_allowed(lookup, value, request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Evidence: a delivery's page is read-only; it changes only by the replay action,
        # which needs the change permission.
        return obj is None and super().has_change_permission(request)

    @admin.display(description="event type", ordering="event__type")
    def event_type(self, delivery: WebhookDelivery) -> str:
        return delivery.event.type

    @admin.display(description="endpoint")
    def endpoint_url(self, delivery: WebhookDelivery) -> str:
        return delivery.endpoint.url

    @admin.display(description="event")
    def event_link(self, delivery: WebhookDelivery) -> str:
        # Admin URLs carry primary keys quoted: "evt_26…" would read back as "evt&…".
        url = reverse("admin:webhooks_webhookevent_change", args=[quote(delivery.event_id)])
        return format_html('<a href="{}">{}</a>', url, delivery.event_id)

    @admin.action(
        description="Replay the selected deliveries (same event id)",
        permissions=["change"],
    )
    def replay(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        count = erased = refused = gone = 0
        for delivery in queryset:
            try:
                webhook_delivery_replay(delivery=delivery)
            except EventErased:
                erased += 1
                continue
            except EndpointRefusesEvent:
                refused += 1
                continue
            except (WebhookEndpoint.DoesNotExist, WebhookDelivery.DoesNotExist):
                gone += 1  # its customer deleted the endpoint since the list was read
                continue
            count += 1
        if count:
            self.message_user(
                request, f"{count} delivery(ies) queued for replay.", messages.SUCCESS
            )
        for n, why in (
            (erased, "their call was erased"),
            (refused, "their endpoint is disabled or no longer takes the event's type"),
            (gone, "their endpoint was deleted meanwhile"),
        ):
            if n:
                self.message_user(
                    request, f"{n} delivery(ies) not replayed: {why}.", messages.WARNING
                )


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    """The outbox: read-only evidence of what was (or will be) sent."""

    list_display = ("id", "type", "organization", "call_id", "occurred_at", "created_at")
    list_filter = ("type", "organization")
    list_select_related = ("organization",)
    search_fields = ("id", "call__id")  # (see get_search_results)
    search_help_text = "Call id or event id (evt_…)."
    show_full_result_count = False
    paginator = CappedCountPaginator
    fields = ("id", "type", "organization", "call", "occurred_at", "created_at", "body")
    readonly_fields = fields

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WebhookEvent], search_term: str
    ) -> tuple[QuerySet[WebhookEvent], bool]:
        # Exactly, by index (webhook_event_call, the primary key), not LIKEs over them all.
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(call_id=uuid.UUID(term)), False
        except ValueError:
            return queryset.filter(pk=term), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
