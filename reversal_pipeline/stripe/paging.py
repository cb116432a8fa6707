"""Walking Stripe's lists: forward with ``starting_after``, and events oldest first.

Plain paging over a ``fetch(params) -> page`` callable, so the resource keeps
the HTTP, the error classification and the conversion to records, and this
module keeps the cursor rules (which are Stripe's, and easy to get subtly
wrong). We page by hand instead of ``ListObject.auto_paging_iter()``: its
generator dies on the first exception, so a 429'd page could not be re-sent,
and its page fetches happen inside the SDK where they cannot be classified.
Every walk keeps one page in memory, like the SDK's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

#: Stripe's largest page.
PAGE_LIMIT = 100
#: How long Stripe keeps events: a walk without a start begins just before it.
EVENT_RETENTION_SECONDS = 30 * 86_400

PageFetcher = Callable[[dict[str, Any]], dict[str, Any]]


def forward_items(
    fetch: PageFetcher, params: dict[str, Any], *, starting_after: str | None = None
) -> Iterator[dict[str, Any]]:
    """Every item of a list, newest first as Stripe lists them, page by page."""
    while True:
        page_params = dict(params)
        if starting_after is not None:
            page_params["starting_after"] = starting_after
        page = fetch(page_params)
        items = page.get("data") or []
        yield from items
        if not page.get("has_more") or not items:
            return
        starting_after = str(items[-1]["id"])


def events_after(fetch: PageFetcher, types: list[str], cursor: str) -> Iterator[dict[str, Any]]:
    """Every event newer than ``cursor``, oldest first.

    ``ending_before`` answers the page just newer than the cursor, newest
    first: reversed, it continues the oldest-first stream, and its newest
    event is the next cursor.
    """
    while True:
        params: dict[str, Any] = {"limit": PAGE_LIMIT, "ending_before": cursor}
        if types:
            params["types"] = types
        page = fetch(params)
        items = page.get("data") or []
        yield from reversed(items)
        if not page.get("has_more") or not items:
            return
        cursor = str(items[0]["id"])


def events_since(
    fetch: PageFetcher, types: list[str], since: int | None
) -> Iterator[dict[str, Any]]:
    """Every event created at or after ``since`` (epoch seconds; None: all kept), oldest first.

    Stripe has no oldest-first order. Walk ``created`` windows forward from
    ``since`` up to the newest event seen at the start, each window small
    enough to fit one page (halved when it does not, doubled while pages
    stay small), so memory stays one page whatever the backlog; then
    continue by cursor from the last event yielded, which also picks up
    events created during the walk. Fragile by nature: it relies on
    ``created`` never being earlier than an event already listed, which
    holds for Stripe (events are created "now").
    """
    base: dict[str, Any] = {"types": types} if types else {}
    probe_params: dict[str, Any] = {**base, "limit": 1}
    if since is not None:
        probe_params["created"] = {"gte": since}
    newest = fetch(probe_params).get("data") or []
    if not newest:
        return
    end = int(newest[0]["created"]) + 1
    start = since if since is not None else end - EVENT_RETENTION_SECONDS - 86_400
    width = 86_400
    last_id: str | None = None
    while start < end:
        upper = min(start + width, end)
        params = {**base, "limit": PAGE_LIMIT, "created": {"gte": start, "lt": upper}}
        page = fetch(params)
        items = page.get("data") or []
        if page.get("has_more"):
            if upper - start > 1:
                width = max((upper - start) // 2, 1)
                continue
            items = _whole_second(fetch, params, items)
        for item in reversed(items):
            last_id = str(item["id"])
            yield item
        start = upper
        if len(items) < PAGE_LIMIT // 2:
            width *= 2
    if last_id is not None:
        yield from events_after(fetch, types, last_id)


def _whole_second(
    fetch: PageFetcher, params: dict[str, Any], first: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    # More than a page of events in one second: the only window that cannot
    # be split, so its pages are held (newest first) together.
    items = list(first)
    while True:
        page = fetch({**params, "starting_after": str(items[-1]["id"])})
        more = page.get("data") or []
        items.extend(more)
        if not page.get("has_more") or not more:
            return items
