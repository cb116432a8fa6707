"""Stripe's list semantics over objects sorted by (created, sequence, id).

Stripe lists newest first; ``starting_after`` pages toward older objects and
``ending_before`` toward newer ones, and a page answered for ``ending_before``
holds the objects *just* newer than the cursor, still newest first. Refunds and
events share this code; transfers keep their own string index (``state.py``).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

SortKey = tuple[int, int, str]


class SortedIndex:
    """Keys ascending; keys added since the last read are merged (one sort) on the next.

    Not locked: its owner holds its own lock around every call.
    """

    def __init__(self) -> None:
        self._keys: list[SortKey] = []
        self._pending: list[SortKey] = []

    def add(self, key: SortKey) -> None:
        self._pending.append(key)

    def extend(self, keys: list[SortKey]) -> None:
        self._pending.extend(keys)

    def clear(self) -> None:
        self._keys = []
        self._pending = []

    def __len__(self) -> int:
        return len(self._keys) + len(self._pending)

    def keys(self) -> list[SortKey]:
        if self._pending:
            if len(self._pending) <= 32 and len(self._keys) > 4096:
                for key in self._pending:
                    bisect.insort(self._keys, key)
            else:
                self._keys.extend(self._pending)
                self._keys.sort()
            self._pending = []
        return self._keys


def page_of(
    keys: list[SortKey],
    *,
    limit: int,
    lower: int,
    upper: int | None,
    after: SortKey | None = None,
    before: SortKey | None = None,
    wanted: Callable[[str], Any] | None = None,
) -> tuple[list[str], bool]:
    """Ids of one page, newest first, and ``has_more``.

    ``keys`` ascending; ``created`` within [lower, upper] (inclusive, seconds);
    ``after`` is the ``starting_after`` object's key, ``before`` the
    ``ending_before`` one's; ``wanted(id)`` filters (truthy: keep).
    """
    lo = bisect.bisect_left(keys, (lower,))
    hi = len(keys) if upper is None else bisect.bisect_left(keys, (upper + 1,))
    if after is not None:
        hi = min(hi, bisect.bisect_left(keys, after))
    if before is not None:
        lo = max(lo, bisect.bisect_right(keys, before))
    found: list[str] = []
    positions = range(lo, hi) if before is not None else range(hi - 1, lo - 1, -1)
    for position in positions:
        object_id = keys[position][2]
        if wanted is None or wanted(object_id):
            found.append(object_id)
            if len(found) > limit:
                break
    has_more = len(found) > limit
    page = found[:limit]
    if before is not None:
        page.reverse()
    return page, has_more


def created_range(bounds: dict[str, int]) -> tuple[int, int | None]:
    """``created[gte|gt|lte|lt]`` (as ``created_gte``...) to an inclusive [lower, upper]."""
    lower = max(bounds.get("created_gte", 0), bounds.get("created_gt", -1) + 1)
    uppers = [bounds[k] for k in ("created_lte",) if k in bounds]
    if "created_lt" in bounds:
        uppers.append(bounds["created_lt"] - 1)
    return max(lower, 0), (min(uppers) if uppers else None)
