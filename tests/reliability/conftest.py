"""Fixtures of the reliability suite: job processes forked from one preloaded server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.launcher import JobLauncher


@pytest.fixture(scope="session")
def job_launcher() -> Iterator[JobLauncher]:
    """One forkserver for the session: the import cost is paid once, every run is a new PID."""
    return JobLauncher()
