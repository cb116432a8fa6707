"""Property: no interleaving of claim/take/renew/expire/release lets two batches act on a row.

The other two properties of issue 7 live next to the code they test and are
not repeated here:

* the classifier maps every status/code/message to exactly one sentinel and
  never raises: ``tests/stripe/test_classify.py::test_property_exactly_one_sentinel_never_raises``;
* the backoff schedule is non-decreasing up to its cap and within its jitter:
  ``tests/reversals/test_backoff.py::test_schedule_is_non_decreasing_to_its_cap_and_within_jitter``.

Here three workers (two batches of one run, and a batch of another run) drive
the real ``claim_due_rows``, ``take_for_batch``, ``renew_leases``,
``release_claims`` and ``start_attempts`` (the guard every Stripe call passes)
against the real database, in any order hypothesis picks; "time passing" is
``advance_clock``. A model tracks, in the database's own time, the lease each
worker was granted. After every step: at most one worker holds a live lease,
the row's ``claimed_by`` and ``claimed_by_batch`` are that worker's, and
``start_attempts`` succeeds for the holder and is refused for anybody else, so
a worker whose lease expired and was taken over can never send, and neither
can a second batch of the holder's own run (issue 12, defect 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reversal_pipeline.reversals import claim, record
from tests.plugins.marketplace import advance_clock, row_state, seed_rows

LEASE = 60
#: (run id, batch id): two batches of one run, and one of another run.
WORKERS = (("run-a", "batch-a1"), ("run-a", "batch-a2"), ("run-b", "batch-b1"))

ACTIONS = st.one_of(
    st.tuples(st.just("claim"), st.sampled_from(WORKERS)),
    # A batch starting on rows its run claimed earlier (a step retried inside the run).
    st.tuples(st.just("take"), st.sampled_from(WORKERS)),
    st.tuples(st.just("renew"), st.sampled_from(WORKERS)),
    st.tuples(st.just("release"), st.sampled_from(WORKERS)),
    st.tuples(st.just("send"), st.sampled_from(WORKERS)),
    # Seconds that pass; 59 and 61 sit either side of the lease, 30 + 30 lands on it.
    st.tuples(st.just("expire"), st.sampled_from([1, 30, 59, 61, 120])),
)


@dataclass
class Model:
    """Database time elapsed, and until when (in that time) each worker's lease runs."""

    now: int = 0
    lease_until: dict[tuple[str, str], int] = field(default_factory=dict)

    def holder(self) -> tuple[str, str] | None:
        live = [w for w, until in self.lease_until.items() if until > self.now]
        assert len(live) <= 1, f"model: two live leases {live}"
        return live[0] if live else None


def _reset(engine: sa.Engine, row_id: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET claimed_by = NULL, claimed_by_batch = NULL,"
                " claim_expires_at = NULL,"
                " next_retry_at = now(), stripe_attempts = 0 WHERE id = :id"
            ),
            {"id": row_id},
        )


@pytest.fixture
def one_due_row(engine: sa.Engine) -> int:
    [row] = seed_rows(engine, None, 1, stripe_transfer_id="tr_PropertyRow000001")
    return row.id


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(actions=st.lists(ACTIONS, min_size=1, max_size=12))
def test_two_workers_never_both_hold_a_live_lease(
    engine: sa.Engine, one_due_row: int, actions: list[tuple[str, object]]
) -> None:
    row_id = one_due_row
    _reset(engine, row_id)  # hypothesis reuses the fixture's row across examples
    model = Model()
    for action, arg in actions:
        if action == "expire":
            assert isinstance(arg, int)
            advance_clock(engine, arg)
            model.now += arg
            continue
        assert isinstance(arg, tuple)
        token, batch = arg
        before = row_state(engine, row_id)
        if action == "claim":  # the claim step, then the batch starting on it
            holder = model.holder()
            got = claim.claim_due_rows(engine, token=token, max_rows=10, lease_seconds=LEASE)
            taken = claim.take_for_batch(engine, token=token, batch_id=batch, lease_seconds=LEASE)
            # Free or expired: taken. A live lease is never taken, not even by its own
            # token (issue 12 defect 4: each run claims with its own id).
            assert got.rows_claimed == (1 if holder is None else 0), (action, arg)
            assert taken == got.rows_claimed  # the batch takes what its run just claimed
            if got.rows_claimed:
                model.lease_until = {arg: model.now + LEASE}
        elif action == "take":
            holder = model.holder()
            taken = claim.take_for_batch(engine, token=token, batch_id=batch, lease_seconds=LEASE)
            # Only the run's own row, and only when no batch holds it live: a second
            # batch of the holder's run takes nothing.
            assert taken == int(before["claimed_by"] == token and holder is None), (action, arg)
            if taken:
                model.lease_until = {arg: model.now + LEASE}
        elif action == "renew":
            renewed = claim.renew_leases(engine, token=token, batch_id=batch, lease_seconds=LEASE)
            assert renewed == int(_held_by(before, arg))
            if renewed:
                # Renewing an expired-but-untaken claim revives it: nobody else holds the row.
                assert model.holder() in (None, arg)
                model.lease_until = {arg: model.now + LEASE}
        elif action == "release":
            released = claim.release_claims(engine, token=token, batch_id=batch)
            assert released == int(_held_by(before, arg))
            model.lease_until.pop(arg, None)
        else:  # send: the guard in front of every create-reversal call
            attempt = record.start_attempts(
                engine, row_ids=[row_id], token=token, batch_id=batch
            ).get(row_id)
            assert (attempt is not None) == _held_by(before, arg)
            if model.holder() not in (None, arg):
                assert attempt is None, f"{arg} sent while {model.holder()} holds a live lease"

        holder = model.holder()
        state = row_state(engine, row_id)
        if holder is not None:
            assert _held_by(state, holder)
            assert state["claim_expires_at"] is not None


def _held_by(state: dict[str, object], worker: tuple[str, str]) -> bool:
    return (state["claimed_by"], state["claimed_by_batch"]) == worker
