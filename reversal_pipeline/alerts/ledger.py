"""One alert per new problem, and nothing lost while the receiver is down.

The ledger is the alert sensor's cursor (JSON): the keys of the problems
already alerted and still open, and the alerts not yet delivered. Each tick:
``observe`` the problems open now (new ones are queued; ones that went away
are forgotten, so the same problem coming back is alerted again), then
``deliver`` the queue in order, stopping at the first failure so the rest
wait for the next tick.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from reversal_pipeline.alerts.problems import Problem

#: Alerts kept waiting at most; past it the oldest are dropped with a log line (a receiver
#: down for days would otherwise grow the cursor without bound).
MAX_PENDING = 500


@dataclass(slots=True)
class AlertLedger:
    """What was alerted (``open_keys``) and what still waits for delivery (``pending``)."""

    open_keys: set[str] = field(default_factory=set)
    pending: list[Problem] = field(default_factory=list)
    dropped: int = 0

    @classmethod
    def from_cursor(cls, cursor: str | None) -> AlertLedger:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        return cls(
            open_keys=set(data["open_keys"]),
            pending=[Problem.from_json(p) for p in data["pending"]],
            dropped=int(data.get("dropped", 0)),
        )

    def to_cursor(self) -> str:
        return json.dumps(
            {
                "open_keys": sorted(self.open_keys),
                "pending": [p.to_json() for p in self.pending],
                "dropped": self.dropped,
            },
            sort_keys=True,
        )

    def observe(self, open_problems: Iterable[Problem]) -> list[Problem]:
        """Queue the problems not alerted yet; forget those no longer open. Returns the new."""
        current = {p.key: p for p in open_problems}
        new = [p for key, p in current.items() if key not in self.open_keys]
        self.open_keys = set(current)
        self.pending.extend(new)
        if len(self.pending) > MAX_PENDING:
            self.dropped += len(self.pending) - MAX_PENDING
            self.pending = self.pending[-MAX_PENDING:]
        return new

    def deliver(self, send: Callable[[Problem], None]) -> list[Problem]:
        """Send the queue in order; at the first error, keep it and the rest queued.

        The error propagates; the ledger already holds what was delivered before
        it, so the caller stores the cursor either way and retries next tick.
        """
        delivered: list[Problem] = []
        while self.pending:
            send(self.pending[0])
            delivered.append(self.pending.pop(0))
        return delivered
