"""One place that turns a URL into a SQLAlchemy engine, and checks it can connect."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from reversal_pipeline.db.url import describe_target, mask_url, normalize_url
from reversal_pipeline.errors import DatabaseUnavailable

#: A pooled connection idle longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 10.0


def create_db_engine(url: str, *, pool_size: int = 10, connect_timeout: int = 10) -> sa.Engine:
    """An engine with a pool sized for the job's worker threads.

    ``hide_parameters`` keeps row values (which may include operator-typed
    text) out of SQLAlchemy's exception messages. A connection that sat idle in
    the pool for more than ``PING_AFTER_IDLE_SECONDS`` is pinged before use (and
    replaced if dead), so the pool survives a database restart between schedule
    ticks. Unlike ``pool_pre_ping`` this does not ping on every checkout: in the
    job's hot loop that ping was three extra round trips per transaction, about
    half of each short write (benchmarks/RESULTS.md). A restart *during* a run
    fails the statements in flight; SQLAlchemy then drops the whole pool, and
    the rows concerned keep their claim for a later run, as after any error.
    """
    engine = sa.create_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        hide_parameters=True,
        connect_args={"connect_timeout": connect_timeout, "application_name": "reversal_pipeline"},
    )
    sa.event.listen(engine, "checkin", _note_checkin)
    sa.event.listen(engine, "checkout", _ping_if_idle)
    return engine


def _note_checkin(dbapi_connection: Any, record: Any) -> None:
    if dbapi_connection is not None:
        record.info["rp_checked_in_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    checked_in_at = record.info.get("rp_checked_in_at")
    if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
        return  # new, or returned moments ago
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        dbapi_connection.rollback()
    except Exception as exc:
        # The pool discards this connection and retries the checkout with a fresh one.
        raise sa.exc.DisconnectionError(f"stale pooled connection: {exc}") from exc


def check_connection(engine: sa.Engine) -> None:
    """Connect once, turning any failure into a one-line, password-free error."""
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        reason = _first_line(str(getattr(exc, "orig", exc)))
        if engine.url.password:  # a driver may echo its DSN; never let the password through
            reason = reason.replace(str(engine.url.password), "***")
        raise DatabaseUnavailable(
            f"cannot connect to the database at {describe_target(engine.url)} "
            f"({mask_url(engine.url)}): {reason}"
        ) from None


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line[:300]
