"""The remote list's page links. Autumn pages its customer list by offset
(older API versions) or by cursor (newer ones); both are drawn here as links
that keep the rest of the query string (search, page size) as it is."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest


def query(request: HttpRequest, **changes: Any) -> str:
    """The current query string with ``changes`` applied; empty values dropped."""
    params = {key: value for key, value in request.GET.items()}
    params.update({key: value for key, value in changes.items()})
    return "?" + urlencode({key: value for key, value in params.items() if value not in ("", None)})


def offset_links(request: HttpRequest, number: int, per_page: int, total: int | None) -> dict[str, Any]:
    pages = max(1, -(-(total or 0) // per_page))
    shown = sorted({1, pages, *range(max(1, number - 2), min(pages, number + 2) + 1)})
    return {
        "style": "offset",
        "number": number,
        "pages": pages,
        "total": total,
        "links": [(n, query(request, p=n)) for n in shown],
        "previous": query(request, p=number - 1) if number > 1 else None,
        "next": query(request, p=number + 1) if number < pages else None,
    }


def cursor_links(
    request: HttpRequest, cursor: str, trail: list[str], next_cursor: str | None
) -> dict[str, Any]:
    # The cursors of the pages before this one ride in the query string
    # ("trail"), so Back works without any state on the server.
    previous = None
    if cursor:
        back = trail[:-1]
        previous = query(request, cursor=trail[-1] if trail else "", trail=",".join(back))
        if not trail:
            previous = query(request, cursor="", trail="")
    forward = None
    if next_cursor:
        forward = query(request, cursor=next_cursor, trail=",".join([*trail, cursor] if cursor else []))
    return {
        "style": "cursor",
        "previous": previous,
        "next": forward,
        "depth": len(trail) + (1 if cursor else 0),
    }
