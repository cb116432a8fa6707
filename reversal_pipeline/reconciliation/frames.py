"""The two sides of a reconciliation as compact, columnar pandas frames.

A busy day has about a million transfers. Keeping a dict or a snapshot per
transfer would cost gigabytes, so Stripe's listing is streamed straight into
typed column buffers (``array('q')`` for integers, one list per text column)
and the database side is copied out with ``COPY ... TO STDOUT`` and parsed by
Arrow, never materialising a Python object per row.

Column names are the contract between these frames and ``compare``:
the database side names Stripe's id ``stripe_transfer_id`` (as the table
does), the Stripe side names it ``transfer_id`` and prefixes the rest
``stripe_`` where the database has a column of the same meaning.
"""

from __future__ import annotations

import tempfile
from array import array
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import IO, Any, Final, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa

from reversal_pipeline.db.tables import seller_transfers

ID_DTYPE = pd.StringDtype("pyarrow")
UTC_DTYPE: Final = "datetime64[ns, UTC]"  # Final: its literal type is what astype accepts

# Separators of the compact multi-value text columns. Stripe ids never contain
# either, and only all-digit metadata values count as our seller transfer ids.
LIST_SEPARATOR = "|"
FIELD_SEPARATOR = ":"

METADATA_SELLER_TRANSFER_ID = "seller_transfer_id"

STRIPE_FRAME_COLUMNS: tuple[str, ...] = (
    "transfer_id",
    "stripe_amount",
    "stripe_currency",
    "stripe_created",
    "destination",
    "livemode",
    "amount_reversed",
    "transfer_reversed",
    "reversal_count",
    "reversal_ids",
    "latest_reversal_id",
    "latest_reversal_at",
    "our_reversal_count_max",
    "seller_transfer_ids_in_metadata",
    "our_reversals",
)

DB_FRAME_COLUMNS: tuple[str, ...] = (
    "seller_transfer_id",
    "stripe_transfer_id",
    "stripe_account_id",
    "amount",
    "currency",
    "status",
    "stripe_reversal_id",
    # Issue 17: what the seller owes back, and what the job recorded Stripe confirming.
    # ``db_`` because the Stripe frame's ``amount_reversed`` is the transfer's total.
    "reversal_target",
    "db_amount_reversed",
    "transferred_at",
    "next_retry_at",
    "reversal_requested_at",
    "updated_at",
)


class ReversalLike(Protocol):
    """The fields of ``stripe.models.ReversalRecord`` this module reads."""

    id: str
    amount: int
    created: datetime
    metadata: dict[str, str]


class TransferLike(Protocol):
    """The fields of ``stripe.models.TransferSnapshot`` this module reads."""

    id: str
    amount: int
    currency: str
    destination: str | None
    created: datetime
    amount_reversed: int
    reversed: bool
    livemode: bool

    @property
    def reversals(self) -> Sequence[ReversalLike]: ...


# --------------------------------------------------------------------------- Stripe side


