"""Finding NOT VALID constraints, the rows that break them, and validating them.

``validate-constraints`` must never half-succeed: it validates only when no
row violates any constraint, and otherwise names the violating rows so an
operator can fix them first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

VIOLATION_SAMPLE_SIZE = 20


@dataclass(frozen=True)
class UnvalidatedConstraint:
    table: str
    name: str
    definition: str
    violating_count: int
    violating_ids: tuple[int, ...] = field(default_factory=tuple)


def find_unvalidated(connection: sa.Connection) -> list[UnvalidatedConstraint]:
    """Every NOT VALID CHECK constraint in the public schema, with its violating rows."""
    rows = connection.execute(
        sa.text(
            """
            SELECT rel.relname AS table_name, con.conname AS name,
                   pg_get_constraintdef(con.oid) AS definition,
                   pg_get_expr(con.conbin, con.conrelid) AS expression
            FROM pg_constraint con
            JOIN pg_class rel ON rel.oid = con.conrelid
            JOIN pg_namespace ns ON ns.oid = rel.relnamespace
            WHERE NOT con.convalidated AND con.contype = 'c' AND ns.nspname = 'public'
            ORDER BY rel.relname, con.conname
            """
        )
    ).all()
    found: list[UnvalidatedConstraint] = []
    for row in rows:
        # The expression comes from pg_constraint itself, not from input.
        violating = f'FROM "{row.table_name}" WHERE NOT ({row.expression})'
        count = connection.execute(sa.text(f"SELECT count(*) {violating}")).scalar_one()
        ids = connection.execute(
            sa.text(f"SELECT id {violating} ORDER BY id LIMIT {VIOLATION_SAMPLE_SIZE}")
        ).scalars()
        found.append(
            UnvalidatedConstraint(
                table=row.table_name,
                name=row.name,
                definition=row.definition,
                violating_count=count,
                violating_ids=tuple(ids),
            )
        )
    return found


def validate_all(engine: sa.Engine) -> tuple[list[UnvalidatedConstraint], bool]:
    """Validate every NOT VALID constraint if none is violated.

    Returns the constraints found and whether they were validated. Runs in
    one transaction holding a SHARE lock on each table, so no row can start
    violating between the count and the VALIDATE.
    """
    with engine.begin() as connection:
        found = find_unvalidated(connection)
        for table in sorted({c.table for c in found}):
            connection.execute(sa.text(f'LOCK TABLE "{table}" IN SHARE MODE'))
        found = find_unvalidated(connection)
        if any(c.violating_count for c in found):
            return found, False
        for constraint in found:
            connection.execute(
                sa.text(f'ALTER TABLE "{constraint.table}" VALIDATE CONSTRAINT "{constraint.name}"')
            )
        return found, True
