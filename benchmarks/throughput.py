"""Figure 1: throughput at Stripe's rate limit.

N due rows; the emulator (its own process) answers each call after ``--latency-ms``
and 429s beyond ``rps`` requests in any sliding second; the job's budget
``STRIPE_REQUESTS_PER_SECOND`` is the same ``rps``. Reports reversals/s against
the budget, Stripe calls per row (429 re-sends apart), and rows a 429 failed or
pushed to a later run.

    uv run python benchmarks/throughput.py                      # 10,000 @ 100, 2,500 @ 25
    uv run python benchmarks/throughput.py --rows 1000 --rows-25 250
    uv run python benchmarks/throughput.py --only 100 --shared-budget off   # local bucket only
"""

from __future__ import annotations

import argparse
import math

from _common import (
    Figure,
    database,
    emulator_process,
    job_env,
    print_block,
    print_header,
    reversal_creates,
    run_job_in_process,
    seed_due_rows,
    status_counts,
)

from reversal_pipeline.stripe_emulator import EmulatorClient


def concurrency_for(rps: float, latency_ms: float) -> int:
    """Requests in flight to cover rps x latency, plus headroom for the database writes."""
    return max(4, min(128, math.ceil(rps * latency_ms / 1000 * 1.6) + 4))


def measure(
    rows: int, rps: int, latency_ms: float, concurrency: int | None, shared_budget: bool = True
) -> list[Figure]:
    workers = concurrency or concurrency_for(rps, latency_ms)
    print(
        f"\n[{rows} rows, budget {rps} rps, emulator rate limit {rps}/s, "
        f"latency {latency_ms:.0f} ms, concurrency {workers}, "
        f"shared Stripe budget {'on' if shared_budget else 'off'}]",
        flush=True,
    )
    with database("bench_tp") as url, emulator_process(latency_ms, rps) as stripe_url:
        control = EmulatorClient(stripe_url)
        seed_due_rows(url, control, rows)
        before = control.counters()
        run = run_job_in_process(
            job_env(url, stripe_url, rps),
            {"max_rows_per_run": rows, "concurrency": workers, "page_size": 500},
            stripe_config=None if shared_budget else _without_shared_budget(stripe_url, rps),
        )
        after = control.counters()
        statuses = status_counts(url)
    if not run.success:
        print(f"job FAILED: {run.error}")
    sent = reversal_creates(after) - reversal_creates(before)
    http_429 = after["by_status"].get("429", 0) - before["by_status"].get("429", 0)
    calls_total = after["calls_total"] - before["calls_total"]
    reversed_rows = statuses.get("reversed", 0)
    step_rate = float(run.outcomes.get("reversals_per_second", 0.0))
    job_rate = reversed_rows / run.wall_seconds
    not_reversed = rows - reversed_rows
    print(
        f"job wall {run.wall_seconds:.1f}s (Dagster + claim + reversals), reversal step "
        f"{run.outcomes.get('elapsed_seconds')}s; statuses {statuses}; emulator calls "
        f"{calls_total} (create-reversal {sent}, of which 429 {http_429}); job counted "
        f"{run.outcomes.get('stripe_calls')} calls, "
        f"{run.outcomes.get('stripe_rate_limited_retries')} 429 re-sends",
        flush=True,
    )
    budget = {k: v for k, v in run.outcomes.items() if str(k).startswith("stripe_budget_")}
    print(f"shared budget: {budget or 'off (local token bucket)'}", flush=True)
    return [
        Figure(f"reversals/s, reversal step @{rps}", step_rate, f">= {0.95 * rps:.2f}", "/s", rps),
        Figure(f"reversals/s, whole job run @{rps}", job_rate, "info", "/s", rps),
        Figure(
            f"Stripe calls per row (excl. 429) @{rps}",
            (calls_total - http_429) / rows,
            "== 1.00",
        ),
        Figure(f"429 answers re-sent @{rps}", http_429, "info", "calls"),
        Figure(f"rows failed/delayed (not reversed) @{rps}", not_reversed, "== 0", "rows"),
    ]


def _without_shared_budget(stripe_url: str, rps: float) -> dict[str, object]:
    # Run config replaces the resource's whole config: every field set in
    # defs/resources.py is given again, the budget's database left out.
    return {
        "api_key": {"env": "STRIPE_API_KEY"},
        "api_base": stripe_url,
        "requests_per_second": float(rps),
        "shared_budget_database_url": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="due rows at 100 rps")
    parser.add_argument("--rows-25", type=int, default=2_500, help="due rows at 25 rps")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=None, help="default: from rps")
    parser.add_argument("--only", choices=["100", "25"], default=None)
    parser.add_argument(
        "--shared-budget",
        choices=["on", "off"],
        default="on",
        help="off: the process paces with its local token bucket only (for comparison)",
    )
    args = parser.parse_args()
    shared = args.shared_budget == "on"
    print_header("throughput at the rate limit (issue 8, figure 1)")
    figures: list[Figure] = []
    if args.only in (None, "100"):
        figures += measure(args.rows, 100, args.latency_ms, args.concurrency, shared)
    if args.only in (None, "25"):
        figures += measure(args.rows_25, 25, args.latency_ms, args.concurrency, shared)
    print_block("throughput at the rate limit", figures)


if __name__ == "__main__":
    main()
