"""Fixtures of the reconciliation tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def reports_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("REVERSAL_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path / "reports"
