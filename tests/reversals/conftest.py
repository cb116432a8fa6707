"""Shared pieces of the reversal-core tests: a Stripe resource and a claimed batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from reversal_pipeline.reversals.batch import BatchReport, ReversalBatch
from reversal_pipeline.reversals.claim import claim_due_rows
from reversal_pipeline.reversals.settings import ReversalSettings
from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer


@pytest.fixture
def impatient_stripe(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> Iterator[StripeResource]:
    """A resource that gives up on a 429 at once: rows reach the beyond-patience path."""
    resource = StripeResource(
        api_key=stripe_api_key,
        api_base=stripe_emulator.url,
        requests_per_second=500,
        rate_limit_max_wait_seconds=0,
    )
    yield resource
    resource.close()


def claimed_batch(
    engine: sa.Engine, stripe: StripeResource, token: str, **settings: Any
) -> ReversalBatch:
    """A batch over every due row, claimed under ``token``."""
    values: dict[str, Any] = {"backoff_jitter": 0.0, "concurrency": 2, **settings}
    claim_due_rows(engine, token=token, max_rows=100, lease_seconds=600)
    return ReversalBatch(
        engine, stripe, token=token, run_id=token, settings=ReversalSettings(**values)
    )


def run_batch(
    engine: sa.Engine, stripe: StripeResource, token: str, **settings: Any
) -> BatchReport:
    return claimed_batch(engine, stripe, token, **settings).run()
