"""SQL the ORM cannot say: `INSERT … ON CONFLICT DO NOTHING RETURNING` and an
atomic JSON-array append, on PostgreSQL and SQLite alike; and a plain one-row INSERT
for the hottest write (`POST /calls`).

`bulk_create(ignore_conflicts=True)` cannot tell which rows were new, so replays
would be counted (and aggregated) twice. PostgreSQL and SQLite (≥ 3.35) both speak
this statement; values go through each field's own `get_db_prep_save`, exactly as
the ORM would send them.
"""

from __future__ import annotations

import datetime
import functools
import json
import sqlite3
import uuid
from collections.abc import Sequence

from django.db import DEFAULT_DB_ALIAS, NotSupportedError, connection, connections, models
from django.db.models.options import Options

from voicecalls.db import bound_cursor

# PostgreSQL's limit on bind parameters per statement.
_POSTGRES_MAX_PARAMS = 65535


def _max_params() -> int:
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        return connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return _POSTGRES_MAX_PARAMS


def insert_instance(obj: models.Model) -> None:
    """Insert a new model instance: what `obj.save(force_insert=True)` stores, in one
    plain statement.

    Each value is what the ORM would send (`pre_save`, so `auto_now_add` is set on
    `obj` too, then `get_db_prep_save`), without running the ORM's insert compiler on
    every create (bench/README.md): the statement's text is the same for every row of
    a model, so it is built once and bound server-side (`voicecalls.db`). No signals
    are sent: none are connected to the models that use this (`tests/test_sql.py`
    checks). The primary key must come from Python (a uuid4 default), not the database.
    """
    meta = obj._meta
    if obj.pk is None:
        raise ValueError(f"insert_instance needs a primary key set in Python ({meta.label}).")
    db = connections[DEFAULT_DB_ALIAS]  # the connection itself: read ~30 times below
    fields, statement = _insert_statement(type(obj), db.vendor)
    values = [field.get_db_prep_save(field.pre_save(obj, True), db) for field in fields]
    with bound_cursor(native_placeholders=True) as cursor:
        cursor.execute(statement, values)
    obj._state.adding = False
    obj._state.db = db.alias


@functools.cache
def _insert_statement(model: type[models.Model], vendor: str) -> tuple[list, str]:
    """`model`'s concrete fields and the INSERT of one row of them (with PostgreSQL's
    own placeholders there: `bound_cursor(native_placeholders=True)`)."""
    meta = model._meta
    fields = meta.local_concrete_fields
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    if vendor == "postgresql":
        placeholders = ", ".join(f"${number}" for number in range(1, len(fields) + 1))
    else:
        placeholders = ", ".join(["%s"] * len(fields))
    return fields, f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders})"


def insert_new(
    model: type[models.Model],
    rows: Sequence[dict],
    *,
    unique: str,
    unique_with: Sequence[str] = (),
) -> set[uuid.UUID | str]:
    """Insert `rows` (dicts of field name → value), skipping those whose `unique`
    field (together with the `unique_with` fields: a unique constraint over all of
    them must exist) already exists; return the `unique` values of the rows inserted.
    `insert_new_ids` returns their primary keys too.

    One statement for a whole agent batch (500 rows) on both databases. Rows are
    inserted in the given order: callers sort them so concurrent batches take the
    unique-index locks in the same order and cannot deadlock.
    """
    return set(insert_new_ids(model, rows, unique=unique, unique_with=unique_with))


