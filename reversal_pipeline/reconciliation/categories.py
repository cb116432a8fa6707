"""The kinds of drift reconciliation reports, how bad each is, and what to do about it.

An operator reads these explanations every morning, often without the code at
hand, so each one says what the two sides disagree on and the next step. The
names are stored in ``reconciliation_drift.category`` and used as Dagster
metadata keys: renaming one orphans the findings already stored under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    """``reconciliation_drift.severity``; the database CHECK allows exactly these."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


# Sort order for reports and queries: most urgent first (plain-string keys, for
# pandas .map and SQL CASE alike).
SEVERITY_RANK: dict[str, int] = {severity.value: rank for rank, severity in enumerate(Severity)}


class Category(StrEnum):
    """``reconciliation_drift.category``: one kind of disagreement between the DB and Stripe."""

    DB_REVERSED_STRIPE_NOT = "db_reversed_stripe_not"
    OVER_REVERSED = "over_reversed"
    REVERSAL_ID_MISMATCH = "reversal_id_mismatch"
    STRIPE_REVERSED_DB_FAILED = "stripe_reversed_db_failed"
    STRIPE_REVERSED_DB_PENDING = "stripe_reversed_db_pending"
    REVERSED_WITHOUT_REQUEST = "reversed_without_request"
    AMOUNT_OR_CURRENCY_MISMATCH = "amount_or_currency_mismatch"
    MISSING_AT_STRIPE = "missing_at_stripe"
    UNKNOWN_TO_DB = "unknown_to_db"
    STUCK_PENDING = "stuck_pending"
    DESTINATION_MISMATCH = "destination_mismatch"
    PARTIAL_REVERSAL_UNRECORDED = "partial_reversal_unrecorded"
    TRANSFERRED_AT_MISSING = "transferred_at_missing"
    # The refund side (refund_reconciliation, issue 18): finding_key is the Stripe refund id.
    REFUND_NOT_RECEIVED = "refund_not_received"
    REFUND_NOT_REVERSED = "refund_not_reversed"
    REFUND_AMOUNT_MISMATCH = "refund_amount_mismatch"


@dataclass(frozen=True, slots=True)
class DriftCategory:
    """A category with its default severity and the sentence an operator acts on."""

    category: Category
    severity: Severity
    explanation: str


_DEFINITIONS: tuple[DriftCategory, ...] = (
    DriftCategory(
        Category.DB_REVERSED_STRIPE_NOT,
        Severity.CRITICAL,
        "DB says reversed but Stripe shows no reversal, or less than the row's reversal target "
        "(its amount, or what partial refunds made it): the "
        "seller kept money we believe we recovered. Check the transfer in the Dashboard; if "
        "it is really not reversed, reopen the row (`reversal-pipeline reopen --id N --reason "
        "TEXT`, refused if Stripe shows the money back) so the job reverses it.",
    ),
    DriftCategory(
        Category.OVER_REVERSED,
        Severity.CRITICAL,
        "Stripe reversed more than the row's amount, or more than its reversal target (what "
        "its refunds made the seller owe): we took back too much from the seller. Escalate to "
        "finance "
        "to return the excess to the seller; find which run sent the extra reversal.",
    ),
    DriftCategory(
        Category.REVERSAL_ID_MISMATCH,
        Severity.HIGH,
        "The row's stripe_reversal_id is not among the transfer's reversals at Stripe: the "
        "recorded id is wrong (another transfer's reversal, or test/live mix-up). Look up the "
        "recorded id in Stripe and correct the row by hand, audited.",
    ),
    DriftCategory(
        Category.STRIPE_REVERSED_DB_FAILED,
        Severity.HIGH,
        "Row is permanently_failed but Stripe shows the transfer fully reversed: the money is "
        "back, the DB is wrong. Run the reconciliation repair for this day (it marks the row "
        "reversed with Stripe's reversal id, audited); do not requeue it.",
    ),
    DriftCategory(
        Category.STRIPE_REVERSED_DB_PENDING,
        Severity.MEDIUM,
        "Row is reversal_pending but Stripe already shows the transfer reversed (a lost reply "
        "or an out-of-band reversal). The job will confirm it on its next attempt; if it "
        "persists, run the reconciliation repair for this day.",
    ),
    DriftCategory(
        Category.REVERSED_WITHOUT_REQUEST,
        Severity.CRITICAL,
        "Stripe shows a reversal on a transfer whose row was never asked to be reversed (status "
        "pending/completed/failed, no reversal_requested_at): money was taken back from a "
        "seller without a refund. Find who reversed it (Dashboard, script) and escalate.",
    ),
    DriftCategory(
        Category.AMOUNT_OR_CURRENCY_MISMATCH,
        Severity.HIGH,
        "The row's amount or currency differs from the Stripe transfer's: a reversal of the "
        "row's amount would be wrong. Compare with the order, correct the row by hand, audited.",
    ),
    DriftCategory(
        Category.MISSING_AT_STRIPE,
        Severity.HIGH,
        "The row's transfer is not in Stripe's list of that day's transfers. Likely cause: the "
        "API key is for another platform account or the wrong mode (test vs live); otherwise "
        "the id is corrupt or the row's transferred_at day is wrong. Check the key first.",
    ),
    DriftCategory(
        Category.UNKNOWN_TO_DB,
        Severity.MEDIUM,
        "Stripe has a transfer of that day that no row records: a payout the application did "
        "not save (or made outside it). It can never be reversed by the job; find its order "
        "from the transfer's metadata and create or link the row.",
    ),
    DriftCategory(
        Category.STUCK_PENDING,
        Severity.MEDIUM,
        "Row is reversal_pending but overdue (next_retry_at long past or missing) or requested "
        "long ago: the job is not reversing it. Check that reversal_job runs and the row's "
        "error_message; high after 7 days or when next_retry_at is missing.",
    ),
    DriftCategory(
        Category.DESTINATION_MISMATCH,
        Severity.CRITICAL,
        "The Stripe transfer went to another connected account than the row's "
        "stripe_account_id (e.g. ids swapped between two sellers): reversing it would debit "
        "the wrong seller. Hold reversals of the row, find the right transfer for the seller "
        "from the order, and correct the row by hand, audited.",
    ),
    DriftCategory(
        Category.PARTIAL_REVERSAL_UNRECORDED,
        Severity.HIGH,
        "Row is reversal_pending or permanently_failed but Stripe shows part of the transfer "
        "already reversed (details: amount, amount_reversed): money partly recovered that the "
        "database does not know. Find who reversed it; do not requeue before the row records "
        "what Stripe already took back.",
    ),
    DriftCategory(
        Category.TRANSFERRED_AT_MISSING,
        Severity.HIGH,
        "Row has a Stripe transfer id but no transferred_at, so no day's reconciliation read "
        "it; it was matched by the transfer's own created time (details). Set transferred_at "
        "from the transfer, audited, then run validate-constraints.",
    ),
)

