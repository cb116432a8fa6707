"""One seeded fault-injection scenario, and the invariants of issue 7 checked after it.

Shared by ``test_fault_injection.py`` (a few seeds, real reversal_job runs) and
``benchmarks/fault_injection.py`` (hundreds of seeds, the job's core per run).

A scenario: M due rows with random amounts and currencies, each with a real
transfer at the emulator; the emulator injects a seeded mix of latency
(with spike ticks), random 500s, 429s (its rate limit is below the job's
budget), lost responses (committed, reply dropped) and connection resets.
Tick 1 starts a victim run, SIGKILLs it once it is mid-batch, then starts two
runs that overlap each other; every later tick advances the clock past the
lease and the backoff cap and runs two overlapping runs again, until no row
is pending. Then faults stop and the invariants are checked; every breach is
returned as a sentence naming the row.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from reversal_pipeline.db.tables import reversal_attempts, seller_transfers
from reversal_pipeline.stripe_emulator import EmulatorServer, FaultConfig
from tests.plugins.marketplace import advance_clock
from tests.reliability.launcher import JobLauncher, JobProcess, wait_until

TRANSFER_DAY = datetime(2026, 11, 20, 12, tzinfo=UTC)
KEY_PREFIX = "reversal_pipeline:seller_transfer:"
LEASE = 60
SETTINGS: dict[str, Any] = {
    "lease_seconds": LEASE,
    "max_attempts": 6,
    "backoff_base_seconds": 30,
    "backoff_cap_seconds": 240,
    "concurrency": 6,
    "page_size": 25,
}
TICK_SECONDS = max(LEASE, SETTINGS["backoff_cap_seconds"]) + 1
MAX_TICKS = SETTINGS["max_attempts"] + 4
SLOW_MS = 100.0  # a request slower than this counts as a latency spike
#: Refuses a share (RATE) of outcome writes (a status or retry change) with a
#: constraint error, as a violated constraint or a failing disk would.
WRITE_FAULT_DDL = """
CREATE FUNCTION fault_outcome_write() RETURNS trigger AS $$
BEGIN
    -- Decided per (run, row), so the group write and the one-by-one retry of the
    -- writer both fail for that row in that run, and a later run may succeed.
    IF (NEW.status IS DISTINCT FROM OLD.status OR NEW.retry_count <> OLD.retry_count)
            AND mod(abs(hashtext(coalesce(OLD.claimed_by, '') || ':' || NEW.id)), 10000)
                < RATE * 10000 THEN
        RAISE EXCEPTION 'injected write fault on seller transfer %%', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER fault_outcome_write BEFORE UPDATE ON seller_transfers
    FOR EACH ROW EXECUTE FUNCTION fault_outcome_write();
