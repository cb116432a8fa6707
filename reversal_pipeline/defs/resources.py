"""The resources every domain shares, wired to the environment through ``dg.EnvVar``.

Secrets (the Stripe key, a database password inside the URL) are only ever
named here as environment variables: Dagster resolves them in the process
that runs the step and never shows their values in the UI. Which variable
feeds which field is ``reversal_pipeline.environment``'s business, shared
with the CLI.
"""

import dagster as dg

from reversal_pipeline.db.resource import DatabaseResource
from reversal_pipeline.environment import DATABASE_URL_ENV, stripe_resource_config
from reversal_pipeline.reversals.settings import ReversalSettings
from reversal_pipeline.stripe.resource import StripeResource


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "database": DatabaseResource(url=dg.EnvVar(DATABASE_URL_ENV)),
            "stripe": StripeResource(**stripe_resource_config(dg.EnvVar)),
            "reversal_settings": ReversalSettings(),
        }
    )
