"""Compare one day of ``seller_transfers`` with Stripe's transfers of that day.

One outer merge pairs each row with its transfer; every drift category is a
vectorized boolean mask over the merged frame, so a million rows compare in
about a second and the logic of each category reads as one line. Python
loops only run over the *findings* (to build their ``details``), which are
few on a healthy day.

A finding whose row changed within the grace period is kept with
``in_grace=True`` and ``grace_ends_at``: the job or the application may be
mid-way through writing it, so it is not drift *yet*. It is not forgotten:
when its grace ends the day is stale (``stale_days``) and the finding counts
as drift until a later run sees it gone.

Findings belong to one UTC day (``day=``): the frames may reach a margin
into the neighbouring days so that a transfer stamped 23:59:59 in the
database and 00:00:01 at Stripe is matched, and each finding is then kept
by the day its row (or, for a Stripe-only transfer, the transfer) is on.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from reversal_pipeline.db.statuses import TransferStatus
from reversal_pipeline.reconciliation.categories import (
    Category,
    Severity,
    explanation_of,
    severity_of,
)
from reversal_pipeline.reconciliation.frames import (
    FIELD_SEPARATOR,
    ID_DTYPE,
    LIST_SEPARATOR,
    UTC_DTYPE,
)

DEFAULT_GRACE_PERIOD = timedelta(hours=1)
DEFAULT_STUCK_MARGIN = timedelta(hours=1)
DEFAULT_STUCK_MAX_AGE = timedelta(days=3)
DEFAULT_HIGH_AFTER = timedelta(days=7)
DEFAULT_DAY_MARGIN = timedelta(minutes=15)

FINDING_COLUMNS: tuple[str, ...] = (
    "category",
    "severity",
    "finding_key",
    "seller_transfer_id",
    "stripe_transfer_id",
    "stripe_reversal_ids",
    "amount",
    "currency",
    "explanation",
    "details",
    "in_grace",
    "grace_ends_at",
)

# Plain strings, so pandas sees values of the column's own type, not enum members.
# Statuses in which the row was never asked to be reversed.
_NOT_REQUESTED = tuple(
    s.value for s in (TransferStatus.PENDING, TransferStatus.COMPLETED, TransferStatus.FAILED)
)
# Statuses in which a row without a transfer id is expected: no payout was made (yet).
_NO_TRANSFER_EXPECTED = (TransferStatus.PENDING.value, TransferStatus.FAILED.value)
# Statuses in which a reversal was asked for but the row records none done.
_ASKED_NOT_DONE = (
    TransferStatus.REVERSAL_PENDING.value,
    TransferStatus.PERMANENTLY_FAILED.value,
)

_REPAIR_DETAILS = (
    "status",
    "amount_reversed",
    "stripe_currency",
    "repair_reversal_id",
    "repair_reversed_at",
)

# Issue 17: every finding about a row shows what the seller owes back and what the job
# recorded Stripe confirming, so a person reads a partial reversal against its target.
# (``amount_reversed`` in details stays Stripe's total on the transfer.)
_TARGET_DETAILS = ("reversal_target", "db_amount_reversed")

# What each finding's ``details`` holds, beyond the finding's own columns.
_DETAIL_COLUMNS: dict[Category, tuple[str, ...]] = {
    Category.DB_REVERSED_STRIPE_NOT: (
        "status",
        "stripe_reversal_id",
        "amount_reversed",
        "reversal_count",
    ),
    Category.OVER_REVERSED: (
        "stripe_amount",
        "amount_reversed",
        "reversal_count",
        "our_reversal_count_max",
        "seller_transfer_ids_in_metadata",
    ),
    Category.REVERSAL_ID_MISMATCH: ("stripe_reversal_id", "reversal_count"),
    Category.STRIPE_REVERSED_DB_FAILED: _REPAIR_DETAILS,
    Category.STRIPE_REVERSED_DB_PENDING: _REPAIR_DETAILS,
    Category.REVERSED_WITHOUT_REQUEST: (
        "status",
        "amount_reversed",
        "reversal_count",
        "seller_transfer_ids_in_metadata",
    ),
    Category.AMOUNT_OR_CURRENCY_MISMATCH: ("status", "stripe_amount", "stripe_currency"),
    Category.MISSING_AT_STRIPE: ("status", "stripe_account_id", "transferred_at"),
    Category.UNKNOWN_TO_DB: ("stripe_created", "destination", "livemode", "amount_reversed"),
    Category.STUCK_PENDING: ("next_retry_at", "reversal_requested_at"),
    Category.DESTINATION_MISMATCH: ("status", "stripe_account_id", "destination"),
    Category.PARTIAL_REVERSAL_UNRECORDED: (
        "status",
        "stripe_amount",
        "amount_reversed",
        "reversal_count",
    ),
    Category.TRANSFERRED_AT_MISSING: ("status", "stripe_created"),
}
DETAIL_COLUMNS: dict[Category, tuple[str, ...]] = {
    category: names if category is Category.UNKNOWN_TO_DB else (*names, *_TARGET_DETAILS)
    for category, names in _DETAIL_COLUMNS.items()
}


def compare(
    db_frame: pd.DataFrame,
    stripe_frame: pd.DataFrame,
    *,
    now: datetime,
    grace_period: timedelta = DEFAULT_GRACE_PERIOD,
    stuck_margin: timedelta = DEFAULT_STUCK_MARGIN,
    stuck_max_age: timedelta = DEFAULT_STUCK_MAX_AGE,
    high_after: timedelta = DEFAULT_HIGH_AFTER,
    day: tuple[datetime, datetime] | None = None,
) -> pd.DataFrame:
    """Every drift finding of the day, one row per (category, row or Stripe transfer).

    ``db_frame`` and ``stripe_frame`` are the frames of
    ``reconciliation.frames``. A row may appear under several categories
    (e.g. stuck and already reversed at Stripe); each is its own finding.
    ``now`` must be timezone-aware: every timestamp in the frames is UTC.
    ``day`` (start, end): keep only the findings this day owns (frames read
    with a margin around the day hold rows and transfers of its neighbours).
    """
    if now.tzinfo is None:
        raise ValueError("compare() needs a timezone-aware 'now' (UTC)")
    matched = match_transfers(db_frame, stripe_frame)
    now_ts = pd.Timestamp(now)
    masks = category_masks(
        matched, now=now_ts, stuck_margin=stuck_margin, stuck_max_age=stuck_max_age
    )
    if day is not None:
        owned = _owned_by_day(matched, day)
        masks = {category: mask & owned for category, mask in masks.items()}
    grace_ends_at = _grace_ends_at(matched, grace_period)
    in_grace = (grace_ends_at > now_ts).to_numpy()
    severities = _stuck_severity(matched, now_ts - high_after)
    parts = [
        _category_findings(
            matched, category, np.flatnonzero(mask), in_grace, grace_ends_at, severities
        )
        for category, mask in masks.items()
        if mask.any()
    ]
    if not parts:
        return empty_findings()
    return pd.concat(parts, ignore_index=True)


def match_transfers(db_frame: pd.DataFrame, stripe_frame: pd.DataFrame) -> pd.DataFrame:
    """The single outer merge of rows and Stripe transfers on the transfer id.

    Both id columns are first encoded against one shared dictionary, so the
    merge joins int64 codes instead of hashing a million strings twice (3x
    faster). Rows without a transfer id get code -1, which no transfer has.
    ``side`` tells ``left_only`` (DB only), ``right_only`` (Stripe only), ``both``.
    """
    db_keys, stripe_keys = _shared_codes(
        db_frame["stripe_transfer_id"], stripe_frame["transfer_id"]
    )
    return db_frame.assign(transfer_key=db_keys).merge(
        stripe_frame.assign(transfer_key=stripe_keys),
        on="transfer_key",
        how="outer",
        indicator="side",
        sort=False,
    )


def _shared_codes(db_ids: pd.Series, stripe_ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    both = pa.concat_arrays([_arrow_strings(db_ids), _arrow_strings(stripe_ids)])
    codes = pc.fill_null(pc.dictionary_encode(both).indices, -1).to_numpy().astype(np.int64)
    return codes[: len(db_ids)], codes[len(db_ids) :]


def _arrow_strings(values: pd.Series) -> pa.Array:
    array = pa.array(values.astype(ID_DTYPE).array)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(pa.large_string())


def category_masks(
    matched: pd.DataFrame,
    *,
    now: pd.Timestamp,
    stuck_margin: timedelta,
    stuck_max_age: timedelta,
) -> dict[Category, np.ndarray]:
    """One boolean mask per category over the merged frame (the matching rules)."""
    side = matched["side"]
    both = (side == "both").to_numpy()
    status = matched["status"]
    amount = _floats(matched["amount"])
    reversed_amount = _floats(matched["amount_reversed"])
    # Issue 17: a row owes its reversal_target (its amount, or what partial refunds
    # made it); "reversed" means Stripe shows that much, no less and no more.
    target = _targets(matched, amount)
    recorded = _recorded(matched, reversed_amount)
    is_reversed = both & (status == TransferStatus.REVERSED).to_numpy()
    pending = (status == TransferStatus.REVERSAL_PENDING).to_numpy()
    fully_reversed = both & (target > 0) & (reversed_amount >= target)
    partly_reversed = both & (reversed_amount > 0) & (reversed_amount < target)
    asked_not_done = status.isin(_ASKED_NOT_DONE).to_numpy()
    return {
        # Under-reversed: the row says done, Stripe shows less than its target.
        Category.DB_REVERSED_STRIPE_NOT: is_reversed & (reversed_amount < target),
        # Over-reversed beyond the target (several reversals of ours for one row are
        # normal since partial refunds; more than the row owes is not).
        Category.OVER_REVERSED: both
        & ((reversed_amount > amount) | ((target > 0) & (reversed_amount > target))),
        Category.REVERSAL_ID_MISMATCH: _reversal_id_unknown(matched, is_reversed),
        Category.STRIPE_REVERSED_DB_FAILED: fully_reversed
        & (status == TransferStatus.PERMANENTLY_FAILED).to_numpy(),
        Category.STRIPE_REVERSED_DB_PENDING: fully_reversed & pending,
        Category.REVERSED_WITHOUT_REQUEST: both
        & status.isin(_NOT_REQUESTED).to_numpy()
        & matched["reversal_requested_at"].isna().to_numpy()
        & (reversed_amount > 0),
        Category.AMOUNT_OR_CURRENCY_MISMATCH: both & _amount_or_currency_differs(matched),
        Category.MISSING_AT_STRIPE: (side == "left_only").to_numpy()
        & ~(matched["stripe_transfer_id"].isna() & status.isin(_NO_TRANSFER_EXPECTED)).to_numpy(),
        Category.UNKNOWN_TO_DB: (side == "right_only").to_numpy(),
        Category.STUCK_PENDING: pending
        & _overdue(matched, now=now, stuck_margin=stuck_margin, stuck_max_age=stuck_max_age),
        Category.DESTINATION_MISMATCH: both & _destination_differs(matched),
        # Part reversed at Stripe that the row does not record (a raised target whose
        # earlier parts the job confirmed is recorded, not drift).
        Category.PARTIAL_REVERSAL_UNRECORDED: partly_reversed
        & asked_not_done
        & (recorded != reversed_amount),
        Category.TRANSFERRED_AT_MISSING: matched["stripe_transfer_id"].notna().to_numpy()
        & matched["transferred_at"].isna().to_numpy(),
    }


def _targets(matched: pd.DataFrame, amount: np.ndarray) -> np.ndarray:
    """Each row's reversal_target; unknown (no column, or empty) means its whole amount.

    The seed's meaning, kept for frames built without targets; the database
    always has one (a trigger gives a row on its way back its amount).
    """
    if "reversal_target" not in matched:
        return amount
    targets = _floats(matched["reversal_target"])
    return np.where(np.isnan(targets), amount, targets)


def _recorded(matched: pd.DataFrame, reversed_amount: np.ndarray) -> np.ndarray:
    """What each row records Stripe confirming; without the column, nothing recorded."""
    if "db_amount_reversed" not in matched:
        return np.zeros_like(reversed_amount)
    return np.nan_to_num(_floats(matched["db_amount_reversed"]), nan=0.0)


def _destination_differs(matched: pd.DataFrame) -> np.ndarray:
    """Rows whose transfer went to another connected account than the row names.

    A row without ``stripe_account_id`` cannot be compared (nothing to compare
    with); a transfer without ``destination`` against a row that has one is drift.
    """
    account, destination = matched["stripe_account_id"], matched["destination"]
    names = account.cat.categories.union(destination.cat.categories)
    account_codes = account.cat.set_categories(names).cat.codes.to_numpy()
    destination_codes = destination.cat.set_categories(names).cat.codes.to_numpy()
    return (account_codes >= 0) & (account_codes != destination_codes)


def _owned_by_day(matched: pd.DataFrame, day: tuple[datetime, datetime]) -> np.ndarray:
    """The findings of ``day``: by the row's ``transferred_at``, else the transfer's ``created``.

    Half-open [start, end), like the partition, so a row at exactly midnight
    belongs to the new day and to no other.
    """
    anchor = matched["transferred_at"].fillna(matched["stripe_created"])
    start, end = pd.Timestamp(day[0]), pd.Timestamp(day[1])
    return ((anchor >= start) & (anchor < end)).to_numpy()


def _floats(values: pd.Series) -> np.ndarray:
    # Amounts become float64 in the outer merge (NaN for the missing side);
    # minor-unit amounts are far below 2**53, so comparisons stay exact.
    return values.to_numpy(dtype="float64", na_value=np.nan)


def _amount_or_currency_differs(matched: pd.DataFrame) -> np.ndarray:
    amounts_differ = _floats(matched["amount"]) != _floats(matched["stripe_amount"])
    # Codes over the union of both sides' categories: no per-row string comparison.
    db_currency, stripe_currency = matched["currency"], matched["stripe_currency"]
    currencies = db_currency.cat.categories.union(stripe_currency.cat.categories)
    db_codes = db_currency.cat.set_categories(currencies).cat.codes.to_numpy()
    stripe_codes = stripe_currency.cat.set_categories(currencies).cat.codes.to_numpy()
    return amounts_differ | (db_codes != stripe_codes)


def _overdue(
    matched: pd.DataFrame, *, now: pd.Timestamp, stuck_margin: timedelta, stuck_max_age: timedelta
) -> np.ndarray:
    next_retry_at = matched["next_retry_at"]
    never_due = next_retry_at.isna()  # grandfathered rows the job can never pick up
    retry_overdue = next_retry_at < now - stuck_margin
    requested_long_ago = matched["reversal_requested_at"] < now - stuck_max_age
    return (never_due | retry_overdue | requested_long_ago).to_numpy()


def _reversal_id_unknown(matched: pd.DataFrame, is_reversed: np.ndarray) -> np.ndarray:
    """Reversed rows whose recorded reversal id is not among the transfer's reversals."""
    rows = np.flatnonzero(is_reversed)
    unknown = np.zeros(len(matched), dtype=bool)
    if len(rows):
        subset = matched[["reversal_ids", "stripe_reversal_id"]].iloc[rows]
        found = token_in_list(subset["reversal_ids"], subset["stripe_reversal_id"])
        unknown[rows[~found]] = True
    return unknown


