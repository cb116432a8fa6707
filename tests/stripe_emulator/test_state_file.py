"""Stripe's side outlives the emulator: a snapshot restores the same objects, served the same.

``reversal-pipeline dev`` starts its emulator from the demo's snapshot; if a
restored emulator served anything differently (an id, an amount, the order
of a listing, ``has_more``), the demo's pending rows would 404 at Stripe and
end ``permanently_failed``, and reconciliation would report false drift.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import stripe

from reversal_pipeline.stripe_emulator import (
    EmulatorClient,
    EmulatorControlError,
    EmulatorServer,
    EmulatorState,
    SnapshotError,
    load_snapshot,
    save_snapshot,
)

DAY = 86_400
START = 1_780_000_000 - 1_780_000_000 % DAY  # a UTC midnight
# Built from parts so no live-shaped key literal sits in the source (secret scanners).
LIVE_KEY = "sk_live_" + "emulator_persistence"
#: A deadline, not a wait: the CLI imports Dagster before it listens, which took over
#: 30 s on a shared 2-core machine under load.
STARTUP_DEADLINE = 120.0
REPO = Path(__file__).resolve().parents[2]


def _seed(server: EmulatorServer, api_key: str) -> dict[str, Any]:
    """Transfers over three days (ties on ``created`` included), reversals of every kind."""
    client = server.stripe_client(api_key)
    specs: list[dict[str, Any]] = [
        {
            "amount": 100 + n,
            "currency": ("usd", "eur", "jpy")[n % 3],
            "created": START + (n % 3) * DAY + (n // 4) * 900,
            "destination": f"acct_seller{n % 5}",
            "transfer_group": f"ORDER_{n}",
            "metadata": {"seller_transfer_id": str(n), "order": f"o-{n}"} if n % 2 else None,
            "description": f"payout {n}" if n % 3 == 0 else None,
        }
        for n in range(40)
    ]
    transfers = server.state.create_transfers_bulk(specs)
    server.state.create_transfer(amount=5_000, currency="gbp", created=START + 10, livemode=True)
    # Through the SDK, as the job reverses: full, partial, and one with metadata.
    client.v1.transfers.reversals.create(transfers[0].id)
    client.v1.transfers.reversals.create(transfers[1].id, {"amount": 30})
    client.v1.transfers.reversals.create(
        transfers[2].id, {"amount": 1, "metadata": {"seller_transfer_id": "2"}}
    )
    # More than the 10 reversals a transfer embeds, so the embedded has_more is true.
    many = server.state.create_transfer(amount=10_000, created=START + 2 * DAY + 5)
    for _ in range(12):
        server.state.reverse_transfer(many.id, amount=7, description="out of band")
    return {"ids": [t.id for t in transfers] + [many.id], "many": many.id}


def _served(server: EmulatorServer, api_key: str, ids: list[str], many: str) -> dict[str, Any]:
    """Everything a client can see, as plain data: objects, paged listings, has_more."""
    client = server.stripe_client(api_key)
    objects = {i: client.v1.transfers.retrieve(i).to_dict() for i in ids}
    pages: list[tuple[list[str], bool]] = []
    params: dict[str, Any] = {"limit": 7}
    while True:
        page = client.v1.transfers.list(params)
        pages.append(([t.id for t in page.data], page.has_more))
        if not page.has_more:
            break
        params = {"limit": 7, "starting_after": page.data[-1].id}
    one_day = client.v1.transfers.list(
        {"limit": 5, "created": {"gte": START + DAY, "lt": START + 2 * DAY}}
    )
    backwards = client.v1.transfers.list({"limit": 4, "ending_before": ids[5]})
    reversals = client.v1.transfers.reversals.list(many, {"limit": 5})
    reversal = client.v1.transfers.reversals.retrieve(many, reversals.data[0].id)
    live = server.stripe_client(LIVE_KEY).v1.transfers.list({"limit": 10})
    return {
        "objects": objects,
        "pages": pages,
        "one_day": ([t.id for t in one_day.data], one_day.has_more),
        "backwards": ([t.id for t in backwards.data], backwards.has_more),
        "reversals": ([r.to_dict() for r in reversals.data], reversals.has_more),
        "reversal": reversal.to_dict(),
        "live": [t.to_dict() for t in live.data],
    }


def test_saved_state_is_served_identically_by_a_new_emulator(
    tmp_path: Path, stripe_api_key: str
) -> None:
    state_file = tmp_path / "stripe_emulator_state.json"
    with EmulatorServer(state_file=state_file, api_keys=[stripe_api_key, LIVE_KEY]) as first:
        seeded = _seed(first, stripe_api_key)
        before = _served(first, stripe_api_key, seeded["ids"], seeded["many"])
    # Saved on stop, because state_file was given.
    assert state_file.is_file()

    with EmulatorServer(state_file=state_file, api_keys=[stripe_api_key, LIVE_KEY]) as second:
        after = _served(second, stripe_api_key, seeded["ids"], seeded["many"])
        assert second.loaded_transfers == 42
        # The restored emulator keeps working: a new reversal lands on a restored transfer.
        reversal = second.stripe_client(stripe_api_key).v1.transfers.reversals.create(
            seeded["ids"][1]
        )

    assert after == before
    assert len(before["pages"]) > 2
    assert before["pages"][-1][1] is False
    assert before["objects"][seeded["many"]]["reversals"]["has_more"] is True
    assert before["objects"][seeded["ids"][0]]["reversed"] is True
    assert before["objects"][seeded["ids"][1]]["amount_reversed"] == 30
    assert [t["livemode"] for t in before["live"]] == [True]
    assert reversal.amount == 101 - 30


def test_an_emulator_without_a_state_file_starts_empty_and_writes_nothing(
    tmp_path: Path, stripe_api_key: str
) -> None:
    with EmulatorServer(api_keys=[stripe_api_key, LIVE_KEY]) as server:
        server.state.create_transfer(amount=10)
        with pytest.raises(EmulatorControlError) as refused:
            server.control().save_state()
    assert refused.value.status == 400
    assert "state file" in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_control_endpoint_saves_while_serving(tmp_path: Path) -> None:
    state_file = tmp_path / "nested" / "state.json"
    with EmulatorServer(state_file=state_file) as server:
        transfer = server.state.create_transfer(amount=250, metadata={"k": "v"})
        answer = server.control().save_state()
        restored = EmulatorState()
        count = load_snapshot(restored, state_file)

        assert answer == {"ok": True, "path": str(state_file), "transfers": 1}
        assert count == 1
        assert restored.transfer_dict(transfer.id) == server.state.transfer_dict(transfer.id)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.update(version=99), "format"),
        (lambda s: s["transfers"][0].__setitem__(1, 0), "invalid emulator snapshot"),
        (lambda s: s["transfers"].append(list(s["transfers"][0])), "duplicate transfer id"),
        (lambda s: s["reversals"][0].__setitem__(0, "tr_unknown"), "KeyError"),
        (
            lambda s: s["reversals"].append(
                [s["transfers"][0][0], "trr_x", 10**6, "usd", 1, None, None]
            ),
            "reversed beyond its amount",
        ),
        (lambda s: s["transfer_fields"].reverse(), "fields differ"),
    ],
)
def test_a_bad_snapshot_is_refused_and_changes_nothing(
    tmp_path: Path, mutate: Any, message: str
) -> None:
    source = EmulatorState()
    transfer = source.create_transfer(amount=900, created=START)
    source.reverse_transfer(transfer.id, amount=100)
    path = save_snapshot(source, tmp_path / "state.json")
    snapshot = json.loads(path.read_text())
    mutate(snapshot)
    path.write_text(json.dumps(snapshot))
    target = EmulatorState()
    kept = target.create_transfer(amount=5)

    with pytest.raises(SnapshotError, match=message):
        load_snapshot(target, path)
    assert target.transfer_count() == 1
    assert target.transfer_dict(kept.id)["amount"] == 5


def test_not_json_is_a_snapshot_error(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"format": "reversal_pipeline.stripe_emulator", "transf')

    with pytest.raises(SnapshotError, match="not valid JSON"):
        load_snapshot(EmulatorState(), path)


def test_ten_thousand_transfers_round_trip(tmp_path: Path) -> None:
    """What a saved demo state must keep at scale. How long it takes is a speed
    figure, not a test: a 1.0 s bound here failed a CI run at 1.03 s on a busy
    machine while proving nothing about correctness."""
    source = EmulatorState()
    transfers = source.create_transfers_bulk(
        [
            {
                "amount": 1_000 + n,
                "created": START + n * 8,
                "metadata": {"seller_transfer_id": str(n)},
            }
            for n in range(10_000)
        ]
    )
    for transfer in transfers[::10]:
        source.reverse_transfer(transfer.id, amount=500, metadata={"row": transfer.id})
    target = EmulatorState()

    save_snapshot(source, tmp_path / "state.json")
    count = load_snapshot(target, tmp_path / "state.json")

    assert count == 10_000
    first_page = target.list_transfers(limit=100)
    assert [t.id for t in first_page.data] == [t.id for t in source.list_transfers(limit=100).data]
    for transfer in (transfers[0], transfers[1], transfers[-10], transfers[-1]):
        assert target.transfer_dict(transfer.id) == source.transfer_dict(transfer.id)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli_emulator(port: int, state_file: Path, api_key: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "reversal_pipeline.cli", "stripe-emulator",
               "--port", str(port), "--state-file", str(state_file)]  # fmt: skip
    # The key travels in the environment, as an operator would pass it (not in argv).
    environment = {**os.environ, "STRIPE_API_KEY": api_key}
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_state_file_survives_sigterm(tmp_path: Path, stripe_api_key: str) -> None:
    """SIGTERM is how process managers stop it: the state must be saved on that path too."""
    state_file = tmp_path / "state.json"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = _cli_emulator(port, state_file, stripe_api_key)
    try:
        EmulatorClient(url).wait_until_ready(timeout=STARTUP_DEADLINE)
        client = stripe.StripeClient(stripe_api_key, base_addresses={"api": url})
        created = client.v1.transfers.create(
            {"amount": 1234, "currency": "eur", "destination": "acct_1", "metadata": {"a": "b"}}
        )
        client.v1.transfers.reversals.create(created.id, {"amount": 34})
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    restarted = _cli_emulator(port, state_file, stripe_api_key)
    try:
        EmulatorClient(url).wait_until_ready(timeout=STARTUP_DEADLINE)
        served = stripe.StripeClient(stripe_api_key, base_addresses={"api": url})
        again = served.v1.transfers.retrieve(created.id)
    finally:
        restarted.terminate()
        stdout, _ = restarted.communicate(timeout=30)

    assert again.to_dict() == {**created.to_dict(), "amount_reversed": 34, **_reversals(again)}
    assert again.reversals.data[0].amount == 34
    assert f"loaded 1 transfers from {state_file}" in stdout


def _reversals(transfer: Any) -> dict[str, Any]:
    return {"reversals": transfer.to_dict()["reversals"]}
