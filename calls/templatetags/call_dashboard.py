"""`{% call_dashboard as dashboard %}`: the admin index's call numbers, for staff who
may read calls (the project's admin site knows nothing of calls)."""

from __future__ import annotations

from django import template

from calls.dashboard import dashboard_context

register = template.Library()


@register.simple_tag(takes_context=True)
def call_dashboard(context: template.Context) -> dict | None:
    request = context.get("request")
    if request is None or not request.user.has_perm("calls.view_call"):
        return None
    return dashboard_context()