def token_in_list(joined_lists: pd.Series, tokens: pd.Series) -> np.ndarray:
    """Per position, whether ``tokens[i]`` is one of the ``|``-joined ``joined_lists[i]``.

    Vectorized with Arrow: split every list, flatten, compare each element with
    its parent's token, and mark the parents that had a hit.
    """
    lists = pc.split_pattern(_arrow_strings(joined_lists), LIST_SEPARATOR)
    parents = pc.list_parent_indices(lists)
    wanted = pc.take(_arrow_strings(tokens), parents)
    hits = pc.fill_null(pc.equal(pc.list_flatten(lists), wanted), False)
    found = np.zeros(len(joined_lists), dtype=bool)
    found[parents.to_numpy()[hits.to_numpy(zero_copy_only=False)]] = True
    return found


def _grace_ends_at(matched: pd.DataFrame, grace_period: timedelta) -> pd.Series:
    """When each row stops being work in progress (in grace while ``now`` is before it).

    A row changed recently may be mid-write; a Stripe-only transfer created
    recently may not have had its row saved yet. A change exactly
    ``grace_period`` ago is out of grace.
    """
    changed = matched["updated_at"].fillna(matched["stripe_created"])
    return changed + grace_period


def _stuck_severity(matched: pd.DataFrame, high_before: pd.Timestamp) -> np.ndarray:
    pending_since = matched["reversal_requested_at"].fillna(matched["next_retry_at"])
    high = matched["next_retry_at"].isna() | (pending_since < high_before)
    return np.where(high.to_numpy(), Severity.HIGH.value, Severity.MEDIUM.value)


