"""Running a job of the code location once from the command line.

The CLI and the demo use this instead of shelling out to ``dagster job
execute``: same definitions, same resources from the environment, and a
summary an operator can read in a terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster_shared.error import SerializableErrorInfo

from reversal_pipeline.environment import DAGSTER_HOME_ENV, setting
from reversal_pipeline.errors import ConfigurationError
from reversal_pipeline.event_log import PYTHON_LOGS_SETTINGS
from reversal_pipeline.reversals.settings import ReversalSettings


@dataclass
class JobOutcome:
    run_id: str
    success: bool
    error: str | None = None
    summary_lines: list[str] = field(default_factory=list)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)


def instance_from_env(stack: ExitStack) -> dg.DagsterInstance:
    """The DAGSTER_HOME instance when set, else an ephemeral one."""
    if setting(DAGSTER_HOME_ENV):
        return stack.enter_context(dg.DagsterInstance.get())
    # With the package's Python logs captured, as the instance template does.
    return stack.enter_context(dg.DagsterInstance.ephemeral(settings=PYTHON_LOGS_SETTINGS))


def run_job_once(
    job_name: str,
    *,
    run_config: dict[str, Any] | None = None,
    partition_key: str | None = None,
    tags: dict[str, str] | None = None,
    instance: dg.DagsterInstance | None = None,
) -> JobOutcome:
    from reversal_pipeline.definitions import defs

    job = defs().resolve_job_def(job_name)
    with ExitStack() as stack:
        instance = instance or instance_from_env(stack)
        result = job.execute_in_process(
            run_config=run_config or {},
            instance=instance,
            partition_key=partition_key,
            tags=tags,
            raise_on_error=False,
        )
    metadata = {
        materialization.asset_key.to_user_string(): {
            key: value.value for key, value in materialization.metadata.items()
        }
        for materialization in (
            event.materialization for event in result.get_asset_materialization_events()
        )
    }
    error = None if result.success else _first_failure(result.all_events)
    return JobOutcome(result.run_id, result.success, error, metadata=metadata)


def _first_failure(events: Sequence[dg.DagsterEvent]) -> str:
    """The first failed step's own description, else the root cause of its error, on one line.

    Dagster wraps what the step raised ("Error occurred while executing op
    ..."); the wrapper says nothing an operator can act on, so the line is the
    innermost cause's class and message (its own lines joined).
    """
    failure = next((event.step_failure_data for event in events if event.is_step_failure), None)
    if failure is None:
        return "see the run log"
    if failure.user_failure_data is not None and failure.user_failure_data.description:
        return failure.user_failure_data.description
    if failure.error is not None:
        return _root_cause(failure.error)
    return "see the run log"


def _root_cause(error: SerializableErrorInfo) -> str:
    while error.cause is not None:
        error = error.cause
    # The message is traceback's "module.Class: text"; the class's own name is enough.
    name = error.cls_name or "error"
    text = error.message.strip()
    prefix, sep, rest = text.partition(": ")
    if sep and prefix.rsplit(".", 1)[-1] == name:
        text = rest
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{name}: {' / '.join(lines)}" if lines else name


def run_reversal_job_once(overrides: dict[str, str] | None = None) -> JobOutcome:
    run_config = (
        {"resources": {"reversal_settings": {"config": _typed(overrides)}}} if overrides else {}
    )
    outcome = run_job_once("reversal_job", run_config=run_config)
    claimed = outcome.metadata.get("due_reversals", {})
    done = outcome.metadata.get("reversal_outcomes", {})
    outcome.summary_lines = [
        f"run {outcome.run_id}: {'success' if outcome.success else 'FAILED'}",
        f"claimed {claimed.get('rows_claimed', 0)} due row(s)",
        "reversed {r}, permanently failed {f}, retry scheduled {p}, released {x}".format(
            r=done.get("rows_reversed", 0),
            f=done.get("rows_permanently_failed", 0),
            p=done.get("rows_retry_scheduled", 0),
            x=done.get("rows_released", 0),
        ),
        f"stripe calls {done.get('stripe_calls', 0)} in {done.get('elapsed_seconds', 0)}s",
    ]
    return outcome


def _typed(overrides: dict[str, str]) -> dict[str, Any]:
    """Settings given as text on the command line, as the numbers the config expects."""
    typed: dict[str, Any] = {}
    fields = ReversalSettings.model_fields
    for name, value in overrides.items():
        if name not in fields:
            raise ConfigurationError(
                f"unknown setting {name!r}; known: {', '.join(sorted(fields))}"
            )
        annotation = fields[name].annotation
        try:
            typed[name] = annotation(value) if annotation in (int, float) else value
        except ValueError:
            raise ConfigurationError(f"setting {name} wants a number, got {value!r}") from None
    return typed
