"""One place that turns a URL into a SQLAlchemy engine, and checks it can connect."""

from __future__ import annotations

import sqlalchemy as sa

from reversal_pipeline.db.url import describe_target, mask_url, normalize_url
from reversal_pipeline.errors import DatabaseUnavailable


def create_db_engine(url: str, *, pool_size: int = 10, connect_timeout: int = 10) -> sa.Engine:
    """An engine with a pool sized for the job's worker threads.

    ``hide_parameters`` keeps row values (which may include operator-typed
    text) out of SQLAlchemy's exception messages; ``pool_pre_ping`` survives
    a database restart between schedule ticks.
    """
    return sa.create_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={"connect_timeout": connect_timeout, "application_name": "reversal_pipeline"},
    )


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
