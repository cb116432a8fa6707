"""Tunable settings of a reversal run, validated before any row is claimed.

The settings are a Dagster resource (``reversal_settings``) rather than op
config: resources are built and validated when a step starts, before its
body runs, so a batch size of 0 or a negative backoff fails the run before
``due_reversals`` claims a single row. Being a pydantic model, the same class
is built directly by the plain core and its tests, without Dagster running.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field, model_validator


class ReversalSettings(dg.ConfigurableResource):
    """How much one run claims, how hard it retries, and how long a claim lives."""

    max_rows_per_run: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Rows one run claims at most."
    )
    max_attempts: int = Field(
        default=8, ge=1, le=100, description="Stripe attempts before permanently_failed."
    )
    backoff_base_seconds: float = Field(
        default=60.0, gt=0, description="Delay after the first transient failure."
    )
    backoff_cap_seconds: float = Field(
        default=6 * 3600.0, gt=0, description="Longest delay between attempts."
    )
    backoff_jitter: float = Field(
        default=0.2, ge=0, lt=1, description="Fraction of the delay taken off at random."
    )
    concurrency: int = Field(default=16, ge=1, le=128, description="Rows in flight at once.")
    lease_seconds: int = Field(
        default=600,
        ge=10,
        le=86_400,
        description=(
            "How long a claim lives unless renewed. Renewed every quarter; a row is sent only"
            " in the first half after a renewal, so keep it >= 2x the longest Stripe call."
        ),
    )
    page_size: int = Field(
        default=200, ge=1, le=10_000, description="Claimed rows read from the database at once."
    )

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> ReversalSettings:
        if self.backoff_cap_seconds < self.backoff_base_seconds:
            raise ValueError(
                f"backoff_cap_seconds ({self.backoff_cap_seconds}) is below "
                f"backoff_base_seconds ({self.backoff_base_seconds})"
            )
        return self
