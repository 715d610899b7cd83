"""`page` and `page_size`, as every list reads them: one `PageQuerySerializer` built
once and run on each request's query parameters; and what a page costs: a first page
that is not full is its own total, any other page is counted before it is read."""

from __future__ import annotations

import pytest
from django.http import QueryDict
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from voicecalls.pagination import _PAGE_QUERY, PagePagination


def _page(query_string: str) -> tuple[int, int]:
    params = _PAGE_QUERY.run_validation(QueryDict(query_string))
    return params["page"], params["page_size"]


@pytest.mark.parametrize(
    ("query_string", "expected"),
    [
        ("", (1, 20)),
        ("user_id=u1&status=completed", (1, 20)),
        ("page=2", (2, 20)),
        ("page_size=100", (1, 100)),
        ("page=500&page_size=1", (500, 1)),
        ("page=1000000000", (1000000000, 20)),
        ("page=007", (7, 20)),
    ],
)
def test_page_and_page_size_are_read_with_their_defaults(query_string, expected):
    assert _page(query_string) == expected


@pytest.mark.parametrize(
    ("query_string", "attr"),
    [
        ("page=", "page"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=1000000001", "page"),
        ("page=abc", "page"),
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("page_size=", "page_size"),
        # Not the last value (QueryDict.dict()'s), the first silently dropped.
        ("page=1&page=3", "page"),
    ],
)
def test_a_page_parameter_out_of_bounds_is_an_error_naming_it(query_string, attr):
    with pytest.raises(ValidationError) as raised:
        _page(query_string)
    assert list(raised.value.detail) == [attr]


def test_the_shared_serializer_keeps_no_state_between_requests():
    with pytest.raises(ValidationError):
        _page("page=0")
    assert _page("page=3") == (3, 20)
    assert _page("") == (1, 20)


def _paginated(query_string: str, rows: list) -> tuple[list, dict, list[str]]:
    """The page `PagePagination.paginate` answers over `rows`, its body's counts, and
    what it asked for: `count`, and `fetch offset+limit`."""
    asked: list[str] = []

    def count() -> int:
        asked.append("count")
        return len(rows)

    def fetch(offset: int, limit: int) -> list:
        asked.append(f"fetch {offset}+{limit}")
        return rows[offset : offset + limit]

    paginator = PagePagination()
    request = Request(APIRequestFactory().get(f"/items?{query_string}"))
    page = paginator.paginate(request, count=count, fetch=fetch)
    body = paginator.get_paginated_response(page).data
    return page, {k: body[k] for k in ("total", "page", "page_size", "pages")}, asked


def test_a_first_page_that_is_not_full_is_its_own_total_and_nothing_is_counted():
    page, body, asked = _paginated("page_size=5", list(range(3)))

    assert page == [0, 1, 2]
    assert body == {"total": 3, "page": 1, "page_size": 5, "pages": 1}
    assert asked == ["fetch 0+5"]


def test_an_empty_list_is_read_once_and_has_no_pages():
    page, body, asked = _paginated("", [])

    assert page == []
    assert body == {"total": 0, "page": 1, "page_size": 20, "pages": 0}
    assert asked == ["fetch 0+20"]


def test_a_full_first_page_is_counted():
    page, body, asked = _paginated("page_size=3", list(range(3)))

    assert page == [0, 1, 2]
    assert body == {"total": 3, "page": 1, "page_size": 3, "pages": 1}
    assert asked == ["fetch 0+3", "count"]


def test_a_later_page_is_counted_first_and_one_past_the_end_is_never_read():
    page, body, asked = _paginated("page=2&page_size=2", list(range(3)))
    assert (page, body["total"], body["pages"]) == ([2], 3, 2)
    assert asked == ["count", "fetch 2+2"]

    page, body, asked = _paginated("page=3&page_size=2", list(range(3)))
    assert (page, body["total"]) == ([], 3)
    assert asked == ["count"]


def test_rows_leaving_the_list_after_its_first_page_was_read_still_count_on_it():
    """The page and its count are two statements: calls listed `?status=active` may end
    in between. The page still shows them, and a total below its own items (pages 0
    beside a page of calls) contradicts it."""
    rows = list(range(4))

    def fetch(offset: int, limit: int) -> list:
        page = rows[offset : offset + limit]
        del rows[:3]  # they end as soon as they were read
        return page

    paginator = PagePagination()
    request = Request(APIRequestFactory().get("/items?page_size=3"))
    page = paginator.paginate(request, count=lambda: len(rows), fetch=fetch)
    body = paginator.get_paginated_response(page).data

    assert page == [0, 1, 2]
    assert (body["total"], body["pages"]) == (3, 1)


def test_rows_joining_the_list_after_a_later_page_was_counted_count_on_it():
    rows = list(range(3))

    def count() -> int:
        total = len(rows)
        rows[:0] = ["new"]  # a call created right after the count
        return total

    paginator = PagePagination()
    request = Request(APIRequestFactory().get("/items?page=2&page_size=2"))
    page = paginator.paginate(request, count=count, fetch=lambda o, n: rows[o : o + n])
    body = paginator.get_paginated_response(page).data

    assert page == [1, 2]
    assert (body["total"], body["pages"]) == (4, 2)