class _StripeColumns:
    """Append-only column buffers: one typed array or list per output column.

    Most transfers of a day have no reversal, so the reversal columns are kept
    sparse (``reversal_rows`` holds the positions that have some) and filled
    in at the end: the common path costs eight appends per transfer.
    """

    def __init__(self) -> None:
        self.transfer_ids: list[str] = []
        self.currencies: list[str] = []
        self.destinations: list[str | None] = []
        self.amounts = array("q")
        self.created_s = array("d")  # epoch seconds, as timestamp() gives them
        self.amounts_reversed = array("q")
        self.livemode = array("b")
        self.reversed = array("b")
        self.reversal_rows = array("q")
        self.reversal_counts = array("i")
        self.our_count_max = array("i")
        self.latest_reversal_s = array("q")
        self.reversal_ids: list[str | None] = []
        self.latest_reversal_ids: list[str] = []
        self.metadata_ids: list[str | None] = []
        self.our_reversals: list[str | None] = []

    def extend(self, snapshots: Iterable[TransferLike]) -> None:
        # The hot loop of a million transfers: appends are bound once, not looked up per row.
        ids, currencies = self.transfer_ids.append, self.currencies.append
        destinations, amounts = self.destinations.append, self.amounts.append
        created, reversed_amounts = self.created_s.append, self.amounts_reversed.append
        livemode, reversed_flags = self.livemode.append, self.reversed.append
        for position, snapshot in enumerate(snapshots):
            if snapshot.reversals:
                self._add_reversals(position, snapshot.reversals)
            ids(snapshot.id)
            currencies(snapshot.currency)
            destinations(snapshot.destination)
            amounts(snapshot.amount)
            created(snapshot.created.timestamp())
            reversed_amounts(snapshot.amount_reversed)
            livemode(snapshot.livemode)
            reversed_flags(snapshot.reversed)

    def _add_reversals(self, position: int, reversals: Sequence[ReversalLike]) -> None:
        newest_first = sorted(reversals, key=lambda r: r.created, reverse=True)
        ours = [(sid, r) for r in newest_first if (sid := _our_id(r)) is not None]
        per_id = _count_by_id(sid for sid, _ in ours)
        self.reversal_rows.append(position)
        self.reversal_counts.append(len(newest_first))
        self.our_count_max.append(max(per_id.values(), default=0))
        self.latest_reversal_s.append(int(newest_first[0].created.timestamp()))
        self.reversal_ids.append(_joined(r.id for r in newest_first))
        self.latest_reversal_ids.append(newest_first[0].id)
        self.metadata_ids.append(_joined(per_id))
        self.our_reversals.append(
            _joined(f"{sid}:{r.id}:{int(r.created.timestamp())}" for sid, r in ours)
        )

    def to_frame(self) -> pd.DataFrame:
        rows = _int64(self.reversal_rows)
        size = len(self.transfer_ids)
        return pd.DataFrame(
            {
                "transfer_id": _text(self.transfer_ids),
                "stripe_amount": _int64(self.amounts),
                "stripe_currency": _categories(self.currencies),
                "stripe_created": _utc_from_seconds(_numbers(self.created_s, "float64")),
                "destination": _categories(self.destinations),
                "livemode": _bool(self.livemode),
                "amount_reversed": _int64(self.amounts_reversed),
                "transfer_reversed": _bool(self.reversed),
                "reversal_count": _spread(rows, _numbers(self.reversal_counts, "int32"), size),
                "reversal_ids": _spread_text(rows, self.reversal_ids, size),
                "latest_reversal_id": _spread_text(rows, self.latest_reversal_ids, size),
                "latest_reversal_at": _utc_from_seconds(
                    _spread(rows, _int64(self.latest_reversal_s), size, _NO_TIMESTAMP)
                ),
                "our_reversal_count_max": _spread(
                    rows, _numbers(self.our_count_max, "int32"), size
                ),
                "seller_transfer_ids_in_metadata": _spread_text(rows, self.metadata_ids, size),
                "our_reversals": _spread_text(rows, self.our_reversals, size),
            }
        )


_NO_TIMESTAMP = -(2**63)  # sentinel for "no reversal"; becomes NaT


def _spread(rows: np.ndarray, values: np.ndarray, size: int, fill: int = 0) -> np.ndarray:
    full = np.full(size, fill, dtype=values.dtype)
    full[rows] = values
    return full


def _spread_text(rows: np.ndarray, values: list[str] | list[str | None], size: int) -> pd.Series:
    positions = np.full(size, -1, dtype=np.int64)
    positions[rows] = np.arange(len(rows))
    taken = pa.array(values, type=pa.large_string()).take(
        pa.array(positions, mask=positions < 0)  # a null position takes a null
    )
    return pd.Series(pd.arrays.ArrowStringArray(taken))


