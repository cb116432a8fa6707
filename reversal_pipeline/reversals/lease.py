"""Keep a run's claims alive while it works, and say when it must stop sending.

Why a row may not be sent once its lease could run out: another run takes a row
whose lease has expired, looks for its reversal on Stripe, finds none (ours is
still queued or in flight) and sends its own with the next attempt's key. For a
partial reversal both would go through: the same money taken back twice. The
claim guard on the outcome write only notices after the fact.

So the leases are renewed by a timer, every quarter of the lease, for as long as
the run works (its deferred 429 passes included), not only when a page is read;
and a row is sent only while less than half a lease has passed since the last
renewal *began*. A send that starts then has at least half a lease to finish in
(default 300 s, against about 120 s for the longest call the default Stripe
settings allow: 30 s timeout x 3 tries + 30 s of 429 waits). If renewals fail
(the database is unreachable), sending stops within half a lease and the rows
are left for a later run, which looks on Stripe before it sends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa

from reversal_pipeline.reversals import claim

log = logging.getLogger(__name__)

RENEWALS_PER_LEASE = 4
SENDABLE_SHARE_OF_LEASE = 0.5


class LeaseKeeper:
    """Renews one batch's leases on a timer; ``may_send()`` says whether a send is still safe.

    Use as a context manager: entering renews once, synchronously (the step may
    start long after the claim), so an unreachable database fails the run before
    anything is sent; unless ``claimed(began)`` said the batch's own claim has just
    set every lease afresh.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        token: str,
        batch_id: str,
        lease_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.token = token
        self.batch_id = batch_id
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._safe_until = -float("inf")
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reversal-lease", daemon=True)
        self._warned = False

    def __enter__(self) -> LeaseKeeper:
        if self._safe_until == -float("inf"):
            self.renew()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def claimed(self, began: float) -> None:
        """The batch's claim, which started at ``began`` (this keeper's clock), set the leases.

        ``claim.take_for_batch`` sets every lease to the database's ``now()`` plus a
        lease, and that ``now()`` is later than ``began``; renewing again at once
        would rewrite the same rows (0.6 s for 10,000 of them, about 0.6 % of
        figure 1's reversal step, benchmarks/RESULTS.md).
        """
        self._safe_until = began + self.lease_seconds * SENDABLE_SHARE_OF_LEASE

    def now(self) -> float:
        return self._clock()

    def renew(self) -> int:
        """Push every lease this batch still holds; returns how many rows it touched."""
        began = self._clock()
        touched = claim.renew_leases(
            self.engine,
            token=self.token,
            batch_id=self.batch_id,
            lease_seconds=int(self.lease_seconds),
        )
        self._safe_until = began + self.lease_seconds * SENDABLE_SHARE_OF_LEASE
        return touched

    def may_send(self) -> bool:
        """True while a send started now would finish well inside the lease."""
        if self._clock() < self._safe_until:
            return True
        if not self._warned:
            self._warned = True
            log.warning(
                "run %s: leases not renewed for half a lease (%.0f s); sending stops and the "
                "remaining rows are left for a later run",
                self.token,
                self.lease_seconds * SENDABLE_SHARE_OF_LEASE,
            )
        return False

    def _loop(self) -> None:
        interval = self.lease_seconds / RENEWALS_PER_LEASE
        while not self._stopped.wait(interval):
            try:
                self.renew()
            except Exception:
                # Keep trying: may_send() turns False on its own if this goes on.
                log.exception("run %s: lease renewal failed", self.token)
