"""Figure 2: the pipeline's own cost.

Emulator (its own process) with no latency and no rate limit. On the same
emulator, with the same number of threads, three contenders per round:

* bare: ``stripe.StripeClient.v1.transfers.reversals.create`` per transfer,
  nothing else (no database, no Dagster): the figure's reference;
* resource: the same call through ``StripeResource.reverse_transfer`` (its
  shared session, pacing, counting, error classification), still no database:
  this splits the gap into "the Stripe resource" and "the rest of the job";
* job: ``reversal_job`` over as many due rows (its reversal step's rate).

Why rounds: on this two-core machine the same bare loop, run twice in a row,
has measured anywhere from 327 to 547 reversals/s (the client process is
CPU-bound at latency 0 and shares the cores with the emulator and PostgreSQL).
One sample of each side made the ratio a coin toss around the goal. So the
contenders run ``--rounds`` times, interleaved, in a rotating order (no side
always runs first or on a warmer emulator), after a warm-up of each; the figure
is the median of the per-round ratios job / bare, and every round is printed.
The client process's CPU time per row is printed beside each rate: at latency
0 that, not the network, is what bounds all three.

Then the job runs once more under pyinstrument (``--profile-rows`` rows, one
worker thread, since rows run inline: pyinstrument samples only the thread it
starts in) and the top frames show where the time beyond the Stripe call goes.

    uv run python benchmarks/pipeline_cost.py
    uv run python benchmarks/pipeline_cost.py --rows 1000 --rounds 3 --profile-rows 300
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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

from reversal_pipeline.stripe.resource import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorClient

BUDGET_RPS = 100_000  # no pacing to speak of: the emulator has no limit here
CONTENDERS = ("bare", "resource", "job")


def _threaded(rows: list[tuple[int, str]], threads: int, call: Callable[[int, str], Any]) -> float:
    """Reversals/s of ``call`` over ``rows``, ``threads`` at a time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda row: call(*row), rows))
    return len(rows) / (time.perf_counter() - started)


def bare_loop(stripe_url: str, transfer_ids: list[str], threads: int) -> float:
    """Reversals/s of the SDK call alone (the SDK's default HTTP client)."""
    client = stripe.StripeClient(API_KEY, base_addresses={"api": stripe_url}, max_network_retries=2)

    def reverse(i: int, tid: str) -> None:
        client.v1.transfers.reversals.create(
            tid,
            {"amount": 1_000, "metadata": {"seller_transfer_id": str(i), "attempt": "1"}},
            {"idempotency_key": f"bench:bare:{tid}"},
        )

    return _threaded(list(enumerate(transfer_ids)), threads, reverse)


def resource_loop(stripe_url: str, transfer_ids: list[str], threads: int) -> float:
    """Reversals/s of the same call through the pipeline's Stripe resource, no database."""
    resource = StripeResource(api_key=API_KEY, api_base=stripe_url, requests_per_second=BUDGET_RPS)

    def reverse(i: int, tid: str) -> None:
        resource.reverse_transfer(
            tid, 1_000, f"bench:resource:{tid}", {"seller_transfer_id": str(i), "attempt": "1"}
        )

    try:
        return _threaded(list(enumerate(transfer_ids)), threads, reverse)
    finally:
        resource.close()


