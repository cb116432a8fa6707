"""Refund made at Stripe -> seller transfer reversed, through ``stripe_refunds_sensor`` (issue 18).

No webhook: refunds are created at the emulator (in its own process) at random
intervals (a Poisson stream) on charges whose ``transfer_group`` is a seeded
order with a ``completed`` seller transfer. A loop plays the daemon: it
evaluates the real ``stripe_refunds_sensor`` (real resources, the shared
budget in the database) every ``--interval`` seconds (the sensor's 30 s by
default) and, when the tick requests a run, executes ``reversal_job`` in this
process. Latency is the wall clock just before the refund's POST to the
database's ``reversed_at`` of the order's row (same machine, same clock).

What it leaves out, on purpose: the daemon's launch of a run process (on
this shared machine tens of seconds, see "Timeliness on the dev stack"), so
the figure is the sensor's own share: waiting for the next tick, the pass,
and the job's intake and reversal.

Short: ``uv run python benchmarks/refund_latency.py --refunds 20 --over 60``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa
from _common import API_KEY, Figure, database, emulator_process, print_block, print_header

from reversal_pipeline.db.engine import create_db_engine
from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.db.tables import seller_transfers
from reversal_pipeline.stripe.resource import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorClient

#: The runs' step-by-step DEBUG lines would bury the figures.
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def seed_orders(engine: sa.Engine, control: EmulatorClient, count: int) -> list[str]:
    """``count`` orders, each one completed seller transfer (9,000) with a real transfer."""
    transfer_ids = control.create_transfers(
        [
            {"amount": 9_000, "currency": "usd", "destination": f"acct_seller{i % 7}"}
            for i in range(count)
        ],
        returning="ids",
    )
    orders = [f"ord_latency_{i}" for i in range(count)]
    with engine.begin() as connection:
        connection.execute(
            sa.insert(seller_transfers),
            [
                {
                    "order_id": order,
                    "seller_id": f"seller_{i % 7}",
                    "stripe_account_id": f"acct_seller{i % 7}",
                    "stripe_transfer_id": transfer_id,
                    "amount": 9_000,
                    "currency": "usd",
                    "status": "completed",
                    "transferred_at": datetime.now(UTC),
                }
                for i, (order, transfer_id) in enumerate(zip(orders, transfer_ids, strict=True))
            ],
        )
    return orders


def reversed_at(engine: sa.Engine, orders: list[str]) -> dict[str, float]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(seller_transfers.c.order_id, seller_transfers.c.reversed_at).where(
                seller_transfers.c.order_id.in_(orders),
                seller_transfers.c.status == "reversed",
            )
        ).all()
    return {row.order_id: row.reversed_at.timestamp() for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refunds", type=int, default=20)
    parser.add_argument("--over", type=float, default=60.0, help="seconds they arrive over")
    parser.add_argument("--interval", type=float, default=30.0, help="sensor interval (s)")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print_header(
        f"refund -> reversed through stripe_refunds_sensor: {args.refunds} refunds over "
        f"~{args.over:.0f} s, a tick every {args.interval:.0f} s"
    )
    with database("refund_latency") as url, emulator_process() as stripe_url:
        os.environ.update(
            REVERSAL_DATABASE_URL=url,
            STRIPE_API_KEY=API_KEY,
            STRIPE_API_BASE=stripe_url,
            STRIPE_REQUESTS_PER_SECOND="100",
            REVERSAL_LISTEN_SECONDS="0",
        )
        from reversal_pipeline.definitions import defs as load_defs

        defs = load_defs()
        sensor = defs.resolve_sensor_def("stripe_refunds_sensor")
        job = defs.resolve_job_def("reversal_job")
        engine = create_db_engine(url)
        control = EmulatorClient(stripe_url)
        orders = seed_orders(engine, control, args.refunds)
        charges = {
            order: control.create_charge(10_000, "usd", transfer_group=order)["id"]
            for order in orders
        }
        created_at: dict[str, float] = {}

        def refund_stream() -> None:
            for order in orders:
                time.sleep(rng.expovariate(args.refunds / args.over))
                created_at[order] = time.time()
                control.create_refund(charges[order])  # the whole charge

        producer = threading.Thread(target=refund_stream, daemon=True)
        stripe = StripeResource(
            api_key=API_KEY,
            api_base=stripe_url,
            requests_per_second=100,
            shared_budget_database_url=url,
        )
        cursor: str | None = None
        ticks = runs = 0
        pass_seconds: list[float] = []
        run_seconds: list[float] = []
        with dg.instance_for_test() as instance:
            producer.start()
            started = time.monotonic()
            deadline = started + args.over * 3 + args.interval * 4 + 300
            while time.monotonic() < deadline:
                tick_started = time.monotonic()
                with dg.build_sensor_context(
                    instance=instance,
                    cursor=cursor,
                    resources={"database": DatabaseResource(url=url), "stripe": stripe},
                ) as context:
                    result = sensor.evaluate_tick(context)
                pass_seconds.append(time.monotonic() - tick_started)
                ticks += 1
                cursor = result.cursor or cursor
                for request in result.run_requests or []:
                    run_started = time.monotonic()
                    job.execute_in_process(
                        instance=instance, tags=dict(request.tags), run_config=QUIET_RUN
                    )
                    run_seconds.append(time.monotonic() - run_started)
                    runs += 1
                done = reversed_at(engine, orders)
                if not producer.is_alive() and len(done) == len(orders):
                    break
                next_tick = tick_started + args.interval
                time.sleep(max(0.0, next_tick - time.monotonic()))
            stripe.close()
        done = reversed_at(engine, orders)
        latencies = [done[o] - created_at[o] for o in orders if o in done and o in created_at]
        missing = len(orders) - len(latencies)
        print(
            f"ticks {ticks}, runs {runs}, sensor pass median "
            f"{statistics.median(pass_seconds):.2f} s, run median "
            f"{statistics.median(run_seconds) if run_seconds else 0:.2f} s, "
            f"not reversed {missing}",
            flush=True,
        )
        ordered = sorted(latencies)

        def pct(q: float) -> float:
            return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

        print_block(
            "refund at Stripe -> reversed, through stripe_refunds_sensor (no webhook)",
            [
                Figure("refunds reversed", float(len(latencies)), f"== {len(orders)}"),
                Figure("p50", pct(0.5), "info", "s"),
                Figure("p95", pct(0.95), "info", "s"),
                Figure("max", ordered[-1], "info", "s"),
                Figure("sensor interval", args.interval, "info", "s"),
            ],
        )


if __name__ == "__main__":
    main()
