"""A local, stateful emulator of the part of Stripe's API this project uses.

Stripe cannot be reached from the test machines and stripe-mock keeps no state,
so this serves transfers and reversals, and charges, refunds and their events,
over HTTP to the real ``stripe`` SDK,
with Stripe's errors, idempotency and injectable faults. Start it in-process
with :class:`EmulatorServer`, or in its own process with
``reversal-pipeline stripe-emulator`` and drive it with :class:`EmulatorClient`.
"""

from reversal_pipeline.stripe_emulator.control_client import EmulatorClient, EmulatorControlError
from reversal_pipeline.stripe_emulator.faults import FaultConfig, ScriptedResponse
from reversal_pipeline.stripe_emulator.server import EmulatorServer, run_forever
from reversal_pipeline.stripe_emulator.state import (
    EmulatorError,
    EmulatorState,
    SnapshotError,
    load_snapshot,
    mask_key,
    save_snapshot,
)

__all__ = [
    "EmulatorClient",
    "EmulatorControlError",
    "EmulatorError",
    "EmulatorServer",
    "EmulatorState",
    "FaultConfig",
    "ScriptedResponse",
    "SnapshotError",
    "load_snapshot",
    "mask_key",
    "run_forever",
    "save_snapshot",
]
