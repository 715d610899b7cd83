"""Recordings in the staff console: the call page's player (its `<audio>` loads a link
presigned when the page is rendered), a read-only list of recordings, and organizations'
own buckets with the credentials never shown."""

from __future__ import annotations

import datetime
import uuid

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from calls.admin_paging import CappedCountPaginator
from calls.models import Call
from recordings.models import Recording, RecordingStatus, RecordingStorage
from recordings.selectors import call_recording, recording_link


def recording_player_html(call: Call) -> str:
    """The call's recording for the call page: a player once the file is complete."""
    recording = call_recording(call=call)
    if recording is None:
        return "Not recorded: the call's workflow version does not record calls."
    facts = format_html(
        '<span id="recording-status">{}</span> · {} s · {} bytes',
        recording.status,
        "—" if recording.duration_seconds is None else recording.duration_seconds,
        "—" if recording.size_bytes is None else recording.size_bytes,
    )
    if recording.error:  # why it failed, or why a complete file ends before the call
        facts = format_html("{}<br>{}", facts, recording.error)
    if recording.status == RecordingStatus.FAILED:
        return facts
    retention_days = call.organization.recording_retention_days
    link = recording_link(recording=recording, call=call, retention_days=retention_days)
    if link.url is None and recording.status == RecordingStatus.COMPLETE:
        return format_html("{}<br>No player: {}.", facts, _no_link_reason(call, retention_days))
    if link.url is None:
        return facts
    return format_html(
        '{}<br><audio id="recording-audio" controls preload="metadata" src="{}"></audio>',
        facts,
        link.url,
    )


def _no_link_reason(call: Call, retention_days: int | None) -> str:
    """Why a complete recording has no link (recordings.selectors.recording_link)."""
    if retention_days is not None and call.ended_at is not None:
        if call.ended_at + datetime.timedelta(days=retention_days) <= timezone.now():
            days = f"{retention_days} day{'s' if retention_days != 1 else ''}"
            return (
                f"past the organization's recording retention ({days}); the retention "
                "pass deletes it"
            )
    return "no credentials or endpoint reach its bucket (see Recording storages)"


@admin.register(Recording)
class RecordingAdmin(admin.ModelAdmin):
    """Evidence, like calls: read-only. Deleting a recording is `recording_delete`'s
    (retention, erasure), which removes the file too."""

    list_display = ["call", "status", "storage", "duration_seconds", "size_bytes", "created_at"]
    list_filter = ["status", "storage"]
    list_select_related = ["call"]
    search_fields = ["egress_id"]  # the search box; get_search_results decides how
    search_help_text = "The call's id, or LiveKit's egress id (EG_…)."
    # One per recorded call: counted no further than the call list is.
    show_full_result_count = False
    paginator = CappedCountPaginator
    fields = [
        "call",
        "status",
        "egress_id",
        "storage",
        "endpoint",
        "bucket",
        "object_key",
        "duration_seconds",
        "size_bytes",
        "error",
        "created_at",
        "ended_at",
        "deleted_at",
    ]
    readonly_fields = fields

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Recording], search_term: str
    ) -> tuple[QuerySet[Recording], bool]:
        # Exact, as the call list's: the call's or the egress's unique index, where the
        # admin's own `=` (iexact) would read every recording.
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(call_id=uuid.UUID(term.removeprefix("call-"))), False
        except ValueError:
            return queryset.filter(egress_id=term), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Recording | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Recording | None = None) -> bool:
        return False


@admin.register(RecordingStorage)
class RecordingStorageAdmin(admin.ModelAdmin):
    """Organizations set their own bucket through the API; staff see where it is, the
    access key id masked, never the secret."""

    list_display = ["organization", "bucket", "endpoint", "region", "access_key_id_masked"]
    list_select_related = ["organization"]
    fields = ["organization", "endpoint", "bucket", "region", "access_key_id_masked", "updated_at"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[RecordingStorage]:
        return super().get_queryset(request).defer(*RecordingStorage.SECRET_FIELDS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: RecordingStorage | None = None
    ) -> bool:
        return False
