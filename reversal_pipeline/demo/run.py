"""The demo from start to summary: services, seed, cases, ticks, reconciliation.

Runs through the persistent Dagster instance of ``reversal-pipeline dev``
(``DAGSTER_HOME``, PostgreSQL storage), so every run and materialization is
in the UI afterwards. The emulator runs in a thread of this process; its
transfers and reversals are saved at the end to
``<REVERSAL_PIPELINE_HOME>/stripe_emulator_state.json``, which ``dev``'s
emulator starts from, so the rows the demo leaves ``reversal_pending`` still
find their transfers at "Stripe" (a fresh emulator would 404 them, and the
job would end them ``permanently_failed``).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from reversal_pipeline.db import migrate
from reversal_pipeline.db.embedded import ensure_database, start_embedded_server, state_dir
from reversal_pipeline.db.engine import create_db_engine
from reversal_pipeline.db.url import mask_url
from reversal_pipeline.demo.cases import (
    PlantedCases,
    plant_drift,
    plant_operator_cases,
    plant_partial_refunds,
    refund_second_part,
)
from reversal_pipeline.demo.marketplace import demo_days, refund_orders, seed_marketplace
from reversal_pipeline.demo.summary import DemoSummary, build_summary, summary_lines
from reversal_pipeline.devserver.home import DAGSTER_DATABASE, prepare_dagster_home
from reversal_pipeline.devserver.stack import EMULATOR_API_KEY, emulator_state_file
from reversal_pipeline.environment import (
    DAGSTER_HOME_ENV,
    DAGSTER_PG_URL_ENV,
    DATABASE_URL_ENV,
    STRIPE_API_BASE_ENV,
    STRIPE_API_KEY_ENV,
    STRIPE_REQUESTS_PER_SECOND_ENV,
)
from reversal_pipeline.errors import ConfigurationError
from reversal_pipeline.jobs_runner import JobOutcome, run_job_once
from reversal_pipeline.runbook.views import wrap_line
from reversal_pipeline.stripe_emulator import EmulatorServer, SnapshotError

Echo = Callable[[str], None]
RECONCILIATION_JOB = "reconciliation_job"
#: Settings of the demo's reversal runs: short backoff so the retries of the
#: flaky stretch come due at the next tick once time is advanced.
TICK_SETTINGS = {"backoff_base_seconds": 300.0, "backoff_jitter": 0.0}
TICK_HOURS = 2.0
#: The runs' event logs go to the instance (the UI); the terminal shows only the progress lines.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
#: The demo's drift was planted seconds ago: no grace window, or none of it would
#: count yet. (Moving timestamps back instead would leave rows updated before they
#: were created, and audit rows after the changes they record.)
RECONCILE_NOW = {"ops": {"reversal_reconciliation": {"config": {"grace_minutes": 0}}}}
ENV_NAMES = (
    DATABASE_URL_ENV,
    STRIPE_API_KEY_ENV,
    STRIPE_API_BASE_ENV,
    STRIPE_REQUESTS_PER_SECOND_ENV,
    DAGSTER_HOME_ENV,
    DAGSTER_PG_URL_ENV,
)


@dataclass
class DemoOptions:
    """Sizes and places; the defaults are the README's demo."""

    days: int = 3
    transfers: int = 500
    sellers: int = 36
    refunded_orders: int = 140
    ticks: int = 3
    seed: int = 20_261_120
    keep: bool = False
    server_url: str | None = None  # a server where the demo may drop and create its databases
    database: str = "reversal_pipeline"
    dagster_database: str = DAGSTER_DATABASE
    dagster_home: Path | None = None
    #: Where Stripe's side is saved for ``dev`` (None: under REVERSAL_PIPELINE_HOME).
    emulator_state_file: Path | None = None


@dataclass
class DemoResult:
    database_url: str
    dagster_home: Path
    summary: DemoSummary
    planted: PlantedCases
    runs: dict[str, JobOutcome] = field(default_factory=dict)
    reconciled: bool = False
    seconds: float = 0.0
    emulator_state_file: Path | None = None


