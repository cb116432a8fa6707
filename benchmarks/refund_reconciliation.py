"""Issue 18: the refund reconciliation of one day of N refunds (100,000 by default).

The parent seeds the emulator in-process (``create_refunds_bulk``: N charges,
each fully refunded, spread over the UTC day, transfer group ``order_<i>``),
reads the refund ids back once through the public list, and COPYs the
database: one seller transfer per order, reversed; one refund event per
refund, with its amount (as ``stripe_refunds_sensor`` or a webhook with
amounts writes it), closed, with its allocation. One refund in 1,000 has no
event (``refund_not_received``), one in 1,000 a reversal still pending
(``refund_not_reversed``). With ``--whole-order-every K``, every K-th event
is a whole-order one (amount NULL), whose check needs its charge: it comes
with the refund listing (``expand[]=data.charge``), not one retrieve each.

A child process runs ``reconcile_refund_day`` against that emulator over
HTTP and reports Stripe calls by kind, the time split and its peak RSS.

    uv run python benchmarks/refund_reconciliation.py
    uv run python benchmarks/refund_reconciliation.py --sizes 20000 --whole-order-every 10
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from datetime import UTC, datetime, timedelta

from _common import API_KEY, Figure, copy_rows, database, print_block, print_header
from _scaffold import child_stripe, peak_rss_mib, report, run_child

from reversal_pipeline.db.engine import create_db_engine
from reversal_pipeline.stripe_emulator import EmulatorServer

DAY_START = datetime(2026, 11, 20, tzinfo=UTC)
AMOUNT = 1_000  # each charge, fully refunded
SELLER_SHARE = 900  # the seller transfer of each order


def child(url: str, stripe_url: str) -> None:
    """In the child: reconcile the day's refunds once, print one JSON line."""
    from reversal_pipeline.reconciliation.refund_side import reconcile_refund_day

    engine = create_db_engine(url)
    stripe = child_stripe(stripe_url)
    # Past the default grace: the seeded events were received just now.
    later = datetime.now(UTC) + timedelta(hours=2)
    started = time.perf_counter()
    result = reconcile_refund_day(
        engine, stripe, DAY_START.date(), run_id="benchmark", now=lambda: later
    )
    wall = time.perf_counter() - started
    categories = result.drift_findings["category"].astype(str).value_counts().to_dict()
    report(
        {
            "complete": result.complete,
            "error": result.error,
            "stripe_refunds": result.stripe_refunds,
            "received": result.received_refunds,
            "charges_retrieved": result.charges_retrieved,
            "stripe_calls": result.stripe_calls,
            "calls_by_kind": {k: v for k, v in stripe.calls_made.items() if v},
            "findings": categories,
            "seconds": result.seconds,
            "wall": wall,
            "peak_rss_mib": peak_rss_mib(),
        }
    )
    engine.dispose()


