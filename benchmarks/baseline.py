"""Figure 5: the same workload through a plain sequential loop, as a hand-written worker does.

One row at a time: select the next due row, call Stripe
(``stripe.StripeClient.v1.transfers.reversals.create`` with an idempotency key),
update the row, commit. Same emulator settings as figure 1 at 100 requests/s
(latency 100 ms, rate limit 100/s). The factor is the job's reversals/s (from
``throughput.py``, passed with ``--job-rate``, or measured here on the same
rows when not given) over the loop's.

    uv run python benchmarks/baseline.py                   # 10,000 rows, also runs the job
    uv run python benchmarks/baseline.py --rows 1000 --job-rate 96.5
"""

from __future__ import annotations

import argparse
import time

import sqlalchemy as sa
import stripe
from _common import (
    API_KEY,
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
from throughput import concurrency_for

from reversal_pipeline.db.engine import create_db_engine
from reversal_pipeline.stripe_emulator import EmulatorClient

NEXT_DUE = sa.text(
    "SELECT id, stripe_transfer_id, amount FROM seller_transfers"
    " WHERE status = 'reversal_pending' AND next_retry_at <= now()"
    " ORDER BY next_retry_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
)
MARK_REVERSED = sa.text(
    "UPDATE seller_transfers SET status = 'reversed', stripe_reversal_id = :rid,"
    " reversed_at = now(), next_retry_at = NULL WHERE id = :id"
)


def sequential_loop(url: str, stripe_url: str, limit: int) -> tuple[int, float]:
    client = stripe.StripeClient(API_KEY, base_addresses={"api": stripe_url})
    engine = create_db_engine(url)
    done = 0
    started = time.perf_counter()
    try:
        while done < limit:
            with engine.begin() as connection:
                row = connection.execute(NEXT_DUE).first()
                if row is None:
                    break
                reversal = client.v1.transfers.reversals.create(
                    row.stripe_transfer_id,
                    {"amount": row.amount, "metadata": {"seller_transfer_id": str(row.id)}},
                    {"idempotency_key": f"baseline:{row.id}"},
                )
                connection.execute(MARK_REVERSED, {"rid": reversal.id, "id": row.id})
            done += 1
    finally:
        engine.dispose()
    return done, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--rps", type=int, default=100)
    parser.add_argument("--job-rate", type=float, default=None, help="from throughput.py")
    args = parser.parse_args()
    print_header("baseline: a plain sequential loop (issue 8, figure 5)")
    with database("bench_base") as url, emulator_process(args.latency_ms, args.rps) as stripe_url:
        control = EmulatorClient(stripe_url)
        seed_due_rows(url, control, args.rows)
        done, seconds = sequential_loop(url, stripe_url, args.rows)
        loop_rate = done / seconds
        print(f"sequential loop: {done} rows in {seconds:.1f}s", flush=True)
        job_rate = args.job_rate
        if job_rate is None:
            with database("bench_base_job") as job_url:
                seed_due_rows(job_url, control, args.rows)
                run = run_job_in_process(
                    job_env(job_url, stripe_url, args.rps),
                    {
                        "max_rows_per_run": args.rows,
                        "concurrency": concurrency_for(args.rps, args.latency_ms),
                        "page_size": 500,
                    },
                )
                job_rate = float(run.outcomes.get("reversals_per_second", 0.0))
                print(f"job on the same workload: {status_counts(job_url)}", flush=True)
            source = "measured here"
        else:
            source = "from throughput.py"
    print_block(
        "baseline",
        [
            Figure("sequential loop reversals/s", loop_rate, "info", "/s", args.rps),
            Figure(f"10,000 rows at that rate (s), {args.rows} run", 10_000 / loop_rate, "info"),
            Figure(f"reversal_job reversals/s ({source})", job_rate, "info", "/s", args.rps),
            Figure("factor job / sequential loop", job_rate / loop_rate, "info", "x"),
        ],
    )


if __name__ == "__main__":
    main()
