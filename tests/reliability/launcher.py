"""reversal_job runs in their own processes, started in milliseconds and killable with SIGKILL.

Importing Dagster, the SDK and the definitions costs ~10 s of CPU on the CI
machine, far too much to pay for every run of a test that runs the job a dozen
times. A ``forkserver`` pays it once: it preloads the package, and each run is
a fresh ``fork()`` of that clean, thread-free process (its own PID, its own
database connections and HTTP pool), running ``run_reversal_job_once`` exactly
as ``reversal-pipeline run-job`` does. ``kill()`` sends SIGKILL: no ``finally``,
no rollback by the client, no lease release, which is what a crash is.

Used by the tests and by ``benchmarks/fault_injection.py``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

#: Imported by the forkserver (it must be importable from the working directory: the
#: repository root, as for ``uv run pytest``).
PRELOAD = ["tests.reliability._preload"]
#: Core runs only: the Stripe resource's rate-limit patience, in seconds (the default,
#: 30 s, lets almost no 429 through; the benchmark sets it short to reach that path).
RATE_LIMIT_PATIENCE_ENV = "FAULT_INJECTION_RATE_LIMIT_MAX_WAIT_SECONDS"


def _child_main(env: dict[str, str], settings: dict[str, str], reply: Connection) -> None:
    """The job process: environment as the CLI would see it, then one run of reversal_job."""
    os.environ.update(env)
    os.environ.pop("DAGSTER_HOME", None)  # an ephemeral instance, like `run-job` without one
    from reversal_pipeline.jobs_runner import run_reversal_job_once

    try:
        outcome = run_reversal_job_once(settings)
        reply.send(
            {
                "success": outcome.success,
                "run_id": outcome.run_id,
                "error": outcome.error,
                "metadata": {k: _plain(v) for k, v in outcome.metadata.items()},
            }
        )
    except BaseException as exc:  # reported, not raised: the parent decides what it means
        reply.send({"success": False, "run_id": None, "error": repr(exc), "metadata": {}})
    finally:
        reply.close()


def _core_child(env: dict[str, str], settings: dict[str, str], reply: Connection) -> None:
    """A run of the job's own core (claim, then batch), without Dagster's ~3 s of overhead.

    The same calls ``due_reversals`` and ``reversal_outcomes`` make, with the
    token a fresh id as a run id would be; used by the long benchmark, where
    thousands of runs must fit in minutes.
    """
    import uuid

    from reversal_pipeline.db.engine import create_db_engine
    from reversal_pipeline.jobs_runner import _typed
    from reversal_pipeline.reversals.batch import ReversalBatch
    from reversal_pipeline.reversals.claim import claim_due_rows
    from reversal_pipeline.reversals.settings import ReversalSettings
    from reversal_pipeline.stripe.resource import StripeResource

    try:
        run_id = str(uuid.uuid4())
        config = ReversalSettings(**_typed(settings))
        engine = create_db_engine(env["REVERSAL_DATABASE_URL"], pool_size=config.concurrency + 2)
        rps = env.get("STRIPE_REQUESTS_PER_SECOND")
        patience = env.get(RATE_LIMIT_PATIENCE_ENV)
        stripe = StripeResource(
            api_key=env["STRIPE_API_KEY"],
            api_base=env.get("STRIPE_API_BASE"),
            requests_per_second=float(rps) if rps else None,
            **({"rate_limit_max_wait_seconds": float(patience)} if patience else {}),
        )
        claimed = claim_due_rows(
            engine,
            token=run_id,
            max_rows=config.max_rows_per_run,
            lease_seconds=config.lease_seconds,
        )
        report = ReversalBatch(engine, stripe, token=run_id, run_id=run_id, settings=config).run()
        not_written = list(getattr(report, "outcomes_not_written", []))
        stripe.close()
        engine.dispose()
        reply.send(
            {
                # As reversal_outcomes decides: a 401/403 or an unwritten outcome fails it.
                "success": report.systemic_error is None and not not_written,
                "run_id": run_id,
                "error": f"outcomes not written: {not_written}" if not_written else None,
                "metadata": {
                    "due_reversals": {"rows_claimed": claimed.rows_claimed},
                    "reversal_outcomes": {
                        **{f"outcome_{k}": v for k, v in report.outcomes.items()},
                        "outcomes_not_written": len(not_written),
                    },
                },
            }
        )
    except BaseException as exc:
        reply.send({"success": False, "run_id": None, "error": repr(exc), "metadata": {}})
    finally:
        reply.close()


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in values.items()}


@dataclass
class JobProcess:
    """One running reversal_job process."""

    process: multiprocessing.process.BaseProcess
    reply: Connection

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up, like a lost machine."""
        with contextlib.suppress(ProcessLookupError):  # it may have just finished
            os.kill(self.pid, signal.SIGKILL)
        self.process.join(30)

    def wait(self, timeout: float = 120.0) -> dict[str, Any]:
        """The run's outcome (success, run_id, error, metadata); raises if it hangs."""
        if not self.reply.poll(timeout):
            self.process.kill()
            raise TimeoutError(f"reversal_job process {self.pid} did not finish in {timeout}s")
        result: dict[str, Any] = self.reply.recv()
        self.process.join(30)
        return result


class JobLauncher:
    """Starts reversal_job processes forked from one preloaded forkserver."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)

    def start(
        self,
        env: Mapping[str, str],
        settings: Mapping[str, Any] | None = None,
        *,
        core: bool = False,
    ) -> JobProcess:
        """Start one run: reversal_job itself, or with ``core`` its claim + batch only."""
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_core_child if core else _child_main,
            args=(dict(env), {k: str(v) for k, v in (settings or {}).items()}, send),
            daemon=True,
        )
        process.start()
        send.close()
        return JobProcess(process, receive)

    def run(
        self,
        env: Mapping[str, str],
        settings: Mapping[str, Any] | None = None,
        *,
        core: bool = False,
    ) -> dict[str, Any]:
        return self.start(env, settings, core=core).wait()


def wait_until(
    condition: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition"
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail loudly at the deadline.

    Synchronisation on observable state (the database, the emulator), never on
    a guessed duration: the poll interval only bounds how late we notice.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