def seed(url: str, server: EmulatorServer, n: int, whole_order_every: int) -> None:
    from reversal_pipeline.stripe.resource import StripeResource

    server.control().create_refunds_bulk(DAY_START.date(), n, AMOUNT, order_start=0)
    lister = StripeResource(api_key=API_KEY, api_base=server.url, requests_per_second=1e6)
    # The ids, read back once: which refund goes with which seeded row does not
    # matter to the figure, only that each has an event and a reversed transfer.
    ordered = sorted(
        r.id for r in lister.iter_refunds_created(DAY_START, DAY_START + timedelta(days=1))
    )
    lister.close()
    assert len(ordered) == n, (len(ordered), n)
    engine = create_db_engine(url)
    rows, events, allocations = io.StringIO(), io.StringIO(), io.StringIO()
    step = 86_400 / n
    for i, refund_id in enumerate(ordered):
        row_id = event_id = i + 1
        at = (DAY_START + timedelta(seconds=i * step)).isoformat()
        if i % 1000 == 777:  # still pending: refund_not_reversed
            rows.write(
                f"{row_id}\tord_{i}\tseller_{i % 97}\tacct_seller{i % 97}\ttr_bench_{i}"
                f"\t{SELLER_SHARE}\tusd\treversal_pending\t{at}\t{at}\t{at}"
                f"\t\\N\t\\N\t{SELLER_SHARE}\t0\n"
            )
        else:
            rows.write(
                f"{row_id}\tord_{i}\tseller_{i % 97}\tacct_seller{i % 97}\ttr_bench_{i}"
                f"\t{SELLER_SHARE}\tusd\treversed\t{at}\t\\N\t{at}\ttrr_bench_{i}\t{at}"
                f"\t{SELLER_SHARE}\t{SELLER_SHARE}\n"
            )
        if i % 1000 == 500:
            continue  # no event: refund_not_received
        whole = whole_order_every and i % whole_order_every == 0
        amount, currency = ("\\N", "\\N") if whole else (str(AMOUNT), "usd")
        events.write(
            f"{event_id}\t{refund_id}\tord_{i}\t{amount}\t{currency}\treversal_requested\t{at}\n"
        )
        allocations.write(
            f"{event_id}\t{row_id}\t{SELLER_SHARE}\t0\t{SELLER_SHARE}\tbenchmark\tbenchmark\n"
        )
    copy_rows(
        engine,
        "COPY seller_transfers (id, order_id, seller_id, stripe_account_id, stripe_transfer_id,"
        " amount, currency, status, transferred_at, next_retry_at, reversal_requested_at,"
        " stripe_reversal_id, reversed_at, reversal_target, amount_reversed) FROM STDIN",
        rows.getvalue(),
    )
    copy_rows(
        engine,
        "COPY refund_events (id, refund_id, order_id, amount, currency, outcome, processed_at)"
        " FROM STDIN",
        events.getvalue(),
    )
    copy_rows(
        engine,
        "COPY refund_allocations (refund_event_id, seller_transfer_id, amount, target_before,"
        " target_after, detail, actor) FROM STDIN",
        allocations.getvalue(),
    )
    with engine.begin() as connection:
        for table in ("seller_transfers", "refund_events", "refund_allocations"):
            connection.exec_driver_sql(f"ANALYZE {table}")
    engine.dispose()


def measure(n: int, whole_order_every: int) -> list[Figure]:
    with database("bench_refund_rec") as url, EmulatorServer(api_keys=[API_KEY]) as server:
        t0 = time.perf_counter()
        seed(url, server, n, whole_order_every)
        print(f"[{n} refunds] seeded in {time.perf_counter() - t0:.1f}s", flush=True)
        r = run_child(__file__, ["--child", url, server.url], timeout=3600)[-1]
    print(f"[{n} refunds] {json.dumps(r)}", flush=True)
    pages = math.ceil(n / 100)
    whole = 0 if not whole_order_every else len(range(0, n, whole_order_every))
    label = f"{n:,}" + (f", every {whole_order_every}th whole-order" if whole_order_every else "")
    s = r["seconds"]
    return [
        Figure(
            f"Stripe calls, {label} (pages ceil(N/100)={pages}; {whole} whole-order charges)",
            r["stripe_calls"],
            f"<= {pages + 1}",
            "calls",
            pages + 1,
        ),
        Figure(f"wall time of the run, {label}", r["wall"], "info", "s"),
        Figure(f"time: Stripe listing, {label}", s.get("stripe_listing", 0.0), "info", "s"),
        Figure(f"time: charges, {label}", s.get("stripe_charges", 0.0), "info", "s"),
        Figure(f"time: database read, {label}", s.get("database_read", 0.0), "info", "s"),
        Figure(f"time: comparison, {label}", s.get("comparison", 0.0), "info", "s"),
        Figure(f"time: writing findings, {label}", s.get("writing_findings", 0.0), "info", "s"),
        Figure(f"findings, {label}", sum(r["findings"].values()), "info"),
        Figure(f"peak RSS, {label}", r["peak_rss_mib"], "info", "MiB"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--whole-order-every", type=int, default=0, metavar="K")
    parser.add_argument("--child", nargs=2, metavar=("DB_URL", "STRIPE_URL"), default=None)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print_header("refund reconciliation of one day (issue 18)")
    figures: list[Figure] = []
    for n in args.sizes:
        figures += measure(n, args.whole_order_every)
    print_block("refund reconciliation", figures)


if __name__ == "__main__":
    main()