def _category_findings(
    matched: pd.DataFrame,
    category: Category,
    rows: np.ndarray,
    in_grace: np.ndarray,
    grace_ends_at: pd.Series,
    stuck_severities: np.ndarray,
) -> pd.DataFrame:
    repairable = category in (
        Category.STRIPE_REVERSED_DB_PENDING,
        Category.STRIPE_REVERSED_DB_FAILED,
    )
    needed = [*_FINDING_SOURCES, *(_REPAIR_SOURCES if repairable else ())]
    details = [n for n in DETAIL_COLUMNS[category] if n not in needed and n in matched.columns]
    subset = matched[needed + details].iloc[rows].reset_index(drop=True)
    for name in _TARGET_DETAILS:
        if name in DETAIL_COLUMNS[category] and name not in subset:
            subset[name] = pd.Series(pd.NA, index=subset.index, dtype="Int64")  # no such column
    if repairable:
        subset = _with_repair_evidence(subset)
    seller_ids = subset["seller_transfer_id"].astype("Int64")
    if category is Category.UNKNOWN_TO_DB:
        finding_key = subset["transfer_id"].astype(ID_DTYPE)
    else:
        finding_key = _integers_as_text(seller_ids)
    if category is Category.STUCK_PENDING:
        severity = pd.Categorical(stuck_severities[rows], dtype=SEVERITY_DTYPE)
    else:
        severity = _constant(severity_of(category).value, len(rows), SEVERITY_DTYPE)
    return pd.DataFrame(
        {
            "category": _constant(category.value, len(rows), CATEGORY_DTYPE),
            "severity": severity,
            "finding_key": finding_key,
            "seller_transfer_id": seller_ids,
            "stripe_transfer_id": _first_present(subset, "stripe_transfer_id", "transfer_id"),
            "stripe_reversal_ids": subset["reversal_ids"].astype(ID_DTYPE),
            "amount": _first_present(subset, "amount", "stripe_amount").astype("Int64"),
            "currency": _first_present(subset, "currency", "stripe_currency"),
            "explanation": _constant(explanation_of(category), len(rows), EXPLANATION_DTYPE),
            "details": json_records(subset[list(DETAIL_COLUMNS[category])]),
            "in_grace": in_grace[rows],
            "grace_ends_at": grace_ends_at.iloc[rows]
            .where(in_grace[rows])
            .reset_index(drop=True)
            .astype(UTC_DTYPE),
        }
    )


