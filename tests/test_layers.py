"""The layers hold by tools, not by prose (issue 16).

``errors.py`` is the leaf every layer imports: if it imported anything of the
package (or anything outside the standard library), the dependency graph could
grow a cycle through it. Dagster stays out of the plain core: ruff's banned-API
rule (TID251, configured in pyproject.toml) refuses it there; the test below
checks that the configuration really bites where it should and only there.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import reversal_pipeline.errors as errors_module

ROOT = Path(__file__).resolve().parent.parent
ERRORS = Path(errors_module.__file__).resolve()


def _top_level_imports(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports; relative imports as ``.``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." if node.level else (node.module or "").split(".")[0])
    return names


def test_errors_is_a_leaf_that_imports_only_the_standard_library() -> None:
    imported = _top_level_imports(ERRORS)
    assert "reversal_pipeline" not in imported
    assert "." not in imported  # a relative import is an import of the package
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def test_the_leaf_check_sees_a_package_import(tmp_path: Path) -> None:
    probe = tmp_path / "errors.py"
    probe.write_text("from __future__ import annotations\nfrom .db import tables\nimport stripe\n")
    assert _top_level_imports(probe) == {"__future__", ".", "stripe"}


def _banned_api_findings(path: str, source: str) -> str:
    """What ruff's TID251 says of ``source`` if it were the file at ``path``."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--select",
            "TID251",
            "--output-format",
            "concise",
            "--stdin-filename",
            path,
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.stdout


DAGSTER_IMPORTS = "import dagster as dg\nfrom dagster._core.events import DagsterEvent\n"


@pytest.mark.parametrize(
    "path",
    [
        "reversal_pipeline/errors.py",
        "reversal_pipeline/reversals/reverse.py",
        "reversal_pipeline/reconciliation/compare.py",
        "reversal_pipeline/stripe_emulator/state.py",
        "reversal_pipeline/db/tables.py",
        "reversal_pipeline/stripe/classify.py",
        "reversal_pipeline/reversals/new_module.py",
    ],
)
def test_dagster_is_refused_in_the_core(path: str) -> None:
    assert _banned_api_findings(path, DAGSTER_IMPORTS).count("TID251") == 2


@pytest.mark.parametrize(
    "path",
    [
        "reversal_pipeline/defs/reversals/assets.py",
        "reversal_pipeline/definitions.py",
        "reversal_pipeline/db/resource.py",
        "reversal_pipeline/stripe/resource.py",
        "reversal_pipeline/jobs_runner.py",
    ],
)
def test_dagster_is_allowed_in_the_shell_and_its_resources(path: str) -> None:
    assert "TID251" not in _banned_api_findings(path, DAGSTER_IMPORTS)
