"""DAGSTER_HOME and its storage: the instance the demo writes and ``dev`` shows.

``dagster.yaml`` next to this module is the template (shipped in the wheel,
and kept out of the repository's root on purpose: a ``dagster.yaml`` there is
read as the instance by ``dg`` and ``dagster`` run from the root, which then
fail without ``DAGSTER_PG_URL``). It reads its storage URL
from ``DAGSTER_PG_URL``, a database of its own (``dagster``) on the same
PostgreSQL server as the application database. dagster-postgres is tested
with psycopg2 and hands the URL to SQLAlchemy, whose default driver for a
bare ``postgresql://`` is psycopg 3 since 2.1 (its NOTIFY breaks there), so
the URL names ``postgresql+psycopg2`` explicitly. psycopg2 reads a
unix-socket folder from ``?host=``, as the embedded server uses.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

import sqlalchemy as sa

from reversal_pipeline.db.embedded import ensure_database, state_dir
from reversal_pipeline.environment import DAGSTER_HOME_ENV, DAGSTER_PG_URL_ENV, setting
from reversal_pipeline.errors import ConfigurationError

DAGSTER_DATABASE = "dagster"


def template_path() -> Path:
    """The instance template shipped with the package."""
    return Path(__file__).resolve().parent / "dagster.yaml"


def default_dagster_home() -> Path:
    """``$DAGSTER_HOME`` when set, else ``.reversal_pipeline/dagster_home``."""
    configured = setting(DAGSTER_HOME_ENV)
    return Path(configured).resolve() if configured else state_dir() / "dagster_home"


def psycopg2_url(sqlalchemy_url: str, database: str) -> str:
    """Same server as ``sqlalchemy_url``, database ``database``, as dagster-postgres wants it."""
    url = sa.make_url(sqlalchemy_url).set(drivername="postgresql+psycopg2", database=database)
    return url.render_as_string(hide_password=False)


def prepare_dagster_home(
    server_url: str, *, home: Path | None = None, database: str = DAGSTER_DATABASE
) -> Path:
    """Create the storage database, copy the template, and export both variables.

    Returns the folder. An existing ``DAGSTER_PG_URL`` is kept: the operator
    chose where Dagster's storage lives. The template is copied only when it
    changed, so a running ``dev`` never sees its instance file rewritten.
    """
    home = home or default_dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    if not setting(DAGSTER_PG_URL_ENV):
        try:
            storage_url = ensure_database(server_url, database)
        except sa.exc.SQLAlchemyError as exc:
            raise ConfigurationError(
                f"cannot create database {database!r} for Dagster's storage "
                f"({type(exc).__name__}); create it, or set {DAGSTER_PG_URL_ENV}"
            ) from None
        os.environ[DAGSTER_PG_URL_ENV] = psycopg2_url(storage_url, database)
    template = template_path()
    target = home / "dagster.yaml"
    if not target.is_file() or not filecmp.cmp(template, target, shallow=False):
        shutil.copyfile(template, target)
    os.environ[DAGSTER_HOME_ENV] = str(home)
    return home