# Merged columns every finding is built from; the repair evidence needs three more.
_FINDING_SOURCES = (
    "seller_transfer_id",
    "transfer_id",
    "stripe_transfer_id",
    "reversal_ids",
    "amount",
    "stripe_amount",
    "currency",
    "stripe_currency",
)
_REPAIR_SOURCES = ("our_reversals", "latest_reversal_id", "latest_reversal_at")


def _constant(value: str, size: int, dtype: pd.CategoricalDtype) -> pd.Categorical:
    # One code per row instead of one copy of a 300-character sentence per row.
    return pd.Categorical.from_codes(
        np.full(size, dtype.categories.get_loc(value), dtype=np.int8), dtype=dtype
    )


def _integers_as_text(values: pd.Series) -> pd.Series:
    text = pa.array(values.to_numpy(dtype="int64", na_value=0)).cast(pa.large_string())
    return pd.Series(pd.arrays.ArrowStringArray(text))


def _first_present(subset: pd.DataFrame, db_column: str, stripe_column: str) -> pd.Series:
    db_values = subset[db_column]
    if isinstance(db_values.dtype, pd.CategoricalDtype):
        db_values = db_values.astype(ID_DTYPE)
    stripe_values = subset[stripe_column]
    if isinstance(stripe_values.dtype, pd.CategoricalDtype):
        stripe_values = stripe_values.astype(ID_DTYPE)
    return db_values.fillna(stripe_values)