@dataclass
class Round:
    rates: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_row: dict[str, float] = field(default_factory=dict)
    whole_run_rate: float = 0.0

    @property
    def ratio(self) -> float:
        return self.rates["job"] / self.rates["bare"]


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
    parser.add_argument("--rows", type=int, default=3_000, help="rows per contender per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup-rows", type=int, default=200)
    parser.add_argument("--profile-rows", type=int, default=1_000)
    parser.add_argument("--profile-lines", type=int, default=90)
    args = parser.parse_args()
    print_header("pipeline cost: reversal_job vs a bare SDK loop (issue 8, figure 2)")
    rounds: list[Round] = []
    with database("bench_cost") as url, emulator_process(0.0, None) as stripe_url:
        control = EmulatorClient(stripe_url)
        env = job_env(url, stripe_url, BUDGET_RPS)

        def new_transfers(n: int) -> list[str]:
            ids = control.create_transfers(
                [{"amount": 1_000, "currency": "usd", "destination": "acct_x"}] * n,
                returning="ids",
            )
            assert isinstance(ids, list)
            return ids

        def run_job(n: int) -> tuple[float, float]:
            """(reversal step rate, whole run rate); the due rows must be seeded first."""
            # The production page size (200): the queue ahead of the workers is a page.
            run = run_job_in_process(env, {"max_rows_per_run": n, "concurrency": args.concurrency})
            if not run.success:
                raise SystemExit(f"reversal_job failed: {run.error}")
            step = float(run.outcomes.get("reversals_per_second", 0.0))
            return step, n / run.wall_seconds

        # Warm-up: imports, sockets, Dagster's first definitions load, SQL compile caches.
        bare_loop(stripe_url, new_transfers(args.warmup_rows), args.concurrency)
        resource_loop(stripe_url, new_transfers(args.warmup_rows), args.concurrency)
        seed_due_rows(url, control, args.warmup_rows)
        run_job(args.warmup_rows)

        for number in range(args.rounds):
            result = Round()
            order = CONTENDERS[number % 3 :] + CONTENDERS[: number % 3]
            for name in order:
                if name == "job":
                    seed_due_rows(url, control, args.rows)
                    cpu = time.process_time()  # the whole run: Dagster's start-up per run included
                    result.rates["job"], result.whole_run_rate = run_job(args.rows)
                else:
                    ids = new_transfers(args.rows)
                    loop = bare_loop if name == "bare" else resource_loop
                    cpu = time.process_time()
                    result.rates[name] = loop(stripe_url, ids, args.concurrency)
                result.cpu_ms_per_row[name] = (time.process_time() - cpu) / args.rows * 1000
            rounds.append(result)
            print(
                f"round {number + 1} ({' -> '.join(order)}): "
                + ", ".join(
                    f"{name} {result.rates[name]:.1f}/s ({result.cpu_ms_per_row[name]:.2f} ms"
                    " CPU/row)"
                    for name in CONTENDERS
                )
                + f"; job / bare {result.ratio:.3f}",
                flush=True,
            )
        reversed_rows = status_counts(url).get("reversed", 0)
        expected = args.rows * args.rounds + args.warmup_rows
        print(f"job rows reversed: {reversed_rows} of {expected}", flush=True)
        report: str | None = None
        if args.profile_rows:
            with database("bench_prof") as purl:
                report = profile_job(purl, stripe_url, control, args.profile_rows)

    def median(name: str) -> float:
        return statistics.median(r.rates[name] for r in rounds)

    ratios = [r.ratio for r in rounds]
    figures: list[Any] = [
        Figure("bare SDK loop reversals/s (median)", median("bare"), "info", "/s"),
        Figure("resource loop reversals/s (median)", median("resource"), "info", "/s"),
        Figure("reversal_job reversals/s, step (median)", median("job"), "info", "/s"),
        Figure(
            "reversal_job reversals/s, whole run (median)",
            statistics.median(r.whole_run_rate for r in rounds),
            "info",
            "/s",
        ),
        Figure("ratio job step / bare (median of rounds)", statistics.median(ratios), ">= 0.80"),
        Figure("  lowest round", min(ratios), "info"),
        Figure("  highest round", max(ratios), "info"),
        Figure(
            "ratio whole job run / bare (median of rounds)",
            statistics.median(r.whole_run_rate / r.rates["bare"] for r in rounds),
            "info",
        ),
        Figure(
            "ratio resource / bare (median of rounds)",
            statistics.median(r.rates["resource"] / r.rates["bare"] for r in rounds),
            "info",
        ),
        # Like for like (the same Stripe client, with and without the database and
        # Dagster): what the pipeline itself costs beyond its Stripe calls.
        Figure(
            "ratio job step / resource (median of rounds)",
            statistics.median(r.rates["job"] / r.rates["resource"] for r in rounds),
            "info",
        ),
        Figure("rows reversed by the job", reversed_rows, f"== {expected}"),
    ]
    if report:
        print("\n--- pyinstrument, reversal_job with 1 worker (top frames) ---")
        print("\n".join(report.splitlines()[: args.profile_lines]))
    print_block("pipeline cost", figures)


if __name__ == "__main__":
    main()
