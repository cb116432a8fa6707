"""Asset checks on the reversal outcomes: the invariants an operator must never miss.

The questions are asked in ``reversals/health.py``; these checks only say
pass or fail, how loud, and what to show.
"""

import dagster as dg

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.defs.reversals.assets import reversal_outcomes
from reversal_pipeline.defs.reversals.metadata import (
    EXPIRED_CLAIM_COLUMNS,
    PERMANENT_FAILURE_COLUMNS,
    rows_table,
)
from reversal_pipeline.reversals.health import (
    long_expired_claims,
    pending_without_next_retry_at,
    permanent_failures,
)


@dg.asset_check(asset=reversal_outcomes, blocking=False)
def no_pending_without_next_retry_at(database: DatabaseResource) -> dg.AssetCheckResult:
    """A reversal_pending row with NULL next_retry_at is never due: the money would stay put."""
    with database.get_engine().connect() as connection:
        ids = pending_without_next_retry_at(connection)
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
    with database.get_engine().connect() as connection:
        rows = long_expired_claims(connection)
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
    with database.get_engine().connect() as connection:
        failures = permanent_failures(connection)
    return dg.AssetCheckResult(
        passed=failures.total == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "new_permanently_failed": failures.total,
            "rows": rows_table(failures.newest, PERMANENT_FAILURE_COLUMNS),
        },
    )
