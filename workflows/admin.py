"""Staff manage workflows here: read their versions, edit a definition as JSON (saved
through the same services and validation as the API, so each save is a new version),
soft-delete, and preview an agent's prompts rendered for sample user data."""

from __future__ import annotations

import io
import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.validators import ProhibitNullCharactersValidator
from django.db.models import QuerySet
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from drf_standardized_errors.formatter import flatten_errors
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ParseError

from calls.serializers import CallCreateSerializer
from voicecalls.admin_confirm import action_confirmation
from voicecalls.admin_forms import ReadAtForm, SaveRefused, SaveRefusedAsMessage
from voicecalls.parsers import JSONParser
from workflows import services
from workflows.models import Workflow, WorkflowVersion
from workflows.prompts import agents_rendered, template_context


class WorkflowVersionInline(admin.TabularInline):
    """Versions are evidence of what calls ran on: read-only."""

    model = WorkflowVersion
    extra = 0
    can_delete = False
    ordering = ["-number"]
    fields = ["number", "created_at", "first_agent", "agent_names", "pretty_definition"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Start agent")
    def first_agent(self, version: WorkflowVersion) -> str:
        return (version.definition or {}).get("start_agent", "-")

    @admin.display(description="Agents")
    def agent_names(self, version: WorkflowVersion) -> str:
        agents = (version.definition or {}).get("agents", [])
        return ", ".join(agent["name"] for agent in agents)

    @admin.display(description="Definition")
    def pretty_definition(self, version: WorkflowVersion) -> str:
        if version.definition is None:
            return "-"
        return format_html(
            "<details><summary>JSON</summary><pre>{}</pre></details>",
            json.dumps(version.definition, indent=2),
        )


def _object_field(value: Any) -> dict:
    if not isinstance(value, dict):
        raise forms.ValidationError("Must be a JSON object.")
    return value


class APIJSONField(forms.JSONField):
    """JSON read as the API reads a body (`voicecalls.parsers`): orjson's nesting limit
    ends in an error where the standard library would exhaust the recursion limit (a
    500) on `[[[[...`, and an integer beyond 64 bits, which the API would answer but
    never take back, is refused."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # CharField's NUL check runs str() on the parsed value: nested as deep as the
        # parser takes, that is a RecursionError (a 500). It never saw a NUL the repr
        # escapes anyway; the definition's own checks look for them.
        self.validators = [
            v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)
        ]

    def to_python(self, value: Any) -> Any:
        if self.disabled or not isinstance(value, str):
            return value
        if value in self.empty_values:
            return None
        try:
            return JSONParser().parse(io.BytesIO(value.encode("utf-8", "surrogatepass")))
        except ParseError as exc:
            message = f"{self.error_messages['invalid']} {exc.detail}"
            raise forms.ValidationError(message, code="invalid") from exc

    def bound_data(self, data: Any, initial: Any) -> Any:
        # Shown again as typed: re-encoding it would meet the same recursion limit.
        return initial if self.disabled or data is None else InvalidJSONInput(data)


class WorkflowForm(ReadAtForm, forms.ModelForm):
    definition = APIJSONField(
        widget=forms.Textarea(attrs={"rows": 30, "cols": 110, "style": "font-family: monospace"}),
        help_text="`start_agent`, `agents` and `settings`, as in the API. Saving a "
        "changed definition creates a new version; calls already made keep theirs.",
    )

    class Meta:
        model = Workflow
        fields = ["organization", "slug", "name"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # View-only staff and deleted workflows get no editable fields at all.
        editing = not self.instance._state.adding  # (a new instance already has a uuid)
        if editing and self.instance.current_version_id and "definition" in self.fields:
            self.fields["definition"].initial = self.instance.current_version.definition
        if editing and "organization" in self.fields:
            self.fields["organization"].disabled = True

    def clean_definition(self) -> dict:
        return _object_field(self.cleaned_data["definition"])

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        try:
            self.validated = services.workflow_validate(
                organization=data["organization"],
                slug=data["slug"],
                name=data["name"],
                definition=data["definition"],
            )
        except serializers.ValidationError as exc:
            for error in flatten_errors(exc.detail):
                field = error.attr if error.attr in ("slug", "name") else None
                label = "" if field else f"{error.attr}: "
                self.add_error(field, f"{label}{error.detail}")
            return data
        # The service refuses a slug in use too, but only at the save, past the form (a 500).
        editing = None if self.instance._state.adding else self.instance
        if services.workflow_slug_taken(
            organization_id=data["organization"].pk, slug=data["slug"], exclude=editing
        ):
            self.add_error("slug", services.SLUG_TAKEN)
        return data


@admin.register(Workflow)
class WorkflowAdmin(SaveRefusedAsMessage, admin.ModelAdmin):
    form = WorkflowForm
    inlines = [WorkflowVersionInline]
    list_display = [
        "slug",
        "name",
        "organization",
        "version",
        "is_live",
        "updated_at",
        "preview_link",
    ]
    list_filter = [("deleted_at", admin.EmptyFieldListFilter), "organization"]
    search_fields = ["slug", "name", "=id"]
    list_select_related = ["organization", "current_version"]
    readonly_fields = ["id", "version", "created_at", "updated_at", "deleted_at", "preview_link"]
    actions = ["soft_delete"]
    ordering = ["-created_at", "-id"]

    def get_fields(self, request: HttpRequest, obj: Workflow | None = None) -> list[str]:
        fields = ["organization", "slug", "name", "definition"]
        return fields if obj is None else [*fields, "read_at", *self.readonly_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: Workflow | None = None) -> list[str]:
        if obj is not None and obj.deleted_at is not None:
            return ["organization", "slug", "name", *self.readonly_fields]
        return self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Calls keep pointing at workflows: deleting is the soft-delete action.
        return False

    def has_change_permission(self, request: HttpRequest, obj: Workflow | None = None) -> bool:
        if obj is not None and obj.deleted_at is not None:
            return False
        return super().has_change_permission(request, obj)

    def save_model(
        self, request: HttpRequest, obj: Workflow, form: WorkflowForm, change: bool
    ) -> None:
        data = form.validated
        definition = form.cleaned_data["definition"]
        try:
            if change:
                services.workflow_update(
                    workflow=obj, slug=data["slug"], name=data["name"], definition=definition
                )
            else:
                created = services.workflow_create(
                    organization=form.cleaned_data["organization"],
                    slug=data["slug"],
                    name=data["name"],
                    definition=definition,
                )
                obj.pk = created.pk
        except NotFound as exc:
            raise SaveRefused("The workflow was deleted meanwhile: nothing was saved.") from exc
        except serializers.ValidationError as exc:  # the slug taken meanwhile
            reasons = "; ".join(str(error.detail) for error in flatten_errors(exc.detail))
            raise SaveRefused(f"Nothing was saved: {reasons}") from exc
        obj.refresh_from_db()

    @admin.display(description="Definition")
    def definition(self, workflow: Workflow) -> str:
        # Shown when the form is read-only (view permission only, or deleted).
        if workflow.current_version is None:
            return "-"
        return format_html(
            "<pre>{}</pre>", json.dumps(workflow.current_version.definition, indent=2)
        )

    @admin.display(description="Version", ordering="current_version__number")
    def version(self, workflow: Workflow) -> int | None:
        return workflow.current_version.number if workflow.current_version else None

    @admin.display(description="Live", boolean=True, ordering="deleted_at")
    def is_live(self, workflow: Workflow) -> bool:
        return workflow.deleted_at is None

    @admin.display(description="Prompts")
    def preview_link(self, workflow: Workflow) -> str:
        if workflow.pk is None:
            return "-"
        url = reverse("admin:workflows_workflow_preview", args=[workflow.pk])
        return format_html('<a href="{}">Preview prompts</a>', url)

    @admin.action(description="Delete selected workflows (soft: calls keep working)")
    def soft_delete(
        self, request: HttpRequest, queryset: QuerySet[Workflow]
    ) -> TemplateResponse | None:
        asking = action_confirmation(
            self,
            request,
            queryset,
            action="soft_delete",
            title="Delete these workflows?",
            consequence="No new call can be made from them (calls made keep working); "
            "this cannot be undone here.",
        )
        if asking is not None:
            return asking
        deleted, kept = 0, []
        for workflow in queryset.filter(deleted_at__isnull=True):
            try:
                services.workflow_delete(workflow=workflow)
                deleted += 1
            except services.WorkflowInUse:
                kept.append(workflow.slug)
        self.message_user(request, f"Deleted {deleted} workflow(s).", messages.SUCCESS)
        if kept:
            self.message_user(
                request,
                f"Kept {len(kept)} workflow(s) inbound numbers reach: {', '.join(kept)} "
                "(point the numbers at another workflow first).",
                messages.WARNING,
            )
        return None

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        if not super().has_change_permission(request):
            actions.pop("soft_delete", None)
        return actions

    def get_urls(self) -> list:
        preview = path(
            "<uuid:object_id>/preview-prompts/",
            self.admin_site.admin_view(self.preview_prompts_view),
            name="workflows_workflow_preview",
        )
        return [preview, *super().get_urls()]

    def preview_prompts_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        workflow = get_object_or_404(
            Workflow.objects.select_related("current_version"), pk=object_id
        )
        if not self.has_view_permission(request, workflow):
            return (
                self.admin_site.login(request)
                if not request.user.is_active
                else HttpResponse(status=403)
            )
        form = PreviewForm(request.GET or None, workflow=workflow)
        agents = None
        if form.is_valid():
            version = form.cleaned_data["version"] or workflow.current_version
            context = template_context(
                user_data=form.cleaned_data["user_data"],
                metadata=form.cleaned_data["metadata"],
                call_id="00000000-0000-0000-0000-000000000000",
            )
            agents = agents_rendered(definition=version.definition, context=context)
            agent = form.cleaned_data["agent"]
            if agent:
                agents = [a for a in agents if a["name"] == agent]
        return TemplateResponse(
            request,
            "admin/workflows/workflow/preview_prompts.html",
            status=400 if form.errors else 200,
            context={
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "original": workflow,
                "title": f"Preview prompts: {workflow.slug}",
                "form": form,
                "agents": agents,
                "rendered_at": timezone.now(),
            },
        )


class SampleJSONField(APIJSONField):
    """Sample `user_data` / `metadata` held to the API's own field (size and depth)."""

    def __init__(self, *, api_field: serializers.Field, **kwargs: Any) -> None:
        self.api_field = api_field
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        parsed = super().to_python(value)
        if self.disabled or not isinstance(value, str) or value in self.empty_values:
            return parsed
        try:
            return self.api_field.run_validation(parsed)
        except serializers.ValidationError as exc:
            raise forms.ValidationError([str(e) for e in exc.detail]) from exc


_API_FIELDS = CallCreateSerializer().fields


class PreviewForm(forms.Form):
    version = forms.ModelChoiceField(
        queryset=WorkflowVersion.objects.none(), required=False, empty_label="Current version"
    )
    agent = forms.ChoiceField(required=False)
    user_data = SampleJSONField(
        api_field=_API_FIELDS["user_data"],
        initial={"name": "Ada", "language": "en"},
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80, "style": "font-family: monospace"}),
        help_text="Sample `user_data` (a JSON object), available as {{ user.* }}.",
    )
    metadata = SampleJSONField(
        api_field=_API_FIELDS["metadata"],
        initial={},
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80, "style": "font-family: monospace"}),
        help_text="Sample metadata (a JSON object), available as {{ metadata.* }}.",
    )

    def __init__(self, *args: Any, workflow: Workflow, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["version"].queryset = workflow.versions.order_by("-number")
        self.fields["version"].label_from_instance = lambda v: f"v{v.number}"
        definition = workflow.current_version.definition if workflow.current_version else {}
        names = [agent["name"] for agent in definition.get("agents", [])]
        self.fields["agent"].choices = [("", "All agents"), *[(n, n) for n in names]]

    def clean_user_data(self) -> dict:
        return self.cleaned_data["user_data"] or {}

    def clean_metadata(self) -> dict:
        return self.cleaned_data["metadata"] or {}
