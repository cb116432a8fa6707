"""Figure 4: reconciling a day of 100,000 and 1,000,000 transfers.

The parent process seeds the emulator in-process (``state.create_transfers_bulk``)
and the database (COPY): N transfers created across one UTC day, N - N/1000
``completed`` rows pointing at them (one transfer in a thousand has no row, one
row in a thousand has the wrong amount, so findings get written). A child
process runs ``reconciliation.run.reconcile_day`` against that emulator over
HTTP and reports the Stripe calls, the time split and its own peak RSS.

Goals: Stripe list calls = ceil(N/100) (+1 when N is a multiple of 100 and the
last page says ``has_more``), comparison <= 5 s at 1,000,000, peak RSS <= 1.5 GB.

    uv run python benchmarks/reconciliation.py
    uv run python benchmarks/reconciliation.py --sizes 20000 100000

Issue 13 (``--changed K ...``): after one full reconciliation of the N-transfer
day, change K rows (a relevant column) and re-reconcile the way the backfill
sensor's run does (``recheck_plan``: K retrieves while K is below the day's
page count, else the full listing), then the same K rows by retrieves anyway,
for the comparison. Reports Stripe calls by kind and wall time for each.

    uv run python benchmarks/reconciliation.py --sizes 1000000 --changed 1 100 10000
"""

from __future__ import annotations

import argparse
import io
import math
import time
from datetime import UTC, datetime, timedelta

from _common import API_KEY, Figure, copy_rows, database, print_block, print_header
from _scaffold import child_stripe, peak_rss_mib, report, run_child

from reversal_pipeline.db.engine import create_db_engine
from reversal_pipeline.stripe_emulator import EmulatorServer

DAY_START = datetime(2026, 11, 20, tzinfo=UTC)
CHANGED = "CHANGED "  # the marker of the --changed child's lines


def child(url: str, stripe_url: str) -> None:
    """In the child: reconcile the day once, print one JSON line."""
    from reversal_pipeline.reconciliation.run import reconcile_day

    engine = create_db_engine(url)
    stripe = child_stripe(stripe_url)
    started = time.perf_counter()
    result = reconcile_day(engine, stripe, DAY_START.date(), run_id="benchmark")
    wall = time.perf_counter() - started
    report(
        {
            "complete": result.complete,
            "error": result.error,
            "db_rows": result.db_rows,
            "stripe_transfers": result.stripe_transfers,
            "stripe_calls": result.stripe_calls,
            "findings": len(result.drift_findings),
            "seconds": result.seconds,
            "wall": wall,
            "peak_rss_mib": peak_rss_mib(),
        }
    )
    engine.dispose()


def child_changed(url: str, stripe_url: str, ks: list[int]) -> None:
    """In the child: one full run, then for each K: change K rows, re-check, print JSON lines."""
    import sqlalchemy as sa

    from reversal_pipeline.reconciliation.run import day_bounds, reconcile_day, reconcile_rows
    from reversal_pipeline.reconciliation.stale_days import recheck_plan
    from reversal_pipeline.reconciliation.store import FindingScope

    engine = create_db_engine(url)
    stripe = child_stripe(stripe_url)
    day = DAY_START.date()

    def timed(label: str, k: int, run) -> None:
        before = stripe.calls_made
        started = time.perf_counter()
        outcome = run()
        wall = time.perf_counter() - started
        calls = {key: v - before.get(key, 0) for key, v in stripe.calls_made.items() if v}
        report(
            {
                "label": label,
                "k": k,
                "complete": outcome.complete,
                "wall": wall,
                "incremental": outcome.incremental,
                "calls": calls,
            },
            CHANGED,
        )

    timed("full (first pass)", 0, lambda: reconcile_day(engine, stripe, day, run_id="full"))
    with engine.connect() as connection:
        ids = connection.execute(sa.text("SELECT id FROM seller_transfers ORDER BY id")).scalars()
        all_ids = list(ids)
    offset = 0
    for k in ks:
        chosen = all_ids[offset : offset + k]
        offset += k
        with engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE seller_transfers SET status = 'failed' WHERE id = ANY(:ids)"),
                {"ids": chosen},
            )
        with engine.connect() as connection:
            plan = recheck_plan(connection, day, *day_bounds(day), now=datetime.now(UTC))
        if plan.scope is not None:
            scope = plan.scope
            timed(
                "as the sensor's run (incremental)",
                k,
                lambda scope=scope, k=k: reconcile_rows(engine, stripe, day, scope, run_id=f"i{k}"),
            )
        else:
            timed(
                "as the sensor's run (full listing)",
                k,
                lambda k=k: reconcile_day(engine, stripe, day, run_id=f"full-{k}"),
            )
            forced = FindingScope(tuple(chosen), ())
            timed(
                "forced incremental, for comparison",
                k,
                lambda f=forced, k=k: reconcile_rows(engine, stripe, day, f, run_id=f"f{k}"),
            )
    engine.dispose()


