"""What a command needs from the environment, checked before it starts anything.

Each check raises ``ConfigurationError`` with one line: what is missing and
how to set it. The command group prints that line (see ``cli.group``), so a
newcomer who forgot a variable never sees a traceback, and nothing has been
started (no embedded PostgreSQL, no run) when the command refuses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from reversal_pipeline.environment import (
    DAGSTER_HOME_ENV,
    DAGSTER_PG_URL_ENV,
    STRIPE_API_KEY_ENV,
    setting,
)
from reversal_pipeline.errors import ConfigurationError


def require_stripe_key(command: str) -> None:
    """``STRIPE_API_KEY`` must be set for a command that calls Stripe."""
    if not setting(STRIPE_API_KEY_ENV):
        raise ConfigurationError(
            f"{STRIPE_API_KEY_ENV} is unset: `{command}` calls Stripe; "
            f"export {STRIPE_API_KEY_ENV}=sk_test_... (a restricted rk_ key works too)"
        )


def require_dagster_instance_env(command: str) -> None:
    """A ``DAGSTER_HOME`` whose ``dagster.yaml`` reads unset variables is refused up front.

    Dagster would otherwise fail deep inside instance loading with a
    multi-screen config error. Only the ``env:`` references of the instance
    file are checked (Dagster's own convention for reading a variable), so an
    instance file that needs nothing from the environment passes untouched.
    """
    home = setting(DAGSTER_HOME_ENV)
    if not home:
        return  # the command uses a throwaway instance
    instance_file = Path(home) / "dagster.yaml"
    if not instance_file.is_file():
        return  # Dagster's defaults: nothing to read from the environment
    try:
        config = yaml.safe_load(instance_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(
            f"cannot read {instance_file} ({type(exc).__name__}); fix it, "
            f"or unset {DAGSTER_HOME_ENV} so `{command}` uses a throwaway instance"
        ) from None
    missing = sorted({name for name in env_references(config) if not os.environ.get(name)})
    if missing:
        names = ", ".join(missing)
        hint = (
            f"export {DAGSTER_PG_URL_ENV}=postgresql+psycopg2://USER:PASSWORD@HOST:5432/dagster"
            if DAGSTER_PG_URL_ENV in missing
            else f"export {missing[0]}=..."
        )
        raise ConfigurationError(
            f"{DAGSTER_HOME_ENV} is {home} but {names} (read by its dagster.yaml) is unset: "
            f"{hint}, or unset {DAGSTER_HOME_ENV} so `{command}` uses a throwaway instance"
        )


def env_references(config: Any) -> Iterator[str]:
    """Every variable name an instance config reads with ``{env: NAME}``."""
    if isinstance(config, dict):
        if set(config) == {"env"} and isinstance(config["env"], str):
            yield config["env"]
            return
        for value in config.values():
            yield from env_references(value)
    elif isinstance(config, list):
        for value in config:
            yield from env_references(value)
