"""Model instances from hand-written statements, read as the ORM reads them.

The hottest one-row reads (the API key of every request, a call's detail) run one
statement whose text is built once per process instead of compiling the ORM's query
on every request (bench/README.md); their rows still go through each field's database
converters and `Model.from_db`, so what comes back is what the ORM would return.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.db import connection, models
from django.db.models.expressions import Col


def select_columns(model: type[models.Model], alias: str) -> list[str]:
    """`model`'s concrete columns, quoted and prefixed by the table `alias`, in the
    order `instance_from_row` reads them."""
    quote = connection.ops.quote_name
    return [f"{alias}.{quote(field.column)}" for field in model._meta.concrete_fields]


def instance_from_row(model: type[models.Model], values: tuple) -> models.Model:
    """A model instance from its concrete fields' values, converted as the ORM's
    compiler converts them (on SQLite: uuids from hex, datetimes from text)."""
    attnames, readers = _row_readers(model, connection.vendor)
    converted = []
    for (column, converters), value in zip(readers, values, strict=True):
        for converter in converters:
            value = converter(value, column, connection)
        converted.append(value)
    return model.from_db(connection.alias, attnames, converted)


@functools.cache
def _row_readers(
    model: type[models.Model], vendor: str
) -> tuple[list[str], list[tuple[Col, list[Callable]]]]:
    """Per concrete field: its column expression and database converters. The same for
    every row, so worked out once per model and database vendor, not per request."""
    readers = []
    for field in model._meta.concrete_fields:
        column = field.get_col(model._meta.db_table)
        converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        readers.append((column, converters))
    return [field.attname for field in model._meta.concrete_fields], readers