def measure_changed(n: int, ks: list[int]) -> None:
    with database("bench_rec13") as url, EmulatorServer(api_keys=[API_KEY]) as server:
        t0 = time.perf_counter()
        seed(url, server, n)
        print(f"[{n} transfers] seeded in {time.perf_counter() - t0:.1f}s", flush=True)
        results = run_child(
            __file__,
            ["--child-changed", url, server.url, *map(str, ks)],
            timeout=7200,
            marker=CHANGED,
        )
    print(f"| changed rows k | how | Stripe calls | wall (s) | ({n:,}-transfer day) |")
    print("|---|---|---|---|---|")
    for r in results:
        calls = ", ".join(f"{key} {v:,}" for key, v in sorted(r["calls"].items()))
        print(f"| {r['k']:,} | {r['label']} | {calls} | {r['wall']:.2f} | |", flush=True)


def seed(url: str, server: EmulatorServer, n: int) -> None:
    step = 86_400 / n
    specs = [
        {
            "amount": 1_000 + i % 500,
            "currency": "usd",
            "destination": f"acct_seller{i % 97}",
            "created": int(DAY_START.timestamp() + i * step),
        }
        for i in range(n)
    ]
    transfers = server.state.create_transfers_bulk(specs)
    del specs
    engine = create_db_engine(url)
    chunk = 200_000
    for start in range(0, n, chunk):
        buffer = io.StringIO()
        for i in range(start, min(n, start + chunk)):
            if i % 1000 == 500:
                continue  # a transfer with no row: a finding
            transfer = transfers[i]
            amount = transfer.amount + (1 if i % 1000 == 999 else 0)  # amount mismatch
            at = (DAY_START + timedelta(seconds=i * step)).isoformat()
            buffer.write(
                f"ord_{i}\tseller_{i % 97}\tacct_seller{i % 97}\t{transfer.id}\t{amount}"
                f"\tusd\tcompleted\t{at}\n"
            )
        copy_rows(
            engine,
            "COPY seller_transfers (order_id, seller_id, stripe_account_id, stripe_transfer_id,"
            " amount, currency, status, transferred_at) FROM STDIN",
            buffer.getvalue(),
        )
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE seller_transfers")
    engine.dispose()


def measure(n: int) -> list[Figure]:
    with database("bench_rec") as url, EmulatorServer(api_keys=[API_KEY]) as server:
        t0 = time.perf_counter()
        seed(url, server, n)
        print(f"[{n} transfers] seeded in {time.perf_counter() - t0:.1f}s", flush=True)
        r = run_child(__file__, ["--child", url, server.url], timeout=3600)[-1]
    pages = math.ceil(n / 100)
    print(
        f"[{n} transfers] complete={r['complete']} db rows {r['db_rows']}, Stripe transfers "
        f"{r['stripe_transfers']}, list calls {r['stripe_calls']}, findings {r['findings']}, "
        f"wall {r['wall']:.1f}s, split {r['seconds']}, peak RSS {r['peak_rss_mib']:.0f} MiB",
        flush=True,
    )
    s = r["seconds"]
    allowed_calls = pages + (1 if n % 100 == 0 else 0)
    label = f"{n:,}"
    return [
        Figure(
            f"Stripe list calls, {label} (ceil(N/100)={pages})",
            r["stripe_calls"],
            f"<= {allowed_calls}",
            "calls",
            pages,
        ),
        Figure(f"time: Stripe listing, {label}", s.get("stripe_listing", 0.0), "info", "s"),
        Figure(f"time: database read, {label}", s.get("database_read", 0.0), "info", "s"),
        Figure(
            f"time: comparison, {label}",
            s.get("comparison", 0.0),
            "<= 5.0" if n >= 1_000_000 else "info",
            "s",
            5.0 if n >= 1_000_000 else None,
        ),
        Figure(f"time: writing findings, {label}", s.get("writing_findings", 0.0), "info", "s"),
        Figure(f"findings written, {label}", r["findings"], "info"),
        Figure(
            f"peak RSS of the reconciling process, {label}",
            r["peak_rss_mib"],
            "<= 1536",
            "MiB",
            1536,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--child", nargs=2, metavar=("DB_URL", "STRIPE_URL"), default=None)
    parser.add_argument("--changed", type=int, nargs="+", default=None, metavar="K")
    parser.add_argument("--child-changed", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.child_changed:
        url, stripe_url, *ks = args.child_changed
        child_changed(url, stripe_url, [int(k) for k in ks])
        return
    if args.changed:
        print_header("incremental re-check of changed rows (issue 13)")
        for n in args.sizes:
            measure_changed(n, args.changed)
        return
    print_header("reconciliation of one day (issue 8, figure 4)")
    figures: list[Figure] = []
    for n in args.sizes:
        figures += measure(n)
    print_block("reconciliation", figures)


if __name__ == "__main__":
    main()
