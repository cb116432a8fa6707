"""Property: no interleaving of claim/renew/expire/reclaim/release lets two workers act on a row.

The other two properties of issue 7 live next to the code they test and are
not repeated here:

* the classifier maps every status/code/message to exactly one sentinel and
  never raises: ``tests/stripe/test_classify.py::test_property_exactly_one_sentinel_never_raises``;
* the backoff schedule is non-decreasing up to its cap and within its jitter:
  ``tests/reversals/test_backoff.py::test_schedule_is_non_decreasing_to_its_cap_and_within_jitter``.

Here two workers drive the real ``claim_due_rows``, ``renew_leases``,
``release_claims`` and ``start_attempts`` (the guard every Stripe call passes)
against the real database, in any order hypothesis picks; "time passing" is
``advance_clock``. A model tracks, in the database's own time, the lease each
worker was granted. After every step: at most one worker holds a live lease,
the row's ``claimed_by`` is that worker, and ``start_attempts`` succeeds for
the holder and is refused for anybody else, so a worker whose lease expired
and was taken over can never send.
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
WORKERS = ("worker-a", "worker-b")

ACTIONS = st.one_of(
    st.tuples(st.just("claim"), st.sampled_from(WORKERS)),
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
    lease_until: dict[str, int] = field(default_factory=dict)

    def holder(self) -> str | None:
        live = [w for w, until in self.lease_until.items() if until > self.now]
        assert len(live) <= 1, f"model: two live leases {live}"
        return live[0] if live else None


def _reset(engine: sa.Engine, row_id: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET claimed_by = NULL, claim_expires_at = NULL,"
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
        elif action == "claim":
            assert isinstance(arg, str)
            holder = model.holder()
            got = claim.claim_due_rows(engine, token=arg, max_rows=10, lease_seconds=LEASE)
            # Free or expired: taken. A live lease is never taken, not even by its own
            # token (issue 12 defect 4: each run claims with its own id; a second claim
            # under one token would let two batches send the same row).
            assert got.rows_claimed == (1 if holder is None else 0), (action, arg)
            if got.rows_claimed:
                model.lease_until = {arg: model.now + LEASE}
        elif action == "renew":
            assert isinstance(arg, str)
            renewed = claim.renew_leases(engine, token=arg, lease_seconds=LEASE)
            still_ours = row_state(engine, row_id)["claimed_by"] == arg
            assert renewed == int(still_ours)
            if renewed:
                # Renewing an expired-but-untaken claim revives it: nobody else holds the row.
                assert model.holder() in (None, arg)
                model.lease_until = {arg: model.now + LEASE}
        elif action == "release":
            assert isinstance(arg, str)
            claim.release_claims(engine, token=arg)
            model.lease_until.pop(arg, None)
        else:  # send: the guard in front of every create-reversal call
            assert isinstance(arg, str)
            attempt = record.start_attempts(engine, row_ids=[row_id], token=arg).get(row_id)
            state = row_state(engine, row_id)
            assert (attempt is not None) == (state["claimed_by"] == arg)
            if model.holder() not in (None, arg):
                assert attempt is None, f"{arg} sent while {model.holder()} holds a live lease"

        holder = model.holder()
        state = row_state(engine, row_id)
        if holder is not None:
            assert state["claimed_by"] == holder
            assert state["claim_expires_at"] is not None
