"""Shared plumbing of the benchmark scripts: database, emulator, seeding, result blocks.

Not a test helper: the scripts measure and print; nothing here asserts on time.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from reversal_pipeline.db import migrate
from reversal_pipeline.db.engine import create_db_engine
from reversal_pipeline.db.url import normalize_url
from reversal_pipeline.stripe_emulator import EmulatorClient

BENCH_DATABASE_URL_ENV = "BENCH_DATABASE_URL"
API_KEY = "sk_test_benchmark_4eC39HqLyjWDarjtT1zdp7dc"
REPO = Path(__file__).resolve().parent.parent
TRANSFER_DAY = datetime(2026, 11, 20, 12, tzinfo=UTC)

# -- machine ---------------------------------------------------------------------------------


def machine_line() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    return (
        f"machine: {os.cpu_count()} cores{mem}, Python {platform.python_version()}, "
        f"load average {load} (1/5/15 min)"
    )


def print_header(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)
    print(machine_line(), flush=True)


# -- result blocks ---------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    value: float
    goal: str  # e.g. ">= 95.0", "== 1.00", "<= 5.0", "info"
    unit: str = ""
    limit: float | None = None  # what the ratio is taken against (None: no ratio)

    def verdict(self) -> str:
        if self.goal == "info":
            return "info"
        op, _, target_text = self.goal.partition(" ")
        target = float(target_text)
        ok = {
            ">=": self.value >= target - 1e-9,
            "<=": self.value <= target + 1e-9,
            "==": abs(self.value - target) < 5e-3,
        }[op]
        return "PASS" if ok else "MISS"


def print_block(title: str, figures: Sequence[Figure]) -> None:
    print(f"\n--- result: {title} ---")
    for f in figures:
        ratio = ""
        if f.limit:
            ratio = f"  ratio to limit {f.value / f.limit:.3f}"
        goal = "" if f.goal == "info" else f"  goal {f.goal}{f.unit and ' ' + f.unit}"
        print(f"  {f.name:<44} {f.value:>12.3f} {f.unit:<8}{goal}{ratio}  [{f.verdict()}]")
    print(flush=True)


# -- database --------------------------------------------------------------------------------


@contextlib.contextmanager
def database(prefix: str) -> Iterator[str]:
    """A fresh migrated database: on ``BENCH_DATABASE_URL``'s server, or an embedded one."""
    external = os.environ.get(BENCH_DATABASE_URL_ENV)
    with contextlib.ExitStack() as stack:
        if external:
            server_url = normalize_url(external)
        else:
            from reversal_pipeline.db.embedded import throwaway_embedded_server

            server_url = stack.enter_context(throwaway_embedded_server("rp-bench-"))
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(
            server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
        engine = create_db_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        try:
            yield url
        finally:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


# -- emulator in its own process -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def emulator_process(latency_ms: float = 0.0, rate_limit: int | None = None) -> Iterator[str]:
    """``reversal-pipeline stripe-emulator`` in a child process; yields its URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "reversal_pipeline.cli",
        "stripe-emulator",
        "--port",
        str(port),
        "--latency-ms",
        str(latency_ms),
        "--api-key",
        API_KEY,
    ]
    if rate_limit is not None:
        command += ["--rate-limit", str(rate_limit)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        # 120 s: a fresh interpreter importing the emulator took over 30 s at load 20+.
        EmulatorClient(url).wait_until_ready(timeout=120)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- seeding ---------------------------------------------------------------------------------

SEED_CHUNK = 10_000


def seed_due_rows(url: str, control: EmulatorClient, count: int, *, amount: int = 1_000) -> None:
    """``count`` due ``reversal_pending`` rows, each with a real transfer at the emulator.

    Transfers are created through the control API in chunks; rows go in with COPY.
    """
    engine = create_db_engine(url)
    now = datetime.now(UTC)
    created = int(TRANSFER_DAY.timestamp())
    done = 0
    try:
        while done < count:
            n = min(SEED_CHUNK, count - done)
            ids = control.create_transfers(
                [
                    {
                        "amount": amount,
                        "currency": "usd",
                        "destination": f"acct_seller{(done + i) % 7}",
                        "created": created,
                    }
                    for i in range(n)
                ],
                returning="ids",
            )
            assert isinstance(ids, list)
            buffer = io.StringIO()
            for i, transfer_id in enumerate(ids):
                k = done + i
                buffer.write(
                    f"ord_{k}\tseller_{k % 7}\tacct_seller{k % 7}\t{transfer_id}\t{amount}\tusd"
                    f"\treversal_pending\t{TRANSFER_DAY.isoformat()}\t{now.isoformat()}"
                    f"\t{now.isoformat()}\n"
                )
            copy_rows(
                engine,
                "COPY seller_transfers (order_id, seller_id, stripe_account_id,"
                " stripe_transfer_id, amount, currency, status, transferred_at,"
                " next_retry_at, reversal_requested_at) FROM STDIN",
                buffer.getvalue(),
            )
            done += n
        with engine.begin() as connection:
            connection.execute(sa.text("ANALYZE seller_transfers"))
    finally:
        engine.dispose()


def copy_rows(engine: sa.Engine, copy_sql: str, data: str) -> None:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy(copy_sql) as copy:  # type: ignore[attr-defined]
            copy.write(data)
        raw.commit()
    finally:
        raw.close()


def status_counts(url: str) -> dict[str, int]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT status, count(*) FROM seller_transfers GROUP BY status")
            ).all()
        return {status: int(n) for status, n in rows}
    finally:
        engine.dispose()


def reversal_creates(counters: dict[str, Any]) -> int:
    """Create-reversal requests the emulator saw (any answer, 429s included)."""
    return sum(
        n
        for endpoint, n in counters.get("by_endpoint", {}).items()
        if "reversals" in endpoint and endpoint.upper().startswith("POST")
    )


# -- running the job -------------------------------------------------------------------------


def job_env(database_url: str, stripe_base: str, rps: float) -> dict[str, str]:
    return {
        "REVERSAL_DATABASE_URL": database_url,
        "STRIPE_API_KEY": API_KEY,
        "STRIPE_API_BASE": stripe_base,
        "STRIPE_REQUESTS_PER_SECOND": str(rps),
    }


@dataclass
class JobRun:
    wall_seconds: float
    success: bool
    error: str | None
    outcomes: dict[str, Any]
    claimed: dict[str, Any]


def run_job_in_process(
    env: dict[str, str], settings: dict[str, int], stripe_config: dict[str, Any] | None = None
) -> JobRun:
    """``reversal_job`` once, in this process, as ``reversal-pipeline run-job`` runs it.

    ``stripe_config`` replaces the ``stripe`` resource's whole config (e.g. to
    compare with the shared budget off).
    """
    os.environ.update(env)
    os.environ.pop("DAGSTER_HOME", None)
    from reversal_pipeline.jobs_runner import run_job_once

    resources: dict[str, Any] = {"reversal_settings": {"config": dict(settings)}}
    if stripe_config is not None:
        resources["stripe"] = {"config": stripe_config}
    run_config = {
        "resources": resources,
        # Dagster's console logger at DEBUG prints every event; keep the figures readable.
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    }
    started = time.perf_counter()
    outcome = run_job_once("reversal_job", run_config=run_config)
    wall = time.perf_counter() - started
    return JobRun(
        wall,
        outcome.success,
        outcome.error,
        outcome.metadata.get("reversal_outcomes", {}),
        outcome.metadata.get("due_reversals", {}),
    )
