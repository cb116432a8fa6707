"""Figure 2: the pipeline's own cost.

Emulator (its own process) with no latency and no rate limit. In the same run,
on the same emulator and with the same number of threads:

* a bare loop: ``stripe.StripeClient.v1.transfers.reversals.create`` per transfer,
  nothing else (no database, no Dagster);
* ``reversal_job`` over as many due rows.

The ratio of their reversals/s is the figure (goal >= 0.8). Then the job runs
once more under pyinstrument (``--profile-rows`` rows, one worker thread, since
rows run inline: pyinstrument samples only the thread it starts in) and the top frames show where
the time beyond the Stripe call goes.

    uv run python benchmarks/pipeline_cost.py
    uv run python benchmarks/pipeline_cost.py --rows 1000 --profile-rows 300
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

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

from reversal_pipeline.stripe_emulator import EmulatorClient

BUDGET_RPS = 100_000  # no pacing to speak of: the emulator has no limit here


def bare_loop(stripe_url: str, transfer_ids: list[str], threads: int) -> float:
    """Reversals/s of the SDK call alone, ``threads`` at a time."""
    client = stripe.StripeClient(API_KEY, base_addresses={"api": stripe_url}, max_network_retries=2)
    local = threading.local()

    def reverse(i_tid: tuple[int, str]) -> None:
        i, tid = i_tid
        local.count = getattr(local, "count", 0) + 1
        client.v1.transfers.reversals.create(
            tid,
            {"amount": 1_000, "metadata": {"seller_transfer_id": str(i), "attempt": "1"}},
            {"idempotency_key": f"bench:bare:{tid}"},
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(reverse, enumerate(transfer_ids)))
    return len(transfer_ids) / (time.perf_counter() - started)


class InlineExecutor:
    """Stands in for the batch's ThreadPoolExecutor: runs each row in the calling thread.

    pyinstrument samples only the thread it was started in; running the rows
    inline puts every frame of the job (Dagster, database, Stripe) in one profile.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> InlineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:
            future.set_exception(error)
        return future


def profile_job(url: str, stripe_url: str, control: EmulatorClient, rows: int) -> str:
    from pyinstrument import Profiler

    from reversal_pipeline.reversals import batch

    seed_due_rows(url, control, rows)
    original = batch.ThreadPoolExecutor
    batch.ThreadPoolExecutor = InlineExecutor  # type: ignore[misc,assignment]
    profiler = Profiler(interval=0.0005)
    try:
        profiler.start()
        run = run_job_in_process(
            job_env(url, stripe_url, BUDGET_RPS),
            {"max_rows_per_run": rows, "concurrency": 1, "page_size": 500},
        )
        profiler.stop()
    finally:
        batch.ThreadPoolExecutor = original  # type: ignore[misc]
    print(f"profiled run: {rows} rows, inline (no threads), wall {run.wall_seconds:.2f}s")
    return profiler.output_text(unicode=False, color=False, show_all=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--profile-rows", type=int, default=1_000)
    parser.add_argument("--profile-lines", type=int, default=90)
    args = parser.parse_args()
    print_header("pipeline cost: reversal_job vs a bare SDK loop (issue 8, figure 2)")
    with database("bench_cost") as url, emulator_process(0.0, None) as stripe_url:
        control = EmulatorClient(stripe_url)
        bare_ids = control.create_transfers(
            [{"amount": 1_000, "currency": "usd", "destination": "acct_x"}] * args.rows,
            returning="ids",
        )
        assert isinstance(bare_ids, list)
        bare_loop(stripe_url, bare_ids[:200], args.concurrency)  # warm-up (imports, sockets)
        bare_rate = bare_loop(stripe_url, bare_ids[200:], args.concurrency)
        seed_due_rows(url, control, args.rows)
        run = run_job_in_process(
            job_env(url, stripe_url, BUDGET_RPS),
            {"max_rows_per_run": args.rows, "concurrency": args.concurrency, "page_size": 500},
        )
        reversed_rows = status_counts(url).get("reversed", 0)
        step_rate = float(run.outcomes.get("reversals_per_second", 0.0))
        job_rate = reversed_rows / run.wall_seconds
        print(
            f"bare loop {bare_rate:.1f}/s ({args.rows - 200} reversals, {args.concurrency} "
            f"threads); job: {reversed_rows} reversed, step {step_rate:.1f}/s "
            f"({run.outcomes.get('elapsed_seconds')}s), whole run {job_rate:.1f}/s "
            f"({run.wall_seconds:.1f}s)",
            flush=True,
        )
        report: str | None = None
        if args.profile_rows:
            with database("bench_prof") as purl:
                report = profile_job(purl, stripe_url, control, args.profile_rows)
    figures: list[Any] = [
        Figure("bare SDK loop reversals/s", bare_rate, "info", "/s"),
        Figure("reversal_job reversals/s (reversal step)", step_rate, "info", "/s"),
        Figure("reversal_job reversals/s (whole run)", job_rate, "info", "/s"),
        Figure("ratio job step / bare loop", step_rate / bare_rate, ">= 0.80", "", None),
        Figure("ratio whole job run / bare loop", job_rate / bare_rate, "info", "", None),
    ]
    if report:
        print("\n--- pyinstrument, reversal_job with 1 worker (top frames) ---")
        print("\n".join(report.splitlines()[: args.profile_lines]))
    print_block("pipeline cost", figures)


if __name__ == "__main__":
    main()
