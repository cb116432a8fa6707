"""Figure 6: one Stripe budget per account across processes (issue 15).

Every run below is a separate OS process with its own ``StripeResource``, as
Dagster runs (or pods) are; they share only the database and the emulator,
which enforces ``--rps`` requests in any sliding second. Each scenario runs
twice: with today's per-process token buckets, and with the shared budget.

* mix: one reversal run and two reconciliation runs (each reconciling its own
  day in a loop) at once;
* alone: one reversal run by itself (must still reach 0.95 of the budget);
* four: four reversal runs at once, each claiming a quarter of the rows.

Figures come from the emulator's request log (what Stripe would have seen),
within the window where every process of the scenario was sending.

    uv run python benchmarks/shared_budget.py                 # 60 rps, ~4 min
    uv run python benchmarks/shared_budget.py --seconds 10    # quicker, noisier
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import (
    API_KEY,
    Figure,
    copy_rows,
    database,
    print_block,
    print_header,
    seed_due_rows,
)

from reversal_pipeline.db.engine import create_db_engine
from reversal_pipeline.stripe_emulator import EmulatorClient, EmulatorServer
from reversal_pipeline.stripe_emulator.faults import FaultConfig

RECONCILED_DAYS = (date(2026, 11, 18), date(2026, 11, 19))
CONCURRENCY = 16

# -- children ---------------------------------------------------------------------------------


def _stripe(args: argparse.Namespace) -> Any:
    from reversal_pipeline.stripe.resource import StripeResource

    return StripeResource(
        api_key=API_KEY,
        api_base=args.stripe,
        requests_per_second=args.rps,
        shared_budget_database_url=args.url if args.shared else None,
    )


def _ready_then_go() -> float:
    """Tell the parent we are set up (imports take seconds on a busy machine); wait for go."""
    print("READY", flush=True)
    line = sys.stdin.readline()
    if not line.startswith("GO"):
        raise SystemExit("parent went away")
    return time.time()


def child_reversal(args: argparse.Namespace) -> dict[str, Any]:
    import uuid

    from reversal_pipeline.reversals.batch import ReversalBatch
    from reversal_pipeline.reversals.claim import claim_due_rows
    from reversal_pipeline.reversals.settings import ReversalSettings

    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    settings = ReversalSettings(
        max_rows_per_run=args.max_rows, concurrency=CONCURRENCY, page_size=500
    )
    engine = create_db_engine(args.url, pool_size=CONCURRENCY + 2)
    stripe = _stripe(args)
    claim_due_rows(engine, token=run_id, max_rows=args.max_rows, lease_seconds=600)
    _ready_then_go()
    started = time.time()
    report = ReversalBatch(engine, stripe, token=run_id, run_id=run_id, settings=settings).run()
    ended = time.time()
    usage = stripe.budget_usage()
    stripe.close()
    engine.dispose()
    return {
        "kind": "reversal",
        "started": started,
        "ended": ended,
        "reversed": report.statuses.get("reversed", 0),
        "budget": usage,
    }


def child_reconcile(args: argparse.Namespace) -> dict[str, Any]:
    from reversal_pipeline.reconciliation.run import reconcile_day

    engine = create_db_engine(args.url)
    stripe = _stripe(args)
    until = _ready_then_go() + args.seconds
    started = time.time()
    runs = complete = 0
    while time.time() < until:
        result = reconcile_day(engine, stripe, date.fromisoformat(args.day), run_id="bench")
        runs += 1
        complete += int(result.complete)
    ended = time.time()
    usage = stripe.budget_usage()
    stripe.close()
    engine.dispose()
    return {
        "kind": "reconcile",
        "started": started,
        "ended": ended,
        "runs": runs,
        "complete": complete,
        "budget": usage,
    }


def child_main(args: argparse.Namespace) -> None:
    result = child_reversal(args) if args.child == "reversal" else child_reconcile(args)
    print("RESULT " + json.dumps(result), flush=True)


# -- parent -----------------------------------------------------------------------------------


def _spawn(kind: str, url: str, stripe_url: str, rps: float, shared: bool, **extra: Any) -> Any:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--url",
        url,
        "--stripe",
        stripe_url,
        "--rps",
        str(rps),
        "--shared",
        "1" if shared else "0",
    ]
    for name, value in extra.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _start_together(procs: list[Any]) -> None:
    """Wait until every child is set up, then start them at the same moment."""
    for proc in procs:
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"child did not get ready (exit {proc.poll()}): {line!r}")
    for proc in procs:
        proc.stdin.write("GO\n")
        proc.stdin.flush()


def _collect(procs: list[Any]) -> list[dict[str, Any]]:
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"child failed (exit {proc.returncode}): {out[-500:]}")
        results.append(json.loads(lines[-1][len("RESULT ") :]))
    return results


def seed_reconciled_days(url: str, control: EmulatorClient, per_day: int) -> None:
    engine = create_db_engine(url)
    for day in RECONCILED_DAYS:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        step = 86_400 / per_day
        created = [int((start + timedelta(seconds=i * step)).timestamp()) for i in range(per_day)]
        ids = control.create_transfers(
            [
                {"amount": 500, "currency": "usd", "destination": "acct_r", "created": c}
                for c in created
            ],
            returning="ids",
        )
        assert isinstance(ids, list)
        buffer = io.StringIO()
        for i, transfer_id in enumerate(ids):
            at = datetime.fromtimestamp(created[i], UTC).isoformat()
            buffer.write(
                f"ord_{day}_{i}\tseller_r\tacct_r\t{transfer_id}\t500\tusd\tcompleted\t{at}\n"
            )
        copy_rows(
            engine,
            "COPY seller_transfers (order_id, seller_id, stripe_account_id, stripe_transfer_id,"
            " amount, currency, status, transferred_at) FROM STDIN",
            buffer.getvalue(),
        )
    engine.dispose()


def _log(control: EmulatorClient) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    since = 0
    while True:
        page = control.request_log(since=since, limit=10_000)
        if not page:
            return entries
        entries += page
        since = page[-1]["seq"]


def _max_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _is_create(entry: dict[str, Any]) -> bool:
    return entry["method"].upper() == "POST" and "reversals" in entry["path"]


def _doubles(entries: list[dict[str, Any]]) -> int:
    """Transfers that got more than one reversal created (not replays of one)."""
    made = Counter(
        e["transfer_id"]
        for e in entries
        if _is_create(e) and e["status"] == 200 and not e.get("replayed")
    )
    return sum(1 for n in made.values() if n > 1)


def run_scenario(
    name: str,
    shared: bool,
    rps: float,
    seconds: float,
    latency_ms: float,
    reversal_runs: int,
    reconcile_runs: int,
    per_day: int,
) -> dict[str, Any]:
    label = "shared budget" if shared else "per-process buckets"
    rows = int(rps * seconds * 0.97)
    # The emulator runs in this process: it only waits on the children, and a
    # separate emulator process takes ~45 s to import on the busy shared machine.
    faults = FaultConfig(latency_ms=latency_ms, rate_limit_per_second=int(rps))
    with database("bench_sb") as url, EmulatorServer(faults=faults, api_keys=[API_KEY]) as server:
        stripe_url = server.url
        control = server.control()
        seed_due_rows(url, control, rows)
        if reconcile_runs:
            seed_reconciled_days(url, control, per_day)
        procs = [
            _spawn("reversal", url, stripe_url, rps, shared, max_rows=-(-rows // reversal_runs))
            for _ in range(reversal_runs)
        ] + [
            _spawn(
                "reconcile", url, stripe_url, rps, shared, day=RECONCILED_DAYS[i], seconds=seconds
            )
            for i in range(reconcile_runs)
        ]
        _start_together(procs)
        results = _collect(procs)
        entries = [e for e in _log(control) if e["path"].startswith("/v1/")]
        holders = _holders(url)
    window_start = max(r["started"] for r in results)
    window_end = min(r["ended"] for r in results)
    span = max(window_end - window_start, 1e-9)
    inside = [e for e in entries if window_start <= e["time"] <= window_end]
    ok = [e for e in inside if e["status"] != 429]
    http_429 = sum(1 for e in entries if e["status"] == 429)
    summary = {
        "scenario": name,
        "mode": label,
        "window_seconds": span,
        "calls": len(entries),
        "http_429": http_429,
        "share_429": http_429 / max(1, len(entries)),
        "max_per_second": _max_in_any_second([e["time"] for e in entries]) / rps,
        "aggregate": len(ok) / span / rps,
        "reversal_rate": sum(1 for e in ok if _is_create(e)) / span / rps,
        "reversed": sum(r.get("reversed", 0) for r in results),
        "rows": rows,
        "doubles": _doubles(entries),
        "holders_seen": holders,
        "children": results,
    }
    print(
        f"[{name}, {label}] window {span:.1f}s, calls {len(entries)}, 429 {http_429}, "
        f"max/s {summary['max_per_second']:.3f}x, aggregate {summary['aggregate']:.3f}, "
        f"reversals {summary['reversal_rate']:.3f} of budget, reversed "
        f"{summary['reversed']}/{rows}, doubles {summary['doubles']}",
        flush=True,
    )
    for r in results:
        print(f"    {r['kind']}: {json.dumps(r['budget'])}", flush=True)
    return summary


def _holders(url: str) -> int:
    import sqlalchemy as sa

    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(sa.text("SELECT count(*) FROM stripe_budget_holders")).scalar()
                or 0
            )
    finally:
        engine.dispose()


def figures_for(s: dict[str, Any], shared: bool) -> list[Figure]:
    tag = f"{s['scenario']}, {'shared' if shared else 'per-process'}"
    goal = (lambda g: g) if shared else (lambda g: "info")
    figures = [
        Figure(f"429 share of calls ({tag})", s["share_429"], goal("<= 0.005")),
        Figure(f"max requests in 1 s / budget ({tag})", s["max_per_second"], goal("<= 1.05")),
    ]
    if s["scenario"] == "mix":
        figures += [
            Figure(f"aggregate / budget, overlap ({tag})", s["aggregate"], goal(">= 0.9")),
            Figure(f"reversals / budget, overlap ({tag})", s["reversal_rate"], goal(">= 0.8")),
        ]
    elif s["scenario"] == "alone":
        figures.append(Figure(f"reversals / budget ({tag})", s["reversal_rate"], goal(">= 0.95")))
    else:
        figures += [
            Figure(f"together / budget ({tag})", s["aggregate"], goal(">= 0.9")),
            Figure(f"rows reversed twice ({tag})", s["doubles"], "== 0"),
        ]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=60.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--per-day", type=int, default=3_000, help="transfers per reconciled day")
    parser.add_argument("--only", choices=["mix", "alone", "four"], nargs="*", default=None)
    parser.add_argument("--modes", choices=["per-process", "shared"], nargs="*", default=None)
    # Child mode (internal).
    parser.add_argument("--child", choices=["reversal", "reconcile"])
    parser.add_argument("--url")
    parser.add_argument("--stripe")
    parser.add_argument("--shared", type=int, default=1)
    parser.add_argument("--max-rows", type=int, default=0)
    parser.add_argument("--day")
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    print_header("one Stripe budget per account across processes (issue 15, figure 6)")
    scenarios = {"mix": (1, 2), "alone": (1, 0), "four": (4, 0)}
    figures: list[Figure] = []
    for name in args.only or list(scenarios):
        reversal_runs, reconcile_runs = scenarios[name]
        for mode in args.modes or ["per-process", "shared"]:
            shared = mode == "shared"
            summary = run_scenario(
                name,
                shared,
                args.rps,
                args.seconds,
                args.latency_ms,
                reversal_runs,
                reconcile_runs,
                args.per_day,
            )
            figures += figures_for(summary, shared)
    print_block("one budget per account (goals apply to the shared budget)", figures)


if __name__ == "__main__":
    main()
