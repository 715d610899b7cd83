"""SIP trunks in the admin: created and deleted through the services (so in LiveKit
too); the password is write-only, shown only as a mask after."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import ProtectedError, QuerySet
from django.http import HttpRequest
from drf_standardized_errors.formatter import flatten_errors
from rest_framework import serializers

from providerkeys.admin_deletes import SecretsDeferredDeletes
from telephony import services
from telephony.models import PASSWORD_MAX_LENGTH, PhoneNumber, SipTrunk
from telephony.serializers import SipTrunkCreateSerializer
from voicecalls.livekit import LiveKitError


def _messages(errors: object) -> list[str]:
    """A serializer's errors as plain messages (a list's are by item, `{0: [...]}`)."""
    return [str(error.detail) for error in flatten_errors(errors)]


class SipTrunkAddForm(forms.ModelForm):
    # Never rendered back, not even when the form comes back with errors.
    auth_password = forms.CharField(
        required=False,
        max_length=PASSWORD_MAX_LENGTH,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted; never shown again.",
    )

    class Meta:
        model = SipTrunk
        fields = ["organization", "name", "direction", "address", "numbers", "auth_username"]

    def _post_clean(self) -> None:
        """Create the trunk in LiveKit (and here) once the form is valid; LiveKit
        refusing is a form error and nothing is stored. Excludes `livekit_trunk_id`,
        which only LiveKit gives."""
        super()._post_clean()
        self.created: SipTrunk | None = None
        if self.errors:
            return
        # The API's own checks (E.164 numbers, each once; an outbound trunk's address).
        fields = ["name", "direction", "address", "numbers", "auth_username", "auth_password"]
        checked = SipTrunkCreateSerializer(
            data={name: self.cleaned_data.get(name) or "" for name in fields}
        )
        if not checked.is_valid():
            for name, errors in checked.errors.items():
                self.add_error(name if name in self.fields else None, _messages(errors))
            return
        try:
            self.created = services.sip_trunk_create(
                organization=self.cleaned_data["organization"], **checked.validated_data
            )
        except LiveKitError as exc:
            self.add_error(None, f"LiveKit refused the trunk: {exc}")
        except serializers.ValidationError as exc:  # the trunk cap, a number not available
            self.add_error(None, _messages(exc.detail))


class LiveKitDeletes:
    """Deleting through a service that asks LiveKit first: a refusal keeps the row and
    says so, instead of a 500 (and, in bulk, a batch stopped half-way)."""

    def deletes_each(self, request: HttpRequest, objects: Any, delete: Any) -> None:
        for obj in objects:
            try:
                delete(obj)
            except LiveKitError as exc:
                request.livekit_refused = True
                self.message_user(
                    request, f"{obj}: LiveKit refused its deletion, kept: {exc}", messages.ERROR
                )
            except ProtectedError as exc:
                # What keeps it came after the delete page looked (organization_delete).
                request.livekit_refused = True
                self.message_user(request, f"{obj}: {exc.args[0]}", messages.ERROR)
            except services.TrunkInUse as exc:
                # A number its customer mapped to it after the page looked (sip_trunk_delete).
                request.livekit_refused = True
                self.message_user(request, f"{obj}: {exc.detail}", messages.ERROR)

    def message_user(
        self,
        request: HttpRequest,
        message: str,
        level: int = messages.INFO,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        if level == messages.SUCCESS and getattr(request, "livekit_refused", False):
            return  # Django's "deleted successfully" would be untrue
        super().message_user(request, message, level, *args, **kwargs)


@admin.register(SipTrunk)
class SipTrunkAdmin(LiveKitDeletes, SecretsDeferredDeletes, admin.ModelAdmin):
    add_form = SipTrunkAddForm
    list_display = ["name", "direction", "organization", "livekit_trunk_id", "created_at"]
    list_filter = ["direction"]
    list_select_related = ["organization"]
    search_fields = ["=id", "name", "organization__slug", "livekit_trunk_id"]
    SHOWN = [
        "id",
        "organization",
        "name",
        "direction",
        "address",
        "numbers",
        "auth_username",
        "password",
        "livekit_trunk_id",
        "created_at",
    ]

    def get_fields(self, request: HttpRequest, obj: SipTrunk | None = None) -> list[str]:
        if obj is None:
            return [*SipTrunkAddForm.Meta.fields, "auth_password"]
        return self.SHOWN

    def get_readonly_fields(self, request: HttpRequest, obj: SipTrunk | None = None) -> list[str]:
        return [] if obj is None else self.SHOWN

    def get_form(
        self, request: HttpRequest, obj: SipTrunk | None = None, **kwargs: Any
    ) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    @admin.display(description="Password")
    def password(self, obj: SipTrunk) -> str:
        return obj.auth_password_masked or "—"

    def save_model(
        self, request: HttpRequest, obj: SipTrunk, form: forms.ModelForm, change: bool
    ) -> None:
        # Added: the form created it (in LiveKit too); nothing on a trunk changes.
        if not change:
            obj.pk = form.created.pk

    def delete_model(self, request: HttpRequest, obj: SipTrunk) -> None:
        self.deletes_each(request, [obj], lambda trunk: services.sip_trunk_delete(trunk=trunk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[SipTrunk]) -> None:
        self.deletes_each(request, queryset, lambda trunk: services.sip_trunk_delete(trunk=trunk))


@admin.register(PhoneNumber)
class PhoneNumberAdmin(LiveKitDeletes, admin.ModelAdmin):
    """Customers add numbers through the API; staff verify them here (creating the
    LiveKit dispatch rule) once they know the number is the customer's."""

    list_display = ["number", "organization", "workflow_slug", "status", "created_at"]
    list_filter = ["status"]
    list_select_related = ["organization", "workflow"]
    search_fields = ["=id", "number", "organization__slug"]
    readonly_fields = [
        "id",
        "organization",
        "number",
        "trunk",
        "workflow",
        "status",
        "livekit_dispatch_rule_id",
        "verified_at",
        "created_at",
    ]
    actions = ["verify"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[PhoneNumber]:
        # The page shows the number's trunk: read with it, without its password (as
        # SipTrunk.objects reads trunks), which its own read would decrypt, and fail on.
        return super().get_queryset(request).select_related("trunk").defer("trunk__auth_password")

    @admin.display(description="Workflow")
    def workflow_slug(self, obj: PhoneNumber) -> str:
        return obj.workflow.slug

    @admin.action(
        description="Verify selected numbers (creates their LiveKit dispatch rules)",
        permissions=["change"],
    )
    def verify(self, request: HttpRequest, queryset: QuerySet[PhoneNumber]) -> None:
        for number in queryset:
            try:
                services.phone_number_verify(phone_number=number)
            except PhoneNumber.DoesNotExist:  # its customer deleted it since the list
                self.message_user(
                    request, f"{number}: not verified, it was deleted meanwhile.", messages.WARNING
                )
            except LiveKitError as exc:
                self.message_user(
                    request, f"{number}: LiveKit refused its rule: {exc}", messages.ERROR
                )
            else:
                self.message_user(request, f"{number} verified.", messages.SUCCESS)

    def delete_model(self, request: HttpRequest, obj: PhoneNumber) -> None:
        self.deletes_each(request, [obj], lambda n: services.phone_number_delete(phone_number=n))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PhoneNumber]) -> None:
        self.deletes_each(request, queryset, lambda n: services.phone_number_delete(phone_number=n))
