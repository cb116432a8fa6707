"""Every environment variable the package reads, named once: its default, meaning and readers.

Other modules import the names from here (``tests/test_environment.py`` fails
on a variable name written as a literal anywhere else in the package, and
checks the README's configuration table against ``VARIABLES``). Adding a
variable is one ``_declare`` statement below; reading one is ``setting(NAME)``.

The Stripe resource is configured from here for both its users, so the job
and the CLI cannot drift apart: ``stripe_resource_config(dg.EnvVar)`` in the
Dagster shell (``defs/resources.py``: Dagster resolves secrets in the process
that runs the step and never shows their values), and
``stripe_resource_config(from_process)`` in the CLI, which has no Dagster to
resolve them.

This module imports nothing from the package but ``errors`` (a leaf), so the
plain core, the Dagster shell and the CLI can all import it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reversal_pipeline.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable, as the README's configuration table shows it."""

    name: str
    #: What ``setting`` returns when the variable is unset or blank; None: no value.
    default: str | None
    meaning: str
    #: Modules (dotted, under ``reversal_pipeline``) that read or set it; ``environment``
    #: itself for the Stripe resource's variables (``stripe_resource_config``).
    readers: tuple[str, ...]
    #: A secret never reaches a log, metadata, an exception, an alert or the database.
    secret: bool = False
    #: What unset means, when more than the default value (the README's default column).
    unset: str = ""

    @property
    def documented_default(self) -> str:
        """The README's default column for this variable."""
        return self.unset or f"`{self.default}`"


#: Every variable the package reads, by name, in the README's order.
VARIABLES: dict[str, Variable] = {}


def _declare(
    name: str,
    *,
    meaning: str,
    readers: tuple[str, ...],
    default: str | None = None,
    secret: bool = False,
    unset: str = "",
) -> str:
    if name in VARIABLES:
        raise ValueError(f"environment variable {name} is declared twice")
    if default is None and not unset:
        raise ValueError(f"environment variable {name} needs a default or says what unset means")
    VARIABLES[name] = Variable(name, default, meaning, readers, secret, unset)
    return name


# -- the variables (README "Configuration" lists each one, same default) ------

