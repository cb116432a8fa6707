"""A seeded scheduler over the reversal batch: faults, runs, and the money invariants.

Everything real: the batch of ``reversals/batch.py`` on its plain core, PostgreSQL,
the real SDK against the emulator with its scripted faults. What is chosen at
random (which fault, which row, how many new rows) comes from one seeded
``random.Random``, so a failing schedule replays from its seed. Time is the only
stand-in: the database's deadlines are moved with ``advance_clock`` instead of
waiting, and the emulator holds a request in flight until the test releases it
(observed with ``wait_for_held``, never a sleep).

Settings are short on purpose so every branch is reached in a few runs: no
rate-limit patience (a 429 is deferred at once), no SDK retries (one HTTP request
is one Stripe call, which lets invariant (b) count them), ``max_attempts=3``.

The invariants are those of issue 12, checked after every run (``check``):
(a) after a run with no lost reply, every reversal at Stripe is recorded on its row;
(b) every Stripe call has exactly one audit row, and the call that created a
reversal is audited with that reversal's idempotency key;
(c) the total reversed at Stripe for a row never exceeds the row's amount;
(d) every claimed row gets its outcome written (or a retry scheduled, its
``retry_count`` counted), or the run fails (or was told to stop);
(e) no ``reversal_pending`` row without ``next_retry_at``;
(f) (issue 17) the total reversed at Stripe by our reversals for a row never exceeds
its ``reversal_target``. Rows are seeded with partial targets too, and between runs
a partial refund may raise a row's target through the real intake
(``raise_a_target``), so a row is reversed in several parts.

One path is a listening run (``reversals/listen.py``): its passes are the real
loop's, woken by the real ``NOTIFY`` of refunds the "webhook" records between
passes, some of them with a fault on the new row's create; the invariants are
checked over all its passes, (d) on each row as it was just before the pass
that claimed it.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from reversal_pipeline.db.tables import reversal_attempts, seller_transfers
from reversal_pipeline.reversals.batch import BatchReport, ReversalBatch
from reversal_pipeline.reversals.claim import claim_due_rows
from reversal_pipeline.reversals.intake import process_refund_events, request_reversal
from reversal_pipeline.reversals.listen import (
    ListenEnd,
    ListenWindow,
    PassReport,
    RefundEventWakeups,
    Wake,
    combined_report,
    listen,
    take_newly_due,
)
from reversal_pipeline.reversals.refund_policy import PartialRefundPolicy
from reversal_pipeline.reversals.reverse import idempotency_key_for
from reversal_pipeline.reversals.settings import ReversalSettings
from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer

LEASE_SECONDS = 10  # the smallest the settings allow
SETTINGS = ReversalSettings(
    max_attempts=3,
    backoff_base_seconds=1,
    backoff_cap_seconds=2,
    backoff_jitter=0.0,
    concurrency=2,
    lease_seconds=LEASE_SECONDS,
    page_size=4,
)
HOLD_TIMEOUT = 10.0  # seconds to wait for a held request to arrive (an upper bound, not a sleep)
STRIPE_CALL_ENDPOINTS = frozenset(
    {
        "POST /v1/transfers/{id}/reversals",
        "GET /v1/transfers/{id}",
        "GET /v1/transfers/{id}/reversals",
    }
)
#: Audit actions that record a Stripe call: the job's three, and the operator commands
#: that check Stripe before they change a row (their one audit row records that call).
STRIPE_CALL_ACTIONS = frozenset(
    {"create_reversal", "lookup_reversal", "confirm_reversed", "reopen", "resolve"}
)
ALREADY_REVERSED = "The transfer {tid} is already fully reversed."
#: A listening run: refunds that arrive while it is up (one after each of its first
#: passes), and its window, short so the step takes seconds (bounded by max_seconds).
LISTEN_REFUNDS = 3
LISTEN_WINDOW = ListenWindow(idle_seconds=1.0, max_seconds=30.0, poll_seconds=0.25)
LISTEN_FAULTS = ("none", "500", "429", "lost")


class Path(StrEnum):
    """The fault paths the scheduler drives; each is counted when it was really taken."""

    CLEAN = "clean"
    CREATE_429 = "create_429_beyond_patience"
    CONFIRM_429 = "confirm_429_beyond_patience"
    LOOKUP_429 = "lookup_429_beyond_patience"
    AUTH_401_WITH_DEFERRED = "auth_401_mid_batch_with_rows_deferred"
    LOST_RESPONSE = "lost_response"
    SERVER_5XX = "server_5xx"
    WRITE_CONSTRAINT_ERROR = "write_constraint_error"
    WRITE_CONNECTION_ERROR = "write_connection_error"
    REOPEN = "reopen"
    REEXECUTION_WHILE_SENDING = "reexecution_while_original_sends"
    SAME_TOKEN_WHILE_SENDING = "second_batch_same_token_while_original_sends"
    TERMINATION = "termination"
    LEASE_EXPIRY_MID_CALL = "lease_expiry_mid_call"
    LISTENING = "listening_takes_new_refunds_mid_run"


#: A write fault: a trigger that fails the outcome write (a status or retry change) of
#: the rows listed in ``sim_write_faults``, either with a constraint error or by killing
#: its own connection (what a restarted server or a dropped network does to a commit).
WRITE_FAULT_DDL = """
CREATE TABLE sim_write_faults (row_id bigint PRIMARY KEY, kind text NOT NULL);
CREATE FUNCTION sim_fail_outcome_write() RETURNS trigger AS $$
DECLARE fault text;
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status OR NEW.retry_count <> OLD.retry_count THEN
        SELECT kind INTO fault FROM sim_write_faults WHERE row_id = NEW.id;
        IF fault = 'constraint' THEN
            RAISE EXCEPTION 'simulated constraint failure on seller transfer %%', NEW.id
                USING ERRCODE = 'check_violation';
        ELSIF fault = 'connection' THEN
            PERFORM pg_terminate_backend(pg_backend_pid());
        END IF;
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER sim_fail_outcome_write BEFORE UPDATE ON seller_transfers
    FOR EACH ROW EXECUTE FUNCTION sim_fail_outcome_write();