def insert_new_ids(
    model: type[models.Model],
    rows: Sequence[dict],
    *,
    unique: str,
    unique_with: Sequence[str] = (),
) -> dict[uuid.UUID | str, int]:
    """`insert_new`, answering {unique value: primary key} for the rows inserted (in
    the same statement: RETURNING both)."""
    if not rows:
        return {}
    meta = model._meta
    fields = [meta.get_field(name) for name in rows[0]]
    unique_field = meta.get_field(unique)
    quote = connection.ops.quote_name
    target = ", ".join(quote(meta.get_field(name).column) for name in (*unique_with, unique))
    if connection.vendor == "postgresql":
        return _insert_new_arrays(meta, fields, rows, unique_field, target)
    columns = ", ".join(quote(field.column) for field in fields)
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    per_statement = max(1, _max_params() // len(fields))
    returning = f"{quote(unique_field.column)}, {quote(meta.pk.column)}"
    inserted: dict[uuid.UUID | str, int] = {}
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            params = [
                field.get_db_prep_save(row[field.name], connection)
                for row in chunk
                for field in fields
            ]
            cursor.execute(
                f"INSERT INTO {quote(meta.db_table)} ({columns}) "
                f"VALUES {', '.join([row_sql] * len(chunk))} "
                f"ON CONFLICT ({target}) DO NOTHING "
                f"RETURNING {returning}",
                params,
            )
            for value, pk in cursor.fetchall():
                # SQLite returns UUIDs as 32 hex digits, PostgreSQL as uuid.UUID.
                key = uuid.UUID(str(value)) if isinstance(unique_field, models.UUIDField) else value
                inserted[key] = pk
    return inserted


def _insert_new_arrays(
    meta: Options,
    fields: list[models.Field],
    rows: Sequence[dict],
    unique_field: models.Field,
    target: str,
) -> dict[uuid.UUID | str, int]:
    """PostgreSQL: one array per column, unnested in order, sent as binary parameters
    of a server-side-bound statement; a column with one value in every row (the call,
    the arrival time) is sent once instead.

    Django binds parameters client-side (psycopg's ClientCursor): each array would be
    spelled out as a quoted literal in the statement, escaped in Python element by
    element and parsed back by the server; bound as binary arrays it is neither
    (bench/README.md). The statement's text depends on which columns are constant,
    never on the batch's size: a few texts per model, each prepared by
    `voicecalls.db.bound_cursor`."""
    quote = connection.ops.quote_name
    selected, arrays, names, scalars, columns = [], [], [], [], []
    for i, field in enumerate(fields):
        values = _db_values(field, [row[field.name] for row in rows])
        db_type = field.db_type(connection)
        # Never the unique column: one array is left to unnest, whatever the rows.
        constant = field is not unique_field and values.count(values[0]) == len(values)
        if len(values) > 1 and constant:
            selected.append(f"%b::{db_type}")
            scalars.append(values[0])
        else:
            selected.append(f"c{i}")
            names.append(f"c{i}")
            arrays.append(f"%b::{db_type}[]")
            columns.append(values)
    with bound_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
            f"SELECT {', '.join(selected)} FROM unnest({', '.join(arrays)}) WITH ORDINALITY "
            f"AS u({', '.join(names)}, n) ORDER BY n "
            f"ON CONFLICT ({target}) DO NOTHING "
            f"RETURNING {quote(unique_field.column)}, {quote(meta.pk.column)}",
            scalars + columns,
        )
        return dict(cursor.fetchall())


# Fields whose get_db_prep_save returns a value of this type unchanged on PostgreSQL
# (psycopg adapts it): skipping the call saves a few microseconds per value, 4,000
# values in a 500-line batch. Subclasses are not assumed to behave the same.
_STORED_AS_IS: dict[type[models.Field], type] = {
    models.UUIDField: uuid.UUID,
    models.CharField: str,
    models.TextField: str,
    models.DateTimeField: datetime.datetime,
    models.BooleanField: bool,
}


def _db_values(field: models.Field, values: list) -> list:
    """`field.get_db_prep_save(value)` for each value (PostgreSQL)."""
    prep = field.get_db_prep_save
    stored = field.target_field if field.is_relation else field
    kind = _STORED_AS_IS.get(type(stored))
    if kind is None:
        return [prep(value, connection) for value in values]
    if kind is datetime.datetime:
        # Naive datetimes get Django's warning and the default time zone: not as is.
        return [
            value
            if type(value) is datetime.datetime and value.utcoffset() is not None
            else prep(value, connection)
            for value in values
        ]
    return [value if type(value) is kind else prep(value, connection) for value in values]


_SQLITE_PAIRS_PER_CALL = 60


class JSONArrayAppend(models.Func):
    """`column + values` for a JSON array column, computed by the database.

    Used in an UPDATE (`agent_history = agent_history || [...]`), so concurrent
    handoff batches append without a read-modify-write race.
    """

    output_field = models.JSONField()

    def __init__(self, expression: str, values: Sequence[str]) -> None:
        super().__init__(models.F(expression))
        self.values = list(values)

    def as_sql(self, compiler, connection, **extra):
        raise NotSupportedError(f"JSONArrayAppend is not implemented for {connection.vendor}.")

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(COALESCE({sql}, '[]'::jsonb) || %s::jsonb)", [*params, json.dumps(self.values)]

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        sql, params = f"COALESCE({sql}, '[]')", list(params)
        # json_insert applies its path/value pairs left to right ('$[#]' is the end);
        # SQLite allows 127 arguments per function, so long lists nest.
        for start in range(0, len(self.values), _SQLITE_PAIRS_PER_CALL):
            chunk = self.values[start : start + _SQLITE_PAIRS_PER_CALL]
            pairs = ", ".join(["'$[#]', %s"] * len(chunk))
            sql = f"json_insert({sql}, {pairs})"
            params += chunk
        return sql, params
