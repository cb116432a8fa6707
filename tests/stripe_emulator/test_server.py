"""Starting and stopping the emulator, in a thread and as its own process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest
import requests
import stripe

from reversal_pipeline.stripe_emulator import EmulatorClient, EmulatorServer, FaultConfig


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_context_manager_serves_on_loopback_and_frees_the_port_on_exit(
    stripe_api_key: str,
) -> None:
    with EmulatorServer(faults=FaultConfig(latency_ms=1), api_keys=[stripe_api_key]) as server:
        url = server.url
        transfer = server.state.create_transfer(amount=10)
        fetched = server.stripe_client(stripe_api_key).v1.transfers.retrieve(transfer.id)

    assert url.startswith("http://127.0.0.1:")
    assert fetched.id == transfer.id
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/_emulator/health", timeout=5)


def test_two_servers_keep_separate_state(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    with EmulatorServer(api_keys=[stripe_api_key]) as other:
        transfer = other.state.create_transfer(amount=10)

        with pytest.raises(stripe.InvalidRequestError):
            stripe_emulator.stripe_client(stripe_api_key).v1.transfers.retrieve(transfer.id)
        assert other.port != stripe_emulator.port


def test_run_forever_serves_in_its_own_process_with_the_given_faults(stripe_api_key: str) -> None:
    port = _free_port()
    code = (
        "from reversal_pipeline.stripe_emulator import run_forever; "
        f"run_forever('127.0.0.1', {port}, api_keys=[{stripe_api_key!r}], error_rate=0.0,"
        " latency_ms=2, seed=3)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()  # printed once the socket accepts connections
        control = EmulatorClient(f"http://127.0.0.1:{port}")
        transfer = control.create_transfer(amount=700)
        client = stripe.StripeClient(
            stripe_api_key, base_addresses={"api": f"http://127.0.0.1:{port}"}
        )
        reversal = client.v1.transfers.reversals.create(transfer["id"])
        faults = control.get_faults()
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)

    assert reversal.amount == 700
    assert (faults["latency_ms"], faults["seed"]) == (2, 3)
    assert f"listening on http://127.0.0.1:{port}" in banner
    assert stdout == ""
    # uvicorn shuts down gracefully, then re-raises SIGTERM to end as a default handler would.
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Traceback" not in stderr


def test_the_cli_refuses_to_start_without_a_key_or_accept_any_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from click.testing import CliRunner

    from reversal_pipeline.cli.emulator import stripe_emulator_command

    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    result = CliRunner().invoke(stripe_emulator_command, ["--port", "0"])

    assert result.exit_code == 2
    assert "--api-key or STRIPE_API_KEY" in result.output
    assert "--accept-any-key" in result.output
