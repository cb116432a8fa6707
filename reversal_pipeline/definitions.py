"""The code location: ``reversal_pipeline.definitions:defs`` (contract).

Each domain folder under ``defs/`` contributes its own definitions; the
shared resources come from ``defs/resources.py``.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
