from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from privacy.keys import user_id_hashes
from privacy.models import Erasure


@admin.register(Erasure)
class ErasureAdmin(admin.ModelAdmin):
    """The audit log of erasures: read-only. Searching by a user id finds that user's
    erasures through its keyed hash (the id itself is never stored past the run)."""

    list_display = [
        "id",
        "organization",
        "status",
        "calls_matched",
        "calls_erased",
        "requested_by_key_prefix",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "organization"]
    list_select_related = ["organization"]
    search_fields = ["=user_id_hash"]
    fields = [
        "id",
        "organization",
        "status",
        "user_id_hash",
        "requested_by_key_prefix",
        "requested_by_key_name",
        "calls_matched",
        "calls_erased",
        "calls_waiting",
        "transcript_lines_erased",
        "webhook_events_scrubbed",
        "recordings_deleted",
        "batches",
        "created_at",
        "started_at",
        "finished_at",
    ]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Erasure]:
        return super().get_queryset(request).defer("user_id")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Erasure], search_term: str
    ) -> tuple[QuerySet[Erasure], bool]:
        found, duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if not term:
            return found, duplicates
        # The hash is per organization: hash the term for each organization listed.
        hashes = [
            digest
            for organization_id in queryset.values_list("organization_id", flat=True).distinct()
            for digest in user_id_hashes(organization_id=organization_id, user_id=term)
        ]
        return found | queryset.filter(user_id_hash__in=hashes), duplicates

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
