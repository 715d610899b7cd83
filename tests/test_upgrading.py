"""README "Upgrading": `migrate` runs first, while the previous release still serves.
Its processes insert rows naming only the columns they know, so a NOT NULL column a
migration adds to an existing table must take its value from the database itself."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.db import connection, migrations
from django.db.migrations.loader import MigrationLoader

pytestmark = pytest.mark.django_db

PROJECT_APPS = {
    config.label for config in apps.get_app_configs() if "site-packages" not in config.path
}
# Columns no default could serve: the release before them could not write these rows on
# the new schema whatever the default (accounts 0008 replaced the column it wrote; a
# call's room name is its own, calls 0012).
NO_DEFAULT_POSSIBLE = {"accounts_ratelimitstate.tat_us", "calls_call.room_name"}


def _columns_added_to_existing_tables() -> list[tuple[str, str, str]]:
    """(app label, model name, field name) of every AddField in the project's
    migrations (a field added with its table is CreateModel's)."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    added = []
    for (label, _), migration in sorted(loader.disk_migrations.items()):
        if label not in PROJECT_APPS:
            continue
        for operation in migration.operations:
            if isinstance(operation, migrations.AddField):
                added.append((label, operation.model_name, operation.name))
    return added


def test_every_not_null_column_added_to_an_existing_table_has_a_database_default() -> None:
    without_default = []
    with connection.cursor() as cursor:
        for label, model_name, field_name in _columns_added_to_existing_tables():
            model = apps.get_model(label, model_name)
            field = model._meta.get_field(field_name)
            if field.null or field.many_to_many:
                continue
            table = model._meta.db_table
            columns = connection.introspection.get_table_description(cursor, table)
            (column,) = [c for c in columns if c.name == field.column]
            if column.null_ok:
                continue
            name = f"{table}.{field.column}"
            if column.default is None and name not in NO_DEFAULT_POSSIBLE:
                without_default.append(name)
    assert without_default == []
