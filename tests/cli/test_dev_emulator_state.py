"""``dev``'s emulator starts from the saved Stripe state and saves it back when it stops.

Without this, the rows the demo leaves ``reversal_pending`` would meet an empty
emulator under ``dev``: a 404 for each, and ``permanently_failed`` for money
that should simply have been reversed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe

from reversal_pipeline.devserver.stack import EMULATOR_STATE_FILE, local_services
from reversal_pipeline.errors import ConfigurationError
from reversal_pipeline.stripe_emulator import EmulatorState, load_snapshot, save_snapshot
from tests.plugins.stripe_emulator import TEST_API_KEY


@pytest.fixture
def dev_environment(database_url: str, tmp_path: Path) -> Iterator[Path]:
    """The environment ``dev`` sees, put back afterwards (it exports what it starts)."""
    saved = dict(os.environ)
    os.environ.update(
        REVERSAL_DATABASE_URL=database_url,
        REVERSAL_PIPELINE_HOME=str(tmp_path / "home"),
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        # Kept as given by prepare_dagster_home, and never connected to here.
        DAGSTER_PG_URL="postgresql+psycopg2://unused@127.0.0.1:1/dagster",
        STRIPE_API_KEY=TEST_API_KEY,
    )
    os.environ.pop("STRIPE_API_BASE", None)
    try:
        yield tmp_path / "home" / EMULATOR_STATE_FILE
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_dev_serves_the_saved_transfers_and_saves_changes_on_stop(
    dev_environment: Path,
) -> None:
    state_file = dev_environment
    demo_side = EmulatorState()
    transfer = demo_side.create_transfer(amount=4_200, currency="eur", metadata={"row": "7"})
    save_snapshot(demo_side, state_file)
    lines: list[str] = []

    with local_services(lines.append, emulator_port=0) as services:
        assert services.emulator_url is not None
        client = stripe.StripeClient(TEST_API_KEY, base_addresses={"api": services.emulator_url})
        served = client.v1.transfers.retrieve(transfer.id)
        reversal = client.v1.transfers.reversals.create(transfer.id, {"amount": 200})

    after = EmulatorState()
    load_snapshot(after, state_file)
    assert served.to_dict() == demo_side.transfer_dict(transfer.id)
    assert [r.id for r in after.reversals_of(transfer.id)] == [reversal.id]
    assert any(f"1 transfers loaded from {state_file}" in line for line in lines)


def test_dev_refuses_an_unreadable_state_file_instead_of_starting_empty(
    dev_environment: Path,
) -> None:
    dev_environment.parent.mkdir(parents=True, exist_ok=True)
    dev_environment.write_text("{not json")

    with (
        pytest.raises(ConfigurationError, match="move the file away"),
        local_services(lambda _: None, emulator_port=0),
    ):
        pass
    assert dev_environment.read_text() == "{not json"