def _with_repair_evidence(subset: pd.DataFrame) -> pd.DataFrame:
    """Add the reversal a repair would record: this row's own, else the newest.

    "Own" is the newest reversal whose metadata ``seller_transfer_id`` is this
    row's id (from ``our_reversals``: ``sid:reversal_id:epoch_s``, newest first).
    """
    entries = pc.split_pattern(_arrow_strings(subset["our_reversals"]), LIST_SEPARATOR)
    parents = pc.list_parent_indices(entries).to_numpy()
    fields = pc.split_pattern(pc.list_flatten(entries), FIELD_SEPARATOR)
    own_ids = _integers_as_text(subset["seller_transfer_id"])
    is_own = pc.equal(pc.list_element(fields, 0), pc.take(_arrow_strings(own_ids), parents))
    own_positions = np.flatnonzero(pc.fill_null(is_own, False).to_numpy(zero_copy_only=False))
    own_rows, first = np.unique(parents[own_positions], return_index=True)  # newest own
    chosen = own_positions[first]
    # pandas takes na_value=None (documented as Any); its stubs allow only Scalar.
    reversal_id = subset["latest_reversal_id"].to_numpy(dtype=object, na_value=None)  # type: ignore[call-overload]
    reversed_at = subset["latest_reversal_at"].reset_index(drop=True)
    reversal_id[own_rows] = pc.list_element(fields, 1).take(chosen).to_numpy(zero_copy_only=False)
    seconds = pc.list_element(fields, 2).take(chosen).cast(pa.int64()).to_numpy()
    reversed_at.iloc[own_rows] = pd.to_datetime(seconds, unit="s", utc=True)
    return subset.assign(repair_reversal_id=reversal_id, repair_reversed_at=reversed_at.to_numpy())


