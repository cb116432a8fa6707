"""In-memory Stripe state: transfers, reversals, idempotency keys, API keys, request log.

Pure and thread-safe: nothing here knows about HTTP. The Starlette app calls it
from the event loop while tests and benchmarks call it from their own threads
(e.g. ``create_transfers_bulk`` for a million transfers), so every store guards
its data with a lock and every method does a bounded amount of work under it.

Errors are raised as :class:`EmulatorError`, which carries what Stripe's error
envelope needs (status, type, code, param, message) so the app only renders it.

Snapshots (:func:`save_snapshot`, :func:`load_snapshot`) let a later emulator
process serve the transfers and reversals an earlier one held (the demo's,
for ``reversal-pipeline dev``): every field the API renders is kept (ids,
amounts, currencies, ``created``, destination, metadata, transfer group,
description, source transaction, livemode, and each reversal in order), and
the derived fields (``amount_reversed``, ``balance_transaction``, ...) are
recomputed identically, so a restored object is served byte for byte as
before. Deliberately *not* kept: the idempotency store (a replay across
processes is not a case the pipeline relies on, and its stored answers would
describe objects by another process's request ids), the request log and
counters, revoked or required keys, faults and scripts, and the clock's
offset: a restored emulator starts with those fresh.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import gc
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Clock = Callable[[], float]

#: Keys of the sorted transfer index: ``created`` zero-padded to this width, then the id.
_CREATED_WIDTH = 12
_MAX_CREATED = 10**_CREATED_WIDTH - 1
ID_SUFFIX_LENGTH = 24
EMBEDDED_REVERSALS = 10
DEFAULT_IDEMPOTENCY_TTL_SECONDS = 24 * 3600.0
DEFAULT_DESTINATION = "acct_1EmulatorDestination0"


# --------------------------------------------------------------------------- clock


class EmulatorClock:
    """The one time source of an emulator: a base clock plus an offset, freezable.

    Idempotency expiry, the rate-limit window and ``created`` timestamps all read
    it, so a test can advance past a 24 h TTL or freeze the rate-limit window
    without sleeping, and the same works over HTTP from another process.
    """

    def __init__(self, base: Clock = time.time) -> None:
        self._base = base
        self._lock = threading.Lock()
        self._offset = 0.0
        self._frozen_at: float | None = None

    def now(self) -> float:
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return self._base() + self._offset

    __call__ = now

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def advance(self, seconds: float) -> float:
        """Move time forward (or back, with a negative value); returns the new now."""
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._offset += seconds
        return self.now()

    def set(self, timestamp: float) -> float:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at = float(timestamp)
            else:
                self._offset = float(timestamp) - self._base()
        return self.now()

    def freeze(self, at: float | None = None) -> float:
        """Stop time at ``at`` (default: now) until :meth:`unfreeze`."""
        current = self.now() if at is None else float(at)
        with self._lock:
            self._frozen_at = current
        return current

    def unfreeze(self) -> float:
        """Let time run again from the frozen value, without a jump."""
        with self._lock:
            if self._frozen_at is not None:
                self._offset = self._frozen_at - self._base()
                self._frozen_at = None
        return self.now()

    def reset(self) -> None:
        with self._lock:
            self._offset = 0.0
            self._frozen_at = None

    def snapshot(self) -> dict[str, Any]:
        return {"now": self.now(), "frozen": self.frozen}


# --------------------------------------------------------------------------- errors


class EmulatorError(Exception):
    """A Stripe API error: what the ``{"error": {...}}`` envelope and status carry."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = "https://stripe.com/docs/error-codes/" + self.code.replace("_", "-")
        if self.param:
            error["param"] = self.param
        return {"error": error}


def no_such_transfer(
    transfer_id: str, *, param: str = "id", other_mode: str | None = None
) -> EmulatorError:
    message = f"No such transfer: '{transfer_id}'"
    if other_mode is not None:
        used = "test" if other_mode == "live" else "live"
        message += (
            f"; a similar object exists in {other_mode} mode, but a {used} mode key was"
            " used to make this request."
        )
    status = 404 if param == "id" else 400
    return EmulatorError(status, message, code="resource_missing", param=param)


