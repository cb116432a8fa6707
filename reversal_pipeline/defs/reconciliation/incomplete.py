"""What a reconciliation run that could not read Stripe completely reports: red, never clean.

Shared by ``reversal_reconciliation`` and ``refund_reconciliation``: a day
whose listing stopped part-way (an outage, a revoked key) has findings we
cannot trust, so its completeness check fails (ERROR, alerted) and the run
fails; nothing is materialized that could read as "no drift".
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg


def fail_incomplete(
    check_name: str, what: str, error: str | None, metadata: dict[str, Any]
) -> Iterator[dg.AssetCheckResult]:
    """Yield the failed ``check_name``, then raise the run's failure (use with ``yield from``)."""
    yield dg.AssetCheckResult(
        check_name=check_name,
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"error": error or ""},
    )
    raise dg.Failure(
        description=f"{what}, not reported as clean: {error}",
        metadata=metadata,
    )
