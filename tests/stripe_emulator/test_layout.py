"""The emulator stands alone: it is a test double of Stripe, not a part of the pipeline.

If it imported the pipeline, a bug shared by both could make the double agree
with the code it is meant to check. Its modules also stay small enough to read.
"""

from __future__ import annotations

import ast
from pathlib import Path

import reversal_pipeline.stripe_emulator as emulator_package

PACKAGE_DIR = Path(emulator_package.__file__).resolve().parent
MAX_LINES = 600


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolves inside the emulator package
                names.append("reversal_pipeline.stripe_emulator." + (node.module or ""))
            elif node.module:
                names.append(node.module)
    return names


def test_the_emulator_imports_nothing_from_the_rest_of_the_package() -> None:
    modules = sorted(PACKAGE_DIR.glob("*.py"))
    assert len(modules) > 5  # the walk really found the package
    outside = {
        f"{path.name}: {name}"
        for path in modules
        for name in _imported_modules(path)
        if (name == "reversal_pipeline" or name.startswith("reversal_pipeline."))
        and not name.startswith("reversal_pipeline.stripe_emulator")
    }
    assert outside == set()


def test_no_emulator_module_is_over_600_lines() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in PACKAGE_DIR.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
