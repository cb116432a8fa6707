"""The README's "Code layout" section names every package of ``reversal_pipeline/``, and only those.

A package added (or renamed) without a line there leaves a newcomer guessing
which layer it belongs to.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reversal_pipeline"


def _layout_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Code layout\n(.*?)(?=^## )", readme, flags=re.S | re.M)
    assert match, "README.md has no '## Code layout' section"
    return match.group(1)


def _named_packages(section: str) -> set[str]:
    """The first cell of each table row, written as `name/`."""
    return set(re.findall(r"^\| `([a-z_]+)/` \|", section, flags=re.M))


def test_every_package_is_named_in_the_code_layout_section() -> None:
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    named = _named_packages(_layout_section())
    missing, unknown = packages - named, named - packages
    assert not missing, f"packages missing from README 'Code layout': {sorted(missing)}"
    assert not unknown, f"README 'Code layout' names no such package: {sorted(unknown)}"


def test_the_section_parser_reads_table_rows_only() -> None:
    section = "| package | layer |\n|---|---|\n| `core/` | core | x |\nsee `notes/` too\n"
    assert _named_packages(section) == {"core"}
