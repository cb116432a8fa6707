"""Figure 3: peak RSS of a reversal_job run does not grow with the backlog.

The emulator (own process) answers at once with no rate limit; the job runs in
a fresh child process (Dagster and all imports included) and reports its own
peak RSS (``ru_maxrss``). Two backlogs, 10,000 and 100,000 due rows, each with
the same batch (``max_rows_per_run``, default 10,000): the batch is what one
run holds, the backlog must not matter.

    uv run python benchmarks/memory.py
    uv run python benchmarks/memory.py --backlogs 2000 20000 --batch 2000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from _common import (
    Figure,
    database,
    emulator_process,
    job_env,
    print_block,
    print_header,
    run_job_in_process,
    seed_due_rows,
    status_counts,
)

from reversal_pipeline.stripe_emulator import EmulatorClient

BUDGET_RPS = 100_000


def child(batch: int, concurrency: int) -> None:
    """Runs in the child: the job once, then one JSON line with the figures."""
    run = run_job_in_process(
        dict(os.environ), {"max_rows_per_run": batch, "concurrency": concurrency}
    )
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        "RESULT "
        + json.dumps(
            {
                "peak_rss_mib": peak_kib / 1024,
                "success": run.success,
                "reversed": run.outcomes.get("rows_reversed", 0),
                "claimed": run.claimed.get("rows_claimed", 0),
                "wall": run.wall_seconds,
            }
        ),
        flush=True,
    )


def measure(backlog: int, batch: int, concurrency: int) -> dict[str, float]:
    with database("bench_mem") as url, emulator_process(0.0, None) as stripe_url:
        seed_due_rows(url, EmulatorClient(stripe_url), backlog)
        env = {**os.environ, **job_env(url, stripe_url, BUDGET_RPS)}
        started = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--batch",
                str(batch),
                "--concurrency",
                str(concurrency),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
        )
        wall = time.perf_counter() - started
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(proc.stdout[-2000:], proc.stderr[-4000:])
            raise SystemExit(f"child failed with {proc.returncode}")
        result = json.loads(lines[-1][len("RESULT ") :])
        statuses = status_counts(url)
    print(
        f"backlog {backlog}: claimed {result['claimed']}, reversed {result['reversed']}, "
        f"peak RSS {result['peak_rss_mib']:.1f} MiB, child wall {wall:.1f}s "
        f"(job {result['wall']:.1f}s); statuses after {statuses}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlogs", type=int, nargs=2, default=[10_000, 100_000])
    parser.add_argument("--batch", type=int, default=10_000, help="max_rows_per_run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.batch, args.concurrency)
        return
    print_header("memory: peak RSS of reversal_job vs backlog (issue 8, figure 3)")
    small, large = args.backlogs
    print(f"batch (max_rows_per_run) {args.batch}, concurrency {args.concurrency}", flush=True)
    r_small = measure(small, args.batch, args.concurrency)
    r_large = measure(large, args.batch, args.concurrency)
    growth = r_large["peak_rss_mib"] / r_small["peak_rss_mib"]
    print_block(
        "memory",
        [
            Figure(f"peak RSS, {small} due rows", r_small["peak_rss_mib"], "info", "MiB"),
            Figure(f"peak RSS, {large} due rows", r_large["peak_rss_mib"], "info", "MiB"),
            # "Does not grow beyond the batch": same batch, 10x backlog, within 10%.
            Figure(f"RSS ratio {large}/{small} due rows", growth, "<= 1.10"),
        ],
    )


if __name__ == "__main__":
    main()
