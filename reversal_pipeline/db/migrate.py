"""Alembic, driven from Python: upgrade to head, and report where a database stands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from reversal_pipeline.db.roles import RoleReport, grant_roles
from reversal_pipeline.errors import ConfigurationError


def migrations_dir() -> Path:
    """The Alembic folder: inside the wheel when installed, else the repository's."""
    package_copy = Path(__file__).resolve().parents[1] / "migrations"
    repo_copy = Path(__file__).resolve().parents[2] / "migrations"
    for candidate in (package_copy, repo_copy):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigurationError(f"migrations folder not found (looked in {repo_copy})")


def alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands against the migrations in this checkout."""

    current: str | None
    head: str
    pending: tuple[str, ...]

    @property
    def up_to_date(self) -> bool:
        return not self.pending


def schema_status(engine: sa.Engine) -> SchemaStatus:
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    assert head is not None
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    pending = tuple(
        rev.revision
        for rev in reversed(list(script.iterate_revisions(head, current or "base")))
        if rev.revision != current
    )
    return SchemaStatus(current=current, head=head, pending=pending)


def upgrade(engine: sa.Engine, revision: str = "head") -> RoleReport:
    """Upgrade to ``revision`` and (re)grant the database roles; at head, only the grants.

    The grants commit with the schema change, so a new table is never live
    without the privileges the job needs (and no more).
    """
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)
        return grant_roles(connection)


def downgrade(engine: sa.Engine, revision: str) -> None:
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), revision)


def describe_revision(revision: str) -> str:
    script = ScriptDirectory.from_config(alembic_config())
    rev = script.get_revision(revision)
    return f"{revision} ({(rev.doc or '').strip().splitlines()[0] if rev and rev.doc else ''})"
