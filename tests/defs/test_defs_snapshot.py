"""The asset graph as ``dg list defs --json`` sees it, compared with a committed snapshot.

Any change to assets, checks, jobs, resources, schedules or sensors (a new
check, a renamed job, a dependency, a cron) fails this test until the
snapshot is regenerated, so the change shows in review as a diff of
``tests/data/defs_snapshot.json``. Descriptions are left out: they are
docstring prose, and a reworded sentence is not a change to the graph.

Regenerate after an intended change::

    UPDATE_DEFS_SNAPSHOT=1 uv run pytest tests/defs/test_defs_snapshot.py -n 0 --no-cov
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.cli.tools import REPO_ROOT, run_tool

SNAPSHOT = Path(__file__).resolve().parents[1] / "data" / "defs_snapshot.json"
UPDATE_ENV = "UPDATE_DEFS_SNAPSHOT"
#: Fields whose change is not a change of the graph (see the module docstring).
DROPPED_FIELDS = frozenset({"description", "asset_key_parts"})
#: The field that names an entry, per section: entries are sorted by it.
SORT_KEYS = {"assets": "asset_key", "asset_checks": "key"}


def normalise(listing: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Every section and entry in a stable order, list fields sorted, volatile fields dropped."""
    normal: dict[str, list[dict[str, Any]]] = {}
    for section, entries in sorted(listing.items()):
        kept = [
            {
                field: sorted(value) if isinstance(value, list) else value
                for field, value in sorted(entry.items())
                if field not in DROPPED_FIELDS
            }
            for entry in entries
        ]
        normal[section] = sorted(kept, key=lambda e: str(e[SORT_KEYS.get(section, "name")]))
    return normal


def render(listing: dict[str, list[dict[str, Any]]]) -> str:
    return json.dumps(listing, indent=2, sort_keys=True) + "\n"


def list_defs() -> dict[str, list[dict[str, Any]]]:
    result = run_tool(["dg", "list", "defs", "--json"], cwd=REPO_ROOT, timeout=280)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return json.loads(result.stdout)


def test_normalise_ignores_order_and_descriptions_but_not_structure() -> None:
    one = {
        "jobs": [{"name": "b", "description": "x"}, {"name": "a"}],
        "assets": [{"asset_key": "k", "kinds": ["stripe", "postgres"], "description": "old"}],
    }
    reordered = {
        "assets": [{"asset_key": "k", "kinds": ["postgres", "stripe"], "description": "new"}],
        "jobs": [{"name": "a"}, {"name": "b", "description": "y"}],
    }
    assert render(normalise(one)) == render(normalise(reordered))
    one["assets"][0]["kinds"].append("pandas")
    assert render(normalise(one)) != render(normalise(reordered))


@pytest.mark.slow
def test_definitions_match_the_committed_snapshot() -> None:
    current = render(normalise(list_defs()))
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOT.write_text(current)
    committed = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    if current != committed:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                current.splitlines(keepends=True),
                fromfile=f"{SNAPSHOT.name} (committed)",
                tofile="dg list defs --json (now)",
            )
        )
        pytest.fail(
            f"the Dagster definitions differ from {SNAPSHOT.relative_to(REPO_ROOT)}:\n{diff}\n"
            "If the change is intended, regenerate the snapshot and commit it:\n"
            f"  {UPDATE_ENV}=1 uv run pytest tests/defs/test_defs_snapshot.py -n 0 --no-cov",
            pytrace=False,
        )
