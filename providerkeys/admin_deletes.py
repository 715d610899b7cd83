"""The admin's delete confirmation of a row that takes secrets with it, read without them.

Django's page lists every row the delete cascades to, each read whole (its collector's
select_related defeats the deletion's own `only()`), so one secret no configured
CRYPTOGRAPHY_KEY opens (a key lost, a fallback removed before `rotate_provider_keys`
ran) raised UndecryptableValue: a 500, on the page and on its POST, and the row could
not be deleted. Here the same listing reads them with their secret columns deferred, as
every page showing them does.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import NestedObjects, quote
from django.db import models, router
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.text import capfirst

from providerkeys.fields import EncryptedSecretField


class _SecretsDeferred(NestedObjects):
    def related_objects(
        self, related_model: type[models.Model], related_fields: list, objs: Any
    ) -> models.QuerySet:
        related = super().related_objects(related_model, related_fields, objs)
        # Each row is read with the one it points to (a delivery with its endpoint).
        secrets = _secret_fields(related_model) + [
            f"{field.name}__{name}"
            for field in related_fields
            for name in _secret_fields(field.remote_field.model)
        ]
        return related.defer(*secrets) if secrets else related


def _secret_fields(model: type[models.Model]) -> list[str]:
    return [
        field.name
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedSecretField)
    ]


class SecretsDeferredDeletes:
    """For a ModelAdmin whose deletes cascade to rows holding secrets."""

    admin_site: admin.AdminSite

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple:
        return deleted_objects(objs, request, self.admin_site)


def deleted_objects(objs: Any, request: HttpRequest, admin_site: admin.AdminSite) -> tuple:
    """django.contrib.admin.utils.get_deleted_objects (Django 5.2), its collector reading
    no secret column: (to_delete, model_count, perms_needed, protected)."""
    try:
        first = objs[0]
    except IndexError:
        return [], {}, set(), []
    collector = _SecretsDeferred(using=router.db_for_write(first._meta.model), origin=objs)
    collector.collect(objs)
    perms_needed: set[str] = set()

    def format_callback(obj: models.Model) -> str:
        opts = obj._meta
        no_edit_link = f"{capfirst(opts.verbose_name)}: {obj}"
        if not admin_site.is_registered(obj.__class__):
            return no_edit_link
        if not admin_site.get_model_admin(obj.__class__).has_delete_permission(request, obj):
            perms_needed.add(opts.verbose_name)
        try:
            url = reverse(
                f"{admin_site.name}:{opts.app_label}_{opts.model_name}_change",
                args=(quote(obj.pk),),
            )
        except NoReverseMatch:
            return no_edit_link
        return format_html('{}: <a href="{}">{}</a>', capfirst(opts.verbose_name), url, obj)

    to_delete = collector.nested(format_callback)
    protected = [format_callback(obj) for obj in collector.protected]
    model_count = {
        model._meta.verbose_name_plural: len(rows) for model, rows in collector.model_objs.items()
    }
    return to_delete, model_count, perms_needed, protected
