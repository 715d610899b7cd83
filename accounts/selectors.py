from __future__ import annotations

import functools

from django.db import connection

from accounts.models import APIKey, Organization
from voicecalls.db import bound_cursor
from voicecalls.rows import instance_from_row, select_columns


def api_key_get_from_key(raw_key: str) -> APIKey | None:
    """The usable (not revoked) API key `raw_key` is, its organization loaded; None when
    it is none of ours or its secret part does not match.

    What `APIKey.objects.get_from_key` answers, in one plain statement: authentication
    runs on every request, where compiling the ORM's `select_related` query was a
    large share of a create (bench/README.md). Rows are read as the ORM reads them:
    each field's database converters, then `Model.from_db`.
    tests/test_account_selectors.py holds it to the library's answers.
    """
    prefix, _, _ = raw_key.partition(".")
    key_columns, statement = _key_statement(connection.vendor)
    with bound_cursor() as cursor:
        cursor.execute(statement, [prefix, False])
        row = cursor.fetchone()
    if row is None:
        return None
    api_key = instance_from_row(APIKey, row[:key_columns])
    if not api_key.is_valid(raw_key):
        return None
    if api_key.organization_id is not None:
        api_key.organization = instance_from_row(Organization, row[key_columns:])
    return api_key


@functools.cache
def _key_statement(vendor: str) -> tuple[int, str]:
    """How many columns are the key's, and the statement reading a usable key and its
    organization by prefix: the same text for every request, so built once."""
    key_fields = APIKey._meta.concrete_fields
    quote = connection.ops.quote_name
    columns = ", ".join(select_columns(APIKey, "k") + select_columns(Organization, "o"))
    return len(key_fields), (
        f"SELECT {columns} FROM {quote(APIKey._meta.db_table)} k"
        f" LEFT JOIN {quote(Organization._meta.db_table)} o ON o.id = k.organization_id"
        " WHERE k.prefix = %s AND k.revoked = %s"
    )
