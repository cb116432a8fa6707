"""Asset checks on the reversal outcomes: the invariants an operator must never miss."""

import dagster as dg
import sqlalchemy as sa

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reversals.assets import reversal_outcomes
from reversal_pipeline.defs.reversals.metadata import (
    EXPIRED_CLAIM_COLUMNS,
    PERMANENT_FAILURE_COLUMNS,
    rows_table,
)

EXPIRED_CLAIM_GRACE_MINUTES = 15
LIST_LIMIT = 20


def _rows(database: DatabaseResource, sql: str, **params: object) -> list[sa.RowMapping]:
    with database.get_engine().connect() as connection:
        return list(connection.execute(sa.text(sql), params).mappings())


@dg.asset_check(asset=reversal_outcomes, blocking=False)
def no_pending_without_next_retry_at(database: DatabaseResource) -> dg.AssetCheckResult:
    """A reversal_pending row with NULL next_retry_at is never due: the money would stay put."""
    ids = [
        row["id"]
        for row in _rows(
            database,
            "SELECT id FROM seller_transfers WHERE status = 'reversal_pending'"
            " AND next_retry_at IS NULL ORDER BY id LIMIT :n",
            n=LIST_LIMIT,
        )
    ]
    return dg.AssetCheckResult(
        passed=not ids,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"violating_ids": dg.MetadataValue.json(list(ids)), "count_shown": len(ids)},
        description=None
        if not ids
        else "rows never due: set next_retry_at, then run `reversal-pipeline validate-constraints`",
    )


@dg.asset_check(asset=reversal_outcomes, blocking=False)
def no_long_expired_claims(database: DatabaseResource) -> dg.AssetCheckResult:
    """A claim long past its lease means a run died holding rows (they are reclaimed anyway)."""
    rows = _rows(
        database,
        "SELECT id, claimed_by, claim_expires_at FROM seller_transfers"
        " WHERE claimed_by IS NOT NULL"
        " AND claim_expires_at < now() - make_interval(mins => :grace)"
        " ORDER BY claim_expires_at LIMIT :n",
        grace=EXPIRED_CLAIM_GRACE_MINUTES,
        n=LIST_LIMIT,
    )
    return dg.AssetCheckResult(
        passed=not rows,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "expired_claims": len(rows),
            "rows": rows_table(rows, EXPIRED_CLAIM_COLUMNS),
        },
    )


@dg.asset_check(asset=reversal_outcomes, blocking=False)
def no_new_permanent_failures(database: DatabaseResource) -> dg.AssetCheckResult:
    """Rows the job gave up on and no person has dealt with yet (requeue or resolve).

    Read from the rows' state, not from this run's audit rows: a check filtered on
    its own run id, run alone from the UI, would see nothing and pass while rows
    wait for a person. This one answers the same wherever it is evaluated.
    """
    rows = _rows(
        database,
        "SELECT id, stripe_transfer_id, error_message, updated_at FROM seller_transfers"
        " WHERE status = 'permanently_failed' ORDER BY updated_at DESC, id LIMIT :n",
        n=LIST_LIMIT,
    )
    [total] = [
        r["n"]
        for r in _rows(
            database,
            "SELECT count(*) AS n FROM seller_transfers WHERE status = 'permanently_failed'",
        )
    ]
    return dg.AssetCheckResult(
        passed=total == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "new_permanently_failed": total,
            "rows": rows_table(rows, PERMANENT_FAILURE_COLUMNS),
        },
    )