def no_such_reversal(reversal_id: str, *, param: str = "id") -> EmulatorError:
    status = 404 if param == "id" else 400
    return EmulatorError(
        status,
        f"No such transfer reversal: '{reversal_id}'",
        code="resource_missing",
        param=param,
    )


def already_reversed(transfer_id: str) -> EmulatorError:
    """Stripe's wording, with no code: callers can only match the message."""
    return EmulatorError(400, f"The transfer {transfer_id} is already fully reversed.")


def amount_too_large(amount: int, remaining: int) -> EmulatorError:
    """Deliberately free of the word "already": it is not the benign already-reversed case."""
    return EmulatorError(
        400,
        f"Amount ({amount}) is greater than the amount that can be reversed on this transfer"
        f" ({remaining}).",
        param="amount",
    )


# --------------------------------------------------------------------------- ids and keys

_B64_TO_ALNUM = bytes.maketrans(b"+/", b"xZ")


def new_ids(prefix: str, count: int, length: int = ID_SUFFIX_LENGTH) -> list[str]:
    """``count`` random ids ``prefix`` + ``length`` alphanumerics, fast enough for 1M.

    One ``os.urandom`` call and one base64 pass instead of a per-character loop:
    a million ids take a fraction of a second.
    """
    if count <= 0:
        return []
    raw_bytes = (length * 3 + 3) // 4  # base64 gives 4 chars per 3 bytes
    chunk = base64.b64encode(os.urandom(raw_bytes * count)).translate(_B64_TO_ALNUM).decode()
    step = len(chunk) // count
    return [prefix + chunk[i : i + length] for i in range(0, step * count, step)]


def new_id(prefix: str, length: int = ID_SUFFIX_LENGTH) -> str:
    return new_ids(prefix, 1, length)[0]


_KEY_PREFIX = re.compile(r"^((?:sk|rk|pk)_(?:test|live)_)(.*)$", re.DOTALL)
VALID_KEY_PREFIXES = ("sk_test_", "sk_live_", "rk_test_", "rk_live_")


def mask_key(api_key: str) -> str:
    """Mask a key as Stripe does in its messages (``sk_test_****abcd``); never the full key.

    The last four characters are shown only when at least five others stay hidden,
    so a short key is masked entirely.
    """
    match = _KEY_PREFIX.match(api_key)
    prefix, secret = (match.group(1), match.group(2)) if match else ("", api_key)
    if len(secret) > 8:
        return prefix + "*" * (len(secret) - 4) + secret[-4:]
    return prefix + "*" * len(secret)


def key_fingerprint(api_key: str) -> str:
    """Stable id for a key, so stores never keep the secret itself."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()[:24]


MISSING_KEY_MESSAGE = (
    "You did not provide an API key. You need to provide your API key in the Authorization"
    " header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See"
    " https://stripe.com/docs/api#authentication for details, or we can help at"
    " https://support.stripe.com/."
)


class KeyRegistry:
    """Which API keys authenticate: Stripe's prefixes, minus revoked, within an optional set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._revoked: set[str] = set()
        self._required: set[str] | None = None

    def revoke(self, api_key: str) -> None:
        with self._lock:
            self._revoked.add(key_fingerprint(api_key))

    def unrevoke(self, api_key: str) -> None:
        with self._lock:
            self._revoked.discard(key_fingerprint(api_key))

    def require(self, api_keys: Iterable[str] | None) -> None:
        """Accept only these keys from now on (``None``: any well-formed key)."""
        with self._lock:
            self._required = None if api_keys is None else {key_fingerprint(k) for k in api_keys}

    def reset(self) -> None:
        with self._lock:
            self._revoked.clear()
            self._required = None

    def authenticate(self, api_key: str | None) -> bool:
        """Return ``livemode`` for a valid key; raise a 401 :class:`EmulatorError` otherwise."""
        if not api_key:
            raise EmulatorError(401, MISSING_KEY_MESSAGE)
        fingerprint = key_fingerprint(api_key)
        well_formed = api_key.startswith(VALID_KEY_PREFIXES) and api_key.isprintable()
        well_formed = well_formed and " " not in api_key
        with self._lock:
            if fingerprint in self._revoked:
                raise EmulatorError(401, f"Expired API Key provided: {mask_key(api_key)}")
            allowed = self._required is None or fingerprint in self._required
        if not (well_formed and allowed):
            raise EmulatorError(401, f"Invalid API Key provided: {mask_key(api_key)}")
        return "_live_" in api_key[:8]


