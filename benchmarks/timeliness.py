"""Timeliness on the `dev` stack: refund event -> row reversed, and changed day -> reconciled.

Starts what `reversal-pipeline dev` starts (Dagster webserver, daemon and code
server on PostgreSQL storage, with the instance template of
``reversal_pipeline/devserver/dagster.yaml``) against a throwaway database and
the Stripe emulator in its own process, seeds a day of transfers, then lets
refunds arrive one by one at random intervals (a Poisson stream) and waits for
each order's rows to be ``reversed``. Figures:

* refund -> reversed, p50 and p95 over every refund (event ``received_at`` to
  the latest ``reversed_at`` of the order's rows, both from the database clock);
* the most ``reversal_job`` runs in progress at once (from the run storage);
* a past day's last change (the last reversal) -> a
  ``reconciliation_backfill_sensor`` run of that day finished.

Heavy (the whole stack on a shared machine): run it once, e.g.
``uv run python benchmarks/timeliness.py --refunds 60 --over 180``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from _common import (
    API_KEY,
    REPO,
    Figure,
    database,
    emulator_process,
    free_port,
    print_block,
    print_header,
)

from reversal_pipeline.db.engine import create_db_engine
from reversal_pipeline.demo.marketplace import seed_marketplace
from reversal_pipeline.devserver.home import DAGSTER_DATABASE, psycopg2_url
from reversal_pipeline.reversals.intake import request_reversal
from reversal_pipeline.stripe_emulator import EmulatorClient

POLL_SECONDS = 0.5
RECONCILIATION_SENSOR_INTERVAL_SECONDS = 300  # reconciliation_backfill_sensor's interval


@contextlib.contextmanager
def dev_stack(env: dict[str, str], port: int, log_path: Path) -> Iterator[None]:
    """``reversal-pipeline dev`` in its own process group; stopped like Ctrl-C."""
    command = [sys.executable, "-m", "reversal_pipeline.cli", "dev", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(f"dev exited early, see {log_path}")
                with (
                    contextlib.suppress(OSError),
                    urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/server_info", timeout=2
                    ) as response,
                ):
                    if response.status == 200:
                        break
                time.sleep(1)
            else:
                raise RuntimeError(f"dev did not serve within 300 s, see {log_path}")
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def reversal_latencies(engine: sa.Engine, refund_ids: list[str]) -> dict[str, float | None]:
    """Seconds from each refund event to its order's last reversal (None: not all reversed)."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                """
                SELECT e.refund_id,
                       bool_and(t.status = 'reversed') AS done,
                       extract(epoch FROM max(t.reversed_at) - e.received_at) AS seconds
                FROM refund_events e
                JOIN seller_transfers t ON t.order_id = e.order_id
                WHERE e.refund_id = ANY(:ids)
                GROUP BY e.refund_id, e.received_at
                """
            ),
            {"ids": refund_ids},
        ).all()
    found = {r.refund_id: (float(r.seconds) if r.done else None) for r in rows}
    return {refund_id: found.get(refund_id) for refund_id in refund_ids}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def most_at_once(runs: list[dg.RunRecord]) -> int:
    """The most runs whose [start, end] intervals overlap at one instant."""
    edges = []
    for record in runs:
        if record.start_time is None:
            continue
        end = record.end_time or time.time()
        edges += [(record.start_time, 1), (end, -1)]
    current = best = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        current += step
        best = max(best, current)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refunds", type=int, default=60, help="refunds to measure (>= 50)")
    parser.add_argument("--over", type=float, default=180.0, help="seconds they arrive over")
    parser.add_argument("--transfers", type=int, default=200)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--no-reconciliation", action="store_true", help="skip the changed-day figure"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print_header(f"timeliness on the dev stack: {args.refunds} refunds over ~{args.over:.0f} s")
    with (
        tempfile.TemporaryDirectory(prefix="rp-timeliness-") as scratch,
        database("timeliness") as url,
        emulator_process() as stripe_url,
    ):
        work = Path(scratch)
        engine = create_db_engine(url)
        control = EmulatorClient(stripe_url)
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        market = seed_marketplace(
            engine, control, days=[yesterday], transfers=args.transfers, sellers=12, rng=rng
        )
        orders = sorted(market.by_order())
        picked = rng.sample(orders, args.refunds + 1)
        warmup, measured = picked[0], picked[1:]

        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DAGSTER_", "STRIPE_", "REVERSAL_"))
        }
        env.update(
            REVERSAL_DATABASE_URL=url,
            STRIPE_API_BASE=stripe_url,
            STRIPE_API_KEY=API_KEY,
            REVERSAL_PIPELINE_HOME=str(work / "home"),
            REVERSAL_REPORTS_DIR=str(work / "reports"),
            DAGSTER_HOME=str(work / "dagster_home"),
        )
        port = free_port()
        log_path = work / "dev.log"
        started = time.monotonic()
        with dev_stack(env, port, log_path):
            print(f"dev stack serving after {time.monotonic() - started:.1f} s", flush=True)
            # Warm-up: the first run pays for the code server's and launcher's first use.
            with engine.begin() as connection:
                request_reversal(connection, refund_id="re_warmup", order_id=warmup)
            try:
                wait_all_reversed(engine, ["re_warmup"], timeout=600)
            except RuntimeError:
                print_diagnostics(work / "dagster_home", url, log_path)
                raise
            print(f"warm-up refund reversed after {time.monotonic() - started:.1f} s", flush=True)

            refund_ids = []
            mean_gap = args.over / args.refunds
            first_refund_at = datetime.now(UTC)
            for n, order_id in enumerate(measured):
                refund_id = f"re_timeliness_{n:03d}"
                with engine.begin() as connection:
                    request_reversal(connection, refund_id=refund_id, order_id=order_id)
                refund_ids.append(refund_id)
                time.sleep(rng.expovariate(1 / mean_gap))  # the arrival process, not a wait
            try:
                wait_all_reversed(engine, refund_ids, timeout=600)
            except RuntimeError:
                print_diagnostics(work / "dagster_home", url, log_path)
                raise
            latencies = reversal_latencies(engine, refund_ids)
            last_change = last_reversal_at(engine)

            reconciliation_seconds = None
            if not args.no_reconciliation:
                reconciliation_seconds = wait_reconciled(
                    work / "dagster_home", url, yesterday.isoformat(), last_change
                )
            reversal_runs = reversal_job_runs(work / "dagster_home", url, first_refund_at)
        engine.dispose()

    values = [v for v in latencies.values() if v is not None]
    figures = [
        Figure("refunds measured", len(values), "info"),
        Figure("refund -> reversed p50", percentile(values, 0.50), "info", "s"),
        Figure("refund -> reversed p95", percentile(values, 0.95), "<= 20", "s"),
        Figure("refund -> reversed max", max(values), "info", "s"),
        Figure("refund -> reversed mean", statistics.fmean(values), "info", "s"),
        Figure("reversal_job runs during the refunds", len(reversal_runs), "info"),
        Figure("reversal_job runs in progress at once", most_at_once(reversal_runs), "<= 1"),
        *run_time_figures(reversal_runs),
    ]
    if reconciliation_seconds is not None:
        figures.append(
            Figure(
                "past day changed -> reconciliation run done",
                reconciliation_seconds,
                f"<= {2 * RECONCILIATION_SENSOR_INTERVAL_SECONDS}",
                "s",
            )
        )
    print_block("timeliness (dev stack)", figures)


def run_time_figures(runs: list[dg.RunRecord]) -> list[Figure]:
    """Where a refund's time goes: waiting in the queue, and the run itself (launch included)."""
    finished = [r for r in runs if r.start_time and r.end_time]
    if not finished:
        return []
    queued = [r.start_time - r.create_timestamp.timestamp() for r in finished]  # type: ignore[operator]
    wall = [r.end_time - r.start_time for r in finished]  # type: ignore[operator]
    return [
        Figure(
            "reversal_job run: requested -> started (queue+launch), median",
            statistics.median(queued),
            "info",
            "s",
        ),
        Figure("reversal_job run: started -> ended, median", statistics.median(wall), "info", "s"),
    ]