def _text(values: list[str]) -> pd.Series:
    # Through Arrow: three times faster than pd.array(list, dtype=...).
    return pd.Series(pd.arrays.ArrowStringArray(pa.array(values, type=pa.large_string())))


def _categories(values: list[str] | list[str | None]) -> pd.Series:
    return pa.array(values, type=pa.string()).dictionary_encode().to_pandas()


def _our_id(reversal: ReversalLike) -> str | None:
    value = reversal.metadata.get(METADATA_SELLER_TRANSFER_ID) if reversal.metadata else None
    return value if value and value.isdigit() else None


def _count_by_id(seller_transfer_ids: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sid in seller_transfer_ids:
        counts[sid] = counts.get(sid, 0) + 1
    return counts


def _joined(values: Iterable[str]) -> str | None:
    text = LIST_SEPARATOR.join(values)
    return text or None


def _numbers(values: array, dtype: str) -> np.ndarray:
    # A copy, so the frame does not pin the array's buffer.
    return np.frombuffer(values, dtype=dtype).copy() if len(values) else np.empty(0, dtype)


def _int64(values: array) -> np.ndarray:
    return _numbers(values, "int64")


def _bool(values: array) -> np.ndarray:
    return _numbers(values, "int8").astype(bool)


def _utc_from_seconds(seconds: np.ndarray) -> pd.Series:
    missing = seconds == _NO_TIMESTAMP
    # Round to microseconds while still float (exact below 2**53), then scale in integers.
    micros = np.round(np.where(missing, 0, seconds) * 1e6).astype("int64")
    nanos = micros * 1000
    stamps = pd.Series(nanos.view("datetime64[ns]")).dt.tz_localize("UTC")
    return stamps.mask(missing)


def stripe_transfers_frame(snapshots: Iterable[TransferLike]) -> pd.DataFrame:
    """One row per Stripe transfer of the day, built while the listing streams in.

    Only the summary the comparison needs is kept per transfer: totals, the
    reversal ids newest first (``|``-joined), the newest reversal, and the
    reversals that carry a ``seller_transfer_id`` in their metadata as
    ``seller_transfer_id:reversal_id:created_epoch_s`` (``|``-joined, newest
    first), which is what the repair needs to pick the row's own reversal.
    A transfer listed twice (pagination under concurrent writes) is kept once.
    """
    columns = _StripeColumns()
    columns.extend(snapshots)
    frame = columns.to_frame()
    return frame.drop_duplicates("transfer_id", ignore_index=True)


# --------------------------------------------------------------------------- database side

_EPOCH_US_COLUMNS = ("transferred_at", "next_retry_at", "reversal_requested_at", "updated_at")

_CSV_TYPES: dict[str, pa.DataType] = {
    "seller_transfer_id": pa.int64(),
    "stripe_transfer_id": pa.string(),
    "stripe_account_id": pa.dictionary(pa.int32(), pa.string()),
    "amount": pa.int64(),
    "currency": pa.dictionary(pa.int32(), pa.string()),
    "status": pa.dictionary(pa.int32(), pa.string()),
    "stripe_reversal_id": pa.string(),
    "reversal_target": pa.int64(),
    "db_amount_reversed": pa.int64(),
    **dict.fromkeys(_EPOCH_US_COLUMNS, pa.int64()),
}


def _epoch_us(column: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
    # Integers parse faster than timestamp text and do not depend on the session
    # TimeZone. date_part is double precision (extract is numeric, slower to COPY,
    # benchmarks/RESULTS.md); epochs in microseconds stay below 2**53, so the cast is exact.
    return sa.cast(sa.func.date_part("epoch", column) * 1_000_000, sa.BigInteger)


def day_rows_select(day_start: datetime, day_end: datetime) -> sa.Select[Any]:
    """The day's ``seller_transfers`` rows by ``transferred_at``, in frame column order."""
    t = seller_transfers.c
    return rows_select(t.transferred_at >= day_start, t.transferred_at < day_end)


def rows_select(*conditions: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """``seller_transfers`` rows matching ``conditions``, in frame column order."""
    t = seller_transfers.c
    return sa.select(
        t.id.label("seller_transfer_id"),
        t.stripe_transfer_id,
        t.stripe_account_id,
        t.amount,
        t.currency,
        t.status,
        t.stripe_reversal_id,
        t.reversal_target,
        t.amount_reversed.label("db_amount_reversed"),
        *(_epoch_us(t[name]).label(name) for name in _EPOCH_US_COLUMNS),
    ).where(*conditions)


def rows_without_transferred_at() -> sa.Select[Any]:
    """Rows with a transfer id but no ``transferred_at``: no day's query reads them.

    Few by construction (``chk_transfer_id_has_transferred_at`` refuses new
    ones), and found through a partial index; the caller keeps those whose
    transfer Stripe lists for its day.
    """
    t = seller_transfers.c
    return rows_select(t.transferred_at.is_(None), t.stripe_transfer_id.is_not(None))


def db_transfers_frame(
    connection: sa.Connection, day_start: datetime, day_end: datetime
) -> pd.DataFrame:
    """The day's rows, read with ``COPY (SELECT ...) TO STDOUT`` into a columnar frame.

    ``pd.read_sql`` builds a Python tuple per row (seconds and hundreds of MB
    at a million rows); COPY streams CSV to a temporary file that Arrow parses
    on both cores, so memory holds only the final columns.
    """
    return db_rows_frame(connection, day_rows_select(day_start, day_end))


def db_rows_frame(connection: sa.Connection, statement: sa.Select[Any]) -> pd.DataFrame:
    """Rows of ``statement`` (from ``rows_select``) as the columnar database frame."""
    # render_postcompile: an IN list becomes literal binds that COPY can take.
    compiled = statement.compile(
        dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
    )
    with tempfile.TemporaryFile() as spool:
        _copy_out(connection, str(compiled), compiled.params, spool)
        table = _read_csv(spool)
    frame = _db_frame_from_arrow(table)
    del table
    pa.default_memory_pool().release_unused()  # hand the parse buffers back to the OS
    return frame


def _copy_out(
    connection: sa.Connection, sql: str, params: dict[str, Any], spool: IO[bytes]
) -> None:
    driver_connection = connection.connection.driver_connection
    assert driver_connection is not None  # a live DBAPI connection: we are inside a transaction
    with (
        driver_connection.cursor() as cursor,
        cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params) as copy,
    ):
        while chunk := copy.read():
            spool.write(chunk)
    spool.flush()


def _read_csv(spool: IO[bytes]) -> pa.Table:
    if spool.tell() == 0:
        return pa.table({name: pa.array([], type=_CSV_TYPES[name]) for name in DB_FRAME_COLUMNS})
    spool.seek(0)
    return pacsv.read_csv(
        spool,
        read_options=pacsv.ReadOptions(column_names=list(DB_FRAME_COLUMNS)),
        convert_options=pacsv.ConvertOptions(
            column_types=_CSV_TYPES,
            strings_can_be_null=True,  # COPY writes NULL as an unquoted empty field
            quoted_strings_can_be_null=False,  # ... and an empty string as ""
        ),
    )


def _db_frame_from_arrow(table: pa.Table) -> pd.DataFrame:
    for name in _EPOCH_US_COLUMNS:
        index = table.schema.get_field_index(name)
        nanos = pc.multiply(table[name], 1000)
        table = table.set_column(index, name, nanos.cast(pa.timestamp("ns", tz="UTC")))
    frame = table.to_pandas(types_mapper=_arrow_to_pandas_dtype)
    for name in ("currency", "status", "stripe_account_id"):
        if not isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame[name] = frame[name].astype("category")
    return frame


def _arrow_to_pandas_dtype(arrow_type: pa.DataType) -> Any:
    if arrow_type in (pa.string(), pa.large_string()):
        return ID_DTYPE
    return None