def json_records(values: pd.DataFrame) -> list[dict[str, object]]:
    """Rows as plain dicts that JSONB accepts: ints, strings, bools, ISO times, None."""
    names = list(values.columns)
    columns = [_json_column(values[name]).tolist() for name in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


#: None as a 0-d object array: what ``np.where(present, x, None)`` broadcasts, in the form
#: numpy's type stubs accept (they refuse a bare None).
_NULL = np.array(None, dtype=object)


def _json_column(values: pd.Series) -> np.ndarray:
    present = values.notna().to_numpy()
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        naive = values.dt.tz_convert(None).to_numpy(dtype="datetime64[s]")
        text = np.char.add(np.datetime_as_string(naive, unit="s"), "Z").astype(object)
        return np.where(present, text, _NULL)
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(dtype=object)
    if pd.api.types.is_numeric_dtype(values.dtype):
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
        whole = np.where(present, numbers, 0).astype(np.int64).astype(object)
        return np.where(present, whole, _NULL)
    return np.where(present, values.to_numpy(dtype=object), _NULL)


CATEGORY_DTYPE = pd.CategoricalDtype([c.value for c in Category])
SEVERITY_DTYPE = pd.CategoricalDtype([s.value for s in Severity])
EXPLANATION_DTYPE = pd.CategoricalDtype([explanation_of(c) for c in Category])

_FINDING_DTYPES: dict[str, Any] = {
    "category": CATEGORY_DTYPE,
    "severity": SEVERITY_DTYPE,
    "finding_key": ID_DTYPE,
    "seller_transfer_id": "Int64",
    "stripe_transfer_id": ID_DTYPE,
    "stripe_reversal_ids": ID_DTYPE,
    "amount": "Int64",
    "currency": ID_DTYPE,
    "explanation": EXPLANATION_DTYPE,
    "details": object,
    "in_grace": bool,
    "grace_ends_at": UTC_DTYPE,
}


def empty_findings() -> pd.DataFrame:
    """A findings frame with no rows and the usual columns and dtypes."""
    columns = {name: pd.Series([], dtype=dtype) for name, dtype in _FINDING_DTYPES.items()}
    return pd.DataFrame(columns)
