"""Stripe's idempotency layer: the first answer per (API key, key), replayed after."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

from reversal_pipeline.stripe_emulator.clock import Clock

DEFAULT_IDEMPOTENCY_TTL_SECONDS = 24 * 3600.0


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
    the request must leave no trace (rate-limited, dropped before processing,
    or rejected by parameter validation before the endpoint began executing).
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
            if entry.response is None:
                # Checked first: until the first request finishes there is no
                # stored result to compare with, only a key in use (Stripe's 409).
                return IdempotencyDecision("in_flight")
            if (entry.method, entry.path) != (method, path):
                return IdempotencyDecision(
                    "mismatch_endpoint", original_method=entry.method, original_path=entry.path
                )
            if entry.fingerprint != fingerprint:
                return IdempotencyDecision("mismatch_params")
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
