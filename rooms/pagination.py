"""Page sizes of the REST lists (``GET /api/rooms/``, ``GET /api/rooms/<slug>/members/``).

``?limit=N&offset=M`` (DRF's limit/offset pagination), answered as
``{"count": int, "next": url | null, "previous": url | null, "results": [...]}``.

Every page is bounded: ``limit`` is 1..``MAX_LIMIT`` (200), default ``PAGE_SIZE`` (50). A larger
``limit`` is taken as 200 (clamped, whatever its size: ``limit=2**64`` answers a page of 200, not a
database error); a ``limit`` or ``offset`` that is not a whole number (or is negative) is taken as
the default (50, 0), as DRF always did. An ``offset`` past the end answers an empty page. The
history route pages by ``seq`` instead (``rooms.api.HistoryQuery``) and answers 400 out of range.
"""

from rest_framework.pagination import LimitOffsetPagination

MAX_LIMIT = 200


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """DRF's ``LimitOffsetPagination`` with ``max_limit`` set, and the bounds in the schema."""

    max_limit = MAX_LIMIT

    def get_schema_operation_parameters(self, view):
        limit, offset = super().get_schema_operation_parameters(view)
        limit["description"] = (
            f"Page size, 1..{self.max_limit} (default {self.default_limit}). A larger value is "
            f"taken as {self.max_limit}; one that is not a positive whole number as {self.default_limit}."
        )
        limit["schema"] = {
            "type": "integer",
            "minimum": 1,
            "maximum": self.max_limit,
            "default": self.default_limit,
        }
        offset["description"] = "Index of the first result (default 0); past the end, an empty page."
        offset["schema"] = {"type": "integer", "minimum": 0, "default": 0}
        return [limit, offset]

    def get_paginated_response_schema(self, schema):
        # ``next`` and ``previous`` are always sent (null at either end).
        paginated = super().get_paginated_response_schema(schema)
        paginated["required"] = ["count", "next", "previous", "results"]
        paginated["properties"]["count"]["minimum"] = 0
        return paginated
