"""Model instances from hand-written statements, read as the ORM reads them.

The hottest reads (the API key of every request, a call's detail and its metric
samples, the active calls) run one statement whose text is built once per process
instead of compiling the ORM's query on every request (bench/README.md); their rows
still go through each field's database converters (and `Model.from_db` for instances),
so what comes back is what the ORM would return.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.db import connection, models
from django.db.models.expressions import Col

from voicecalls.db import bound_cursor, timestamps_read_natively


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


class ValuesStatement:
    """A `values()` or `values_list()` queryset compiled once, then run per request with
    one of its parameters changed: the ORM builds and compiles a query on every call
    (most of a one-row answer's time in process: bench/README.md), though only a value
    differs.

    `queryset` is built with `placeholder` where the per-request value goes (compared
    as `field` stores it; it must occur once among the statement's parameters); `rows` and
    `tuples` answer what the queryset would, for `value` instead of `placeholder`."""

    def __init__(self, queryset: models.QuerySet, *, field: models.Field, placeholder: object):
        compiler = queryset.query.get_compiler(connection=connection)
        self.sql, params = compiler.as_sql()
        self.params = list(params)
        self.field = field
        prepared = self._prepared(placeholder)
        slots = [i for i, param in enumerate(params) if param == prepared]
        if len(slots) != 1:
            raise ValueError(f"the placeholder is parameter {slots} of {self.sql}")
        self.slot = slots[0]
        query = queryset.query
        self.names = [*query.extra_select, *query.values_select, *query.annotation_select]
        columns = [column for column, _, _ in compiler.select]
        self.converters = list(compiler.get_converters(columns).items())

    def _prepared(self, value: object) -> object:
        return self.field.get_db_prep_value(self.field.to_python(value), connection)

    def rows(self, value: object) -> list[dict]:
        """The rows for `value`, as `values()` answers them (dicts by field name)."""
        return [dict(zip(self.names, row, strict=True)) for row in self.tuples(value)]

    def tuples(self, value: object) -> list[tuple]:
        """The rows for `value`, as `values_list()` answers them."""
        params = self.params.copy()
        params[self.slot] = self._prepared(value)
        with bound_cursor() as cursor:
            timestamps_read_natively(cursor)
            cursor.execute(self.sql, params)
            rows = cursor.fetchall()
        if not self.converters:
            return rows
        answer = []
        for row in rows:
            row = list(row)
            for position, (converters, column) in self.converters:
                for converter in converters:
                    row[position] = converter(row[position], column, connection)
            answer.append(tuple(row))
        return answer
