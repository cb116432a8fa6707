"""The resources every domain shares, wired to the environment through ``dg.EnvVar``.

Secrets (the Stripe key, a database password inside the URL) are only ever
named here as environment variables: Dagster resolves them in the process
that runs the step and never shows their values in the UI.
"""

import os

import dagster as dg

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.reversals.settings import ReversalSettings
from reversal_pipeline.stripe.resource import StripeResource


def _optional_env(name: str) -> dg.EnvVar | None:
    """An EnvVar when the variable is set, else None (the resource's default applies)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


@dg.definitions
def resources() -> dg.Definitions:
    rps = os.environ.get("STRIPE_REQUESTS_PER_SECOND")
    return dg.Definitions(
        resources={
            "database": DatabaseResource(url=dg.EnvVar("REVERSAL_DATABASE_URL")),
            "stripe": StripeResource(
                api_key=dg.EnvVar("STRIPE_API_KEY"),
                api_base=_optional_env("STRIPE_API_BASE"),
                # Not a secret, and Dagster has no float EnvVar: read it directly.
                requests_per_second=float(rps) if rps else None,
                # One request budget per Stripe account, shared by every run and process.
                shared_budget_database_url=dg.EnvVar("REVERSAL_DATABASE_URL"),
            ),
            "reversal_settings": ReversalSettings(),
        }
    )