@contextmanager
def _restored_environment() -> Iterator[None]:
    """The demo points the job at its own database and emulator, and puts things back after."""
    saved = {name: os.environ.get(name) for name in ENV_NAMES}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def fresh_database(server_url: str, name: str, *, keep: bool) -> str:
    """Drop and recreate the demo database (unless ``keep``); returns its URL."""
    if not keep:
        admin = sa.create_engine(
            server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return ensure_database(server_url, name)


def advance_time(engine: sa.Engine, hours: float) -> None:
    """Make ``hours`` pass for the job: deadlines (retries, leases) come that much closer."""
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE seller_transfers SET"
                " next_retry_at = next_retry_at - make_interval(secs => :s),"
                " claim_expires_at = claim_expires_at - make_interval(secs => :s)"
                " WHERE status = 'reversal_pending'"
                " AND (next_retry_at IS NOT NULL OR claim_expires_at IS NOT NULL)"
            ),
            {"s": hours * 3600},
        )


def _tick_line(number: int, outcome: JobOutcome) -> str:
    claimed = outcome.metadata.get("due_reversals", {}).get("rows_claimed", 0)
    done = outcome.metadata.get("reversal_outcomes", {})
    state = "ok" if outcome.success else f"FAILED ({outcome.error})"
    return (
        f"  tick {number}: run {outcome.run_id[:8]} {state}: claimed {claimed}, "
        f"reversed {done.get('rows_reversed', 0)}, "
        f"permanently failed {done.get('rows_permanently_failed', 0)}, "
        f"retry scheduled {done.get('rows_retry_scheduled', 0)}, "
        f"Stripe calls {done.get('stripe_calls', 0)}"
    )


def has_reconciliation() -> bool:
    from reversal_pipeline.definitions import defs

    return defs().get_repository_def().has_job(RECONCILIATION_JOB)


def wrapping(echo: Echo) -> Echo:
    """``echo`` that wraps each line between words, so no line is cut mid-word."""

    def wrapped_echo(line: str) -> None:
        for part in wrap_line(line):
            echo(part)

    return wrapped_echo


