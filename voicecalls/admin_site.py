"""The staff console: Django's admin with a call dashboard on its index page."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.template.response import TemplateResponse


class VoicecallsAdminSite(admin.AdminSite):
    site_header = "voicecalls console"
    site_title = "voicecalls"
    index_title = "Calls at a glance"

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        from calls.dashboard import dashboard_context

        context = dict(extra_context or {})
        if request.user.has_perm("calls.view_call"):
            context["dashboard"] = dashboard_context()
        return super().index(request, extra_context=context)


class VoicecallsAdminConfig(AdminConfig):
    default_site = "voicecalls.admin_site.VoicecallsAdminSite"
