"""What every command shares: one-line errors, and finding the database."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click
import sqlalchemy as sa

from reversal_pipeline.cli.group import REFUSED_EXIT_CODE, one_line
from reversal_pipeline.db.engine import check_connection, create_db_engine
from reversal_pipeline.db.url import database_url_from_env
from reversal_pipeline.environment import DATABASE_URL_ENV
from reversal_pipeline.errors import ReversalPipelineError

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(func: F) -> F:
    """Turn the package's own errors into one line on stderr and exit code 2.

    The command group does this for every command (``cli.group``); this
    decorator is only for a command function called outside the group.
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ReversalPipelineError as exc:
            click.echo(f"error: {one_line(str(exc))}", err=True)
            sys.exit(REFUSED_EXIT_CODE)

    return wrapper  # type: ignore[return-value]


def resolve_database_url() -> str:
    """``REVERSAL_DATABASE_URL`` when set; otherwise start the embedded server.

    The embedded URL is exported to ``REVERSAL_DATABASE_URL`` so the Dagster
    processes this command starts use the same database.
    """
    url = database_url_from_env()
    if url is not None:
        return url
    from reversal_pipeline.db.embedded import ensure_database, start_embedded_server

    click.echo(f"{DATABASE_URL_ENV} is unset: using the embedded PostgreSQL", err=True)
    url = ensure_database(start_embedded_server(), "reversal_pipeline")
    os.environ[DATABASE_URL_ENV] = url
    return url


def connected_engine() -> sa.Engine:
    engine = create_db_engine(resolve_database_url())
    check_connection(engine)
    return engine