"""


@dataclass
class ScenarioResult:
    """What a seed did and what it broke (``violations`` is the verdict: empty is a pass)."""

    seed: int
    rows: int
    ticks: int = 0
    runs: int = 0
    killed_mid_batch: int = 0
    overlapping_claims: list[tuple[int, int]] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)  # outcomes the runs reported, by kind
    runs_failed_loudly: int = 0  # failed on an unwritten outcome, as they must (write faults)
    # The Stripe calls the audit trail recorded, by action, outcome and HTTP status ("-":
    # none recorded, a success or no answer): how often each path was taken, e.g. a 429
    # on a create that went down the rate-limited path as a counted transient attempt.
    audited_calls: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    reconciliation: str = ""


def fault_config(
    rng: random.Random, seed: int, *, spike: bool, rate_limit: int | None = None
) -> FaultConfig:
    """This seed's fault mix; a spike tick answers every request 100-250 ms late.

    The emulator's rate limit (40-80 requests in any second) is below the
    job's budget (500/s in these runs), so bursts of the two overlapping runs
    meet real 429s; Stripe's own limit is 25/s in test mode and 100/s live.
    """
    low, high = (100.0, 250.0) if spike else (0.0, 20.0)
    return FaultConfig(
        latency_min_ms=low,
        latency_max_ms=high,
        error_rate=rng.uniform(0.02, 0.08),
        lost_response_rate=rng.uniform(0.02, 0.08),
        reset_rate=rng.uniform(0.01, 0.05),
        rate_limit_per_second=rate_limit or rng.choice([40, 60, 80]),
        seed=seed * 1_000 + rng.randrange(1_000),
    )


def seed_due_rows(
    engine: sa.Engine, emulator: EmulatorServer, rng: random.Random, count: int
) -> None:
    """``count`` due rows, random amount and currency, each with its transfer at the emulator."""
    specs = [(rng.randint(100, 250_000), rng.choice(["usd", "eur", "gbp"])) for _ in range(count)]
    ids = emulator.control().create_transfers(
        [
            {
                "amount": amount,
                "currency": currency,
                "destination": f"acct_seller{i % 7}",
                "created": int(TRANSFER_DAY.timestamp()),
            }
            for i, (amount, currency) in enumerate(specs)
        ],
        returning="ids",
    )
    assert isinstance(ids, list)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(seller_transfers),
            [
                {
                    "order_id": f"ord_{i}",
                    "seller_id": f"seller_{i % 7}",
                    "stripe_account_id": f"acct_seller{i % 7}",
                    "stripe_transfer_id": transfer_id,
                    "amount": amount,
                    "currency": currency,
                    "status": "reversal_pending",
                    "transferred_at": TRANSFER_DAY,
                    "next_retry_at": now,
                    "reversal_requested_at": now,
                }
                for i, ((amount, currency), transfer_id) in enumerate(zip(specs, ids, strict=True))
            ],
        )


def _scalar(engine: sa.Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as connection:
        return connection.execute(sa.text(sql), params).scalar()


def _pending(engine: sa.Engine) -> int:
    return int(
        _scalar(engine, "SELECT count(*) FROM seller_transfers WHERE status = 'reversal_pending'")
    )


def _due(engine: sa.Engine) -> int:
    return int(
        _scalar(
            engine,
            "SELECT count(*) FROM seller_transfers WHERE status = 'reversal_pending'"
            " AND next_retry_at <= now()"
            " AND (claimed_by IS NULL OR claim_expires_at < now())",
        )
    )


def run_scenario(
    *,
    seed: int,
    rows: int,
    engine: sa.Engine,
    env: dict[str, str],
    emulator: EmulatorServer,
    launcher: JobLauncher,
    core: bool = False,
    kill: bool = True,
    write_fault_rate: float = 0.0,
    rate_limit_per_second: int | None = None,
) -> ScenarioResult:
    """Run one seed to the end (nothing pending) and check the invariants.

    ``write_fault_rate``: the share of (run, row) pairs whose outcome write PostgreSQL
    refuses (a trigger raising a constraint error, ``WRITE_FAULT_DDL``), decided by a
    hash of the run's token and the row id (tokens are fresh ids, so which rows fail
    is not replayed by the seed; how many is). ``rate_limit_per_second`` overrides
    the emulator's seeded rate limit (lower: more 429s).
    """
    rng = random.Random(seed)
    result = ScenarioResult(seed=seed, rows=rows)
    emulator.reset()
    seed_due_rows(engine, emulator, rng, rows)
    if write_fault_rate:
        with engine.begin() as connection:
            connection.exec_driver_sql(WRITE_FAULT_DDL.replace("RATE", repr(write_fault_rate)))
    emulator.faults.configure(
        fault_config(rng, seed, spike=False, rate_limit=rate_limit_per_second)
    )
    # One of each fault for certain (the first create calls), the seeded random mix on top.
    emulator.faults.add_scripts(
        {"respond": kind, "method": "POST", "path_prefix": "/v1/transfers/"}
        for kind in ("reset", 500, "lost", 429)
    )
    killed_rows: set[int] = set()

    def start(settings: dict[str, Any]) -> JobProcess:
        result.runs += 1
        return launcher.start(env, {**SETTINGS, **settings}, core=core)

    def finish(jobs: list[JobProcess]) -> list[int]:
        outcomes = [job.wait(timeout=300) for job in jobs]
        for outcome in outcomes:
            reported = outcome["metadata"].get("reversal_outcomes", {})
            for name, count in reported.items():
                if name.startswith("outcome_") and isinstance(count, int | str):
                    result.paths[name.removeprefix("outcome_")] += int(count)
            not_written = int(reported.get("outcomes_not_written", 0) or 0)
            result.paths["outcome_not_written(rows)"] += not_written
            if not outcome["success"] and write_fault_rate and not_written:
                result.runs_failed_loudly += 1
            elif not outcome["success"]:
                result.violations.append(f"seed {seed}: a run failed: {outcome['error']}")
        return [
            int(o["metadata"].get("due_reversals", {}).get("rows_claimed", 0)) for o in outcomes
        ]

    # Tick 1: a victim killed mid-batch, then two runs overlapping each other.
    share = max(1, rows // 3)
    if kill:
        victim = start({"max_rows_per_run": share, "concurrency": 2})
        token = wait_until(
            lambda: _scalar(engine, "SELECT min(claimed_by) FROM seller_transfers"),
            timeout=120,
            what="the victim's claim",
        )
        wait_until(
            lambda: (
                _scalar(engine, "SELECT count(*) FROM reversal_attempts WHERE run_id = :t", t=token)
                >= 2
                or victim.reply.poll(0)
            ),
            timeout=120,
            what="the victim to be mid-batch",
        )
        victim.kill()
        with engine.connect() as connection:
            killed_rows = set(
                connection.execute(
                    sa.text(
                        "SELECT id FROM seller_transfers WHERE claimed_by = :t"
                        " AND status = 'reversal_pending'"
                    ),
                    {"t": token},
                ).scalars()
            )
        result.killed_mid_batch += bool(killed_rows)
    # The overlapping pair meets a latency spike: slow answers widen their overlap.
    emulator.faults.configure(fault_config(rng, seed, spike=True, rate_limit=rate_limit_per_second))
    claims = finish([start({"max_rows_per_run": share}), start({"max_rows_per_run": share})])
    result.overlapping_claims.append((claims[0], claims[1]))
    result.ticks = 1

    while _pending(engine) and result.ticks < MAX_TICKS:
        advance_clock(engine, TICK_SECONDS)
        emulator.faults.configure(
            fault_config(rng, seed, spike=rng.random() < 0.25, rate_limit=rate_limit_per_second)
        )
        due = _due(engine)
        if not due:
            continue
        half = max(1, (due + 1) // 2)
        claims = finish([start({"max_rows_per_run": half}), start({"max_rows_per_run": half})])
        result.overlapping_claims.append((claims[0], claims[1]))
        result.ticks += 1

    emulator.faults.configure(FaultConfig())
    if write_fault_rate and _pending(engine):
        result.violations.append(f"seed {seed}: rows still pending after {result.ticks} ticks")
    log = emulator.control().request_log()
    result.faults = count_faults(log)
    result.violations += check_invariants(engine, emulator, env, killed_rows, log)
    with engine.connect() as connection:
        result.audited_calls = Counter(
            {
                f"{action} {outcome} {status}": count
                for action, outcome, status, count in connection.execute(
                    sa.text(
                        "SELECT action, outcome, coalesce(http_status::text, '-'), count(*)"
                        " FROM reversal_attempts GROUP BY 1, 2, 3"
                    )
                ).all()
            }
        )
        result.statuses = Counter(
            dict(
                connection.execute(
                    sa.text("SELECT status, count(*) FROM seller_transfers GROUP BY status")
                ).all()
            )
        )
    return result


def count_faults(log: list[dict[str, Any]]) -> Counter[str]:
    """Faults the emulator injected, by kind, from its request log."""
    kinds: Counter[str] = Counter()
    names = {
        "random:error": "http_500",
        "script:500": "http_500",
        "random:lost": "lost_response",
        "script:lost": "lost_response",
        "random:reset": "connection_reset",
        "script:reset": "connection_reset",
        "rate_limit": "http_429",
        "script:429": "http_429",
    }
    for entry in log:
        fault = entry.get("fault")
        if fault in names:
            kinds[names[fault]] += 1
        if float(entry.get("duration_ms") or 0.0) >= SLOW_MS:
            kinds["latency_spike"] += 1
    kinds["requests"] = len(log)
    return kinds


def _key_row_and_attempt(key: str) -> tuple[int, int]:
    # "<row>:target:<target>:attempt:<n>" (the target is in the key since issue 17)
    row, _, rest = key[len(KEY_PREFIX) :].partition(":target:")
    _, _, attempt = rest.partition(":attempt:")
    return int(row), int(attempt)


def check_invariants(
    engine: sa.Engine,
    emulator: EmulatorServer,
    env: dict[str, str],
    killed_rows: set[int],
    log: list[dict[str, Any]],
) -> list[str]:
    """Issue 7's invariants 1-4; each breach is a sentence naming the row."""
    problems: list[str] = []
    control = emulator.control()
    with engine.connect() as connection:
        rows = (
            connection.execute(
                sa.select(seller_transfers, sa.func.now().label("db_now")).order_by(
                    seller_transfers.c.id
                )
            )
            .mappings()
            .all()
        )
        audits = connection.execute(sa.select(reversal_attempts)).mappings().all()
    audited_keys = {a["idempotency_key"] for a in audits if a["idempotency_key"]}
    actions_by_row: dict[int, set[str]] = {}
    for a in audits:
        actions_by_row.setdefault(a["seller_transfer_id"], set()).add(a["action"])
    row_by_transfer = {r["stripe_transfer_id"]: r for r in rows}

    for row in rows:
        label = f"seller transfer {row['id']} ({row['stripe_transfer_id']})"
        stripe = control.get_transfer(row["stripe_transfer_id"])
        transfer, reversals = stripe["transfer"], stripe["reversals"]
        ours = [r for r in reversals if r["metadata"].get("seller_transfer_id") == str(row["id"])]
        # 1. At most one reversal of ours; a reversed row is reversed for its amount.
        if len(ours) > 1:
            problems.append(f"{label}: {len(ours)} reversals carry its id (double reversal)")
        status = row["status"]
        if status == "reversed":
            if transfer["amount_reversed"] != row["amount"]:
                problems.append(
                    f"{label}: reversed in the DB, Stripe shows {transfer['amount_reversed']}"
                    f" of {row['amount']} reversed"
                )
            # 3b. Its reversal id exists at Stripe.
            if row["stripe_reversal_id"] not in {r["id"] for r in reversals}:
                problems.append(f"{label}: stripe_reversal_id {row['stripe_reversal_id']} unknown")
        # 2. End states.
        if status == "permanently_failed" and not (row["error_message"] or "").strip():
            problems.append(f"{label}: permanently_failed without a reason")
        if status == "reversal_pending" and (
            row["next_retry_at"] is None or row["next_retry_at"] <= row["db_now"]
        ):
            problems.append(f"{label}: reversal_pending without a future next_retry_at")
        if status not in ("reversed", "permanently_failed", "reversal_pending"):
            problems.append(f"{label}: unexpected status {status}")
        if row["claimed_by"] is not None and row["claim_expires_at"] <= row["db_now"]:
            problems.append(f"{label}: claimed by {row['claimed_by']} with an expired lease")
        # 4 (direct form): money moved at Stripe iff the DB says reversed.
        if status != "reversed" and transfer["amount_reversed"] > 0:
            problems.append(
                f"{label}: {status} in the DB but Stripe shows {transfer['amount_reversed']}"
                " reversed"
            )

    # 3. Every Stripe call has its reversal_attempts row.
    missing_by_row: Counter[int] = Counter()
    for key in sorted({e["idempotency_key"] for e in log if _is_create(e)}):
        if key in audited_keys:
            continue
        row_id, attempt = _key_row_and_attempt(key)
        row = next((r for r in rows if r["id"] == row_id), None)
        if row_id in killed_rows and row is not None and attempt <= row["stripe_attempts"]:
            # In flight in the SIGKILLed process: its audit row died with it. The intent
            # (stripe_attempts, counted before the call) made the next run look first.
            missing_by_row[row_id] += 1
            continue
        problems.append(f"create call {key} has no reversal_attempts row")
    problems += [
        f"seller transfer {row_id}: {n} unaudited calls in flight at the kill (at most 1)"
        for row_id, n in missing_by_row.items()
        if n > 1
    ]
    for entry in log:
        if entry["method"] != "GET" or entry["transfer_id"] not in row_by_transfer:
            continue
        row = row_by_transfer[entry["transfer_id"]]
        wanted = "lookup_reversal" if entry["path"].endswith("/reversals") else "confirm_reversed"
        if wanted not in actions_by_row.get(row["id"], set()) and row["id"] not in killed_rows:
            problems.append(f"seller transfer {row['id']}: {entry['path']} has no {wanted} row")

    problems += reconciliation_drift(engine, env)
    return list(dict.fromkeys(problems))


