"""Model instances from hand-written statements, read as the ORM reads them.

The hottest reads (the API key of every request, a call's detail and its metric
samples, the active calls) run one statement whose text is built once per process
instead of compiling the ORM's query on every request (bench/README.md); their rows
still go through each field's database converters (and `Model.from_db` for instances),
so what comes back is what the ORM would return.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

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


# A parameter's place in compiled SQL (`%%` is a literal percent sign).
_PLACE = re.compile(r"%%|%s")
# Constants written into PostgreSQL's text as literals, quoted by psycopg (choices
# such as CallStatus are str; bool is an int).
_LITERAL_TYPES = (str, int)


@dataclass(frozen=True)
class StandInStatement:
    """SQL the ORM compiled once with stand-in values, run per request with real ones:
    per parameter, the name of the value that takes its place, or None and the
    parameter itself (a constant of the statement).

    On PostgreSQL the constants (statuses, flags) are written into the text instead:
    these statements are prepared, and a generic plan does not know a parameter's
    value, so a partial index on `status IN (...)` could not serve it (the open calls
    walked an organization's whole history at a million calls, bench/README.md)."""

    sql: str
    slots: tuple[tuple[str | None, object], ...]

    @classmethod
    def compiled(
        cls, sql: str, params: Sequence, stand_ins: Mapping[str, object]
    ) -> StandInStatement:
        """`sql` and its `params` as compiled with `stand_ins` (name: value as compared
        in the parameters); every stand-in must be among them. Stand-ins equal to each
        other stand for the same value, so the first name serves."""
        if missing := [name for name, value in stand_ins.items() if value not in params]:
            raise ValueError(f"stand-ins {missing} are not among the parameters of {sql}")
        inline = connection.vendor == "postgresql"
        remaining = iter(params)
        slots = []

        def place(match: re.Match) -> str:
            if match.group() == "%%":
                return "%%"
            param = next(remaining)
            name = next((name for name, value in stand_ins.items() if value == param), None)
            if name is None and inline and isinstance(param, _LITERAL_TYPES):
                return connection.ops.compose_sql("%s", [param]).replace("%", "%%")
            slots.append((name, None) if name else (None, param))
            return "%s"

        sql = _PLACE.sub(place, sql)
        if list(remaining):
            raise ValueError(f"more parameters than places in {sql}")
        return cls(sql=sql, slots=tuple(slots))

    def params(self, values: Mapping[str, object]) -> list:
        """The parameters with `values` (by name) in the stand-ins' places."""
        return [values[name] if name else constant for name, constant in self.slots]


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
        sql, params = compiler.as_sql()
        self.field = field
        prepared = self._prepared(placeholder)
        if list(params).count(prepared) != 1:
            raise ValueError(f"the placeholder is not once among the parameters of {sql}")
        self.statement = StandInStatement.compiled(sql, params, {"value": prepared})
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
        params = self.statement.params({"value": self._prepared(value)})
        with bound_cursor() as cursor:
            timestamps_read_natively(cursor)
            cursor.execute(self.statement.sql, params)
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
