"""`dg` and `dagster` work in a fresh clone with no environment set.

A ``dagster.yaml`` at the repository's root is read as the instance by these
tools; the project's instance template needs ``DAGSTER_PG_URL``, so it lives
in the package and the root has none. The tools are found next to the
interpreter running the tests (the project's venv), never on ``PATH``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.cli.tools import REPO_ROOT, run_tool

#: What a clone has and a working copy may add: never copied into the "fresh clone".
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".reversal_pipeline",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
)
COMMANDS = [
    ["dg", "check", "defs"],
    ["dg", "list", "defs"],
    ["dagster", "definitions", "validate", "-w", "workspace.yaml"],
]


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clone = tmp_path_factory.mktemp("clone") / "reversal_pipeline"
    shutil.copytree(REPO_ROOT, clone, ignore=NOT_IN_A_CLONE)
    return clone


def test_repository_root_has_no_instance_file() -> None:
    assert not (REPO_ROOT / "dagster.yaml").exists()
    assert (REPO_ROOT / "reversal_pipeline" / "devserver" / "dagster.yaml").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_tool_passes_in_a_fresh_clone_without_environment(
    fresh_clone: Path, command: list[str]
) -> None:
    result = run_tool(command, cwd=fresh_clone)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "DAGSTER_PG_URL" not in output, output[-3000:]
