"""A confirmation page for admin actions that cannot be undone, as Django's own
"delete selected" asks before it deletes."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse


def action_confirmation(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    action: str,
    title: str,
    consequence: str,
    reason_label: str | None = None,
) -> TemplateResponse | None:
    """None once the staff member confirmed (the page posts `post=yes`, and a `reason`
    when `reason_label` asks for one); else the page that asks, listing what the action
    would act on."""
    reason_given = reason_label is None or request.POST.get("reason", "").strip()
    if request.POST.get("post") == "yes" and reason_given:
        return None
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "consequence": consequence,
        "objects": list(queryset),
        "action": action,
        "reason_label": reason_label,
        "opts": model_admin.model._meta,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/action_confirmation.html", context)