_REFUND_DEFINITIONS: tuple[DriftCategory, ...] = (
    DriftCategory(
        Category.REFUND_NOT_RECEIVED,
        Severity.CRITICAL,
        "Stripe shows this refund succeeded but refund_events has no row for its id: no "
        "reversal was ever started, the seller kept the money. Likely a webhook handler that "
        "failed, or a refund made in the Dashboard. Run `reversal-pipeline pull-refunds "
        "--since DAY` (or record it with request_reversal); the next reconciliation resolves "
        "this once the reversal is done.",
    ),
    DriftCategory(
        Category.REFUND_NOT_REVERSED,
        Severity.HIGH,
        "The refund was received, but the reversal it asked for is missing, failed, or smaller "
        "than the refund's share (details: outcome, and per seller transfer its share, target, "
        "amount_reversed, status). Open event: see its outcome (waiting, refused, expired); "
        "permanently_failed row: read its error_message and requeue it; reversal_pending: "
        "check that reversal_job runs.",
    ),
    DriftCategory(
        Category.REFUND_AMOUNT_MISMATCH,
        Severity.HIGH,
        "The refund event's amount or currency differs from Stripe's refund (a whole-order "
        "event, amount NULL, matches only a refund of the whole charge): the seller was "
        "reversed by the wrong amount, or will be. Compare the event with the refund in the "
        "Dashboard; correct the seller transfer's target by hand, audited.",
    ),
)
_DEFINITIONS += _REFUND_DEFINITIONS

# The refund side's categories; every other category is the transfer side's.
REFUND_CATEGORIES: frozenset[Category] = frozenset(d.category for d in _REFUND_DEFINITIONS)

CATEGORIES: dict[Category, DriftCategory] = {d.category: d for d in _DEFINITIONS}

# The only categories the repair may fix: Stripe's reversal proves the DB wrong,
# and a reversal at Stripe cannot be undone, so the proof does not go stale.
REPAIRABLE: frozenset[Category] = frozenset(
    {Category.STRIPE_REVERSED_DB_PENDING, Category.STRIPE_REVERSED_DB_FAILED}
)


def severity_of(category: Category | str) -> Severity:
    """The default severity of ``category`` (stuck_pending may be raised per finding)."""
    return CATEGORIES[Category(category)].severity


def explanation_of(category: Category | str) -> str:
    """The operator-facing sentence for ``category``."""
    return CATEGORIES[Category(category)].explanation
