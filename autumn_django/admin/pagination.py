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


#: What stands for the pages left out between two page links.
ELLIPSIS = "…"


def page_range(number: int, pages: int, on_each_side: int = 2, on_ends: int = 1) -> list[int | str]:
    """The page numbers to link, as Django's ``Paginator.get_elided_page_range``
    draws them (the admin's own lists look the same): the first and last,
    ``on_each_side`` around the current one, and an ellipsis for every gap,
    never for a single page ("1 2 3 … 7", "1 … 4 5 6 7 8 … 12"). A number
    past the last page (an old link) is drawn from the last page."""
    if pages <= (on_each_side + on_ends) * 2:
        return list(range(1, pages + 1))
    number = min(max(number, 1), pages)
    shown: list[int | str] = []
    if number > on_each_side + on_ends + 2:
        shown += [*range(1, on_ends + 1), ELLIPSIS, *range(number - on_each_side, number + 1)]
    else:
        shown += range(1, number + 1)
    if number < pages - on_each_side - on_ends - 1:
        shown += [
            *range(number + 1, number + on_each_side + 1),
            ELLIPSIS,
            *range(pages - on_ends + 1, pages + 1),
        ]
    else:
        shown += range(number + 1, pages + 1)
    return shown


def offset_links(request: HttpRequest, number: int, per_page: int, total: int | None) -> dict[str, Any]:
    """Numbered page links; none when the list (or the search) is empty."""
    pages = -(-(total or 0) // per_page)
    return {
        "style": "offset",
        "number": number,
        "pages": pages,
        "total": total or 0,
        "links": [(n, None if n == ELLIPSIS else query(request, p=n)) for n in page_range(number, pages)],
        "previous": query(request, p=min(number - 1, pages)) if 1 < number and pages else None,
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
