"""The Stripe emulator for the tests: one server per session, reset before each test.

Starting uvicorn costs a fraction of a second; resetting the emulator's state,
faults, scripts, keys and clock costs microseconds, so tests share one server
and each still starts from nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe

from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorServer

TEST_API_KEY = "sk_test_emulator_4eC39HqLyjWDarjtT1zdp7dc"


@pytest.fixture(scope="session")
def stripe_emulator_session() -> Iterator[EmulatorServer]:
    """The session's emulator; prefer ``stripe_emulator``, which resets it per test."""
    with EmulatorServer(api_keys=[TEST_API_KEY]) as server:
        yield server


@pytest.fixture
def stripe_emulator(stripe_emulator_session: EmulatorServer) -> Iterator[EmulatorServer]:
    """A started emulator with fresh state (no transfers, default faults, real clock)."""
    server = stripe_emulator_session
    server.reset()
    yield server
    server.faults.release_holds()  # never leave a request parked for the next test
    server.reset()


@pytest.fixture
def stripe_api_key() -> str:
    """A test-mode secret key the emulator accepts."""
    return TEST_API_KEY


@pytest.fixture
def emulator_stripe_client(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> stripe.StripeClient:
    """The real SDK pointed at the emulator, with no automatic retries."""
    return stripe_emulator.stripe_client(stripe_api_key)


@pytest.fixture
def stripe_resource(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> Iterator[StripeResource]:
    """The project's resource on the emulator, paced fast enough never to slow a test."""
    resource = StripeResource(
        api_key=stripe_api_key, api_base=stripe_emulator.url, requests_per_second=500
    )
    yield resource
    resource.close()