"""


@dataclass
class RunResult:
    """One batch run as the invariants see it."""

    claimed: dict[int, dict[str, Any]]  # row id -> its state when claimed
    report: BatchReport | None
    stopped: bool = False  # told to stop (termination): unsent rows are allowed
    lost_reply: bool = False
    first_seq: int = 0  # the emulator's request log position when the run began


@dataclass
class Simulation:
    engine: sa.Engine
    server: EmulatorServer
    api_key: str
    rng: random.Random
    counts: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    unauditable: set[int] = field(default_factory=set)
    # Partial targets draw from their own generator: the fault schedules of the main
    # one (and so the paths each seed reaches) stay what they were before issue 17.
    partial_rng: random.Random = field(default_factory=lambda: random.Random("partial"))
    _runs: int = 0
    _refunds: int = 0

    def __post_init__(self) -> None:
        with self.engine.begin() as connection:
            connection.exec_driver_sql(WRITE_FAULT_DDL)

    # -- the world -------------------------------------------------------------------------------

    def seed(self, count: int) -> list[int]:
        """``count`` new due rows; some reverse part of a larger transfer (so (c) can fail)."""
        amounts = [
            self.rng.choice([(1_000, 1_000), (500, 1_000), (300, 1_200)]) for _ in range(count)
        ]
        created = int(datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp())
        ids = [
            self.server.state.create_transfer(
                amount=transfer_amount, currency="usd", destination="acct_sim", created=created
            ).id
            for _, transfer_amount in amounts
        ]
        now = datetime.now(UTC)
        values = [
            {
                "order_id": f"sim_{tid}",
                "seller_id": "seller_sim",
                "stripe_account_id": "acct_sim",
                "stripe_transfer_id": tid,
                "amount": row_amount,
                "currency": "usd",
                "status": "reversal_pending",
                "transferred_at": now,
                "next_retry_at": now,
                "reversal_requested_at": now,
                # A partial target for some rows (issue 17): 0 lets the database give
                # the whole amount, the seed's meaning of reversal_pending.
                "reversal_target": self.partial_rng.choice([0, 0, row_amount // 2, 1]),
            }
            for tid, (row_amount, _) in zip(ids, amounts, strict=True)
        ]
        with self.engine.begin() as connection:
            return list(
                connection.execute(
                    sa.insert(seller_transfers).returning(seller_transfers.c.id), values
                ).scalars()
            )

    def seed_paid(self, count: int) -> list[dict[str, Any]]:
        """``count`` paid-out (``completed``) rows: a refund for one makes it due."""
        created = int(datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp())
        values = []
        for _ in range(count):
            tid = self.server.state.create_transfer(
                amount=1_000, currency="usd", destination="acct_sim", created=created
            ).id
            values.append(
                {
                    "order_id": f"sim_{tid}",
                    "seller_id": "seller_sim",
                    "stripe_account_id": "acct_sim",
                    "stripe_transfer_id": tid,
                    "amount": 1_000,
                    "currency": "usd",
                    "status": "completed",
                    "transferred_at": datetime.now(UTC),
                }
            )
        with self.engine.begin() as connection:
            ids = connection.execute(
                sa.insert(seller_transfers).returning(seller_transfers.c.id), values
            ).scalars()
            return [{**value, "id": row_id} for row_id, value in zip(ids, values, strict=True)]

    def raise_a_target(self) -> None:
        """A partial refund of a random row not yet at its full amount, through real intake."""
        candidates = [
            r
            for r in self.rows()
            if r["status"] in ("reversal_pending", "reversed")
            and r["reversal_target"] < r["amount"]
            and r["claimed_by"] is None
        ]
        if not candidates:
            return
        row = self.partial_rng.choice(candidates)
        self._refunds += 1
        with self.engine.begin() as connection:
            request_reversal(
                connection,
                refund_id=f"re_sim_{self._refunds}",
                order_id=row["order_id"],
                amount=self.partial_rng.randint(1, row["amount"] - row["reversal_target"]),
                currency=row["currency"],
                seller_transfer_id=row["id"],
            )
        summary = process_refund_events(
            self.engine, run_id="sim-intake", policy=PartialRefundPolicy.REFUSE
        )
        assert summary.outcomes == {"reversal_requested": 1}, summary
        self.counts["partial_refund"] += 1

    def rows(self, **where: Any) -> list[dict[str, Any]]:
        query = sa.select(seller_transfers).order_by(seller_transfers.c.id)
        for name, value in where.items():
            query = query.where(seller_transfers.c[name] == value)
        with self.engine.connect() as connection:
            return [dict(r) for r in connection.execute(query).mappings()]

    def audit(self) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            return [
                dict(r)
                for r in connection.execute(
                    sa.select(reversal_attempts).order_by(reversal_attempts.c.id)
                ).mappings()
            ]

    def due_row(self, *, attempted: bool = False, fresh: bool = False) -> dict[str, Any] | None:
        """A random due, unclaimed row; ``attempted``: one with a create behind it;
        ``fresh``: one never sent (so its next create is sure to be sent).
        """
        now = datetime.now(UTC)
        candidates = [
            r
            for r in self.rows(status="reversal_pending")
            if r["claimed_by"] is None
            and r["next_retry_at"] is not None
            and r["next_retry_at"] <= now
            and (not attempted or r["stripe_attempts"] > 0)
            and (not fresh or r["stripe_attempts"] == 0)
        ]
        return self.rng.choice(candidates) if candidates else None

    def script(self, **entry: Any) -> None:
        self.server.faults.add_script(entry)

    def pass_time(self) -> None:
        """Everything pending becomes due and every lease expires (no waiting)."""
        with self.engine.begin() as connection:
            connection.execute(
                sa.text(
                    "UPDATE seller_transfers SET"
                    " next_retry_at = next_retry_at - make_interval(secs => :s),"
                    " claim_expires_at = claim_expires_at - make_interval(secs => :s)"
                    " WHERE next_retry_at IS NOT NULL OR claim_expires_at IS NOT NULL"
                ),
                {"s": 3 * LEASE_SECONDS + 60},
            )

    def set_write_fault(self, row_id: int, kind: str | None) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM sim_write_faults"))
            if kind is not None:
                connection.execute(
                    sa.text("INSERT INTO sim_write_faults VALUES (:id, :kind)"),
                    {"id": row_id, "kind": kind},
                )

    # -- runs --------------------------------------------------------------------------------------

    def resource(self) -> StripeResource:
        return StripeResource(
            api_key=self.api_key,
            api_base=self.server.url,
            requests_per_second=500,
            max_network_retries=0,
            timeout_seconds=5,
            rate_limit_max_wait_seconds=0,
        )

    def claim(self, token: str) -> dict[int, dict[str, Any]]:
        claim_due_rows(self.engine, token=token, max_rows=1_000, lease_seconds=LEASE_SECONDS)
        return {r["id"]: r for r in self.rows(claimed_by=token)}

    def new_token(self) -> str:
        self._runs += 1
        return f"sim-run-{self._runs}"

    def batch(self, token: str, stripe: StripeResource) -> ReversalBatch:
        return ReversalBatch(
            self.engine,
            stripe,
            token=token,
            run_id=token,
            settings=SETTINGS,
            rng=random.Random(self.rng.random()),
        )

    def seq(self) -> int:
        entries = self.server.state.requests.entries()
        return entries[-1].seq if entries else 0

    def run(self, *, lost_reply: bool = False) -> RunResult:
        token = self.new_token()
        first_seq = self.seq()
        claimed = self.claim(token)
        stripe = self.resource()
        try:
            report = self.batch(token, stripe).run()
        finally:
            stripe.close()
        return RunResult(claimed, report, lost_reply=lost_reply, first_seq=first_seq)

    # -- one step per path ------------------------------------------------------------------------

    def step(self, path: Path) -> None:
        """Drive ``path`` once (on a chosen row), run, then check every invariant."""
        if self.rng.random() < 0.5 or not self.rows(status="reversal_pending"):
            self.seed(self.rng.randint(1, 3))
        if self.partial_rng.random() < 0.4:
            self.raise_a_target()
        result = getattr(self, f"_drive_{path.value}")()
        self.server.faults.clear_scripts()
        self.server.faults.release_holds()
        self.set_write_fault(0, None)
        if result is not None:
            self.check(path, result)
        self.pass_time()

    def _drive_clean(self) -> RunResult:
        self.counts[Path.CLEAN] += 1
        return self.run()

    def _drive_create_429_beyond_patience(self) -> RunResult:
        row = self.due_row()
        if row is not None:
            self.counts[Path.CREATE_429] += 1
            self.script(
                respond=429, method="POST", transfer_id=row["stripe_transfer_id"], times=100
            )
        return self.run()

    def _drive_confirm_429_beyond_patience(self) -> RunResult:
        row = self.due_row()
        if row is not None:
            self.counts[Path.CONFIRM_429] += 1
            tid = row["stripe_transfer_id"]
            message = ALREADY_REVERSED.format(tid=tid)
            self.script(respond=400, method="POST", transfer_id=tid, message=message)
            self.script(respond=429, method="GET", path=f"/v1/transfers/{tid}", times=100)
        return self.run()

    def _drive_lookup_429_beyond_patience(self) -> RunResult:
        row = self.due_row(attempted=True)
        if row is None and (row := self.due_row()) is not None:
            # A row with an attempt behind it: its create committed, the reply was lost.
            self.script(respond="lost", method="POST", transfer_id=row["stripe_transfer_id"])
            self.check(Path.LOST_RESPONSE, self.run(lost_reply=True))
            self.server.faults.clear_scripts()
            self.pass_time()
        if row is not None:
            self.counts[Path.LOOKUP_429] += 1
            tid = row["stripe_transfer_id"]
            self.script(respond=429, method="GET", path=f"/v1/transfers/{tid}/reversals", times=100)
        return self.run()

    def _drive_auth_401_mid_batch_with_rows_deferred(self) -> RunResult:
        """The first row is rate-limited past patience (deferred), then the last row's key is
        revoked: the run must stop, touch no more rows and count no attempt on the deferred.
        """
        pending = [r for r in self.rows(status="reversal_pending") if r["claimed_by"] is None]
        if len(pending) < 3:
            self.seed(3)
            pending = [r for r in self.rows(status="reversal_pending") if r["claimed_by"] is None]
        deferred, revoked = pending[0], pending[-1]  # rows are sent in id order
        self.counts[Path.AUTH_401_WITH_DEFERRED] += 1
        self.script(
            respond=429, method="POST", transfer_id=deferred["stripe_transfer_id"], times=100
        )
        self.script(respond=401, transfer_id=revoked["stripe_transfer_id"], times=100)
        return self.run()

    def _drive_lost_response(self) -> RunResult:
        row = self.due_row()
        if row is not None:
            self.counts[Path.LOST_RESPONSE] += 1
            self.script(respond="lost", method="POST", transfer_id=row["stripe_transfer_id"])
        return self.run(lost_reply=row is not None)

    def _drive_server_5xx(self) -> RunResult:
        row = self.due_row()
        if row is not None:
            self.counts[Path.SERVER_5XX] += 1
            status = self.rng.choice([500, 502, 503])
            self.script(respond=status, transfer_id=row["stripe_transfer_id"])
        return self.run()

    def _write_fault(self, kind: str, path: Path) -> RunResult:
        row = self.due_row()
        if row is not None:
            self.counts[path] += 1
            self.set_write_fault(row["id"], kind)
            # Its calls cannot be audited while its state change cannot commit (they
            # commit together), so (b) is waived for this row; (d) is not.
            self.unauditable.add(row["id"])
        return self.run()

    def _drive_write_constraint_error(self) -> RunResult:
        return self._write_fault("constraint", Path.WRITE_CONSTRAINT_ERROR)

    def _drive_write_connection_error(self) -> RunResult:
        return self._write_fault("connection", Path.WRITE_CONNECTION_ERROR)

    def _drive_reopen(self) -> RunResult:
        """A reversed row back to ``reversal_pending``, one of two ways (chosen at random).

        * The audited command (``ops.actions.reopen``) on a row the database calls
          reversed but Stripe does not (``db_reversed_stripe_not``, made here by
          recording a reversal id Stripe never issued): the job must reverse it, once.
        * A direct update of a row Stripe did reverse (an operator bypassing the
          command): the job must find that reversal and record it, not send a second.
        """
        from reversal_pipeline.runbook import actions

        if self.rng.random() < 0.5 and (row := self.due_row(fresh=True)) is not None:
            self.counts[f"{Path.REOPEN.value}:command"] += 1
            self.counts[Path.REOPEN] += 1
            with self.engine.begin() as connection:
                connection.execute(
                    sa.update(seller_transfers)
                    .where(seller_transfers.c.id == row["id"])
                    .values(
                        status="reversed",
                        stripe_reversal_id="trr_never_issued",
                        reversed_at=sa.func.now(),
                        next_retry_at=None,
                    )
                )
            stripe = self.resource()
            try:
                actions.reopen(self.engine, stripe, row["id"], "simulation: not at Stripe")
            finally:
                stripe.close()
            return self.run()
        reversed_rows = self.rows(status="reversed")
        if reversed_rows:
            row = self.rng.choice(reversed_rows)
            self.counts[f"{Path.REOPEN.value}:direct_update"] += 1
            self.counts[Path.REOPEN] += 1
            with self.engine.begin() as connection:
                connection.execute(
                    sa.update(seller_transfers)
                    .where(seller_transfers.c.id == row["id"])
                    .values(
                        status="reversal_pending",
                        next_retry_at=sa.func.now(),
                        stripe_reversal_id=None,
                        reversed_at=None,
                    )
                )
        return self.run()

    def _drive_listening_takes_new_refunds_mid_run(self) -> RunResult:
        """A listening run takes the refunds that arrive while it is up, faults and all.

        As ``reversal_job`` does it (defs/reversals/listening.py): the wake-ups are
        entered first, a first pass takes what is due, then ``listen`` runs passes
        until idle. After each of the first passes the webhook records a refund for
        a paid row (its ``NOTIFY`` wakes the next pass) with, at random, nothing, a
        5xx, a 429 beyond patience or a lost reply scripted on that row's create.
        Each pass does its intake first and the rows it is about to claim are read
        then, so (d) sees each claimed row as it was just before its claim.
        """
        self.counts[Path.LISTENING] += 1
        arriving = iter(self.seed_paid(LISTEN_REFUNDS))
        token = self.new_token()
        first_seq = self.seq()
        claimed: dict[int, dict[str, Any]] = {}
        batches: list[BatchReport] = []
        lost_reply = False
        refunded: list[int] = []
        stripe = self.resource()

        def run_pass(wake: Wake) -> PassReport:
            process_refund_events(self.engine, run_id=token, open_window=timedelta(days=30))
            now = datetime.now(UTC)
            for row in self.rows(status="reversal_pending"):
                due = row["next_retry_at"] is not None and row["next_retry_at"] <= now
                if due and row["claimed_by"] is None:
                    claimed[row["id"]] = row  # the latest claim is the one (d) judges
            report = take_newly_due(
                self.engine,
                stripe,
                token=token,
                run_id=token,
                settings=SETTINGS,
                open_window=timedelta(days=30),
                wake=wake,
            )
            batches.append(report.batch)
            self.counts[f"{Path.LISTENING.value}:pass_{wake.value}"] += 1
            return report

        def webhook(report: PassReport) -> None:
            nonlocal lost_reply
            row = next(arriving, None)
            if row is None:
                return
            fault = self.rng.choice(LISTEN_FAULTS)
            self.counts[f"{Path.LISTENING.value}:refund_{fault}"] += 1
            tid = row["stripe_transfer_id"]
            if fault == "lost":
                lost_reply = True
                self.script(respond="lost", method="POST", transfer_id=tid)
            elif fault != "none":
                self.script(respond=int(fault), method="POST", transfer_id=tid, times=100)
            with self.engine.begin() as connection:
                request_reversal(
                    connection, refund_id=f"re_listen_{row['id']}", order_id=row["order_id"]
                )
            refunded.append(row["id"])

        try:
            with RefundEventWakeups(self.engine) as wakeups:
                first = run_pass(Wake.FIRST)
                webhook(first)
                ended = (
                    ListenEnd.RUN_FAILING
                    if first.must_fail_run
                    else listen(wakeups, run_pass, LISTEN_WINDOW, on_pass=webhook)
                )
        finally:
            stripe.close()
        self.counts[f"{Path.LISTENING.value}:ended_{ended.value}"] += 1
        # A refund recorded while the run listened is taken by that run (unless it fails).
        missed = [row_id for row_id in refunded if row_id not in claimed]
        if missed and ended is not ListenEnd.RUN_FAILING:
            self.violations.append(
                f"listening run {token} ended {ended.value} without taking the refunded "
                f"row(s) {missed}"
            )
        return RunResult(
            claimed, combined_report(batches), lost_reply=lost_reply, first_seq=first_seq
        )

    def _in_flight(self, token: str, row: dict[str, Any]) -> tuple[threading.Thread, dict]:
        """Start a run whose create for ``row`` is held in flight at the emulator."""
        self.script(respond="hold", method="POST", transfer_id=row["stripe_transfer_id"])
        claimed = self.claim(token)
        stripe = self.resource()
        box: dict[str, Any] = {"claimed": claimed, "batch": self.batch(token, stripe)}

        def work() -> None:
            try:
                box["report"] = box["batch"].run()
            finally:
                stripe.close()

        thread = threading.Thread(target=work, name=f"sim-{token}")
        thread.start()
        assert self.server.faults.wait_for_held(1, HOLD_TIMEOUT), "the held create never came"
        return thread, box

    def _drive_termination(self) -> RunResult | None:
        """Stop the run while its creates are in flight: at most one per worker goes out.

        Every create is parked at the emulator, so before the stop at most
        ``concurrency`` are on the wire; the stop comes once one is parked. A run
        that kept draining its queued rows after the stop would send more than that
        (there are more fresh rows than workers). "Sent after the stop" cannot be
        timed exactly (a worker may be between its check and the wire), so this
        counts instead.
        """
        self.seed(2 * SETTINGS.concurrency + 1)
        self.counts[Path.TERMINATION] += 1
        self.script(respond="hold", method="POST", times=1_000)
        creates_before = self._creates()
        token = self.new_token()
        claimed = self.claim(token)
        stripe = self.resource()
        batch = self.batch(token, stripe)
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["report"] = batch.run()
            finally:
                stripe.close()

        thread = threading.Thread(target=work, name=f"sim-{token}")
        thread.start()
        assert self.server.faults.wait_for_held(1, HOLD_TIMEOUT), "no create came"
        stop = getattr(batch, "stop", None) or batch._stop.set
        stop()
        while thread.is_alive():  # let each parked call finish, as the network would
            self.server.faults.release_holds()
            thread.join(0.05)
        sent = self._creates() - creates_before
        if sent > SETTINGS.concurrency:
            self.violations.append(
                f"termination: {sent} creates sent by {SETTINGS.concurrency} workers: "
                "queued rows were sent after the stop"
            )
        return RunResult(claimed, box.get("report"), stopped=True)

    def _drive_reexecution_while_original_sends(self) -> RunResult | None:
        """The original run's create is in flight; a re-execution (same root run id) runs."""
        row = self.due_row(fresh=True)
        if row is None:
            return self.run()
        self.counts[Path.REEXECUTION_WHILE_SENDING] += 1
        token = self.new_token()
        thread, box = self._in_flight(token, row)
        stripe = self.resource()
        again = self.new_token()  # a re-execution is a new run with its own id
        try:
            reclaimed = self.claim(again)  # must not take what the original still holds
            report = self.batch(again, stripe).run()
        finally:
            stripe.close()
            self.server.faults.release_holds()
            thread.join()
        self.check(Path.REEXECUTION_WHILE_SENDING, RunResult(reclaimed, report))
        return RunResult(box["claimed"], box.get("report"))

    def _drive_second_batch_same_token_while_original_sends(self) -> RunResult | None:
        """A second batch under the original's own token while the original still sends."""
        row = self.due_row(fresh=True)
        if row is None:
            return self.run()
        self.counts[Path.SAME_TOKEN_WHILE_SENDING] += 1
        token = self.new_token()
        thread, box = self._in_flight(token, row)
        stripe = self.resource()
        again = token  # the same claim token: what a step retried inside one run would use
        try:
            reclaimed = self.claim(again)  # must not take what the original still holds
            report = self.batch(again, stripe).run()
        finally:
            stripe.close()
            self.server.faults.release_holds()
            thread.join()
        self.check(Path.SAME_TOKEN_WHILE_SENDING, RunResult(reclaimed, report))
        return RunResult(box["claimed"], box.get("report"))

    def _drive_lease_expiry_mid_call(self) -> RunResult | None:
        """The lease runs out while a create is in flight; its late reply must not clobber."""
        row = self.due_row(fresh=True)
        if row is None:
            return self.run()
        self.counts[Path.LEASE_EXPIRY_MID_CALL] += 1
        thread, box = self._in_flight(self.new_token(), row)
        with self.engine.begin() as connection:
            connection.execute(
                sa.text(
                    "UPDATE seller_transfers SET claim_expires_at = now() - interval '1 s'"
                    " WHERE claimed_by IS NOT NULL"
                )
            )
        self.server.faults.release_holds()
        thread.join()
        return RunResult(box["claimed"], box.get("report"))

    def _creates(self) -> int:
        by_endpoint = self.server.state.requests.counters()["by_endpoint"]
        return int(by_endpoint.get("POST /v1/transfers/{id}/reversals", 0))

    # -- invariants --------------------------------------------------------------------------------

    def check(self, path: Path, result: RunResult) -> None:
        rows = {r["id"]: r for r in self.rows()}
        audit = self.audit()
        by_row: dict[int, list[dict[str, Any]]] = {}
        for entry in audit:
            by_row.setdefault(entry["seller_transfer_id"], []).append(entry)
        requests = Counter(
            r.transfer_id
            for r in self.server.state.requests.entries()
            if r.endpoint in STRIPE_CALL_ENDPOINTS
        )
        found: list[str] = []
        for row_id, row in rows.items():
            tid = row["stripe_transfer_id"]
            reversals = list(self.server.state.reversals_of(tid))
            calls = [a for a in by_row.get(row_id, []) if a["action"] in STRIPE_CALL_ACTIONS]
            label = f"after {path.value}: row {row_id} ({tid})"
            # (a) a reversal at Stripe is on its row, once every reply reached the job
            if reversals and not result.lost_reply and row["claimed_by"] is None:
                if row["status"] != "reversed" and row["status"] != "reversal_pending":
                    found.append(f"(a) {label}: reversed at Stripe but {row['status']}")
                if row["status"] == "reversed" and row["stripe_reversal_id"] not in {
                    r.id for r in reversals
                }:
                    found.append(f"(a) {label}: records {row['stripe_reversal_id']}, not at Stripe")
            # (b) one audit row per Stripe call, the creating call with its key
            if row_id in self.unauditable:
                pass
            elif len(calls) != requests.get(tid, 0):
                found.append(
                    f"(b) {label}: {requests.get(tid, 0)} Stripe call(s), {len(calls)} audit row(s)"
                )
            keys = {a["idempotency_key"] for a in calls if a["action"] == "create_reversal"}
            for reversal in [] if row_id in self.unauditable else reversals:
                key = idempotency_key_for(
                    row_id,
                    int(reversal.metadata["attempt"]),
                    int(reversal.metadata["reversal_target"]),
                )
                if key not in keys:
                    found.append(f"(b) {label}: no audit row for the create of {reversal.id}")
            # (c) never more reversed than the row's amount
            total = sum(r.amount for r in reversals)
            if total > row["amount"]:
                found.append(f"(c) {label}: {total} reversed at Stripe, row amount {row['amount']}")
            # (f) never more reversed by us than the row's target (issue 17)
            ours = sum(
                r.amount for r in reversals if r.metadata.get("seller_transfer_id") == str(row_id)
            )
            if ours > row["reversal_target"]:
                found.append(
                    f"(f) {label}: {ours} reversed by us at Stripe, target {row['reversal_target']}"
                )
            # (e) pending rows always come due again
            if row["status"] == "reversal_pending" and row["next_retry_at"] is None:
                found.append(f"(e) {label}: reversal_pending without next_retry_at")
        # (d) every claimed row written (or retry counted), or the run failed or was stopped
        report = result.report
        run_failed = report is None or report.systemic_error is not None
        run_failed = (
            run_failed or bool(getattr(report, "outcomes_not_written", 0)) or result.stopped
        )
        called_in_run = {
            r.transfer_id
            for r in self.server.state.requests.entries()
            if r.seq > result.first_seq and r.endpoint in STRIPE_CALL_ENDPOINTS
        }
        for row_id, before in result.claimed.items():
            after = rows[row_id]
            retry_later = (
                after["status"] == "reversal_pending"
                and after["next_retry_at"] is not None
                and (
                    before["next_retry_at"] is None
                    or after["next_retry_at"] > before["next_retry_at"]
                )
            )
            progressed = (
                after["status"] != before["status"]
                or after["retry_count"] > before["retry_count"]
                or retry_later
            )
            if not progressed and not run_failed:
                found.append(
                    f"(d) after {path.value}: claimed row {row_id} left {after['status']} with "
                    f"retry_count {after['retry_count']} and nothing written, yet the run passed"
                )
            # After a 401/403 no row is touched: an attempt is counted only for a row
            # whose own call went out in this run (before the stop).
            if (
                report is not None
                and report.systemic_error is not None
                and after["retry_count"] > before["retry_count"]
                and after["stripe_transfer_id"] not in called_in_run
            ):
                found.append(
                    f"(d) after {path.value}: row {row_id} got an attempt counted after a "
                    f"401/403 stopped the run, with no call of its own "
                    f"({before['retry_count']} -> {after['retry_count']})"
                )
        self.violations.extend(found)
        self.counts["runs_checked"] += 1

    # -- whole schedules ---------------------------------------------------------------------------

    def drain(self, steps: int = 4) -> None:
        """Clean runs until nothing is due: afterwards every reversal must be on its row."""
        for _ in range(steps):
            if not self.rows(status="reversal_pending"):
                break
            self.step(Path.CLEAN)
        for row in self.rows():
            reversals = list(self.server.state.reversals_of(row["stripe_transfer_id"]))
            if reversals and row["status"] != "reversed":
                self.violations.append(
                    f"(a) after draining: row {row['id']} reversed at Stripe "
                    f"({', '.join(r.id for r in reversals)}) but {row['status']}"
                )
