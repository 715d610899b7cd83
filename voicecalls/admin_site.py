"""The staff console: Django's admin, titled for voicecalls. Its index page shows the
calls dashboard (templates/admin/index.html, `calls.templatetags.call_dashboard`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.autocomplete import AutocompleteJsonView
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.db.models.base import ModelBase
from django.http import HttpRequest, HttpResponse


class DateSafeChangeList(ChangeList):
    """A changelist whose URL names a date no datetime holds (`?started_at__year=9999
    &started_at__month=12`: Django's date hierarchy computes the next month; or
    `?created_at__year=99999`), or holds a NUL (PostgreSQL refuses it in a parameter),
    answers as for any bad filter (`?e=1`), not a 500."""

    def get_filters(self, request: HttpRequest) -> Any:
        if any("\x00" in value for _, values in request.GET.lists() for value in values):
            raise IncorrectLookupParameters("a NUL character in the query")
        try:
            return super().get_filters(request)
        except (OverflowError, ValueError) as exc:
            raise IncorrectLookupParameters(exc) from exc

    def get_results(self, request: HttpRequest) -> None:
        try:
            super().get_results(request)
        except (OverflowError, ValueError) as exc:
            raise IncorrectLookupParameters(exc) from exc


class NulSafeAutocomplete(AutocompleteJsonView):
    """Django's autocomplete (any foreign key's target with search fields), for which a
    term holding a NUL (PostgreSQL refuses it in a parameter: a 500) matches nothing."""

    def get_queryset(self) -> QuerySet:
        if "\x00" in self.term:
            return self.model_admin.get_queryset(self.request).none()
        return super().get_queryset()


class VoicecallsAdminSite(admin.AdminSite):
    site_header = "voicecalls console"
    site_title = "voicecalls"
    index_title = "Calls at a glance"

    def autocomplete_view(self, request: HttpRequest) -> HttpResponse:
        return NulSafeAutocomplete.as_view(admin_site=self)(request)

    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        super().register(model_or_iterable, admin_class, **options)
        models = (
            [model_or_iterable] if isinstance(model_or_iterable, ModelBase) else model_or_iterable
        )
        for model in models:
            # Every list, Django's own (users, groups) included, gets the date-safe one.
            model_admin = self._registry[model]
            model_admin.get_changelist = _date_safe_changelist
            # "Show counts" counts every row once per filter: millions, for calls.
            model_admin.show_facets = admin.ShowFacets.NEVER
            model_admin.get_object = _nul_safe(model_admin.get_object)


def _date_safe_changelist(request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
    return DateSafeChangeList


def _nul_safe(get_object: Callable[..., Any]) -> Callable[..., Any]:
    """A ModelAdmin's `get_object` for which an id holding a NUL (PostgreSQL refuses it
    in a parameter: a 500) is no object, as any id that matches none."""

    @functools.wraps(get_object)
    def nul_safe(request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        if "\x00" in str(object_id):
            return None
        return get_object(request, object_id, from_field)

    return nul_safe


class VoicecallsAdminConfig(AdminConfig):
    default_site = "voicecalls.admin_site.VoicecallsAdminSite"
