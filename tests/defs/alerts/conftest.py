"""Fixtures of the alert tests: the reconciliation's reports folder, reused."""

from tests.defs.reconciliation.conftest import reports_dir

__all__ = ["reports_dir"]