def run_demo(options: DemoOptions, echo: Echo) -> DemoResult:
    echo = wrapping(echo)
    started = time.monotonic()
    rng = random.Random(options.seed)  # noqa: S311 - demo data, not secrets
    with _restored_environment():
        echo(
            "[1/7] PostgreSQL" + ("" if options.server_url else f" (embedded, under {state_dir()})")
        )
        server_url = options.server_url or start_embedded_server()
        database_url = fresh_database(server_url, options.database, keep=options.keep)
        engine = create_db_engine(database_url)
        migrate.upgrade(engine)
        os.environ[DATABASE_URL_ENV] = database_url
        echo(
            f"      database {mask_url(database_url)} at head, "
            + ("kept" if options.keep else "fresh")
        )

        home = prepare_dagster_home(
            database_url, home=options.dagster_home, database=options.dagster_database
        )
        state_file = options.emulator_state_file or emulator_state_file()
        if not options.keep:
            # The database was just recreated: Stripe's old side must not outlive it,
            # even if this run fails before it saves its own.
            state_file.unlink(missing_ok=True)
        emulator_server = EmulatorServer(api_keys=[EMULATOR_API_KEY])
        with emulator_server as emulator, dg.DagsterInstance.from_config(str(home)) as instance:
            if options.keep and state_file.is_file():
                try:
                    emulator.load_state(state_file)
                except (SnapshotError, OSError) as exc:
                    raise ConfigurationError(
                        f"--keep cannot restore Stripe's side from {state_file} ({exc}); "
                        "run the demo without --keep to start clean"
                    ) from None
            if not options.keep:
                instance.wipe()
            echo(
                f"[2/7] Dagster instance {home} (PostgreSQL storage"
                + (")" if options.keep else ", runs wiped)")
            )
            os.environ.update(
                {
                    STRIPE_API_BASE_ENV: emulator.url,
                    STRIPE_API_KEY_ENV: EMULATOR_API_KEY,
                    STRIPE_REQUESTS_PER_SECOND_ENV: "200",
                }
            )
            control = emulator.control()
            echo(f"      Stripe emulator on {emulator.url} (in this process)")

            echo(
                f"[3/7] seeding {options.days} days, ~{options.transfers} transfers, "
                f"{options.sellers} sellers"
            )
            market = seed_marketplace(
                engine,
                control,
                days=demo_days(options.days),
                transfers=options.transfers,
                sellers=options.sellers,
                rng=rng,
            )
            orders = sorted(market.by_order())
            refunds = rng.sample(orders, min(options.refunded_orders, len(orders)))
            first_wave = refunds[: len(refunds) * 4 // 5]
            refund_orders(engine, market, first_wave, prefix="wave1")
            echo(
                f"      {len(market.transfers)} transfers "
                f"({', '.join(sorted({t.currency for t in market.transfers}))}), "
                f"{len(first_wave)} refunds now, {len(refunds) - len(first_wave)} later"
            )

            echo(
                "[4/7] planting: out-of-band reversal, unknown transfer id, malformed row, "
                "lost response, a stretch of 500s, partial refunds"
            )
            planted = plant_operator_cases(
                engine, control, market, rng, later_refunds=refunds[len(first_wave) :]
            )
            partial = plant_partial_refunds(
                engine, market, planted, rng, later_refunds=refunds[len(first_wave) :]
            )
            second_part_sent = False

            echo(f"[5/7] reversal_job, {options.ticks} ticks, {TICK_HOURS:g} h apart")
            runs: dict[str, JobOutcome] = {}
            for tick in range(1, options.ticks + 1):
                if tick == 2:
                    refund_orders(engine, market, refunds[len(first_wave) :], prefix="wave2")
                if tick >= 2 and not second_part_sent:
                    second_part_sent = refund_second_part(engine, partial)
                outcome = run_job_once(
                    "reversal_job",
                    run_config={
                        "resources": {"reversal_settings": {"config": TICK_SETTINGS}},
                        **QUIET,
                    },
                    tags={"demo": f"tick-{tick}"},
                    instance=instance,
                )
                runs[f"tick-{tick}"] = outcome
                echo(_tick_line(tick, outcome))
                advance_time(engine, TICK_HOURS)

            reconciled = has_reconciliation()
            if reconciled:
                echo(
                    "[6/7] planting one drift per reconciliation category, "
                    "then reconciling each day"
                )
                plant_drift(engine, control, market, planted, rng)
                for day in market.days:
                    outcome = run_job_once(
                        RECONCILIATION_JOB,
                        run_config={**RECONCILE_NOW, **QUIET},
                        partition_key=day.isoformat(),
                        tags={"demo": "reconciliation"},
                        instance=instance,
                    )
                    runs[f"reconcile-{day}"] = outcome
                    echo(
                        f"  {day}: run {outcome.run_id[:8]} "
                        + ("ok" if outcome.success else f"FAILED: {outcome.error}")
                    )
            else:
                echo("[6/7] reconciliation_job is not in the definitions yet: skipped")

            echo("[7/7] summary")
            summary = build_summary(engine, reconciled=reconciled)
            emulator.save_state(state_file)
            saved_transfers = emulator.state.transfer_count()
    seconds = time.monotonic() - started
    note = (
        f"Stripe state is kept: {saved_transfers} transfers saved to {state_file}, and "
        "`dev` starts its emulator from there. The database and the Dagster runs are kept too."
    )
    unwrapped = [
        *summary_lines(summary),
        *planted_lines(engine, planted),
        note,
        f"demo took {seconds:.1f}s",
        "next: uv run reversal-pipeline dev   # the Dagster UI, with these runs",
    ]
    summary.lines = [part for line in unwrapped for part in wrap_line(line)]
    for line in summary.lines:
        echo(line)
    engine.dispose()
    return DemoResult(database_url, home, summary, planted, runs, reconciled, seconds, state_file)


def planted_lines(engine: sa.Engine, planted: PlantedCases) -> list[str]:
    """Where each planted case ended, so the reader can find it with ``show --id``."""
    ids = [i for row_ids in planted.cases.values() for i in row_ids]
    with engine.connect() as connection:
        status: dict[int, str] = dict(
            connection.execute(
                sa.text("SELECT id, status FROM seller_transfers WHERE id = ANY(:ids)"),
                {"ids": ids},
            ).all()
        )
    lines = ["planted cases (try: uv run reversal-pipeline show --id N):"]
    for case, row_ids in planted.cases.items():
        rows = ", ".join(f"#{i} {status.get(i, '?')}" for i in row_ids) or "a Stripe-only transfer"
        lines.append(f"  {case:<28} {rows}")
    return lines
