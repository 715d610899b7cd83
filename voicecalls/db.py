"""A database cursor for the hot paths' hand-written statements.

Django binds parameters client-side on PostgreSQL (psycopg's `ClientCursor`): each
value is quoted into the statement text in Python and the server parses and plans the
whole statement again on every request. The statements run on every API request
(authentication, `POST /calls`'s workflow lookup and insert, agent event batches)
are the same text each time, so they go through a server-side-binding psycopg cursor
instead: parameters travel apart from the text (dumped in C, binary where asked with
`%b`), and psycopg prepares a statement once a connection has run it
`prepare_threshold` times (psycopg's default, 5), after which the server skips
parsing and planning it (bench/README.md, item 14).

Behind a connection pooler in transaction mode that does not track prepared
statements (PgBouncer before 1.21, or without `max_prepared_statements`), set
`DATABASE_PREPARE_THRESHOLD=none`: psycopg then never prepares; binding stays
server-side.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.postgresql.base import TIMESTAMPTZ_OID, CursorMixin, ServerBindingCursor
from django.db.backends.postgresql.psycopg_any import register_tzloader
from django.db.backends.utils import CursorWrapper
from psycopg import RawCursor
from psycopg.pq import Format
from psycopg.types.datetime import TimestamptzLoader


class _StatementShownWhenPrepared:
    """Django's query log (DEBUG, `django_assert_num_queries`) reads the statement from
    the cursor's `_query`, which psycopg sets only for statements it has not prepared:
    from a connection's sixth run on, the hot statements were logged as `None`."""

    def _send_query_prepared(self, name: bytes, pgq: Any, *, binary: bool | None = None) -> None:
        self._query = pgq
        super()._send_query_prepared(name, pgq, binary=binary)


class _BoundCursor(_StatementShownWhenPrepared, ServerBindingCursor):
    """Django's server-binding cursor."""


class NativePlaceholderCursor(_StatementShownWhenPrepared, CursorMixin, RawCursor):
    """Django's server-binding cursor taking PostgreSQL's own `$1, $2, …` placeholders."""


@contextmanager
def bound_cursor(
    using: str = DEFAULT_DB_ALIAS, *, native_placeholders: bool = False
) -> Iterator[CursorWrapper]:
    """A cursor binding parameters on the server (PostgreSQL; elsewhere Django's own).

    Made as `connection.cursor()` makes one (the per-request health check, the
    session's time zone for timestamps) and wrapped by Django's cursor wrapper, so
    errors are Django's, the statement is logged in DEBUG and
    `django_assert_num_queries` counts it. The statement text must not depend on the
    values (use `%s` placeholders), or it is never the same statement twice and
    nothing is prepared.

    `native_placeholders`: on PostgreSQL the statement says `$1, $2, …`, which psycopg
    sends as it is. It rewrites `%s` statements of more than 50 parameters on every
    execution (its cache of rewritten statements stops there): the call insert's 53
    columns cost a worker ~7 % of its time on a create (bench/README.md).
    """
    db = connections[using]
    if db.vendor != "postgresql":
        with db.cursor() as cursor:
            yield cursor
        return
    db.close_if_health_check_failed()
    db.ensure_connection()
    with db.wrap_database_errors:
        cursor_class = NativePlaceholderCursor if native_placeholders else _BoundCursor
        raw = cursor_class(db.connection)
        # As Django's `create_cursor`: the session's time zone changed since connecting.
        if db.timezone != db.connection.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT).timezone:
            register_tzloader(db.timezone, raw)
    with db._prepare_cursor(raw) as cursor:
        yield cursor


def timestamps_read_natively(cursor: CursorWrapper) -> None:
    """On PostgreSQL with the session in UTC (Django's setting here), let `cursor` read
    timestamptz with psycopg's own C loader: Django reads each through a Python subclass
    of it (to pin its time zone), at several times the cost, for the same aware UTC
    datetimes (bench/README.md). Elsewhere nothing changes."""
    db = cursor.db
    if db.vendor == "postgresql" and db.timezone_name == "UTC":
        cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)


def advisory_lock(name: str, using: str = DEFAULT_DB_ALIAS) -> None:
    """Hold the lock `name` until the transaction ends: PostgreSQL's transaction-level
    advisory lock, keyed by the name's CRC-32 (a collision only serializes two unrelated
    names). Nothing on SQLite, whose one writer serializes writes already."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [zlib.crc32(name.encode())])


def index_add(schema_editor: Any, model: type[models.Model], index: models.Index) -> None:
    """A migration's index: built CONCURRENTLY on PostgreSQL, so writes go on while it
    builds (the migration must be `atomic = False`), after dropping what a build that
    failed half-way left behind (an invalid index of that name)."""
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.add_index(model, index)
        return
    schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{index.name}"')
    schema_editor.add_index(model, index, concurrently=True)
