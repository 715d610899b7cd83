"""The list of calls under its filters (`GET /calls`): the exact total, then pages.

On PostgreSQL the filtered query is compiled by the ORM once per process for each
*shape* of list (which filters are given, and the values of those that are not free), from
the same `CallFilter` with a stand-in for each free value (an organization, a workflow,
a user, the window's times); a request runs that text with its own values in their
places. Building and compiling the query cost about what running a one-call list does
(bench/README.md "Issue 19, fourth round"). SQLite builds the ORM query per request.
"""

from __future__ import annotations

import datetime
import functools
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from django.db.models import QuerySet, Sum
from django.http import QueryDict
from django_filters.constants import EMPTY_VALUES
from django_filters.utils import translate_validation

from accounts.models import Organization
from calls.filters import CallFilter
from calls.models import Call, CallCount
from calls.selectors import (
    LIST_FIELDS,
    NEWEST_FIRST,
    call_queryset,
    fetch_fast,
    planned_cursor,
    raw_rows_possible,
)
from voicecalls.db import bound_cursor
from voicecalls.rows import StandInStatement

_LIST_COLUMNS = ", ".join(f'"{Call._meta.get_field(name).column}"' for name in LIST_FIELDS)
_AGENT_HISTORY = LIST_FIELDS.index("agent_history")

# The filters whose value is free (a uuid, a text, a time): their stand-ins, as cleaned.
# The others (status, success, analysis_status, direction, end_reason) are constants of
# their shape, written into its text (StandInStatement). end_reason takes an agent's own
# reasons too, not only a fixed few: each set of them is a shape, and the cache below
# keeps those used last. None can equal a stand-in (END_REASON_PATTERN allows no space
# or hyphen), so none is taken for one.
_STAND_INS = {
    "organization": uuid.UUID(int=1),
    "workflow_id": uuid.UUID(int=2),
    "user_id": "stand-in user_id",
    "started_after": datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC),
    "started_before": datetime.datetime(2000, 2, 1, tzinfo=datetime.UTC),
}


def call_list(*, organization: Organization, filters: QueryDict) -> CallListing:
    """The organization's calls under the list's query parameters (`CallFilter`: status,
    workflow_id, user_id, started_after, started_before, success, analysis_status,
    direction, end_reason); a parameter that is not valid raises ValidationError naming
    it."""
    filterset = CallFilter(filters)
    if not filterset.is_valid():
        raise translate_validation(filterset.errors)
    given = {
        name: value
        for name, value in filterset.form.cleaned_data.items()
        if value not in EMPTY_VALUES
    }
    return CallListing(organization=organization, filterset=filterset, given=given)


@dataclass
class CallListing:
    """The organization's calls under validated list filters (`given`: the cleaned
    values of the filters the request gave)."""

    organization: Organization
    filterset: CallFilter
    given: Mapping[str, object]
    _filtered: tuple[str, list] | None = field(default=None, init=False)

    @property
    def _prepared(self) -> bool:
        # A started_* window's best plan depends on its size (a few calls, or most of
        # the table): PostgreSQL plans each window for its times rather than settling on
        # one generic plan for all (bench/README.md "Issue 19, fourth round").
        return not {"started_after", "started_before"} & set(self.given)

    def calls(self) -> QuerySet[Call]:
        """The filtered calls through the ORM."""
        return self.filterset.queryset_filtered(
            call_queryset(organization=self.organization), self.given
        )

    def _filtered_sql(self) -> tuple[str, list]:
        """The filtered calls' `id, created_at` as SQL and parameters (PostgreSQL), for
        both the count and the page."""
        if self._filtered is None:
            statement = _filtered_statement(_shape(self.given))
            values = _free_values(self.organization.pk, self.given)
            self._filtered = statement.sql, statement.params(values)
        return self._filtered

    def total(self) -> int:
        """Unfiltered or filtered by status alone (the lists matching the most calls),
        PostgreSQL's per-status counters answer from a few rows; any other filter
        narrows enough for `count(*)` over its composite index (bench/README.md)."""
        if not raw_rows_possible():
            return self.calls().count()
        if set(self.given) <= {"status"}:
            counts = CallCount.objects.filter(organization=self.organization)
            if "status" in self.given:
                counts = counts.filter(status__in=set(self.given["status"]))
            return counts.aggregate(total=Sum("count"))["total"] or 0
        sql, params = self._filtered_sql()
        with bound_cursor() if self._prepared else planned_cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM ({sql}) AS filtered", params)
            return cursor.fetchone()[0]

    def page(self, offset: int, limit: int) -> list[dict]:
        """Calls `offset`..`offset + limit` newest first, as `LIST_FIELDS` rows.

        The page's ids are found first, from an index alone (every list index holds the
        ordering columns and the id), then only those rows are read: a deep page skips
        index entries, not table rows.
        """
        if not raw_rows_possible():
            ids = self.calls().order_by(*NEWEST_FIRST).values("pk")[offset : offset + limit]
            return list(
                Call.objects.filter(pk__in=ids).order_by(*NEWEST_FIRST).values(*LIST_FIELDS)
            )
        sql, params = self._filtered_sql()
        # A started_* window comes with the created_at range it implies (CallFilter), so
        # the newest-first indexes reach a window's first page directly, however old.
        rows = fetch_fast(
            f"SELECT {_LIST_COLUMNS} FROM calls_call WHERE id IN ("
            f"SELECT f.id FROM ({sql}) AS f"
            " ORDER BY f.created_at DESC, f.id DESC LIMIT %s OFFSET %s"
            ") ORDER BY created_at DESC, id DESC",
            (*params, limit, offset),
            prepared=self._prepared,
        )
        return [_list_row(row) for row in rows]


def _list_row(row: tuple) -> dict:
    """A `fetch_fast` row of `_LIST_COLUMNS` as `values(*LIST_FIELDS)` gives it."""
    values = dict(zip(LIST_FIELDS, row, strict=True))
    history = row[_AGENT_HISTORY]
    values["agent_history"] = json.loads(history) if isinstance(history, str) else history
    return values


def _shape(given: Mapping[str, object]) -> tuple:
    """What the filtered statement's text depends on: the filters given, in the form's
    order, with the value of each that is not free (not in `_STAND_INS`)."""
    return tuple(
        (name, None if name in _STAND_INS else tuple(value) if isinstance(value, list) else value)
        for name, value in given.items()
    )


def _free_values(organization_id: uuid.UUID, given: Mapping[str, object]) -> dict:
    """The statement's per-request values by name: the organization, the free filters'
    values and the creation times they imply."""
    values = {"organization": organization_id}
    values.update((name, value) for name, value in given.items() if name in _STAND_INS)
    values.update(CallFilter.creation_bounds(given))
    return values


@functools.lru_cache(maxsize=256)
def _filtered_statement(shape: tuple) -> StandInStatement:
    """The shape's filtered query compiled with stand-ins; each parameter equal to a
    stand-in (or to a creation bound it implies) becomes that value's slot (created_at__lt
    is started_before itself)."""
    given = {name: _STAND_INS[name] if name in _STAND_INS else value for name, value in shape}
    calls = CallFilter().queryset_filtered(
        call_queryset(organization=Organization(pk=_STAND_INS["organization"])), given
    )
    sql, params = calls.order_by().values("id", "created_at").query.sql_with_params()
    return StandInStatement.compiled(sql, params, _free_values(_STAND_INS["organization"], given))
