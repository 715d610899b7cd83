"""`bound_cursor`: the hot paths' statements bound on the server and prepared by
psycopg, yet seen, counted and health-checked like any Django cursor."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.db.utils import IntegrityError
from django.test.utils import CaptureQueriesContext

from accounts.models import Organization
from voicecalls.db import bound_cursor

pytestmark = pytest.mark.django_db

STATEMENT = "SELECT slug FROM accounts_organization WHERE id = %s"


def _pk(organization: Organization) -> object:
    # As the database stores it (on SQLite, 32 hex digits).
    return Organization._meta.pk.get_db_prep_value(organization.pk, connection)


def _prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [statement for (statement,) in cursor.fetchall()]


def test_it_answers_like_a_django_cursor(organization: Organization) -> None:
    with bound_cursor() as cursor:
        cursor.execute(STATEMENT, [_pk(organization)])
        assert cursor.fetchall() == [(organization.slug,)]


def test_its_statements_are_counted_and_logged(
    organization: Organization, django_assert_num_queries
) -> None:
    with django_assert_num_queries(1), CaptureQueriesContext(connection) as queries:
        with bound_cursor() as cursor:
            cursor.execute(STATEMENT, [_pk(organization)])
    assert queries.captured_queries[0]["sql"].startswith("SELECT slug FROM")


def test_database_errors_are_djangos(organization: Organization) -> None:
    with pytest.raises(IntegrityError), bound_cursor() as cursor:
        cursor.execute(
            "INSERT INTO accounts_organization SELECT * FROM accounts_organization WHERE id = %s",
            [_pk(organization)],
        )


@pytest.mark.postgres
def test_on_postgresql_timestamps_come_back_as_the_orm_reads_them(
    organization: Organization,
) -> None:
    with bound_cursor() as cursor:
        cursor.execute(
            "SELECT created_at FROM accounts_organization WHERE id = %s", [_pk(organization)]
        )
        (created_at,) = cursor.fetchone()
    assert created_at == Organization.objects.get(pk=organization.pk).created_at


@pytest.mark.postgres
def test_on_postgresql_a_statement_run_often_is_prepared(organization: Organization) -> None:
    assert connection.connection.prepare_threshold == 5  # DATABASE_PREPARE_THRESHOLD's default
    server_side = STATEMENT.replace("%s", "$1")

    with bound_cursor() as cursor:
        cursor.execute(STATEMENT, [_pk(organization)])
    assert server_side not in _prepared_statements()

    for _ in range(10):
        with bound_cursor() as cursor:
            cursor.execute(STATEMENT, [_pk(organization)])
    assert server_side in _prepared_statements()


@pytest.mark.postgres
@pytest.mark.parametrize("native_placeholders", [False, True], ids=["%s", "$1"])
def test_on_postgresql_prepared_statements_answer_and_are_logged_with_their_text(
    organization: Organization, native_placeholders: bool
) -> None:
    server_side = STATEMENT.replace("%s", "$1")  # what psycopg sends either way

    with CaptureQueriesContext(connection) as queries:
        for _ in range(10):  # psycopg prepares from the sixth run
            with bound_cursor(native_placeholders=native_placeholders) as cursor:
                cursor.execute(
                    server_side if native_placeholders else STATEMENT, [_pk(organization)]
                )
                assert cursor.fetchall() == [(organization.slug,)]

    assert [query["sql"] for query in queries.captured_queries] == [server_side] * 10
    assert server_side in _prepared_statements()


@pytest.mark.postgres
def test_on_postgresql_django_cursors_stay_unprepared(organization: Organization) -> None:
    for _ in range(10):
        with connection.cursor() as cursor:
            cursor.execute(STATEMENT, [_pk(organization)])
    assert not any(statement.startswith("SELECT slug FROM") for statement in _prepared_statements())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_connection_lost_between_requests_is_replaced(
    organization: Organization,
) -> None:
    connection.ensure_connection()
    connection.connection.close()  # the server went away while the worker was idle
    connection.health_check_done = False  # what request_started does

    with bound_cursor() as cursor:
        cursor.execute(STATEMENT, [_pk(organization)])
        assert cursor.fetchall() == [(organization.slug,)]


# The private Django code bound_cursor mirrors or calls; a Django upgrade that changes any
# of it must be read against voicecalls/db.py before this test is updated.
_DJANGO_INTERNALS = {
    "postgresql DatabaseWrapper.create_cursor": (
        "django.db.backends.postgresql.base:DatabaseWrapper.create_cursor",
        "5309d92ffca3e8718d0054b64fcd32ce8fb9cb7f260b914e844d4efcda62f81a",
    ),
    "BaseDatabaseWrapper._prepare_cursor": (
        "django.db.backends.base.base:BaseDatabaseWrapper._prepare_cursor",
        "92079d0eed95d59d4d770845075e27b7f7e3034331b95aec778b7cfcdca64cb2",
    ),
}


@pytest.mark.parametrize("name", sorted(_DJANGO_INTERNALS))
def test_the_private_django_code_it_relies_on_is_unchanged(name: str) -> None:
    import hashlib
    import importlib
    import inspect

    dotted, expected = _DJANGO_INTERNALS[name]
    module_name, _, attribute = dotted.partition(":")
    target = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    digest = hashlib.sha256(inspect.getsource(target).encode()).hexdigest()
    assert digest == expected, (
        f"Django's {name} changed: voicecalls.db.bound_cursor copies or calls it. Read the "
        "new code against bound_cursor, then update this digest."
    )


def test_the_names_it_imports_from_djangos_backend_still_exist() -> None:
    from django.db.backends.postgresql import base

    assert base.ServerBindingCursor.__mro__[0].__name__ == "ServerBindingCursor"
    assert isinstance(base.TIMESTAMPTZ_OID, int)
    for method in ("close_if_health_check_failed", "ensure_connection", "_prepare_cursor"):
        assert callable(getattr(base.DatabaseWrapper, method))


@pytest.mark.postgres
def test_timestamps_read_natively_are_the_aware_utc_datetimes_django_reads() -> None:
    from django.db.backends.postgresql.base import TIMESTAMPTZ_OID
    from psycopg.pq import Format
    from psycopg.types.datetime import TimestamptzLoader

    from voicecalls.db import timestamps_read_natively

    statement = "SELECT '2026-03-29 01:30:00.123456+02'::timestamptz, NULL::timestamptz"
    with connection.cursor() as cursor:
        cursor.execute(statement)
        djangos = cursor.fetchone()
    with bound_cursor() as cursor:
        timestamps_read_natively(cursor)
        loader = cursor.cursor.adapters.get_loader(TIMESTAMPTZ_OID, Format.TEXT)
        cursor.execute(statement)
        native = cursor.fetchone()

    # psycopg's own (its C version when installed), not Django's Python subclass.
    assert loader.__name__ == TimestamptzLoader.__name__
    assert native == djangos
    assert native[0].utcoffset() == djangos[0].utcoffset() == datetime.timedelta(0)
    assert native[0].isoformat() == "2026-03-28T23:30:00.123456+00:00"
