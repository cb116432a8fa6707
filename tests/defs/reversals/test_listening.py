"""A listening reversal_job run: new refunds are reversed in the same run, and it ends when it must.

Real PostgreSQL (with the NOTIFY trigger of migration 0010), the real SDK and
the emulator, the real ``reversal_job`` executed in process. The only stand-in
is termination: a real signal whose handler raises in the waiting thread, as
Dagster's does (the same device as tests/reversals/test_fencing.py).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import timedelta
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from reversal_pipeline.environment import LISTEN_SECONDS_ENV
from reversal_pipeline.errors import ConfigurationError, StripeSystemicError
from reversal_pipeline.reversals.batch import FAILURE_LIST_LIMIT, BatchReport
from reversal_pipeline.reversals.intake import request_reversal
from reversal_pipeline.reversals.listen import (
    ListenEnd,
    ListenWindow,
    PassReport,
    RefundEventWakeups,
    Wake,
    combined_report,
    listen,
    listen_seconds_from_env,
    take_newly_due,
)
from reversal_pipeline.reversals.settings import ReversalSettings
from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.dagster_job import load_defs, materialization_metadata
from tests.plugins.marketplace import SeededRow, attempts_of, row_state, seed_rows

#: How long a test waits for a state it expects (never a timing assertion): generous,
#: since on a loaded shared machine the in-process job took over 60 s to reach its
#: first pass.
STATE_TIMEOUT = 240.0

#: The README's default for REVERSAL_LISTEN_SECONDS.
DEFAULT_LISTEN_SECONDS = 120.0


def _run_listening(
    instance: dg.DagsterInstance, **listen_config: float
) -> tuple[dg.ExecuteInProcessResult, float]:
    job = load_defs().resolve_job_def("reversal_job")
    started = time.monotonic()
    result = job.execute_in_process(
        instance=instance,
        run_config={"ops": {"reversal_outcomes": {"config": listen_config}}},
        raise_on_error=False,
    )
    return result, time.monotonic() - started


def _wait_for_status(engine: sa.Engine, row_id: int, status: str) -> None:
    """Wait on the database's state, not on time: fails if the state never comes."""
    deadline = time.monotonic() + STATE_TIMEOUT
    while row_state(engine, row_id)["status"] != status:
        assert time.monotonic() < deadline, f"row {row_id} never became {status}"
        time.sleep(0.05)


def _refund_once_first_is_reversed(
    engine: sa.Engine, first: SeededRow, later: SeededRow
) -> threading.Thread:
    """The application's webhook, writing a refund while the run is up (after its first row)."""

    def refund() -> None:
        _wait_for_status(engine, first.id, "reversed")
        with engine.begin() as connection:
            request_reversal(connection, refund_id="re_later", order_id=later.order_id)

    thread = threading.Thread(target=refund, name="webhook")
    thread.start()
    return thread


def _passes(result: dg.ExecuteInProcessResult) -> list[dict[str, Any]]:
    table = materialization_metadata(result, "reversal_outcomes")["batches"]
    return [dict(record.data) for record in table.records]


@pytest.mark.parametrize(
    ("trigger_enabled", "poll_seconds", "woken_by"),
    [(True, 60.0, "notify"), (False, 0.5, "poll")],
    ids=["via-notify", "via-poll-fallback"],
)
def test_a_refund_inserted_while_the_run_listens_is_reversed_in_the_same_run(
    job_env: dict[str, str],
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    trigger_enabled: bool,
    poll_seconds: float,
    woken_by: str,
) -> None:
    first, later = seed_rows(engine, stripe_emulator.control(), 2, status="completed")
    if not trigger_enabled:  # a lost notification: only the poll can find the event
        with engine.begin() as connection:
            connection.execute(
                sa.text("ALTER TABLE refund_events DISABLE TRIGGER trg_refund_events_notify")
            )
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_first", order_id=first.order_id)
    webhook = _refund_once_first_is_reversed(engine, first, later)

    result, _ = _run_listening(dagster_instance, listen_seconds=8, poll_seconds=poll_seconds)
    webhook.join(STATE_TIMEOUT)

    assert result.success
    for row in (first, later):
        assert row_state(engine, row.id)["status"] == "reversed"
        [create] = [a for a in attempts_of(engine, row.id) if a["action"] == "create_reversal"]
        assert create["run_id"] == result.run_id  # the same run, no second launch
    passes = _passes(result)
    assert [p["woken_by"] for p in passes] == ["first", woken_by]
    assert [p["reversed"] for p in passes] == [1, 1]
    assert passes[1]["events_processed"] == 1
    outcome = materialization_metadata(result, "reversal_outcomes")
    assert outcome["rows_reversed"] == 2  # the totals cover every batch of the run
    assert outcome["listen_ended"] == "idle"
    assert outcome["events_processed_while_listening"] == 1
    [observation] = [
        e
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION
        and e.asset_key == dg.AssetKey("reversal_outcomes")
    ]  # written as the pass finished, not only at the end
    assert observation.event_specific_data.asset_observation.metadata["reversed"].value == 1


