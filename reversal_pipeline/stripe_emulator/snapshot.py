"""Saving and restoring the emulator's transfers and reversals (``--state-file``).

Snapshots let a later emulator process serve the transfers and reversals an
earlier one held (the demo's, for ``reversal-pipeline dev``): every field the
API renders is kept (ids, amounts, currencies, ``created``, destination,
metadata, transfer group, description, source transaction, livemode, and each
reversal in order), and the derived fields (``amount_reversed``,
``balance_transaction``, ...) are recomputed identically, so a restored object
is served byte for byte as before. Charges, refunds and events are kept the
same way (rows under ``charge_fields``/``refund_fields``/``event_fields``,
written by ``payments.py``; a snapshot from before them loads with none).
Deliberately *not* kept: the idempotency
store (a replay across processes is not a case the pipeline relies on, and its
stored answers would describe objects by another process's request ids), the
request log and counters, revoked or required keys, faults and scripts, and the
clock's offset: a restored emulator starts with those fresh.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reversal_pipeline.stripe_emulator.objects import (
    DEFAULT_DESTINATION,
    MAX_CREATED,
    Reversal,
    Transfer,
    check_amount,
    check_currency,
    check_metadata,
)

if TYPE_CHECKING:
    from reversal_pipeline.stripe_emulator.state import EmulatorState

SNAPSHOT_FORMAT = "reversal_pipeline.stripe_emulator"
SNAPSHOT_VERSION = 1
TRANSFER_FIELDS = ("id", "amount", "currency", "created", "destination", "metadata",
                   "transfer_group", "description", "source_transaction", "livemode")  # fmt: skip
#: In order: a transfer's reversals are listed oldest first, as they were created.
REVERSAL_FIELDS = ("transfer", "id", "amount", "currency", "created", "metadata", "description")


class SnapshotError(ValueError):
    """A snapshot file or document that cannot be restored (wrong format, corrupt, invalid)."""


def build_from_snapshot(
    rows: list[Any], reversal_rows: list[Any]
) -> tuple[dict[str, Transfer], dict[str, Reversal]]:
    """Transfers and reversals from snapshot rows, checked as the API checks its input.

    The common values take a fast path (as in ``create_transfers_bulk``), and
    the collector is paused while a large snapshot's objects are built.
    """
    transfers: dict[str, Transfer] = {}
    reversals: dict[str, Reversal] = {}
    collecting = gc.isenabled()
    gc.disable()
    try:
        for row in rows:
            (transfer_id, amount, currency, created, destination, metadata, transfer_group,
             description, source_transaction, livemode) = row  # fmt: skip
            if type(transfer_id) is not str or not transfer_id or transfer_id in transfers:
                raise ValueError(f"missing or duplicate transfer id {transfer_id!r}")
            if type(amount) is not int or amount < 1:
                check_amount(amount)
            if type(created) is not int or not 0 <= created <= MAX_CREATED:
                raise ValueError(f"created {created!r} of {transfer_id}")
            if currency != "usd":
                currency = check_currency(currency)
            transfers[transfer_id] = Transfer(
                transfer_id,
                amount,
                currency,
                created,
                destination or DEFAULT_DESTINATION,
                check_metadata(metadata) if metadata else None,
                transfer_group,
                description,
                source_transaction,
                livemode is True,
            )
        for row in reversal_rows:
            transfer_id, reversal_id, amount, currency, created, metadata, description = row
            transfer = transfers[transfer_id]
            if type(reversal_id) is not str or not reversal_id or reversal_id in reversals:
                raise ValueError(f"missing or duplicate reversal id {reversal_id!r}")
            if transfer.reversals is None:
                transfer.reversals = []
            reversal = Reversal(
                reversal_id,
                transfer_id,
                check_amount(amount),
                check_currency(currency),
                int(created),
                (check_metadata(metadata) if metadata else None) or {},
                description,
                len(transfer.reversals),
            )
            transfer.reversals.append(reversal)
            transfer.amount_reversed += reversal.amount
            if transfer.amount_reversed > transfer.amount:
                raise ValueError(f"{transfer_id} reversed beyond its amount")
            reversals[reversal_id] = reversal
    finally:
        if collecting:
            gc.enable()
    return transfers, reversals


def save_snapshot(state: EmulatorState, path: Path) -> Path:
    """Write ``state``'s transfers and reversals to ``path`` as JSON, atomically.

    Written to a temporary file in the same folder and renamed over ``path``,
    so a crash mid-write leaves the previous snapshot, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(state.export_snapshot(), separators=(",", ":")).encode()
    descriptor, temporary = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def load_snapshot(state: EmulatorState, path: Path) -> int:
    """Replace ``state``'s transfers and reversals with the ones saved at ``path``."""
    try:
        snapshot = json.loads(Path(path).read_bytes())
    except ValueError as exc:
        raise SnapshotError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(snapshot, dict):
        raise SnapshotError(f"{path} does not hold a JSON object")
    return state.restore_snapshot(snapshot)
