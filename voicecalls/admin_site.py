"""The staff console: Django's admin, titled for voicecalls. Its index page shows the
calls dashboard (templates/admin/index.html, `calls.templatetags.call_dashboard`)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig


class VoicecallsAdminSite(admin.AdminSite):
    site_header = "voicecalls console"
    site_title = "voicecalls"
    index_title = "Calls at a glance"


class VoicecallsAdminConfig(AdminConfig):
    default_site = "voicecalls.admin_site.VoicecallsAdminSite"