# --------------------------------------------------------------------------- objects


class Reversal:
    """One transfer reversal; ``index`` is its position on the transfer (0 = oldest)."""

    __slots__ = (
        "amount",
        "created",
        "currency",
        "description",
        "id",
        "index",
        "metadata",
        "transfer_id",
    )

    def __init__(
        self,
        id: str,
        transfer_id: str,
        amount: int,
        currency: str,
        created: int,
        metadata: dict[str, str],
        description: str | None,
        index: int,
    ) -> None:
        self.id = id
        self.transfer_id = transfer_id
        self.amount = amount
        self.currency = currency
        self.created = created
        self.metadata = metadata
        self.description = description
        self.index = index

    def to_dict(self) -> dict[str, Any]:
        """The ``transfer_reversal`` object, with the fields of Stripe's own example."""
        suffix = self.id[4:]
        return {
            "id": self.id,
            "object": "transfer_reversal",
            "amount": self.amount,
            "balance_transaction": "txn_" + suffix,
            "created": self.created,
            "currency": self.currency,
            "destination_payment_refund": "pyr_" + suffix[-14:],
            "metadata": dict(self.metadata),
            "source_refund": None,
            "transfer": self.transfer_id,
        }


class Transfer:
    """One Connect transfer. Slotted and lazily filled: a million must fit and build fast."""

    __slots__ = (
        "amount",
        "amount_reversed",
        "created",
        "currency",
        "description",
        "destination",
        "id",
        "livemode",
        "metadata",
        "reversals",
        "source_transaction",
        "transfer_group",
    )

    def __init__(
        self,
        id: str,
        amount: int,
        currency: str,
        created: int,
        destination: str,
        metadata: dict[str, str] | None,
        transfer_group: str | None,
        description: str | None,
        source_transaction: str | None,
        livemode: bool,
    ) -> None:
        self.id = id
        self.amount = amount
        self.amount_reversed = 0
        self.currency = currency
        self.created = created
        self.destination = destination
        self.metadata = metadata
        self.transfer_group = transfer_group
        self.description = description
        self.source_transaction = source_transaction
        self.livemode = livemode
        self.reversals: list[Reversal] | None = None

    @property
    def remaining(self) -> int:
        return self.amount - self.amount_reversed

    @property
    def sort_key(self) -> str:
        return _index_key(self.created, self.id)

    def to_dict(self) -> dict[str, Any]:
        """The ``transfer`` object, embedding its 10 newest reversals as Stripe does."""
        reversals = self.reversals or []
        newest = [r.to_dict() for r in reversed(reversals[-EMBEDDED_REVERSALS:])]
        suffix = self.id[3:]
        return {
            "id": self.id,
            "object": "transfer",
            "amount": self.amount,
            "amount_reversed": self.amount_reversed,
            "balance_transaction": "txn_" + suffix,
            "created": self.created,
            "currency": self.currency,
            "description": self.description,
            "destination": self.destination,
            "destination_payment": "py_" + suffix[-14:],
            "livemode": self.livemode,
            "metadata": dict(self.metadata or {}),
            "reversals": {
                "object": "list",
                "data": newest,
                "has_more": len(reversals) > EMBEDDED_REVERSALS,
                "url": f"/v1/transfers/{self.id}/reversals",
            },
            "reversed": self.amount_reversed >= self.amount,
            "source_transaction": self.source_transaction,
            "source_type": "card",
            "transfer_group": self.transfer_group,
        }


