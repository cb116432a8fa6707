"""Alembic environment for the application database.

The URL comes from the Alembic config (set by ``reversal_pipeline.db.migrate``)
or, when Alembic is run by hand, from ``REVERSAL_DATABASE_URL``. Migrations
run in one transaction each, so a failed upgrade leaves nothing half-applied.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from reversal_pipeline.db.tables import metadata
from reversal_pipeline.db.url import normalize_url
from reversal_pipeline.environment import DATABASE_URL_ENV

config = context.config
target_metadata = metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get(DATABASE_URL_ENV, "")
    if not url:
        raise RuntimeError("set REVERSAL_DATABASE_URL (or use `reversal-pipeline migrate`)")
    return normalize_url(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, target_metadata=target_metadata, transaction_per_migration=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(_url(), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        context.configure(
            connection=conn, target_metadata=target_metadata, transaction_per_migration=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