def _is_create(entry: dict[str, Any]) -> bool:
    key = entry.get("idempotency_key") or ""
    return entry["method"] == "POST" and key.startswith(KEY_PREFIX)


def reconciliation_drift(engine: sa.Engine, env: dict[str, str]) -> list[str]:
    """Invariant 4: reconciliation's own ``compare`` over the day finds nothing."""
    from reversal_pipeline.reconciliation.compare import compare
    from reversal_pipeline.reconciliation.frames import db_transfers_frame, stripe_transfers_frame
    from reversal_pipeline.stripe.resource import StripeResource

    day_start = TRANSFER_DAY.replace(hour=0)
    day_end = day_start + timedelta(days=1)
    stripe = StripeResource(api_key=env["STRIPE_API_KEY"], api_base=env["STRIPE_API_BASE"])
    try:
        stripe_frame = stripe_transfers_frame(stripe.iter_transfers_created(day_start, day_end))
    finally:
        stripe.close()
    with engine.connect() as connection:
        db_frame = db_transfers_frame(connection, day_start, day_end)
    findings = compare(db_frame, stripe_frame, now=datetime.now(UTC))
    return [
        f"reconciliation: {f['category']} for seller transfer {f['seller_transfer_id']}"
        f" ({f['stripe_transfer_id']}): {f['explanation']}"
        for f in findings.to_dict("records")
    ]
