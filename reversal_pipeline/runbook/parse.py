"""Parsing operator input into typed values, with one-line refusals."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime

from reversal_pipeline.errors import OperatorInputError


def parse_row_ids(values: Iterable[str]) -> list[int]:
    """``--id`` values (repeatable, or comma-separated) as positive ints, in order, deduplicated."""
    ids: list[int] = []
    for value in values:
        for part in str(value).split(","):
            text = part.strip()
            if not text.isdigit() or int(text) < 1:
                raise OperatorInputError(f"--id wants a positive integer row id, got {part!r}")
            if int(text) not in ids:
                ids.append(int(text))
    return ids


def parse_since(value: str) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 timestamp (UTC when no offset)."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise OperatorInputError(
            f"--failed-since wants YYYY-MM-DD or an ISO 8601 timestamp, got {value!r}"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def require_reason(reason: str | None) -> str:
    """The audit trail must say why a person changed money state."""
    text = (reason or "").strip()
    if not text:
        raise OperatorInputError("--reason is required: the audit row must say why")
    return text


def parse_one_row_id(value: str | None) -> int:
    """Exactly one ``--id``: commands that act on one row refuse a list."""
    if not value:
        raise OperatorInputError("give --id N")
    ids = parse_row_ids([value])
    if len(ids) != 1:
        raise OperatorInputError(f"this command takes exactly one --id, got {value!r}")
    return ids[0]
