"""The tree carries no unresolved merge: a conflict marker left in a document or
module once reached ``main`` unnoticed (benchmarks/RESULTS.md), because nothing
reads a Markdown file at test time."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".sql", ".txt"}
SKIPPED_DIRS = {".git", ".venv", "node_modules", "mutants", "__pycache__", ".ruff_cache"}
MARKER = re.compile(r"^(<{7}|>{7})( |$)|^={7}$")


def _project_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        if any(part in SKIPPED_DIRS for part in path.relative_to(ROOT).parts):
            continue
        if path.is_file() and path.suffix in SCANNED_SUFFIXES:
            files.append(path)
    return files


def test_no_merge_conflict_markers() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _project_files()
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1
        )
        if MARKER.match(line)
    ]
    assert not found, f"unresolved merge conflict markers at: {', '.join(found)}"
