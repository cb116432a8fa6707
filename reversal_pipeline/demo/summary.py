"""The demo's closing summary, read from the database (the same numbers the UI shows)."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from reversal_pipeline.db.tables import reconciliation_drift
from reversal_pipeline.db.tables import seller_transfers as st

#: Currencies without a minor unit (Stripe's list, the ones a marketplace meets).
ZERO_DECIMAL = frozenset({"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf",
                          "ugx", "vnd", "vuv", "xaf", "xof", "xpf"})  # fmt: skip


def major_units(amount: int, currency: str) -> str:
    """``123456, "usd"`` -> ``"1,234.56 USD"``; ``500, "jpy"`` -> ``"500 JPY"``."""
    if currency.lower() in ZERO_DECIMAL:
        return f"{amount:,} {currency.upper()}"
    return f"{amount / 100:,.2f} {currency.upper()}"


@dataclass
class DemoSummary:
    rows_per_status: dict[str, int]
    reversed_by_currency: dict[str, int]
    failures: list[tuple[int, str, str]]  # id, stripe transfer id, why
    retrying: int
    findings: dict[tuple[str, str], int] | None = None  # (category, severity) -> open findings
    in_grace: int = 0
    lines: list[str] = field(default_factory=list)


def build_summary(engine: sa.Engine, *, reconciled: bool) -> DemoSummary:
    with engine.connect() as connection:
        per_status: dict[str, int] = dict(
            connection.execute(
                sa.select(st.c.status, sa.func.count()).group_by(st.c.status).order_by(st.c.status)
            ).all()
        )
        by_currency = dict(
            connection.execute(
                sa.select(st.c.currency, sa.func.sum(st.c.amount))
                .where(st.c.status == "reversed")
                .group_by(st.c.currency)
                .order_by(st.c.currency)
            ).all()
        )
        failures = [
            (r.id, r.stripe_transfer_id or "-", r.error_message or "")
            for r in connection.execute(
                sa.select(st.c.id, st.c.stripe_transfer_id, st.c.error_message)
                .where(st.c.status == "permanently_failed")
                .order_by(st.c.id)
            )
        ]
        retrying = connection.execute(
            sa.select(sa.func.count()).where(
                st.c.status == "reversal_pending", st.c.retry_count > 0
            )
        ).scalar_one()
        findings = None
        in_grace = 0
        if reconciled:
            open_findings = reconciliation_drift.c.resolved_at.is_(None)
            findings = {
                (r.category, r.severity): r.n
                for r in connection.execute(
                    sa.select(
                        reconciliation_drift.c.category,
                        reconciliation_drift.c.severity,
                        sa.func.count().label("n"),
                    )
                    .where(open_findings, reconciliation_drift.c.in_grace.is_(False))
                    .group_by(reconciliation_drift.c.category, reconciliation_drift.c.severity)
                    .order_by(reconciliation_drift.c.category)
                )
            }
            in_grace = connection.execute(
                sa.select(sa.func.count()).where(open_findings, reconciliation_drift.c.in_grace)
            ).scalar_one()
    return DemoSummary(
        {k: int(v) for k, v in per_status.items()},
        {k: int(v) for k, v in by_currency.items()},
        failures,
        int(retrying),
        findings,
        int(in_grace),
    )


def summary_lines(summary: DemoSummary) -> list[str]:
    lines = ["", "== Summary =="]
    lines.append(
        "rows per status: "
        + ", ".join(f"{status} {count}" for status, count in summary.rows_per_status.items())
    )
    lines.append(
        "reversed: "
        + (
            ", ".join(major_units(a, c) for c, a in summary.reversed_by_currency.items())
            or "nothing"
        )
    )
    if summary.retrying:
        lines.append(f"still retrying after backoff: {summary.retrying} row(s)")
    lines.append(f"permanently failed ({len(summary.failures)}), each needs a person:")
    for row_id, transfer_id, why in summary.failures:
        lines.append(f"  #{row_id} {transfer_id}: {why}")  # whole: run_demo wraps it
    if summary.findings is None:
        lines.append("reconciliation: not in this build yet (no reconciliation_job): skipped")
    else:
        lines.append("reconciliation findings (open):")
        for (category, severity), count in summary.findings.items():
            lines.append(f"  {category:<28} {severity:<8} {count}")
        if not summary.findings:
            lines.append("  none")
        if summary.in_grace:
            lines.append(f"  (+{summary.in_grace} in grace: changed too recently to call drift)")
    return lines
