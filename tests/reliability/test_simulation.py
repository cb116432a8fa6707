"""The deterministic simulation of the reversal batch (``simulation.py``) in CI.

Two kinds of schedule, both seeded:

* ``test_path_keeps_the_invariants[path]``: each fault path driven three times
  between clean runs, so every path is reached whatever the seed picks;
* ``test_mixed_schedule_keeps_the_invariants[seed]``: a random mix of the paths.

After every run the invariants (a)-(e) of issue 12 are checked against the
emulator's state and the database; a schedule ends with clean runs ("drain")
after which every reversal at Stripe must be recorded on its row. The counts of
each path taken are attached to the test report (``path_counts``) and summed at
the end of the session (``tests/reliability/conftest.py``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.reliability.simulation import Path, Simulation

#: Paths that break an invariant on the code as it stands, with the issue-12 defect
#: that does it. Strict xfail: when the fix lands the test passes, pytest reports
#: XPASS as a failure, and the entry must be removed here.
KNOWN_DEFECTS: dict[Path, str] = {}

FAULT_PATHS = [p for p in Path if p is not Path.CLEAN]
MIXED_SEEDS = range(3)
MIXED_STEPS = 8


def _path_param(path: Path) -> object:
    marks = []
    if path in KNOWN_DEFECTS:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_DEFECTS[path]))
    return pytest.param(path, id=path.value, marks=marks)


@pytest.fixture
def simulation(
    engine: sa.Engine,
    stripe_emulator: EmulatorServer,
    stripe_api_key: str,
    record_property: Callable[[str, object], None],
) -> Simulation:
    sim = Simulation(engine, stripe_emulator, stripe_api_key, random.Random(0))
    yield sim
    record_property("path_counts", json.dumps(dict(sim.counts)))
    print(f"paths taken: {dict(sim.counts)}")


def _assert_held(sim: Simulation) -> None:
    assert not sim.violations, "invariants broken:\n" + "\n".join(sim.violations)


@pytest.mark.parametrize("path", [_path_param(p) for p in FAULT_PATHS])
def test_path_keeps_the_invariants(simulation: Simulation, path: Path) -> None:
    simulation.rng.seed(f"path:{path.value}")
    simulation.seed(4)
    simulation.step(Path.CLEAN)  # some rows reversed (reopen) and some attempted (look-ups)
    simulation.seed(3)
    for _ in range(3):
        simulation.step(path)
    simulation.drain()
    assert simulation.counts[path] >= 1, f"{path.value} was never taken"
    _assert_held(simulation)


@pytest.mark.parametrize("seed", MIXED_SEEDS)
def test_mixed_schedule_keeps_the_invariants(simulation: Simulation, seed: int) -> None:
    simulation.rng.seed(seed)
    menu = [p for p in Path if p not in KNOWN_DEFECTS]
    simulation.seed(4)
    for _ in range(MIXED_STEPS):
        simulation.step(simulation.rng.choice(menu))
    simulation.drain()
    _assert_held(simulation)
