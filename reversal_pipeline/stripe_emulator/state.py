"""In-memory Stripe state: transfers and reversals, plus the stores the API needs.

Pure and thread-safe: nothing here knows about HTTP. The Starlette app calls it
from the event loop while tests and benchmarks call it from their own threads
(e.g. ``create_transfers_bulk`` for a million transfers), so every store guards
its data with a lock and every method does a bounded amount of work under it.

The emulator's other rooms (clock, errors, keys, objects, idempotency, request
log, snapshot) live in their own modules; their names are re-exported here so
``from reversal_pipeline.stripe_emulator.state import ...`` keeps working.
"""

from __future__ import annotations

import bisect
import gc
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from reversal_pipeline.stripe_emulator.clock import Clock, EmulatorClock
from reversal_pipeline.stripe_emulator.errors import (
    EmulatorError,
    already_reversed,
    amount_too_large,
    no_such_reversal,
    no_such_transfer,
)
from reversal_pipeline.stripe_emulator.idempotency import (
    DEFAULT_IDEMPOTENCY_TTL_SECONDS,
    IdempotencyDecision,
    IdempotencyStore,
    StoredResponse,
)
from reversal_pipeline.stripe_emulator.keys import (
    ID_SUFFIX_LENGTH,
    MISSING_KEY_MESSAGE,
    VALID_KEY_PREFIXES,
    KeyRegistry,
    key_fingerprint,
    mask_key,
    new_id,
    new_ids,
)
from reversal_pipeline.stripe_emulator.objects import (
    CREATED_WIDTH,
    DEFAULT_DESTINATION,
    EMBEDDED_REVERSALS,
    MAX_CREATED,
    Page,
    Reversal,
    Transfer,
    check_amount,
    check_currency,
    check_metadata,
    created_bound,
    index_key,
)
from reversal_pipeline.stripe_emulator.payments import PaymentsStore
from reversal_pipeline.stripe_emulator.request_log import RequestLog, RequestRecord
from reversal_pipeline.stripe_emulator.snapshot import (
    REVERSAL_FIELDS,
    SNAPSHOT_FORMAT,
    SNAPSHOT_VERSION,
    TRANSFER_FIELDS,
    SnapshotError,
    build_from_snapshot,
    load_snapshot,
    save_snapshot,
)

__all__ = [
    "DEFAULT_DESTINATION",
    "DEFAULT_IDEMPOTENCY_TTL_SECONDS",
    "EMBEDDED_REVERSALS",
    "ID_SUFFIX_LENGTH",
    "MISSING_KEY_MESSAGE",
    "VALID_KEY_PREFIXES",
    "Clock",
    "EmulatorClock",
    "EmulatorError",
    "EmulatorState",
    "IdempotencyDecision",
    "IdempotencyStore",
    "KeyRegistry",
    "Page",
    "RequestLog",
    "RequestRecord",
    "Reversal",
    "SnapshotError",
    "StoredResponse",
    "Transfer",
    "key_fingerprint",
    "load_snapshot",
    "mask_key",
    "new_id",
    "new_ids",
    "no_such_transfer",
    "save_snapshot",
]