def _index_key(created: int, transfer_id: str) -> str:
    """Sort key: fixed-width ``created`` then id, so string order is (created, id) order."""
    return "%012d%s" % (created, transfer_id)  # noqa: UP031 - fastest for a million keys


def _created_bound(created: int) -> str:
    return f"{min(max(created, 0), _MAX_CREATED):0{_CREATED_WIDTH}d}"


@dataclass(frozen=True)
class Page:
    """One page of a list, newest first, and whether more lie beyond it."""

    data: list[Any]
    has_more: bool


# --------------------------------------------------------------------------- idempotency


@dataclass(frozen=True)
class StoredResponse:
    """What Stripe keeps for an idempotency key: the first answer, byte for byte."""

    status: int
    body: bytes
    content_type: str
    request_id: str


@dataclass
class _IdempotencyEntry:
    created_at: float
    method: str
    path: str
    fingerprint: str
    response: StoredResponse | None = None  # None while the first request is in flight


DecisionKind = Literal["new", "replay", "in_flight", "mismatch_params", "mismatch_endpoint"]


@dataclass(frozen=True)
class IdempotencyDecision:
    kind: DecisionKind
    stored: StoredResponse | None = None
    original_method: str | None = None
    original_path: str | None = None


class IdempotencyStore:
    """Stripe's idempotency layer: first answer stored per (API key, key), replayed after.

    ``begin`` reserves the key (in flight) or says how to answer; the caller then
    either ``complete``s it with the response to store or ``abandon``s it when
    the request must leave no trace (rate-limited, dropped before processing).
    Keys expire ``ttl_seconds`` after first use, measured on the injected clock.
    """

    def __init__(self, clock: Clock, ttl_seconds: float = DEFAULT_IDEMPOTENCY_TTL_SECONDS) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _IdempotencyEntry] = {}
        self.ttl_seconds = ttl_seconds

    def __len__(self) -> int:
        return len(self._entries)

    def begin(
        self, scope: str, key: str, *, method: str, path: str, fingerprint: str
    ) -> IdempotencyDecision:
        now = self._clock()
        with self._lock:
            self._prune(now)
            entry = self._entries.get((scope, key))
            if entry is not None and entry.response is not None and self._expired(entry, now):
                del self._entries[(scope, key)]
                entry = None
            if entry is None:
                self._entries[(scope, key)] = _IdempotencyEntry(now, method, path, fingerprint)
                return IdempotencyDecision("new")
            if (entry.method, entry.path) != (method, path):
                return IdempotencyDecision(
                    "mismatch_endpoint", original_method=entry.method, original_path=entry.path
                )
            if entry.fingerprint != fingerprint:
                return IdempotencyDecision("mismatch_params")
            if entry.response is None:
                return IdempotencyDecision("in_flight")
            return IdempotencyDecision("replay", stored=entry.response)

    def complete(self, scope: str, key: str, response: StoredResponse) -> None:
        with self._lock:
            entry = self._entries.get((scope, key))
            if entry is not None:
                entry.response = response

    def abandon(self, scope: str, key: str) -> None:
        with self._lock:
            entry = self._entries.get((scope, key))
            if entry is not None and entry.response is None:
                del self._entries[(scope, key)]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _expired(self, entry: _IdempotencyEntry, now: float) -> bool:
        return now - entry.created_at >= self.ttl_seconds

    def _prune(self, now: float) -> None:
        """Drop expired keys from the oldest end; entries are kept in first-use order."""
        while self._entries:
            oldest_key = next(iter(self._entries))
            oldest = self._entries[oldest_key]
            if oldest.response is None or not self._expired(oldest, now):
                return
            del self._entries[oldest_key]


# --------------------------------------------------------------------------- request log


