"""The admin call list at a million calls: its paginator neither counts every call nor
sends someone who asked for a deep page back to page 1 (the lists that grow with calls,
recordings and webhook deliveries and events, page the same way), and its date
hierarchy probes the index instead of grouping every call."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from functools import cached_property

from django.core.paginator import EmptyPage, Page, Paginator
from django.db.models import Max, Min, QuerySet
from django.utils import timezone

COUNT_CAP = 10_000
# An uncounted call list pages this deep at most (an offset walks the index row by
# row); past it the page asks for filters instead.
MAX_PAGED_ROWS = 100_000


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP + 1 rows: an exact count of a million calls would
    cost more than the page itself. Past the cap the list says "10,000+".

    Pages past the counted ones still open (by offset, no count) down to
    MAX_PAGED_ROWS rows in, and a page past the last call is an empty page that says
    so (change_list.html): Django's own paginator refuses them, and the admin then
    redirects to `?e=1`, which shows page 1 to someone who asked for page 500."""

    @cached_property
    def count(self) -> int:
        return self.object_list[: COUNT_CAP + 1].count()

    @property
    def capped(self) -> bool:
        return self.count > COUNT_CAP

    @property
    def deepest_page(self) -> int:
        """The last page an uncounted list opens; deeper, filters narrow it faster."""
        return MAX_PAGED_ROWS // self.per_page

    def validate_number(self, number: int | float | str) -> int:
        try:
            return super().validate_number(number)
        except EmptyPage:
            if int(number) < 1:
                raise
            return int(number)  # past the counted pages: see page()

    # Whether the page last built was full, so a next one may exist (uncounted lists).
    last_page_was_full = True

    def page(self, number: int | float | str) -> Page:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        if not self.capped and number <= self.num_pages:
            return super().page(number)
        rows: list = []
        if self.capped and number <= self.deepest_page:
            # Uncounted: never clip the page at the capped count.
            rows = list(self.object_list[bottom : bottom + self.per_page])
        self.last_page_was_full = len(rows) == self.per_page
        return self._get_page(rows, number, self)

    def get_elided_page_range(
        self, number: int | float | str = 1, *, on_each_side: int = 3, on_ends: int = 2
    ) -> Iterator[int | str]:
        number = self.validate_number(number)
        if not self.capped:
            # Past the last page: the last pages' links, then this one.
            yield from super().get_elided_page_range(
                min(number, self.num_pages), on_each_side=on_each_side, on_ends=on_ends
            )
            if number > self.num_pages:
                yield from (self.ELLIPSIS, number)
            return
        # The last page is unknown: the first pages, this one's neighbours, then "…".
        if number > on_ends + on_each_side + 2:
            yield from range(1, on_ends + 1)
            yield self.ELLIPSIS
            yield from range(number - on_each_side, number + 1)
        else:
            yield from range(1, number + 1)
        if number <= self.num_pages or self.last_page_was_full:
            last = min(number + on_each_side, self.deepest_page)
            yield from range(number + 1, last + 1)
            if last < self.deepest_page:
                yield self.ELLIPSIS


def _period_starts(
    first: datetime.datetime, last: datetime.datetime, kind: str, tz: datetime.tzinfo
) -> Iterator[tuple[datetime.datetime, datetime.datetime]]:
    """(start, end) of every year, month or day from `first`'s to `last`'s, in `tz`."""

    def start_of(year: int, month: int = 1, day: int = 1) -> datetime.datetime:
        return datetime.datetime(year, month, day, tzinfo=tz)

    def following(start: datetime.datetime) -> datetime.datetime:
        if kind == "year":
            return start_of(start.year + 1)
        if kind == "month":
            return start_of(start.year + start.month // 12, start.month % 12 + 1)
        return start_of(*(start.date() + datetime.timedelta(days=1)).timetuple()[:3])

    fields = {"year": 1, "month": 2, "day": 3}[kind]
    start = start_of(*first.timetuple()[:fields])
    while start <= last:
        end = following(start)
        yield start, end
        start = end


class ProbedDatesQuerySet(QuerySet):
    """The call list's queryset, whose `datetimes()` (what the admin's date hierarchy
    asks for at each level) probes each year, month or day for one call through the
    started_at index instead of grouping every call: `SELECT DISTINCT date_trunc(…)`
    reads every call at each level, where at most 31 index probes do."""

    def datetimes(  # type: ignore[override]
        self, field_name: str, kind: str, order: str = "ASC", tzinfo: datetime.tzinfo | None = None
    ) -> list[datetime.datetime]:
        if kind not in ("year", "month", "day"):
            return list(super().datetimes(field_name, kind, order=order, tzinfo=tzinfo))
        tz = tzinfo or timezone.get_current_timezone()
        bounds = self.aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        found = [
            start
            for start, end in _period_starts(
                bounds["first"].astimezone(tz), bounds["last"].astimezone(tz), kind, tz
            )
            if self.filter(**{f"{field_name}__gte": start, f"{field_name}__lt": end}).exists()
        ]
        return found if order == "ASC" else found[::-1]
