"""Configuration has one home: ``reversal_pipeline/environment.py`` (issue 16).

Every environment variable the package reads is declared there, the other
modules import its name, and the README's configuration table lists exactly
the declared variables with the same defaults.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from reversal_pipeline import environment
from reversal_pipeline.alerts.delivery import SECRET_ENV
from reversal_pipeline.environment import VARIABLES, setting

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reversal_pipeline"
HOME = PACKAGE / "environment.py"

#: An environment read, or a Dagster EnvVar, whose argument is a string literal.
LITERAL_READ = re.compile(
    r"""(os\.environ(\.get|\.setdefault|\.pop)?\s*[\[(]|getenv\(|EnvVar\()\s*[rbuf]?["']"""
)
#: The python name of each variable's constant in ``environment`` (``DATABASE_URL_ENV``, ...).
CONSTANT_OF = {
    value: name
    for name, value in vars(environment).items()
    if name.endswith("_ENV") and isinstance(value, str)
}


def _package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != HOME)


def _where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def test_no_module_reads_a_variable_by_a_literal_name() -> None:
    found = [
        f"{_where(path, number)}: {line.strip()}"
        for path in _package_modules()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if LITERAL_READ.search(line)
    ]
    assert not found, "read the name from reversal_pipeline.environment:\n" + "\n".join(found)


def test_no_module_spells_a_declared_name_or_declares_its_own() -> None:
    """A bare ``"STRIPE_API_KEY"`` (click's ``envvar=``, a tuple of names) or a new ``X_ENV``."""
    found: list[str] = []
    for path in _package_modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in VARIABLES:
                found.append(f"{_where(path, node.lineno)}: {node.value!r}")
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id.endswith("_ENV"):
                        found.append(f"{_where(path, node.lineno)}: {target.id} declared here")
    assert not found, "declare and name variables in reversal_pipeline/environment.py:\n" + (
        "\n".join(found)
    )


def _readme_configuration_rows() -> dict[str, str]:
    """``variable -> default`` cells of the README's environment variable table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("| variable | default | meaning |", 1)[1].split("\n\n", 1)[0]
    rows: dict[str, str] = {}
    for line in table.strip().splitlines()[1:]:  # past the |---| line
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        name = cells[0].strip("`")
        assert name not in rows, f"README lists {name} twice"
        rows[name] = cells[1]
    return rows


def test_readme_configuration_table_lists_every_variable_with_its_default() -> None:
    rows = _readme_configuration_rows()
    missing = sorted(set(VARIABLES) - set(rows))
    stale = sorted(set(rows) - set(VARIABLES))
    assert not missing, f"declared but not in README's configuration table: {missing}"
    assert not stale, f"in README's configuration table but not declared: {stale}"
    wrong = {
        name: (rows[name], variable.documented_default)
        for name, variable in VARIABLES.items()
        if rows[name] != variable.documented_default
    }
    assert not wrong, f"README default differs from environment.py (README, declared): {wrong}"


@pytest.mark.parametrize("name", sorted(VARIABLES))
def test_each_declared_reader_uses_the_name(name: str) -> None:
    variable = VARIABLES[name]
    assert variable.meaning
    assert variable.readers
    constant = CONSTANT_OF[name]
    for reader in variable.readers:
        module = PACKAGE.joinpath(*reader.split(".")).with_suffix(".py")
        assert module.is_file(), f"{name}: no module reversal_pipeline.{reader}"
        assert constant in module.read_text(), f"{reader} does not use {constant}"


def test_alerts_scrub_exactly_the_secret_variables() -> None:
    assert set(SECRET_ENV) == {
        "STRIPE_API_KEY",
        "REVERSAL_DATABASE_URL",
        "DAGSTER_PG_URL",
        "REVERSAL_ALERT_WEBHOOK_URL",
    }


def test_setting_is_the_value_without_blanks_else_the_default() -> None:
    name = environment.OPEN_DAYS_ENV
    assert setting(name, {}) == "30"
    assert setting(name, {name: "  "}) == "30"
    assert setting(name, {name: " 7 "}) == "7"
    assert setting(environment.STRIPE_API_BASE_ENV, {}) == ""