@dataclass
class RequestRecord:
    """One /v1 request as the emulator handled it."""

    time: float
    method: str
    path: str
    endpoint: str
    transfer_id: str | None
    status: int | None
    outcome: str
    request_id: str
    idempotency_key: str | None
    fault: str | None = None
    replayed: bool = False
    duration_ms: float = 0.0
    seq: int = 0  # set by RequestLog.record

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "method": self.method,
            "path": self.path,
            "endpoint": self.endpoint,
            "transfer_id": self.transfer_id,
            "status": self.status,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "idempotency_key": self.idempotency_key,
            "fault": self.fault,
            "replayed": self.replayed,
            "duration_ms": self.duration_ms,
        }


@dataclass
class _Counters:
    total: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    by_transfer: Counter[str] = field(default_factory=Counter)
    by_outcome: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)


class RequestLog:
    """A bounded log of /v1 requests plus unbounded counters, and an in-flight gauge.

    The log keeps the newest ``limit`` entries so a million-request benchmark
    does not grow without bound; the counters always cover every request.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[RequestRecord] = deque(maxlen=limit)
        self._counters = _Counters()
        self._seq = 0
        self._in_flight = 0
        self._max_in_flight = 0

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def record(self, entry: RequestRecord) -> None:
        """Append ``entry``, numbering it here so ``seq`` order is log order."""
        with self._lock:
            self._seq += 1
            entry.seq = self._seq
            self._entries.append(entry)
            counters = self._counters
            counters.total += 1
            counters.by_endpoint[entry.endpoint] += 1
            if entry.transfer_id:
                counters.by_transfer[entry.transfer_id] += 1
            counters.by_outcome[entry.outcome] += 1
            counters.by_status[str(entry.status) if entry.status is not None else "none"] += 1

    def entries(self, since_seq: int = 0, limit: int | None = None) -> list[RequestRecord]:
        with self._lock:
            selected = [e for e in self._entries if e.seq > since_seq]
        return selected[-limit:] if limit else selected

    def counters(self) -> dict[str, Any]:
        with self._lock:
            c = self._counters
            return {
                "calls_total": c.total,
                "by_endpoint": dict(c.by_endpoint),
                "by_transfer": dict(c.by_transfer),
                "by_outcome": dict(c.by_outcome),
                "by_status": dict(c.by_status),
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
            }

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._counters = _Counters()
            self._max_in_flight = self._in_flight


# --------------------------------------------------------------------------- snapshots

SNAPSHOT_FORMAT = "reversal_pipeline.stripe_emulator"
SNAPSHOT_VERSION = 1
TRANSFER_FIELDS = ("id", "amount", "currency", "created", "destination", "metadata",
                   "transfer_group", "description", "source_transaction", "livemode")  # fmt: skip
#: In order: a transfer's reversals are listed oldest first, as they were created.
REVERSAL_FIELDS = ("transfer", "id", "amount", "currency", "created", "metadata", "description")


class SnapshotError(ValueError):
    """A snapshot file or document that cannot be restored (wrong format, corrupt, invalid)."""


def _build_from_snapshot(
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
                _check_amount(amount)
            if type(created) is not int or not 0 <= created <= _MAX_CREATED:
                raise ValueError(f"created {created!r} of {transfer_id}")
            if currency != "usd":
                currency = _check_currency(currency)
            transfers[transfer_id] = Transfer(
                transfer_id,
                amount,
                currency,
                created,
                destination or DEFAULT_DESTINATION,
                _check_metadata(metadata) if metadata else None,
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
                _check_amount(amount),
                _check_currency(currency),
                int(created),
                (_check_metadata(metadata) if metadata else None) or {},
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


# --------------------------------------------------------------------------- the store


def _check_amount(amount: Any, *, param: str = "amount") -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise EmulatorError(
            400, f"Invalid integer: {amount}", code="parameter_invalid_integer", param=param
        )
    if amount < 1:
        raise EmulatorError(
            400,
            "This value must be greater than or equal to 1.",
            code="parameter_invalid_integer",
            param=param,
        )
    return amount


def _check_currency(currency: Any) -> str:
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
        raise EmulatorError(400, f"Invalid currency: {currency}", param="currency")
    return currency.lower()


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None or metadata == {}:
        return None
    if not isinstance(metadata, Mapping):
        raise EmulatorError(400, "Invalid hash", code="parameter_invalid_string", param="metadata")
    checked: dict[str, str] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or len(key) > 40:
            raise EmulatorError(
                400, "Metadata keys must be strings of at most 40 characters.", param="metadata"
            )
        if not isinstance(value, str) or len(value) > 500:
            raise EmulatorError(
                400,
                "Metadata values must be strings of at most 500 characters.",
                param=f"metadata[{key}]",
            )
        checked[key] = value
    if len(checked) > 50:
        raise EmulatorError(400, "You can have at most 50 metadata keys.", param="metadata")
    return checked


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
    ) -> None:
        self.clock = clock or EmulatorClock()
        self.idempotency = IdempotencyStore(self.clock, idempotency_ttl_seconds)
        self.keys = KeyRegistry()
        self.requests = RequestLog(request_log_limit)
        self._default_ttl = idempotency_ttl_seconds
        self._lock = threading.RLock()
        self._transfers: dict[str, Transfer] = {}
        self._reversals: dict[str, Reversal] = {}
        self._index: list[str] = []
        self._pending: list[str] = []

    # ----------------------------------------------------------------- lifecycle

    def reset(self) -> None:
        """Forget everything: transfers, reversals, idempotency keys, key rules, the log."""
        with self._lock:
            self._transfers.clear()
            self._reversals.clear()
            self._index = []
            self._pending = []
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
        """Transfers and their reversals as plain JSON-ready data (see :func:`save_snapshot`).

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
            # Metadata dicts are shared, not copied: nothing mutates them after creation.
        return {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "saved_at": int(self.clock()),
            "transfer_fields": list(TRANSFER_FIELDS),
            "transfers": transfers,
            "reversal_fields": list(REVERSAL_FIELDS),
            "reversals": reversals,
        }

    def restore_snapshot(self, snapshot: Mapping[str, Any]) -> int:
        """Replace all transfers and reversals with ``snapshot``'s; returns the transfer count.

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
            transfers, reversals = _build_from_snapshot(rows, reversal_rows)
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
        # garbage; pausing the collector for the loop halves the time.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for spec in specs:
                get = spec.get
                amount = get("amount")
                if type(amount) is not int or amount < 1:
                    _check_amount(amount)  # raises Stripe's error for this value
                created = get("created")
                if created is None:
                    created = now
                elif type(created) is not int or not 0 <= created <= _MAX_CREATED:
                    raise EmulatorError(
                        400,
                        f"Invalid integer: {created}",
                        code="parameter_invalid_integer",
                        param="created",
                    )
                currency = get("currency") or "usd"
                if currency != "usd":
                    currency = _check_currency(currency)
                metadata = get("metadata")
                if metadata:
                    metadata = _check_metadata(metadata)
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
            keys = [_index_key(t.created, t.id) for t in built]
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
        checked_metadata = _check_metadata(metadata) or {}
        with self._lock:
            transfer = self.get_transfer(transfer_id, livemode=livemode)
            remaining = transfer.remaining
            if remaining <= 0:
                raise already_reversed(transfer.id)
            if amount is None:
                amount = remaining
            amount = _check_amount(amount)
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
            created_lte if created_lte is not None else _MAX_CREATED,
            created_lt - 1 if created_lt is not None else _MAX_CREATED,
        )
        with self._lock:
            if upper < lower or upper < 0:
                return Page([], False)
            index = self._sorted_index()
            lo = bisect.bisect_left(index, _created_bound(lower))
            hi = (
                bisect.bisect_left(index, _created_bound(upper + 1))
                if upper < _MAX_CREATED
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
                transfer = self._transfers[index[position][_CREATED_WIDTH:]]
                if wanted(transfer):
                    found.append(transfer)
                    if len(found) > limit:
                        break
            has_more = len(found) > limit
            page = found[:limit]
            if ending_before is not None:
                page.reverse()
            return Page(page, has_more)
