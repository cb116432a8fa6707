"""SIGKILL the job at each interesting point; a later run recovers every row, exactly once.

Each test parks the job at a precise point using something observable (a
socket that never answers, an emulator ``hold``, a table lock), kills the
process there with SIGKILL, checks the damage is what the design expects,
then lets time pass (``advance_clock``) and runs the job again.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.marketplace import SeededRow, advance_clock, attempts_of, row_state, seed_rows
from tests.reliability.launcher import JobLauncher, wait_until

LEASE = 60
SETTINGS = {"lease_seconds": LEASE, "concurrency": 2, "backoff_jitter": 0.0}


def _claimed_by(engine: sa.Engine, row_id: int) -> str | None:
    return row_state(engine, row_id)["claimed_by"]


def _reversals(emulator: EmulatorServer, row: SeededRow) -> list[dict]:
    assert row.stripe_transfer_id is not None
    return emulator.control().get_transfer(row.stripe_transfer_id)["reversals"]


def _creates_sent(emulator: EmulatorServer) -> int:
    return sum(
        1
        for r in emulator.control().request_log()
        if r["method"] == "POST" and r["path"].endswith("/reversals")
    )


def _recover(launcher: JobLauncher, env: dict[str, str], engine: sa.Engine, row: SeededRow) -> dict:
    """A run before the lease expires must leave the row alone; after it, recover it."""
    before = row_state(engine, row.id)
    early = launcher.run(env, SETTINGS)
    assert early["success"], early["error"]
    assert early["metadata"]["due_reversals"]["rows_claimed"] == 0
    assert row_state(engine, row.id)["stripe_attempts"] == before["stripe_attempts"]

    advance_clock(engine, LEASE + 1)
    later = launcher.run(env, SETTINGS)
    assert later["success"], later["error"]
    state = row_state(engine, row.id)
    assert state["status"] == "reversed"
    assert state["claimed_by"] is None
    return state


@pytest.fixture
def black_hole() -> Iterator[socket.socket]:
    """A listening socket that accepts connections and never answers (a request in transit)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.settimeout(60)
        yield sock


def test_killed_after_the_claim_before_stripe_saw_anything(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    job_launcher: JobLauncher,
    black_hole: socket.socket,
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    host, port = black_hole.getsockname()
    env = {**job_env, "STRIPE_API_BASE": f"http://{host}:{port}"}

    job = job_launcher.start(env, SETTINGS)
    connection, _ = black_hole.accept()  # the job is now at its first Stripe call
    with connection:
        token = _claimed_by(engine, row.id)
        assert token is not None
        job.kill()

    state = row_state(engine, row.id)
    assert (state["status"], state["claimed_by"]) == ("reversal_pending", token)
    assert state["stripe_attempts"] == 1  # counted before sending: the next run must look first
    assert _creates_sent(stripe_emulator) == 0

    final = _recover(job_launcher, job_env, engine, row)

    [reversal] = _reversals(stripe_emulator, row)
    assert final["stripe_reversal_id"] == reversal["id"]
    actions = [(a["action"], a["outcome"]) for a in attempts_of(engine, row.id)]
    assert actions == [("lookup_reversal", "not_found"), ("create_reversal", "reversed")]


def test_killed_after_stripe_committed_before_the_write(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    job_launcher: JobLauncher,
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    control = stripe_emulator.control()
    control.add_script(respond="hold", method="POST", transfer_id=row.stripe_transfer_id)

    job = job_launcher.start(job_env, SETTINGS)
    assert control.wait_for_held(1, timeout=60)
    job.kill()
    control.release_holds()  # the request executes: Stripe reverses, nobody hears the answer
    wait_until(lambda: len(_reversals(stripe_emulator, row)) == 1, what="the held reversal")

    state = row_state(engine, row.id)
    assert state["status"] == "reversal_pending"
    assert state["stripe_reversal_id"] is None
    assert state["stripe_attempts"] == 1
    assert attempts_of(engine, row.id) == []  # the process died before any write

    final = _recover(job_launcher, job_env, engine, row)

    [reversal] = _reversals(stripe_emulator, row)
    assert final["stripe_reversal_id"] == reversal["id"]
    assert _creates_sent(stripe_emulator) == 1  # found by its metadata, never sent again
    [lookup] = attempts_of(engine, row.id)
    assert (lookup["action"], lookup["outcome"]) == ("lookup_reversal", "found_existing")
    assert lookup["stripe_reversal_id"] == reversal["id"]
    assert lookup["status_after"] == "reversed"


def _waiting_insert_pid(engine: sa.Engine) -> int | None:
    with engine.connect() as connection:
        return connection.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query ILIKE 'INSERT INTO reversal_attempts%' LIMIT 1"
            )
        ).scalar()


def _backend_alive(engine: sa.Engine, pid: int) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            ).scalar()
        )


def test_killed_during_the_write_leaves_neither_state_nor_audit(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    job_launcher: JobLauncher,
) -> None:
    [row] = seed_rows(engine, stripe_emulator.control(), 1)
    control = stripe_emulator.control()
    control.add_script(respond="hold", method="POST", transfer_id=row.stripe_transfer_id)

    job = job_launcher.start(job_env, SETTINGS)
    assert control.wait_for_held(1, timeout=60)
    # Block the audit insert of the outcome transaction: its UPDATE of the row goes
    # through, then the INSERT into reversal_attempts waits for this lock.
    blocker = engine.connect()
    transaction = blocker.begin()
    blocker.execute(sa.text("LOCK TABLE reversal_attempts IN SHARE MODE"))
    try:
        control.release_holds()
        backend = wait_until(
            lambda: _waiting_insert_pid(engine), timeout=60, what="the outcome write to block"
        )
        job.kill()
    finally:
        transaction.rollback()
        blocker.close()
    # The server notices the dead client once the INSERT gets its lock, and rolls back.
    wait_until(lambda: not _backend_alive(engine, backend), what="the dead backend to go")

    state = row_state(engine, row.id)
    assert state["status"] == "reversal_pending"  # the UPDATE went with its audit row
    assert state["stripe_reversal_id"] is None
    assert attempts_of(engine, row.id) == []
    assert len(_reversals(stripe_emulator, row)) == 1

    final = _recover(job_launcher, job_env, engine, row)

    [reversal] = _reversals(stripe_emulator, row)
    assert final["stripe_reversal_id"] == reversal["id"]
    assert _creates_sent(stripe_emulator) == 1
