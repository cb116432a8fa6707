"""Asset checks on the reversal outcomes: the invariants an operator must never miss."""

import dagster as dg
import sqlalchemy as sa

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reversals.assets import reversal_outcomes
from reversal_pipeline.defs.reversals.metadata import markdown_table

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
            "rows": dg.MetadataValue.md(
                markdown_table(rows, ["id", "claimed_by", "claim_expires_at"])
            ),
        },
    )


@dg.asset_check(asset=reversal_outcomes, blocking=False)
def no_new_permanent_failures(
    context: dg.AssetCheckExecutionContext, database: DatabaseResource
) -> dg.AssetCheckResult:
    """Rows this run gave up on: each needs a person (requeue or resolve)."""
    rows = _rows(
        database,
        "SELECT a.seller_transfer_id AS id, s.stripe_transfer_id, s.error_message"
        " FROM reversal_attempts a"
        " JOIN seller_transfers s ON s.id = a.seller_transfer_id"
        " WHERE a.run_id = :run_id AND a.status_after = 'permanently_failed'"
        " ORDER BY a.seller_transfer_id",
        run_id=context.run.run_id,
    )
    return dg.AssetCheckResult(
        passed=not rows,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "new_permanently_failed": len(rows),
            "rows": dg.MetadataValue.md(
                markdown_table(rows[:LIST_LIMIT], ["id", "stripe_transfer_id", "error_message"])
            ),
        },
    )
