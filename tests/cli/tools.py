"""How the tests run the project's command-line tools (``dg``, ``dagster``) in a subprocess.

The tools are found next to the interpreter running the tests (the project's
venv), never on ``PATH``, and run with none of the project's variables set:
what a newcomer's shell has.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def bare_environment() -> dict[str, str]:
    """No DAGSTER_HOME, no project variables: what a newcomer's shell has."""
    prefixes = ("DAGSTER_", "STRIPE_", "REVERSAL_", "RECONCILIATION_", "PYTEST")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PATH"] = "/usr/bin:/bin"  # the tools must not be found on PATH by accident
    return env


def run_tool(
    command: list[str], cwd: Path, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``command`` (its first word a tool of the venv) in ``cwd`` with the bare environment."""
    executable = BIN / command[0]
    assert executable.is_file(), f"{executable} missing: is the dev environment synced?"
    return subprocess.run(
        [str(executable), *command[1:]],
        cwd=cwd,
        env=bare_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
