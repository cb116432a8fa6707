"""A row is sent only while its lease is sure to outlast the call (reversals/lease.py).

Real PostgreSQL and the real SDK against the emulator; only the batch's clock is
a stand-in, because the point is what happens after minutes without a renewal.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from reversal_pipeline.reversals.batch import ReversalBatch
from reversal_pipeline.reversals.claim import claim_due_rows, take_for_batch
from reversal_pipeline.reversals.lease import LeaseKeeper
from reversal_pipeline.reversals.settings import ReversalSettings
from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorClient, EmulatorServer
from tests.plugins.marketplace import row_state, seed_rows

LEASE = 600


class SteppedClock:
    """Monotonic seconds that the test moves on by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _creates(server: EmulatorServer) -> int:
    by_endpoint = server.state.requests.counters()["by_endpoint"]
    return int(by_endpoint.get("POST /v1/transfers/{id}/reversals", 0))


def _claimed_batch(
    engine: sa.Engine,
    resource: StripeResource,
    token: str,
    clock: Callable[[], float],
) -> ReversalBatch:
    """A batch over the rows ``token`` has just claimed, on the given clock."""
    claim_due_rows(engine, token=token, max_rows=3, lease_seconds=LEASE)
    return ReversalBatch(
        engine,
        resource,
        token=token,
        run_id=token,
        settings=ReversalSettings(lease_seconds=LEASE, concurrency=2),
        clock=clock,
    )


def test_sending_stops_half_a_lease_after_the_last_renewal_began(engine: sa.Engine) -> None:
    seed_rows(engine, None, 1, stripe_transfer_id="tr_x")
    claim_due_rows(engine, token="run-l", max_rows=1, lease_seconds=LEASE)
    take_for_batch(engine, token="run-l", batch_id="b-l", lease_seconds=LEASE)
    clock = SteppedClock()
    keeper = LeaseKeeper(engine, token="run-l", batch_id="b-l", lease_seconds=LEASE, clock=clock)
    with keeper:
        clock.now += LEASE / 2 - 1
        assert keeper.may_send()
        clock.now += 2
        assert not keeper.may_send()
        assert keeper.renew() == 1  # the row is still ours
        assert keeper.may_send()


def test_rows_whose_lease_could_run_out_are_not_sent_and_are_left_for_a_later_run(
    engine: sa.Engine, stripe_emulator: EmulatorServer, stripe_resource: StripeResource
) -> None:
    control = EmulatorClient(stripe_emulator.url)
    rows = seed_rows(engine, control, 3)
    clock = SteppedClock()

    class RenewalThenLongPause:
        """Reads the start of the first renewal, then finds the run long past it."""

        def __init__(self) -> None:
            self.calls = 0

        def __call__(self) -> float:
            self.calls += 1
            return clock.now if self.calls == 1 else clock.now + LEASE

    report = _claimed_batch(engine, stripe_resource, "run-m", RenewalThenLongPause()).run()

    assert _creates(stripe_emulator) == 0  # nothing reached Stripe
    assert report.outcomes["lease_at_risk"] == 3
    assert report.rows_released == 3
    for row in rows:
        state = row_state(engine, row.id)
        assert state["status"] == "reversal_pending"
        assert state["claimed_by"] is None  # free for the next run...
        assert state["stripe_attempts"] == 1  # ...which looks on Stripe before it sends


def test_a_normal_run_is_not_held_back(
    engine: sa.Engine, stripe_emulator: EmulatorServer, stripe_resource: StripeResource
) -> None:
    control = EmulatorClient(stripe_emulator.url)
    rows = seed_rows(engine, control, 3)
    # Time stands still: always inside the lease.
    report = _claimed_batch(engine, stripe_resource, "run-n", SteppedClock()).run()

    assert report.statuses["reversed"] == 3
    assert _creates(stripe_emulator) == 3
    assert all(row_state(engine, row.id)["status"] == "reversed" for row in rows)


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass (the keeper runs on its own thread)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_a_failing_renewal_is_logged_stops_sending_and_recovers(
    engine: sa.Engine, stripe_emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The renewal thread's own path: a renewal that fails is an ERROR on the run page,
    sending stops once half a lease has passed without one, and resumes when renewals do.

    Real clock and a 0.4 s lease (a renewal every 0.1 s), so the thread really runs; the
    failure is a real database error (the table renamed away under it).
    """
    seed_rows(engine, stripe_emulator.control(), 1)
    claim_due_rows(engine, token="run-renew", max_rows=1, lease_seconds=LEASE)
    take_for_batch(engine, token="run-renew", batch_id="b-renew", lease_seconds=LEASE)
    caplog.set_level("ERROR", logger="reversal_pipeline.reversals.lease")
    with LeaseKeeper(engine, token="run-renew", batch_id="b-renew", lease_seconds=0.4) as keeper:
        # Polled, not read once: on a loaded machine the first renewal alone can take
        # longer than the 0.2 s it buys; a later one, quicker, opens the window.
        assert _until(keeper.may_send)
        with engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE seller_transfers RENAME TO st_away"))
        try:
            assert _until(lambda: "lease renewal failed" in caplog.text)
            assert _until(lambda: not keeper.may_send())
        finally:
            with engine.begin() as connection:
                connection.execute(sa.text("ALTER TABLE st_away RENAME TO seller_transfers"))
        assert _until(keeper.may_send)
