"""Issue 12, defect 4: a claim is fenced to the process holding it; termination stops sends.

Real PostgreSQL, the real SDK and the emulator. Two stand-ins, each because
nothing real can show the point in a test: the Dagster step context is reduced
to the real ``DagsterRun`` the token is taken from, and termination is a real
signal whose handler raises, as Dagster's does, in the thread running the batch.
"""

from __future__ import annotations

import os
import signal
import threading
import types
from collections.abc import Iterator

import dagster as dg
import pytest
import sqlalchemy as sa

from reversal_pipeline.defs.reversals.assets import claim_token
from reversal_pipeline.reversals.batch import ReversalBatch
from reversal_pipeline.reversals.claim import claim_due_rows
from reversal_pipeline.reversals.settings import ReversalSettings
from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.marketplace import row_state, seed_rows

SETTINGS = ReversalSettings(concurrency=1, backoff_jitter=0.0)


@pytest.fixture
def stripe_resource(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> Iterator[StripeResource]:
    resource = StripeResource(
        api_key=stripe_api_key, api_base=stripe_emulator.url, requests_per_second=500
    )
    yield resource
    resource.close()


def _context(run_id: str, root: str | None = None) -> object:
    run = dg.DagsterRun(
        job_name="reversal_job", run_id=run_id, root_run_id=root, parent_run_id=root
    )
    return types.SimpleNamespace(run=run)


def _batch(engine: sa.Engine, stripe: StripeResource, token: str) -> ReversalBatch:
    return ReversalBatch(engine, stripe, token=token, run_id=token, settings=SETTINGS)


def _creates(server: EmulatorServer) -> int:
    by_endpoint = server.state.requests.counters()["by_endpoint"]
    return int(by_endpoint.get("POST /v1/transfers/{id}/reversals", 0))


def test_a_reexecution_never_takes_rows_its_still_sending_original_holds(
    engine: sa.Engine, stripe_emulator: EmulatorServer, stripe_resource: StripeResource
) -> None:
    control = stripe_emulator.control()
    [transfer_id] = control.create_transfers(
        [{"amount": 1_000, "currency": "usd", "destination": "acct_s"}], returning="ids"
    )
    [row] = seed_rows(engine, None, 1, stripe_transfer_id=transfer_id, amount=500)
    control.add_script(respond="hold", method="POST", transfer_id=transfer_id)
    original_token = claim_token(_context("run-original"))  # type: ignore[arg-type]
    claim_due_rows(engine, token=original_token, max_rows=10, lease_seconds=600)
    original = _batch(engine, stripe_resource, original_token)
    sending = threading.Thread(target=original.run)
    sending.start()
    try:
        assert control.wait_for_held(1, timeout=10)  # the original's create is on the wire
        retry_token = claim_token(_context("run-retry", root="run-original"))  # type: ignore[arg-type]
        claimed = claim_due_rows(engine, token=retry_token, max_rows=10, lease_seconds=600)
        _batch(engine, stripe_resource, retry_token).run()
    finally:
        control.release_holds()
        sending.join(30)

    assert claimed.rows_claimed == 0
    reversals = control.get_transfer(transfer_id)["reversals"]
    assert sum(r["amount"] for r in reversals) == 500
    assert row_state(engine, row.id)["status"] == "reversed"


class Terminated(BaseException):
    """What the signal handler raises, like Dagster's DagsterExecutionInterruptedError."""


def test_termination_stops_sending_at_once_and_releases_the_rest(
    engine: sa.Engine, stripe_emulator: EmulatorServer, stripe_resource: StripeResource
) -> None:
    control = stripe_emulator.control()
    rows = seed_rows(engine, control, 5)
    control.add_script(respond="hold", method="POST", transfer_id=rows[0].stripe_transfer_id)
    claim_due_rows(engine, token="run-t", max_rows=10, lease_seconds=600)
    batch = _batch(engine, stripe_resource, "run-t")

    def terminate() -> None:
        if control.wait_for_held(1, timeout=10):
            os.kill(os.getpid(), signal.SIGUSR1)
            batch.stopping.wait(10)
        control.release_holds()

    def interrupt(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGUSR1, interrupt)
    operator = threading.Thread(target=terminate)
    try:
        operator.start()
        with pytest.raises(Terminated):
            batch.run()
    finally:
        operator.join(30)
        signal.signal(signal.SIGUSR1, previous)

    assert _creates(stripe_emulator) == 1  # the queued rows were never sent
    assert row_state(engine, rows[0].id)["status"] == "reversed"  # the call in flight is kept
    for row in rows[1:]:
        state = row_state(engine, row.id)
        assert (state["status"], state["retry_count"]) == ("reversal_pending", 0)
        assert state["claimed_by"] is None
