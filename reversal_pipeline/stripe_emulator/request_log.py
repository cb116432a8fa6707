"""What the emulator served: a bounded log of /v1 requests, counters and an in-flight gauge."""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


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
