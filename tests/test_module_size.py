"""No module of the package over 600 lines (issue 16): past that, several concerns share a room."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "reversal_pipeline"
MAX_LINES = 600


def test_no_module_is_over_600_lines() -> None:
    sizes = {
        str(path.relative_to(PACKAGE.parent)): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    offenders = {name: lines for name, lines in sorted(sizes.items()) if lines > MAX_LINES}
    assert not offenders, (
        f"modules over {MAX_LINES} lines (split them along their concerns): "
        + ", ".join(f"{name} ({lines})" for name, lines in offenders.items())
    )