#: Far below the 600 s idle window the longest-listen case must not wait out, far above
#: what the in-process job takes on a loaded machine (43 s once, against a 30 s bound).
NOT_THE_IDLE_WINDOW_SECONDS = 300.0


@pytest.mark.parametrize(
    ("listen_config", "ended", "bound_seconds"),
    [
        ({"listen_seconds": 1.0, "poll_seconds": 0.2}, "idle", NOT_THE_IDLE_WINDOW_SECONDS),
        (
            {"listen_seconds": 600.0, "listen_max_seconds": 2.0, "poll_seconds": 0.2},
            "max_time",
            NOT_THE_IDLE_WINDOW_SECONDS,
        ),
    ],
    ids=["idle-window", "longest-listen"],
)
def test_the_run_ends_when_idle_for_the_window_or_after_the_longest_listen(
    job_env: dict[str, str],
    dagster_instance: dg.DagsterInstance,
    listen_config: dict[str, float],
    ended: str,
    bound_seconds: float,
) -> None:
    result, took = _run_listening(dagster_instance, **listen_config)

    assert result.success
    outcome = materialization_metadata(result, "reversal_outcomes")
    assert outcome["listen_ended"] == ended
    assert took < bound_seconds  # far below listen_seconds=600 for the longest-listen case


def test_without_listen_config_the_run_ends_after_its_due_rows(
    job_env: dict[str, str], dagster_instance: dg.DagsterInstance
) -> None:
    result, _ = _run_listening(dagster_instance)

    assert result.success
    outcome = materialization_metadata(result, "reversal_outcomes")
    assert outcome["listened"] is False
    assert "listen_ended" not in outcome


# -- the plain loop: termination and stop --------------------------------------------------------


SETTINGS = ReversalSettings(concurrency=2, backoff_jitter=0.0)


class Terminated(BaseException):
    """What the signal handler raises, like Dagster's DagsterExecutionInterruptedError."""


class _SeenWaiting(RefundEventWakeups):
    """The real wake-ups, telling the test once the loop is blocked waiting."""

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(engine)
        self.waiting = threading.Event()

    def wait(self, timeout: float) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def _pass(engine: sa.Engine, stripe: StripeResource) -> Any:
    def run_pass(wake: Wake) -> Any:
        return take_newly_due(
            engine,
            stripe,
            token="run-listen",
            run_id=None,
            settings=SETTINGS,
            open_window=timedelta(days=30),
            wake=wake,
        )

    return run_pass


def test_termination_stops_a_listening_run_promptly(
    engine: sa.Engine, stripe_resource: StripeResource
) -> None:
    wakeups = _SeenWaiting(engine)
    signalled_at: list[float] = []

    def terminate() -> None:
        if wakeups.waiting.wait(STATE_TIMEOUT):
            signalled_at.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGUSR1)

    def interrupt(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGUSR1, interrupt)
    operator = threading.Thread(target=terminate)
    try:
        operator.start()
        with pytest.raises(Terminated), wakeups:
            listen(
                wakeups,
                _pass(engine, stripe_resource),
                ListenWindow(idle_seconds=120, max_seconds=600, poll_seconds=30),
                on_pass=lambda report: None,
            )
        stopped_at = time.monotonic()
    finally:
        operator.join(STATE_TIMEOUT)
        signal.signal(signal.SIGUSR1, previous)

    [signalled] = signalled_at
    assert stopped_at - signalled < 5.0  # not the 30 s poll, nor the 120 s window
    assert wakeups._connection is None  # the listening connection is closed, not pooled


