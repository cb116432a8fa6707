"""A real PostgreSQL for the tests: embedded by default, or ``TEST_DATABASE_URL``.

One server per test session; a template database migrated to head once;
each test gets its own database cloned from the template (``CREATE DATABASE
... TEMPLATE``), which takes tens of milliseconds instead of a migration run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from reversal_pipeline.db import migrate
from reversal_pipeline.db.engine import create_db_engine
from reversal_pipeline.db.url import normalize_url

TEST_DATABASE_URL_ENV = "TEST_DATABASE_URL"
#: With ``TEST_DATABASE_URL``: a database on that server already migrated to head, cloned
#: by every test instead of migrating a template per session (mutation testing starts a
#: session per mutant; the migration was most of a short session). The owner of the server
#: made it from the same migrations and keeps it; the tests never write to it.
TEST_DATABASE_TEMPLATE_ENV = "TEST_DATABASE_TEMPLATE"


def _admin_engine(server_url: str) -> sa.Engine:
    return sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def _database_url(server_url: str, name: str) -> str:
    return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a server where the tests may create and drop databases."""
    external = os.environ.get(TEST_DATABASE_URL_ENV)
    if external:
        return normalize_url(external)
    from reversal_pipeline.db.embedded import start_embedded_server

    pgdata: Path = tmp_path_factory.mktemp("embedded-postgres") / "pgdata"
    return start_embedded_server(pgdata, delete_on_exit=True)


def create_database(server_url: str, prefix: str, template: str | None = None) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(server_url)
    with admin.connect() as connection:
        clause = f' TEMPLATE "{template}"' if template else ""
        connection.execute(sa.text(f'CREATE DATABASE "{name}"{clause}'))
    admin.dispose()
    return name


def drop_database(server_url: str, name: str) -> None:
    admin = _admin_engine(server_url)
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def migrated_template(postgres_server_url: str) -> Iterator[str]:
    """Name of a database migrated to head, used only as a template."""
    shared = os.environ.get(TEST_DATABASE_TEMPLATE_ENV)
    if shared and os.environ.get(TEST_DATABASE_URL_ENV):
        yield shared
        return
    name = create_database(postgres_server_url, "rp_template")
    engine = create_db_engine(_database_url(postgres_server_url, name))
    migrate.upgrade(engine)
    engine.dispose()
    yield name
    drop_database(postgres_server_url, name)


@pytest.fixture
def database_url(postgres_server_url: str, migrated_template: str) -> Iterator[str]:
    """A fresh database at head, for this test only."""
    name = create_database(postgres_server_url, "rp_test", template=migrated_template)
    yield _database_url(postgres_server_url, name)
    drop_database(postgres_server_url, name)


@pytest.fixture
def empty_database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database with no schema at all, for migration tests."""
    name = create_database(postgres_server_url, "rp_empty")
    yield _database_url(postgres_server_url, name)
    drop_database(postgres_server_url, name)


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()