def print_diagnostics(home: Path, url: str, log_path: Path) -> None:
    """What an operator would look at first: the runs and the tail of the stack's log."""
    with instance(home, url) as dagster:
        for record in dagster.get_run_records(dg.RunsFilter(job_name="reversal_job"), limit=20):
            run = record.dagster_run
            print(f"run {run.run_id} {run.status.value} tags={dict(run.tags)}", flush=True)
    print("--- dev log (tail) ---\n" + log_path.read_text(errors="replace")[-6000:], flush=True)


def wait_all_reversed(engine: sa.Engine, refund_ids: list[str], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(v is not None for v in reversal_latencies(engine, refund_ids).values()):
            return
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"not every refund was reversed within {timeout:.0f} s")


def last_reversal_at(engine: sa.Engine) -> datetime:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT max(updated_at) FROM seller_transfers")).scalar()


@contextlib.contextmanager
def instance(home: Path, url: str) -> Iterator[dg.DagsterInstance]:
    os.environ["DAGSTER_PG_URL"] = psycopg2_url(url, DAGSTER_DATABASE)
    with dg.DagsterInstance.from_config(str(home)) as opened:
        yield opened


def reversal_job_runs(home: Path, url: str, since: datetime) -> list[dg.RunRecord]:
    with instance(home, url) as dagster:
        records = dagster.get_run_records(dg.RunsFilter(job_name="reversal_job"))
    # Every run that was up at some point after the first refund: a listening run
    # started before it (with the warm-up) and is the one that did the work.
    return [
        r
        for r in records
        if r.start_time and (r.end_time is None or r.end_time >= since.timestamp() - 1)
    ]


def wait_reconciled(home: Path, url: str, day: str, changed_at: datetime) -> float:
    """Seconds from ``changed_at`` to a finished sensor-requested reconciliation of ``day``."""
    timeout = 2 * RECONCILIATION_SENSOR_INTERVAL_SECONDS + 180
    deadline = time.monotonic() + timeout
    with instance(home, url) as dagster:
        while time.monotonic() < deadline:
            records = dagster.get_run_records(
                dg.RunsFilter(
                    job_name="reconciliation_job",
                    tags={
                        "dagster/partition": day,
                        "trigger": "reconciliation_backfill_sensor",
                    },
                    statuses=[dg.DagsterRunStatus.SUCCESS],
                )
            )
            done = [
                r
                for r in records
                if r.start_time and r.end_time and r.start_time >= changed_at.timestamp()
            ]
            if done:
                return min(r.end_time for r in done) - changed_at.timestamp()  # type: ignore[misc]
            time.sleep(2)
    raise RuntimeError(f"no reconciliation run of {day} finished within {timeout} s")


if __name__ == "__main__":
    main()
