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


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE_DIR.parent.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, source: str | None = None) -> list[str]:
    """Every module ``path`` imports, relative imports resolved against its own package."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # "from .. import x" climbs out of the package: resolve it, never assume it stays.
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.append(module)
            names.extend(f"{module}.{alias.name}" for alias in node.names)
    return names


def _outside_the_emulator(name: str) -> bool:
    in_package = name == "reversal_pipeline" or name.startswith("reversal_pipeline.")
    return in_package and not (
        name == "reversal_pipeline.stripe_emulator"
        or name.startswith("reversal_pipeline.stripe_emulator.")
    )


def test_the_emulator_imports_nothing_from_the_rest_of_the_package() -> None:
    modules = sorted(PACKAGE_DIR.rglob("*.py"))
    assert len(modules) > 5  # the walk really found the package
    outside = {
        f"{path.relative_to(PACKAGE_DIR)}: {name}"
        for path in modules
        for name in _imported_modules(path)
        if _outside_the_emulator(name)
    }
    assert outside == set()


def test_a_relative_import_that_climbs_out_is_seen() -> None:
    """The check itself: ``from ..errors`` in the emulator is the pipeline's errors module."""
    source = "from ..errors import StripeSentinel\nfrom . import clock\nfrom .keys import KEY\n"
    names = _imported_modules(PACKAGE_DIR / "state.py", source)
    assert {
        "reversal_pipeline.stripe_emulator.clock",
        "reversal_pipeline.stripe_emulator.keys",
    } <= (set(names))
    assert [name for name in names if _outside_the_emulator(name)] == [
        "reversal_pipeline.errors",
        "reversal_pipeline.errors.StripeSentinel",
    ]


def test_no_emulator_module_is_over_600_lines() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in PACKAGE_DIR.glob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
