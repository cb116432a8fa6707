"""The /_emulator control endpoints, driven through ``EmulatorClient`` as another process would."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import stripe

from reversal_pipeline.stripe_emulator import (
    EmulatorClient,
    EmulatorControlError,
    EmulatorServer,
)

DAY = 86_400


@pytest.fixture
def control(stripe_emulator: EmulatorServer) -> EmulatorClient:
    return stripe_emulator.control(timeout=15)


def test_bulk_create_places_transfers_on_given_days(
    control: EmulatorClient, emulator_stripe_client: stripe.StripeClient
) -> None:
    created = control.create_transfers(
        [
            {"id": "tr_day_one", "amount": 100, "created": 1_700_000_000, "metadata": {"row": "1"}},
            {
                "amount": 250,
                "currency": "eur",
                "created": 1_700_000_000 + DAY,
                "transfer_group": "g",
            },
        ]
    )
    ids = control.create_transfers([{"amount": 1}] * 3, returning="ids")

    assert isinstance(created, list)
    assert isinstance(ids, list)
    first, second = created
    assert first["id"] == "tr_day_one"
    assert first["metadata"] == {"row": "1"}
    assert (second["amount"], second["currency"], second["transfer_group"]) == (250, "eur", "g")
    day_two = emulator_stripe_client.v1.transfers.list({"created": {"gte": 1_700_000_000 + DAY}})
    assert [t.id for t in day_two.data][-1] == second["id"]
    assert len(ids) == 3
    assert control.health()["transfers"] == 5


def test_bad_bulk_input_is_a_400_and_creates_nothing(control: EmulatorClient) -> None:
    with pytest.raises(EmulatorControlError) as caught:
        control.create_transfers([{"amount": 5}, {"amount": "five"}])

    assert caught.value.status == 400
    assert control.health()["transfers"] == 0


def test_out_of_band_reversal_and_full_transfer_view(control: EmulatorClient) -> None:
    transfer = control.create_transfer(amount=1000)
    partial = control.reverse_transfer(transfer["id"], amount=400, metadata={"by": "support"})
    rest = control.reverse_transfer(transfer["id"])
    view = control.get_transfer(transfer["id"])

    with pytest.raises(EmulatorControlError) as caught:
        control.reverse_transfer(transfer["id"])

    assert (partial["amount"], rest["amount"]) == (400, 600)
    assert view["transfer"]["reversed"] is True
    assert [r["id"] for r in view["reversals"]] == [rest["id"], partial["id"]]
    assert caught.value.status == 400
    assert "already fully reversed" in str(caught.value)


def test_faults_and_scripts_round_trip_over_http(
    stripe_emulator: EmulatorServer, control: EmulatorClient
) -> None:
    updated = control.set_faults(latency_ms=5, error_rate=0.25, seed=9)
    added = control.add_script(respond=503, method="GET", times=2)
    pending = control.scripts()

    with pytest.raises(EmulatorControlError):
        control.set_faults(error_rate=2)
    with pytest.raises(EmulatorControlError):
        control.add_script(respond="explode")

    assert updated["latency_ms"] == 5
    assert updated["error_rate"] == 0.25
    assert stripe_emulator.faults.config.seed == 9
    assert added == 1
    assert pending[0]["respond"] == 503
    assert pending[0]["times"] == 2
    control.clear_scripts()
    assert control.scripts() == []
    assert control.reset_faults()["error_rate"] == 0.0


def test_request_log_and_counters_describe_every_v1_call(
    stripe_emulator: EmulatorServer,
    control: EmulatorClient,
    emulator_stripe_client: stripe.StripeClient,
) -> None:
    transfer = control.create_transfer(amount=1000)
    tid = transfer["id"]
    emulator_stripe_client.v1.transfers.reversals.create(
        tid, {"amount": 1}, {"idempotency_key": "log-key"}
    )
    emulator_stripe_client.v1.transfers.reversals.create(
        tid, {"amount": 1}, {"idempotency_key": "log-key"}
    )
    with pytest.raises(stripe.InvalidRequestError):
        emulator_stripe_client.v1.transfers.retrieve("tr_absent")

    log = control.request_log()
    counters = control.counters()

    assert [e["outcome"] for e in log] == ["ok", "replayed", "error"]
    first = log[0]
    assert first["method"] == "POST"
    assert first["path"] == f"/v1/transfers/{tid}/reversals"
    assert first["endpoint"] == "POST /v1/transfers/{id}/reversals"
    assert (first["transfer_id"], first["status"], first["idempotency_key"]) == (
        tid,
        200,
        "log-key",
    )
    assert first["request_id"].startswith("req_")
    assert first["time"] > 0
    assert log[2]["status"] == 404
    assert counters["calls_total"] == 3
    assert counters["by_endpoint"] == {
        "POST /v1/transfers/{id}/reversals": 2,
        "GET /v1/transfers/{id}": 1,
    }
    assert counters["by_transfer"] == {tid: 2, "tr_absent": 1}
    assert counters["by_outcome"] == {"ok": 1, "replayed": 1, "error": 1}
    assert control.request_log(since=log[1]["seq"]) == [log[2]]


def test_hold_can_be_awaited_and_released_over_http(
    stripe_emulator: EmulatorServer,
    control: EmulatorClient,
    emulator_stripe_client: stripe.StripeClient,
) -> None:
    transfer = control.create_transfer(amount=1000)
    control.add_script(respond="hold")
    result: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: result.update(t=emulator_stripe_client.v1.transfers.retrieve(transfer["id"]))
    )
    worker.start()

    try:
        assert control.wait_for_held(1, timeout=10) is True
        held = control.held()
    finally:
        released = control.release_holds()
        worker.join(10)

    assert (held, released) == (1, 1)
    assert result["t"].id == transfer["id"]


def test_clock_controls_created_timestamps(
    control: EmulatorClient, emulator_stripe_client: stripe.StripeClient
) -> None:
    frozen = control.freeze_clock(at=1_800_000_000)
    advanced = control.advance_clock(30)
    transfer = emulator_stripe_client.v1.transfers.create(
        {"amount": 10, "currency": "usd", "destination": "acct_1"}
    )
    control.unfreeze_clock()

    assert frozen == {"now": 1_800_000_000, "frozen": True}
    assert advanced["now"] == 1_800_000_030
    assert transfer.created == 1_800_000_030
    assert control.clock()["frozen"] is False


def test_reset_forgets_transfers_keys_scripts_and_faults(
    stripe_emulator: EmulatorServer, control: EmulatorClient, stripe_api_key: str
) -> None:
    control.create_transfer(amount=10)
    control.revoke_key(stripe_api_key)
    control.add_script(respond=500)
    control.set_faults(error_rate=1.0)

    control.reset()

    client = stripe_emulator.stripe_client(stripe_api_key)
    assert client.v1.transfers.list().data == []
    assert control.scripts() == []
    assert control.get_faults()["error_rate"] == 0.0
    assert control.counters()["calls_total"] == 1