class EmulatorState:
    """Transfers and reversals, plus the stores the API layer needs (keys, idempotency, log).

    Transfers live in a dict by id and in an index of sort keys kept in
    ascending (created, id) order; new keys queue in ``_pending`` and are merged
    on the next list, so a million-transfer bulk load sorts once and a list of
    one day is a bisect plus a page.
    """

    def __init__(
        self,
        clock: EmulatorClock | None = None,
        *,
        idempotency_ttl_seconds: float = DEFAULT_IDEMPOTENCY_TTL_SECONDS,
        request_log_limit: int = 100_000,
        api_keys: Iterable[str] = (),
        accept_any_key: bool = False,
    ) -> None:
        self.clock = clock or EmulatorClock()
        self.idempotency = IdempotencyStore(self.clock, idempotency_ttl_seconds)
        self.keys = KeyRegistry(api_keys, accept_any=accept_any_key)
        self.requests = RequestLog(request_log_limit)
        self._default_ttl = idempotency_ttl_seconds
        self._lock = threading.RLock()
        self._transfers: dict[str, Transfer] = {}
        self._reversals: dict[str, Reversal] = {}
        self._index: list[str] = []
        self._pending: list[str] = []
        #: Charges, refunds and their events (issue 18), under the same lock.
        self.payments = PaymentsStore(self.clock, self._lock)

    # ----------------------------------------------------------------- lifecycle

    def reset(self) -> None:
        """Forget everything: transfers, reversals, idempotency keys, key rules, the log."""
        with self._lock:
            self._transfers.clear()
            self._reversals.clear()
            self._index = []
            self._pending = []
            self.payments.reset()
        self.idempotency.clear()
        self.idempotency.ttl_seconds = self._default_ttl
        self.keys.reset()
        self.requests.clear()

    @property
    def lock(self) -> threading.RLock:
        """Hold it to read several objects consistently (e.g. rendering a page)."""
        return self._lock

    def transfer_count(self) -> int:
        return len(self._transfers)

    # ----------------------------------------------------------------- snapshots

    def export_snapshot(self) -> dict[str, Any]:
        """Transfers, reversals and the payments rows as JSON-ready data (see save_snapshot).

        Rows under a field header (``transfer_fields``, ``reversal_fields``)
        rather than one object per transfer: the same data, parsed about twice
        as fast, which is what keeps a restart with 10k transfers well under a
        second. Copied under the lock, so a snapshot taken while requests are
        served is consistent; the caller serializes it outside the lock.
        """
        with self._lock:
            transfers = [
                [t.id, t.amount, t.currency, t.created, t.destination, t.metadata or None,
                 t.transfer_group, t.description, t.source_transaction, t.livemode]
                for t in self._transfers.values()
            ]  # fmt: skip
            reversals = [
                [r.transfer_id, r.id, r.amount, r.currency, r.created, r.metadata or None,
                 r.description]
                for t in self._transfers.values()
                if t.reversals
                for r in t.reversals
            ]  # fmt: skip
            payments = self.payments.export_rows()
            # Metadata dicts are shared, not copied: nothing mutates them after creation.
        return {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "saved_at": int(self.clock()),
            "transfer_fields": list(TRANSFER_FIELDS),
            "transfers": transfers,
            "reversal_fields": list(REVERSAL_FIELDS),
            "reversals": reversals,
            **payments,
        }

    def restore_snapshot(self, snapshot: Mapping[str, Any]) -> int:
        """Replace all transfers, reversals, charges, refunds, events; returns the transfer count.

        All or nothing: the snapshot is validated and built aside, then swapped
        in under the lock. Idempotency keys are cleared (their stored answers
        describe the replaced objects); the request log and key rules are kept.
        """
        if snapshot.get("format") != SNAPSHOT_FORMAT or snapshot.get("version") != SNAPSHOT_VERSION:
            raise SnapshotError(
                f"not an emulator snapshot of format {SNAPSHOT_FORMAT} v{SNAPSHOT_VERSION}: "
                f"format={snapshot.get('format')!r}, version={snapshot.get('version')!r}"
            )
        rows, reversal_rows = snapshot.get("transfers"), snapshot.get("reversals")
        if not isinstance(rows, list) or not isinstance(reversal_rows, list):
            raise SnapshotError("snapshot has no lists 'transfers' and 'reversals'")
        if snapshot.get("transfer_fields") != list(TRANSFER_FIELDS) or snapshot.get(
            "reversal_fields"
        ) != list(REVERSAL_FIELDS):
            raise SnapshotError("snapshot fields differ from this emulator's")
        try:
            transfers, reversals = build_from_snapshot(rows, reversal_rows)
            # Validated aside and swapped in on success: a bad row changes nothing.
            self.payments.restore_rows(snapshot)
        except (EmulatorError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"invalid emulator snapshot: {type(exc).__name__}: {exc}") from exc
        with self._lock:
            self._transfers = transfers
            self._reversals = reversals
            self._index = []
            self._pending = [t.sort_key for t in transfers.values()]
        self.idempotency.clear()
        return len(transfers)

    # ----------------------------------------------------------------- creation

    def create_transfer(
        self,
        *,
        amount: int,
        currency: str = "usd",
        destination: str = DEFAULT_DESTINATION,
        metadata: Mapping[str, str] | None = None,
        transfer_group: str | None = None,
        description: str | None = None,
        source_transaction: str | None = None,
        created: int | None = None,
        id: str | None = None,
        livemode: bool = False,
    ) -> Transfer:
        spec = {
            "amount": amount,
            "currency": currency,
            "destination": destination,
            "metadata": metadata,
            "transfer_group": transfer_group,
            "description": description,
            "source_transaction": source_transaction,
            "created": created,
            "id": id,
        }
        return self.create_transfers_bulk([spec], livemode=livemode)[0]

    def create_transfers_bulk(
        self, specs: Iterable[Mapping[str, Any]], *, livemode: bool = False
    ) -> list[Transfer]:
        """Create many transfers at once (all or none); returns them in input order.

        Each spec may hold ``amount`` (required), ``currency``, ``destination``,
        ``metadata``, ``transfer_group``, ``description``, ``source_transaction``,
        ``created`` (unix seconds; default now), ``id`` (default a fresh ``tr_``
        id) and ``livemode`` (default the argument). Built for 1M transfers in a
        few seconds: ids come from one random buffer and the index is sorted
        once, on the next list.
        """
        specs = specs if isinstance(specs, list) else list(specs)
        now = int(self.clock())
        generated = iter(new_ids("tr_", sum(1 for s in specs if not s.get("id"))))
        built: list[Transfer] = []
        append = built.append
        # A million new objects would trigger hundreds of collections that find no
        # garbage, so the collector is paused for the loop (benchmarks/RESULTS.md).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for spec in specs:
                get = spec.get
                raw_amount = get("amount")
                # check_amount raises Stripe's error for any value the fast test refuses.
                amount: int = (
                    raw_amount
                    if type(raw_amount) is int and raw_amount >= 1
                    else check_amount(raw_amount)
                )
                created = get("created")
                if created is None:
                    created = now
                elif type(created) is not int or not 0 <= created <= MAX_CREATED:
                    raise EmulatorError(
                        400,
                        f"Invalid integer: {created}",
                        code="parameter_invalid_integer",
                        param="created",
                    )
                currency = get("currency") or "usd"
                if currency != "usd":
                    currency = check_currency(currency)
                metadata = get("metadata")
                if metadata:
                    metadata = check_metadata(metadata)
                append(
                    Transfer(
                        get("id") or next(generated),
                        amount,
                        currency,
                        created,
                        get("destination") or DEFAULT_DESTINATION,
                        metadata or None,
                        get("transfer_group"),
                        get("description"),
                        get("source_transaction"),
                        get("livemode", livemode) is True,
                    )
                )
            keys = [index_key(t.created, t.id) for t in built]
        finally:
            if collecting:
                gc.enable()
        ids = [t.id for t in built]
        with self._lock:
            if len(set(ids)) != len(ids) or not self._transfers.keys().isdisjoint(ids):
                raise EmulatorError(400, "A transfer with this id already exists.", param="id")
            self._transfers.update(zip(ids, built, strict=True))
            self._pending.extend(keys)
        return built

    # ----------------------------------------------------------------- lookups

    def get_transfer(
        self, transfer_id: str, *, livemode: bool | None = None, param: str = "id"
    ) -> Transfer:
        """The transfer, or Stripe's 404; with ``livemode``, the other mode's are hidden."""
        transfer = self._transfers.get(transfer_id)
        if transfer is None:
            raise no_such_transfer(transfer_id, param=param)
        if livemode is not None and transfer.livemode != livemode:
            raise no_such_transfer(
                transfer_id, param=param, other_mode="live" if transfer.livemode else "test"
            )
        return transfer

    def transfer_dict(self, transfer_id: str, *, livemode: bool | None = None) -> dict[str, Any]:
        with self._lock:
            return self.get_transfer(transfer_id, livemode=livemode).to_dict()

    def reversals_of(self, transfer_id: str) -> list[Reversal]:
        """All reversals of a transfer, oldest first."""
        with self._lock:
            return list(self.get_transfer(transfer_id).reversals or [])

    def get_reversal(
        self, transfer_id: str, reversal_id: str, *, livemode: bool | None = None
    ) -> Reversal:
        with self._lock:
            self.get_transfer(transfer_id, livemode=livemode)
            reversal = self._reversals.get(reversal_id)
            if reversal is None or reversal.transfer_id != transfer_id:
                raise no_such_reversal(reversal_id)
            return reversal

    # ----------------------------------------------------------------- reversals

    def reverse_transfer(
        self,
        transfer_id: str,
        *,
        amount: int | None = None,
        metadata: Mapping[str, str] | None = None,
        description: str | None = None,
        livemode: bool | None = None,
    ) -> Reversal:
        """Reverse ``amount`` (default: all that remains) of a transfer, atomically."""
        checked_metadata = check_metadata(metadata) or {}
        with self._lock:
            transfer = self.get_transfer(transfer_id, livemode=livemode)
            remaining = transfer.remaining
            if remaining <= 0:
                raise already_reversed(transfer.id)
            if amount is None:
                amount = remaining
            amount = check_amount(amount)
            if amount > remaining:
                raise amount_too_large(amount, remaining)
            if transfer.reversals is None:
                transfer.reversals = []
            reversal = Reversal(
                new_id("trr_"),
                transfer.id,
                amount,
                transfer.currency,
                int(self.clock()),
                checked_metadata,
                description,
                len(transfer.reversals),
            )
            transfer.reversals.append(reversal)
            transfer.amount_reversed += amount
            self._reversals[reversal.id] = reversal
            return reversal

    def list_reversals(
        self,
        transfer_id: str,
        *,
        limit: int = 10,
        starting_after: str | None = None,
        ending_before: str | None = None,
        livemode: bool | None = None,
    ) -> Page:
        """A transfer's reversals newest first, paged by reversal id."""
        with self._lock:
            transfer = self.get_transfer(transfer_id, livemode=livemode)
            reversals = transfer.reversals or []
            if ending_before is not None:
                cursor = self._cursor_reversal(transfer, ending_before, "ending_before")
                newer = reversals[cursor.index + 1 : cursor.index + 1 + limit]
                has_more = cursor.index + 1 + limit < len(reversals)
                return Page(list(reversed(newer)), has_more)
            end = len(reversals)
            if starting_after is not None:
                end = self._cursor_reversal(transfer, starting_after, "starting_after").index
            start = max(end - limit, 0)
            return Page(list(reversed(reversals[start:end])), start > 0)

    def _cursor_reversal(self, transfer: Transfer, reversal_id: str, param: str) -> Reversal:
        reversal = self._reversals.get(reversal_id)
        if reversal is None or reversal.transfer_id != transfer.id:
            raise no_such_reversal(reversal_id, param=param)
        return reversal

    # ----------------------------------------------------------------- listing

    def _sorted_index(self) -> list[str]:
        """Merge pending keys: insort a few, or one (nearly linear) Timsort for many."""
        if self._pending:
            if len(self._pending) <= 32 and len(self._index) > 4096:
                for key in self._pending:
                    bisect.insort(self._index, key)
            else:
                self._index.extend(self._pending)
                self._index.sort()
            self._pending = []
        return self._index

    def list_transfers(
        self,
        *,
        limit: int = 10,
        created_gte: int | None = None,
        created_gt: int | None = None,
        created_lte: int | None = None,
        created_lt: int | None = None,
        destination: str | None = None,
        transfer_group: str | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
        livemode: bool | None = None,
    ) -> Page:
        """Transfers newest first by (created, id): a total order, so pages never overlap.

        The created range is two bisects on the sorted index; other filters are
        applied while walking it, so a page costs O(log n + what is skipped).
        """
        lower = max(
            created_gte if created_gte is not None else 0,
            created_gt + 1 if created_gt is not None else 0,
        )
        upper = min(
            created_lte if created_lte is not None else MAX_CREATED,
            created_lt - 1 if created_lt is not None else MAX_CREATED,
        )
        with self._lock:
            if upper < lower or upper < 0:
                return Page([], False)
            index = self._sorted_index()
            lo = bisect.bisect_left(index, created_bound(lower))
            hi = (
                bisect.bisect_left(index, created_bound(upper + 1))
                if upper < MAX_CREATED
                else len(index)
            )
            if starting_after is not None:
                cursor = self.get_transfer(starting_after, param="starting_after")
                hi = min(hi, bisect.bisect_left(index, cursor.sort_key))
            if ending_before is not None:
                cursor = self.get_transfer(ending_before, param="ending_before")
                lo = max(lo, bisect.bisect_right(index, cursor.sort_key))

            def wanted(t: Transfer) -> bool:
                return (
                    (livemode is None or t.livemode == livemode)
                    and (destination is None or t.destination == destination)
                    and (transfer_group is None or t.transfer_group == transfer_group)
                )

            found: list[Transfer] = []
            positions = range(lo, hi) if ending_before is not None else range(hi - 1, lo - 1, -1)
            for position in positions:
                transfer = self._transfers[index[position][CREATED_WIDTH:]]
                if wanted(transfer):
                    found.append(transfer)
                    if len(found) > limit:
                        break
            has_more = len(found) > limit
            page = found[:limit]
            if ending_before is not None:
                page.reverse()
            return Page(page, has_more)
