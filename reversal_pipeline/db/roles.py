"""The two NOLOGIN roles of the DESIGN contract, and what each may touch.

``reversal_job`` is what the jobs, sensors and operator commands run as (a
deployer grants it to their login user); ``reversal_reader`` is read-only, for
reports and dashboards. Neither owns a table, so neither can DROP, ALTER or
TRUNCATE one: only the owner (the user that runs ``migrate``) can do DDL.

Why not in a migration: roles are cluster-wide and a new table needs its
grants, so the grants are re-applied idempotently after every ``migrate``
(``reversal_pipeline.db.migrate.upgrade``) from the one map below. A table that
is not in ``JOB_PRIVILEGES`` gets nothing from either role (least privilege;
another application's tables in a shared schema stay untouched), and
``tests/db/test_roles.py`` fails when a table of ``tables.metadata`` is missing
here, so a new table cannot ship ungranted by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa


class Role(StrEnum):
    JOB = "reversal_job"
    READER = "reversal_reader"


#: Per table, what ``reversal_job`` may do. No DELETE or UPDATE on the audit
#: table, no TRUNCATE anywhere; DELETE only on the budget's holder list, which
#: is bookkeeping about live processes, not business data.
JOB_PRIVILEGES: dict[str, tuple[str, ...]] = {
    "seller_transfers": ("SELECT", "UPDATE"),
    # INSERT: refund intake from Stripe records events; UPDATE: marks them processed.
    "refund_events": ("SELECT", "INSERT", "UPDATE"),
    "reversal_attempts": ("SELECT", "INSERT"),
    # Append-only like the audit table: every outcome a refund event goes through.
    "refund_event_history": ("SELECT", "INSERT"),
    # Append-only too: each refund's share of a transfer's reversal target.
    "refund_allocations": ("SELECT", "INSERT"),
    # Written by a trigger, under the caller's rights, when transferred_at moves day.
    "seller_transfer_day_moves": ("SELECT", "INSERT"),
    "reconciliation_drift": ("SELECT", "INSERT", "UPDATE"),
    "reconciliation_runs": ("SELECT", "INSERT", "UPDATE"),
    "stripe_budget": ("SELECT", "INSERT", "UPDATE"),
    "stripe_budget_holders": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    # Refunds from Stripe that name no order (migration 0011): kept, resolved, never deleted.
    "unplaced_stripe_refunds": ("SELECT", "INSERT", "UPDATE"),
    "unplaced_stripe_refund_history": ("SELECT", "INSERT"),
    # The CLI and the code location compare the schema revision with their own.
    "alembic_version": ("SELECT",),
}


@dataclass(frozen=True)
class RoleReport:
    """What ``grant_roles`` did, for the ``migrate`` command to print."""

    created: tuple[str, ...]
    missing: tuple[str, ...]  # could not be created: the migrating user lacks CREATEROLE
    granted_tables: tuple[str, ...]


def grant_roles(connection: sa.Connection) -> RoleReport:
    """Create the roles if missing (if allowed) and (re)grant them on this database.

    Idempotent: GRANT of a privilege already held is a no-op, and each table's
    privileges are first revoked, so removing one from the map takes it away.
    """
    created, missing = _ensure_roles(connection)
    present = [role for role in Role if role.value not in missing]
    # Only our tables: another application's tables in the same schema are
    # none of these roles' business, and are left exactly as they are.
    tables = _existing_tables(connection) & set(JOB_PRIVILEGES)
    granted: list[str] = []
    for role in present:
        connection.execute(sa.text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        connection.execute(sa.text(f"REVOKE CREATE ON SCHEMA public FROM {role}"))
    for table in sorted(tables):
        quoted = _quote(connection, table)
        for role in present:
            connection.execute(sa.text(f"REVOKE ALL ON TABLE {quoted} FROM {role}"))
        if Role.READER in present:
            connection.execute(sa.text(f"GRANT SELECT ON TABLE {quoted} TO {Role.READER}"))
        if Role.JOB in present:
            privileges = ", ".join(JOB_PRIVILEGES[table])
            connection.execute(sa.text(f"GRANT {privileges} ON TABLE {quoted} TO {Role.JOB}"))
            granted.append(table)
    if Role.JOB in present:
        # Identity columns draw from sequences; INSERT needs USAGE on them.
        connection.execute(sa.text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {Role.JOB}"))
    return RoleReport(created=tuple(created), missing=tuple(missing), granted_tables=tuple(granted))


def _ensure_roles(connection: sa.Connection) -> tuple[list[str], list[str]]:
    can_create = connection.execute(
        sa.text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
    ).scalar_one()
    created: list[str] = []
    missing: list[str] = []
    for role in Role:
        if _role_exists(connection, role):
            continue
        if not can_create:
            missing.append(role.value)
            continue
        # Roles are cluster-wide: two databases migrating at once may race to
        # create the same role. A savepoint lets the loser carry on.
        try:
            with connection.begin_nested():
                connection.execute(sa.text(f"CREATE ROLE {role} NOLOGIN"))
            created.append(role.value)
        except sa.exc.ProgrammingError:
            if not _role_exists(connection, role):
                raise
    return created, missing


def _role_exists(connection: sa.Connection, role: Role) -> bool:
    return bool(
        connection.execute(
            sa.text("SELECT count(*) FROM pg_roles WHERE rolname = :name"), {"name": role.value}
        ).scalar_one()
    )


def _existing_tables(connection: sa.Connection) -> set[str]:
    rows = connection.execute(
        sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    ).scalars()
    return set(rows)


def _quote(connection: sa.Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote(name)