DATABASE_URL_ENV = _declare(
    "REVERSAL_DATABASE_URL",
    meaning="SQLAlchemy URL of the application database",
    readers=(
        "environment",
        "db.url",
        "defs.resources",
        "cli.common",
        "devserver.stack",
        "demo.run",
    ),
    secret=True,
    unset="unset: the CLI starts an embedded PostgreSQL",
)
STRIPE_API_KEY_ENV = _declare(
    "STRIPE_API_KEY",
    meaning="Stripe secret or restricted key; read only through dg.EnvVar in the job",
    readers=("environment", "cli.environment", "cli.emulator", "devserver.stack", "demo.run"),
    secret=True,
    unset="none (required to run the job); `dev` sets a test key when it starts the emulator",
)
STRIPE_API_BASE_ENV = _declare(
    "STRIPE_API_BASE",
    meaning="a Stripe-compatible API base URL (the emulator)",
    readers=("environment", "devserver.stack", "demo.run"),
    unset="unset: Stripe itself",
)
STRIPE_REQUESTS_PER_SECOND_ENV = _declare(
    "STRIPE_REQUESTS_PER_SECOND",
    meaning="the request budget against the Stripe account, shared by every process",
    readers=("environment", "demo.run"),
    unset="20 for test keys, 80 for live keys",
)
DAGSTER_HOME_ENV = _declare(
    "DAGSTER_HOME",
    meaning="Dagster instance folder",
    readers=("devserver.home", "cli.environment", "jobs_runner", "demo.run"),
    unset=(
        "`.reversal_pipeline/dagster_home` (for `dev` and `demo`); "
        "unset for `run-job`/`reconcile`: a throwaway instance"
    ),
)
DAGSTER_PG_URL_ENV = _declare(
    "DAGSTER_PG_URL",
    meaning="Dagster's run/event/schedule storage, read by the instance template",
    readers=("devserver.home", "cli.environment", "demo.run"),
    secret=True,
    unset="a database `dagster` on the application's server",
)
AUTOMATION_ENV = _declare(
    "REVERSAL_AUTOMATION",
    meaning="`off` starts schedules and sensors stopped",
    readers=("defs.automation", "devserver.stack"),
    default="on",
)
LISTEN_SECONDS_ENV = _declare(
    "REVERSAL_LISTEN_SECONDS",
    meaning="idle window of a reversal_job run started by refund_events_sensor",
    readers=("reversals.listen",),
    default="120",
)
SCHEDULE_CRON_ENV = _declare(
    "REVERSAL_SCHEDULE_CRON",
    meaning="cron of reversal_schedule (UTC)",
    readers=("defs.reversals.schedules",),
    default="*/5 * * * *",
)
STATE_DIR_ENV = _declare(
    "REVERSAL_PIPELINE_HOME",
    meaning="where the embedded PostgreSQL and the default DAGSTER_HOME live",
    readers=("db.embedded",),
    default="./.reversal_pipeline",
)
REPORTS_DIR_ENV = _declare(
    "REVERSAL_REPORTS_DIR",
    meaning="where each reconciliation run writes its full CSV report",
    readers=("defs.reconciliation.assets",),
    default=".reversal_pipeline/reports",
)
RECONCILIATION_START_DATE_ENV = _declare(
    "RECONCILIATION_START_DATE",
    meaning="first daily partition of reversal_reconciliation",
    readers=("defs.reconciliation.partitions",),
    default="2026-01-01",
)
BACKFILL_LOOKBACK_DAYS_ENV = _declare(
    "RECONCILIATION_BACKFILL_LOOKBACK_DAYS",
    meaning="how far back reconciliation_backfill_sensor looks for changed days",
    readers=("defs.reconciliation.sensors",),
    default="35",
)
OPEN_DAYS_ENV = _declare(
    "REVERSAL_REFUND_OPEN_DAYS",
    meaning="how long a refund event may wait for its order's payout (whole days, 1..3650)",
    readers=("reversals.intake_window",),
    default="30",
)
POLICY_ENV = _declare(
    "REVERSAL_PARTIAL_REFUND_POLICY",
    meaning="what intake does with an unscoped partial refund of a multi-seller order",
    readers=("reversals.refund_policy",),
    default="refuse",
)
ORDER_METADATA_KEY_ENV = _declare(
    "REVERSAL_ORDER_METADATA_KEY",
    meaning="the charge metadata key holding the order id (Stripe refunds intake)",
    readers=("reversals.stripe_refunds",),
    unset="unset: the charge's `transfer_group`",
)
SELLER_TRANSFER_METADATA_KEY_ENV = _declare(
    "REVERSAL_SELLER_TRANSFER_METADATA_KEY",
    meaning="the refund metadata key naming the seller_transfers row a refund concerns",
    readers=("reversals.stripe_refunds",),
    default="seller_transfer_id",
)
STRIPE_REFUNDS_SINCE_ENV = _declare(
    "REVERSAL_STRIPE_REFUNDS_SINCE",
    meaning="UTC day where the Stripe refunds intake starts reading events with no cursor",
    readers=("reversals.stripe_refunds",),
    unset="unset: the last 3 days",
)
WEBHOOK_URL_ENV = _declare(
    "REVERSAL_ALERT_WEBHOOK_URL",
    meaning="Slack-compatible incoming webhook for alerts",
    readers=("defs.alerts.sensor", "alerts.delivery"),
    secret=True,
    unset="unset: alerts are logged (sensor tick and daemon log), never sent",
)
WEBSERVER_URL_ENV = _declare(
    "DAGSTER_WEBSERVER_URL",
    meaning="base URL of the Dagster UI, for the links in alerts",
    readers=("defs.alerts.sensor", "alerts.problems"),
    unset="unset: alerts name the UI path without a host",
)


# -- reading -----------------------------------------------------------------


def setting(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The variable's value without surrounding blanks; its default when unset or blank.

    ``""`` for an unset variable without a default value: callers treat that as unset.
    """
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    return raw or VARIABLES[name].default or ""


def secret_names() -> tuple[str, ...]:
    """The variables whose values must never leave the process (alerts scrub them)."""
    return tuple(v.name for v in VARIABLES.values() if v.secret)


def from_process(name: str) -> str | None:
    """A variable's value as this process sees it (the CLI's stand-in for ``dg.EnvVar``)."""
    return os.environ.get(name) or None


# -- the resources, for the Dagster shell and the CLI alike --------------------


def stripe_resource_config(secret: Callable[[str], Any]) -> dict[str, Any]:
    """``StripeResource``'s fields from the environment.

    ``secret(name)`` wires a value that must stay out of sight: ``dg.EnvVar``
    in the Dagster shell, ``from_process`` in the CLI. The request budget is
    not a secret, and Dagster has no float EnvVar: it is read here directly.
    """
    requests_per_second = setting(STRIPE_REQUESTS_PER_SECOND_ENV)
    return {
        "api_key": secret(STRIPE_API_KEY_ENV),
        "api_base": secret(STRIPE_API_BASE_ENV) if setting(STRIPE_API_BASE_ENV) else None,
        "requests_per_second": _number(STRIPE_REQUESTS_PER_SECOND_ENV, requests_per_second),
        # One request budget per Stripe account, shared by every run and process.
        "shared_budget_database_url": secret(DATABASE_URL_ENV),
    }


def _number(name: str, raw: str) -> float | None:
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
