"""The long fault-injection run: many seeds of tests/reliability/scenario.py, one summary.

Each seed: fresh database (cloned from a migrated template), fresh emulator
state, ``--rows`` due rows, a victim run SIGKILLed mid-batch, overlapping runs,
the clock advanced until nothing is pending, then issue 7's invariants 1-4
(reconciliation's ``compare`` included). Runs are forked from one preloaded
process (``tests/reliability/launcher.py``), so one process serves every seed;
by default each run is the job's core (the claim and batch calls the assets
make), and every ``--job-every``-th seed runs reversal_job itself.

    uv run python benchmarks/fault_injection.py --seeds 200 --rows 200
    uv run python benchmarks/fault_injection.py --seeds 20 --rows 60 --job-every 5
    uv run python benchmarks/fault_injection.py --seeds 8 --rows 60 --job-every 0 \
        --rate-limit-patience 0 --emulator-rate-limit 15 --write-fault-rate 0.05

Prints seeds run, rows, faults injected by kind (from the emulator's request
log), runs and kills, final statuses, and every violation found (goal: zero).
Exits 1 if any violation was found.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.chdir(REPO)  # the job forkserver imports tests.reliability._preload from here

from _common import API_KEY, machine_line  # noqa: E402

from reversal_pipeline.db import migrate  # noqa: E402
from reversal_pipeline.db.engine import create_db_engine  # noqa: E402
from reversal_pipeline.stripe_emulator import EmulatorServer  # noqa: E402
from tests.reliability.launcher import RATE_LIMIT_PATIENCE_ENV, JobLauncher  # noqa: E402
from tests.reliability.scenario import ScenarioResult, run_scenario  # noqa: E402


def _admin(server_url: str) -> sa.Engine:
    return sa.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def _url(server_url: str, name: str) -> str:
    return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200, help="how many seeds to run")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--rows", type=int, default=200, help="due rows per seed")
    parser.add_argument(
        "--job-every", type=int, default=10, help="every Nth seed runs reversal_job (0: never)"
    )
    parser.add_argument("--time-limit", type=float, default=0, help="stop after N s (0: none)")
    parser.add_argument(
        "--rate-limit-patience",
        type=float,
        default=None,
        help="core runs: seconds a 429 is re-sent before it counts as an attempt (default 30;"
        " 0 sends every 429 down the rate-limited path)",
    )
    parser.add_argument(
        "--write-fault-rate",
        type=float,
        default=0.0,
        help="share of (run, row) outcome writes PostgreSQL refuses (that run must fail)",
    )
    parser.add_argument(
        "--emulator-rate-limit",
        type=int,
        default=None,
        help="the emulator's requests per second (default: 40-80 by seed; lower: more 429s)",
    )
    args = parser.parse_args()

    print("=== fault injection: issue 7 invariants under faults, overlap and SIGKILL ===")
    print(machine_line(), flush=True)
    started = time.monotonic()
    external = os.environ.get("BENCH_DATABASE_URL")
    with contextlib.ExitStack() as stack:
        if external:
            server_url = external
        else:
            from reversal_pipeline.db.embedded import throwaway_embedded_server

            server_url = stack.enter_context(throwaway_embedded_server("rp-fault-"))
        admin = _admin(server_url)
        template = f"rp_fault_template_{uuid.uuid4().hex[:8]}"
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{template}"'))
        engine = create_db_engine(_url(server_url, template))
        migrate.upgrade(engine)
        engine.dispose()

        launcher = JobLauncher()
        results: list[ScenarioResult] = []
        with EmulatorServer(api_keys=[API_KEY]) as emulator:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                if args.time_limit and time.monotonic() - started > args.time_limit:
                    print(f"time limit reached after {len(results)} seeds", flush=True)
                    break
                name = f"rp_fault_{seed}_{uuid.uuid4().hex[:6]}"
                with admin.connect() as connection:
                    connection.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
                url = _url(server_url, name)
                engine = create_db_engine(url)
                env = {
                    "REVERSAL_DATABASE_URL": url,
                    "STRIPE_API_KEY": API_KEY,
                    "STRIPE_API_BASE": emulator.url,
                    "STRIPE_REQUESTS_PER_SECOND": "500",
                }
                if args.rate_limit_patience is not None:
                    env[RATE_LIMIT_PATIENCE_ENV] = str(args.rate_limit_patience)
                job = bool(args.job_every) and (seed - args.first_seed) % args.job_every == 0
                t0 = time.monotonic()
                try:
                    result = run_scenario(
                        seed=seed,
                        rows=args.rows,
                        engine=engine,
                        env=env,
                        emulator=emulator,
                        launcher=launcher,
                        core=not job,
                        write_fault_rate=args.write_fault_rate,
                        rate_limit_per_second=args.emulator_rate_limit,
                    )
                except Exception as exc:  # a scenario that cannot finish is a finding too
                    result = ScenarioResult(seed=seed, rows=args.rows)
                    result.violations.append(f"seed {seed}: scenario error {exc!r}")
                finally:
                    engine.dispose()
                    with admin.connect() as connection:
                        connection.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
                results.append(result)
                print(
                    f"seed {seed:>4} [{'job ' if job else 'core'}] {time.monotonic() - t0:5.1f}s"
                    f" runs {result.runs:>2} ticks {result.ticks}"
                    f" statuses {dict(result.statuses)} violations {len(result.violations)}",
                    flush=True,
                )
                for violation in result.violations:
                    print(f"    VIOLATION {violation}", flush=True)
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE "{template}" WITH (FORCE)'))
        admin.dispose()

    faults: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    audited: Counter[str] = Counter()
    for r in results:
        audited.update(r.audited_calls)
        faults.update(r.faults)
        statuses.update(r.statuses)
        paths.update(r.paths)
    violations = [v for r in results for v in r.violations]
    print("\n--- result: fault injection ---")
    print(f"  seeds run                {len(results)} (first {args.first_seed})")
    print(f"  rows per seed            {args.rows} (total {sum(r.rows for r in results)})")
    print(f"  runs (job processes)     {sum(r.runs for r in results)}")
    print(f"  seeds as reversal_job    {_jobs(args, results)}")
    print(f"  SIGKILLs mid-batch       {sum(r.killed_mid_batch for r in results)}")
    print(f"  Stripe requests          {faults.pop('requests', 0)}")
    for kind in ("latency_spike", "http_500", "http_429", "lost_response", "connection_reset"):
        print(f"  faults: {kind:<16} {faults.get(kind, 0)}")
    print(f"  rate-limit patience      {args.rate_limit_patience} s (core runs)")
    print(f"  write fault rate         {args.write_fault_rate}")
    print(f"  emulator rate limit      {args.emulator_rate_limit or '40-80 by seed'} /s")
    print(f"  runs failed loudly       {sum(r.runs_failed_loudly for r in results)}")
    print("  paths taken (outcomes the runs reported, by kind):")
    for name, count in sorted(paths.items()):
        print(f"    {name:<28} {count}")
    print("  audit rows (reversal_attempts) by action, outcome, HTTP status (- = none):")
    for name, count in sorted(audited.items()):
        print(f"    {name:<44} {count}")
    print(f"  final statuses           {dict(statuses)}")
    print(f"  violations found         {len(violations)}")
    print(f"  wall time                {time.monotonic() - started:.0f} s")
    return 1 if violations else 0


def _jobs(args: argparse.Namespace, results: list[ScenarioResult]) -> int:
    if not args.job_every:
        return 0
    return sum(1 for r in results if (r.seed - args.first_seed) % args.job_every == 0)


if __name__ == "__main__":
    sys.exit(main())
