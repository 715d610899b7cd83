"""The API's page shape: `{items, total, page, page_size, pages}`.

Unlike DRF's PageNumberPagination, a bad `page`/`page_size` is a 400 naming the
parameter, and a page past the end is an empty 200 with the true `total`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response

from voicecalls.fields import QueryParamsSerializer

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class PageQuerySerializer(QueryParamsSerializer):
    page = serializers.IntegerField(min_value=1, default=1, max_value=10**9)
    page_size = serializers.IntegerField(
        min_value=1, max_value=MAX_PAGE_SIZE, default=DEFAULT_PAGE_SIZE
    )


# Built once and used by every list request (building one deep-copies its fields).
_PAGE_QUERY = PageQuerySerializer()


class PagePagination(BasePagination):
    def paginate_queryset(self, queryset: QuerySet, request: Request, view: Any = None) -> list:
        return self.paginate(
            request,
            count=queryset.count,
            fetch=lambda offset, limit: list(queryset[offset : offset + limit]),
        )

    def paginate(
        self, request: Request, *, count: Callable[[], int], fetch: Callable[[int, int], list]
    ) -> list:
        """The requested page: `count()` is the exact total, `fetch(offset, limit)` the
        rows, not asked for past the end. For lists that count or fetch their own way.

        A first page that is not full holds every row there is: its length is the total,
        and nothing is counted. Any other page is counted first, so that a page past the
        end is never read (a deep offset skips index entries all the way).

        The page and the count are two statements: rows that left the list or joined it
        in between (a call ended, one created) are on the page, so the total is never
        below what the page shows."""
        params = _PAGE_QUERY.run_validation(request.query_params)
        self.page, self.page_size = params["page"], params["page_size"]
        if self.page == 1:
            rows = fetch(0, self.page_size)
            self.total = len(rows) if len(rows) < self.page_size else max(count(), len(rows))
            return rows
        self.total = count()
        offset = (self.page - 1) * self.page_size
        if offset >= self.total:
            return []
        rows = fetch(offset, self.page_size)
        self.total = max(self.total, offset + len(rows))
        return rows

    def get_paginated_response(self, data: list) -> Response:
        return Response(
            {
                "items": data,
                "total": self.total,
                "page": self.page,
                "page_size": self.page_size,
                "pages": math.ceil(self.total / self.page_size),
            }
        )

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["items", "total", "page", "page_size", "pages"],
            "properties": {
                "items": schema,
                "total": {"type": "integer", "minimum": 0, "example": 100},
                "page": {"type": "integer", "minimum": 1, "example": 1},
                "page_size": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PAGE_SIZE,
                    "example": 20,
                },
                "pages": {"type": "integer", "minimum": 0, "example": 5},
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict]:
        return [
            {
                "name": "page",
                "in": "query",
                "required": False,
                "description": "Page number, from 1.",
                "schema": {"type": "integer", "minimum": 1, "maximum": 10**9, "default": 1},
            },
            {
                "name": "page_size",
                "in": "query",
                "required": False,
                "description": f"Items per page (max {MAX_PAGE_SIZE}).",
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PAGE_SIZE,
                    "default": DEFAULT_PAGE_SIZE,
                },
            },
        ]