def test_a_stop_request_ends_listening_at_the_next_wait_slice(
    engine: sa.Engine, stripe_resource: StripeResource
) -> None:
    wakeups = _SeenWaiting(engine)
    stop = threading.Event()
    stopper = threading.Thread(target=lambda: wakeups.waiting.wait(STATE_TIMEOUT) and stop.set())
    stopper.start()
    started = time.monotonic()
    with wakeups:
        ended = listen(
            wakeups,
            _pass(engine, stripe_resource),
            ListenWindow(idle_seconds=120, max_seconds=600, poll_seconds=30),
            on_pass=lambda report: None,
            stop=stop,
        )
    stopper.join(STATE_TIMEOUT)

    assert ended is ListenEnd.STOPPED
    assert time.monotonic() - started < 10.0


@pytest.mark.parametrize("fault", ["refused-401", "outcome-not-written"])
def test_a_pass_that_must_fail_the_run_ends_listening_and_takes_nothing_more(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    stripe_resource: StripeResource,
    fault: str,
) -> None:
    """A 401 or an outcome not written: the loop stops at once, so the run fails loudly.

    A refund that arrives during the failing pass is not taken by another pass
    (a 401 means nothing more may be sent; an unwritten outcome must reach an
    operator now, not after the idle window).
    """
    control = stripe_emulator.control()
    failing, later = seed_rows(engine, control, 2, status="completed")
    if fault == "refused-401":
        control.add_script(respond=401, method="POST", transfer_id=failing.stripe_transfer_id)
    else:  # its create's key already used: the audit insert, and so the write, fails
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO reversal_attempts"
                    " (seller_transfer_id, action, idempotency_key, outcome, actor)"
                    " VALUES (:id, 'create_reversal', :key, 'transient', 'test')"
                ),
                {
                    "id": failing.id,
                    "key": f"reversal_pipeline:seller_transfer:{failing.id}:target:1000:attempt:1",
                },
            )
    with engine.begin() as connection:
        request_reversal(connection, refund_id="re_failing", order_id=failing.order_id)
    passes: list[PassReport] = []

    def record_and_refund(report: PassReport) -> None:
        passes.append(report)
        with engine.begin() as connection:  # a new refund while the failing pass ends
            request_reversal(connection, refund_id="re_later", order_id=later.order_id)

    with RefundEventWakeups(engine) as wakeups:
        ended = listen(
            wakeups,
            _pass(engine, stripe_resource),
            ListenWindow(idle_seconds=120, max_seconds=600, poll_seconds=0.2),
            on_pass=record_and_refund,
        )

    assert ended is ListenEnd.RUN_FAILING
    [report] = passes
    assert report.must_fail_run
    assert (report.wake, report.events_processed, report.rows_claimed) == (Wake.POLL, 1, 1)
    if fault == "refused-401":
        assert isinstance(report.batch.systemic_error, StripeSystemicError)
        assert report.batch.systemic_error.http_status == 401
        assert report.batch.outcomes_not_written == []
    else:
        assert report.batch.systemic_error is None
        assert report.batch.outcomes_not_written == [failing.id]
    state = row_state(engine, failing.id)
    assert (state["status"], state["retry_count"], state["claimed_by"]) == (
        "reversal_pending",
        0,
        None,
    )
    assert [e for e in control.request_log() if e["transfer_id"] == later.stripe_transfer_id] == []
    assert row_state(engine, later.id)["status"] == "completed"  # its event waits in the inbox


