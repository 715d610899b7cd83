from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.template.response import TemplateResponse
from rest_framework.exceptions import ValidationError as APIValidationError
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as UnusedLibraryAPIKey

from accounts.api import OUTBOUND_LIMITS
from accounts.models import APIKey, Organization
from accounts.services import organization_reinstate, organization_suspend
from providerkeys.admin_deletes import SecretsDeferredDeletes
from telephony.admin import LiveKitDeletes
from telephony.guard import caller_id_pick
from telephony.services import organization_delete
from voicecalls.admin_confirm import action_confirmation
from voicecalls.text import storable

# The library registers its own concrete key model; ours (with kind and organization)
# replaces it, so staff see one list of keys.
admin.site.unregister(UnusedLibraryAPIKey)


class OrganizationForm(ModelForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Each field posts the value the page was read with, so a field counts as changed
        # only if staff changed it: compared with the row as it is at the save, a
        # setting the customer PATCHed meanwhile was "changed" back to the page's value.
        for field in self.fields.values():
            field.show_hidden_initial = True

    def clean(self) -> dict[str, Any]:
        """The organization's own limits as the API takes them: at least 1 (a 0 read
        back by the customer was refused when sent back) and at most their ceiling.
        Checked only when changed: a lowered ceiling leaves them above it, in force
        again when it is raised."""
        cleaned = super().clean()
        for name in OUTBOUND_LIMITS:
            value, ceiling = cleaned.get(name), cleaned.get(f"max_{name}")
            if value is None or name not in self.changed_data:
                continue
            if value < 1:
                self.add_error(name, "At least 1; empty follows the maximum below.")
            elif ceiling is not None and value > ceiling:
                self.add_error(name, f"Must be at most {ceiling}, the organization's maximum.")
        return cleaned

    def clean_default_caller_number(self) -> str | None:
        """One of the organization's outbound numbers, as the API checks it: else every
        phone call without a `from_number` is refused."""
        number = self.cleaned_data.get("default_caller_number") or None
        if number is None or self.instance.pk is None:
            return number
        try:
            return caller_id_pick(organization=self.instance, from_number=number).number
        except APIValidationError as exc:
            detail = exc.detail.get("from_number") if isinstance(exc.detail, dict) else None
            raise ValidationError(str((detail or [exc.detail])[0])) from exc


@admin.register(Organization)
class OrganizationAdmin(LiveKitDeletes, SecretsDeferredDeletes, admin.ModelAdmin):
    form = OrganizationForm
    list_display = ["slug", "name", "concurrency_limit", "open_calls", "suspended_at", "created_at"]
    list_filter = [("suspended_at", admin.EmptyFieldListFilter)]
    search_fields = ["slug", "name"]
    readonly_fields = ["id", "open_calls", "created_at", "suspended_at", "suspension_reason"]
    actions = ["suspend", "reinstate"]

    @admin.action(description="Suspend selected organizations", permissions=["change"])
    def suspend(
        self, request: HttpRequest, queryset: QuerySet[Organization]
    ) -> TemplateResponse | None:
        asking = action_confirmation(
            self,
            request,
            queryset,
            action="suspend",
            title="Suspend these organizations?",
            consequence="Their client keys are refused (403 organization_suspended) and no "
            "new call starts: inbound calls go unanswered, queued dials fail. Calls in "
            "progress finish. Nothing is deleted; Reinstate undoes it.",
            reason_label="Reason (staff only):",
        )
        if asking is not None:
            return asking
        # The textarea as posted (no form field checks it): a NUL no column stores.
        reason = storable(request.POST["reason"])
        suspended = [o for o in queryset if organization_suspend(organization=o, reason=reason)]
        for organization in suspended:
            self.log_change(request, organization, f"Suspended: {reason.strip()}")
        self.message_user(request, f"Suspended {len(suspended)} organization(s).", messages.SUCCESS)
        return None

    @admin.action(description="Reinstate selected organizations", permissions=["change"])
    def reinstate(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        reinstated = [o for o in queryset if organization_reinstate(organization=o)]
        for organization in reinstated:
            self.log_change(request, organization, "Reinstated.")
        self.message_user(
            request, f"Reinstated {len(reinstated)} organization(s).", messages.SUCCESS
        )

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple:
        """An organization with calls cannot be deleted (calls are evidence): said at
        once, without Django's listing of every related row, a customer's millions of
        calls read into memory to answer the same. The rest are listed without their
        secrets (SecretsDeferredDeletes)."""
        with_calls = Organization.objects.filter(pk__in=[o.pk for o in objs], calls__isnull=False)
        if with_calls.exists():
            names = ", ".join(sorted({o.slug for o in with_calls.distinct()[:10]}))
            return [], {}, set(), [f"Organizations with calls (calls are kept): {names}"]
        return super().get_deleted_objects(objs, request)

    def delete_model(self, request: HttpRequest, obj: Organization) -> None:
        # Its numbers' dispatch rules and its trunks (carrier credentials) are in
        # LiveKit too: deleted there first, through their services.
        self.deletes_each(request, [obj], organization_delete)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        self.deletes_each(request, queryset, organization_delete)

    def save_model(
        self, request: HttpRequest, obj: Organization, form: ModelForm, change: bool
    ) -> None:
        # Only what the form changed: a whole-row save would overwrite the open-call
        # counter (and settings PATCHed) that calls moved since the form was read.
        if change:
            obj.save(update_fields=form.changed_data)
        else:
            obj.save()


@admin.register(APIKey)
class APIKeyAdmin(APIKeyModelAdmin):
    """Keys are hashed: the plaintext is shown once, in a message, when created."""

    list_display = ["prefix", "name", "kind", "organization", "created", "expiry_date", "revoked"]
    list_filter = ["kind", "revoked", "organization"]
    list_select_related = ["organization"]
    search_fields = ["name", "prefix", "organization__slug"]
    fields = ["name", "kind", "organization", "expiry_date", "revoked", "prefix"]
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: APIKey | None = None) -> list:
        # A key's kind and organization are what its plaintext, held by its owner, can
        # reach: changed, a customer's key would become a platform agent key.
        readonly = list(super().get_readonly_fields(request, obj))
        return readonly + ["kind", "organization"] if obj is not None else readonly

    @admin.action(description="Revoke selected keys (cannot be undone)", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> TemplateResponse | None:
        asking = action_confirmation(
            self,
            request,
            queryset,
            action="revoke",
            title="Revoke these keys?",
            consequence="Every request made with them fails from now on; this cannot be undone.",
        )
        if asking is not None:
            return asking
        count = queryset.filter(revoked=False).update(revoked=True)
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)
        return None