def test_a_lost_listening_connection_falls_back_to_polling_and_loses_no_refund(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    stripe_resource: StripeResource,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The LISTEN connection is killed (a real server-side termination): a poll finds the refund."""
    [row] = seed_rows(engine, stripe_emulator.control(), 1, status="completed")
    caplog.set_level(logging.ERROR, logger="reversal_pipeline.reversals.listen")
    passes: list[PassReport] = []
    with RefundEventWakeups(engine) as wakeups:
        backend = wakeups._driver.info.backend_pid
        with engine.begin() as connection:
            assert connection.execute(
                sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend}
            ).scalar_one()
        with engine.begin() as connection:  # its NOTIFY reaches no one
            request_reversal(connection, refund_id="re_unheard", order_id=row.order_id)
        ended = listen(
            wakeups,
            _pass(engine, stripe_resource),
            ListenWindow(idle_seconds=2, max_seconds=STATE_TIMEOUT, poll_seconds=0.3),
            on_pass=passes.append,
        )
        assert wakeups._connection is None  # dropped, not returned to the pool

    assert ended is ListenEnd.IDLE
    assert [(p.wake, p.events_processed, p.batch.statuses["reversed"]) for p in passes] == [
        (Wake.POLL, 1, 1)
    ]
    assert row_state(engine, row.id)["status"] == "reversed"
    [failure] = [r for r in caplog.records if r.name == "reversal_pipeline.reversals.listen"]
    assert "keeps polling" in failure.getMessage()
    assert failure.exc_info is not None


def test_a_stop_already_requested_runs_no_pass(engine: sa.Engine) -> None:
    stop = threading.Event()
    stop.set()

    def no_pass(wake: Wake) -> PassReport:
        raise AssertionError(f"a pass ran ({wake}) after the stop")

    with RefundEventWakeups(engine) as wakeups:
        ended = listen(
            wakeups,
            no_pass,
            ListenWindow(idle_seconds=120, max_seconds=600, poll_seconds=30),
            on_pass=lambda report: None,
            stop=stop,
        )

    assert ended is ListenEnd.STOPPED


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(None, DEFAULT_LISTEN_SECONDS), ("  ", DEFAULT_LISTEN_SECONDS), ("0", 0.0), ("3600", 3600.0)],
)
def test_listen_seconds_come_from_the_environment(raw: str | None, seconds: float) -> None:
    environ = {} if raw is None else {LISTEN_SECONDS_ENV: raw}
    assert listen_seconds_from_env(environ) == seconds


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("two minutes", "REVERSAL_LISTEN_SECONDS='two minutes' is not a number of seconds"),
        ("-1", "REVERSAL_LISTEN_SECONDS=-1 is outside 0..3600 seconds"),
        ("3601", "REVERSAL_LISTEN_SECONDS=3601 is outside 0..3600 seconds"),
        ("nan", "REVERSAL_LISTEN_SECONDS=nan is outside 0..3600 seconds"),
    ],
)
def test_a_bad_listen_seconds_setting_is_refused_by_name(raw: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        listen_seconds_from_env({LISTEN_SECONDS_ENV: raw})
    assert str(refused.value) == complaint


def test_the_run_totals_keep_the_first_refusal_and_cap_the_failure_list() -> None:
    first = StripeSystemicError("refused", http_status=401)
    second = StripeSystemicError("refused again", http_status=403)
    failure = {"seller_transfer_id": 1, "status": "permanently_failed"}
    reports = [
        BatchReport(failures=[failure] * 30, outcomes_not_written=[7], elapsed_seconds=1.0),
        BatchReport(failures=[failure] * 30, systemic_error=first, rows_released=2),
        BatchReport(failures=[failure] * 30, systemic_error=second, rows_released=1),
    ]
    reports[0].outcomes["reversed"] = 2
    reports[0].reversed_amount_by_currency["usd"] = 2_000
    reports[1].outcomes["reversed"] = 1
    reports[1].statuses["reversed"] = 1
    reports[1].reversed_amount_by_currency["usd"] = 500

    total = combined_report(reports)

    assert total.systemic_error is first
    assert len(total.failures) == FAILURE_LIST_LIMIT
    assert (total.outcomes, total.statuses) == ({"reversed": 3}, {"reversed": 1})
    assert total.reversed_amount_by_currency == {"usd": 2_500}
    assert (total.rows_released, total.outcomes_not_written) == (3, [7])
    assert total.elapsed_seconds == 1.0
