"""Shared fixtures live in ``tests/plugins/``, one module per real part the tests run against.

This file also gives every pytest session its own base temp directory (see
``pytest_configure``): the tests may run in parallel (``-n 2`` in
``pyproject.toml``) and several sessions may run at once on one machine.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections import Counter

import pytest

pytest_plugins = [
    "tests.plugins.database",
    "tests.plugins.stripe_emulator",
    "tests.plugins.dagster_job",
]


@pytest.hookimpl(tryfirst=True)  # before pytest's tmp_path plugin reads the option
def pytest_configure(config: pytest.Config) -> None:
    """Give this session a fresh base temp directory unless ``--basetemp`` was given.

    Pytest's default, numbered directories under ``/tmp/pytest-of-<user>``, are
    shared by every session of the user: a starting session resets that folder to
    mode 0700 and prunes old numbered folders, while the embedded PostgreSQL of a
    running session (which runs as its own system user when we are root) needs to
    traverse it to reach its data and socket. Concurrent sessions (two developers'
    commands, mutation testing) then broke each other's servers. A folder of our
    own, made here once by the controlling process, avoids both; xdist hands each
    worker a subfolder of it (``popen-gwN``), so each worker starts its own server.
    """
    if hasattr(config, "workerinput") or config.option.basetemp is not None:
        return
    config.option.basetemp = tempfile.mkdtemp(prefix="reversal-pipeline-pytest-")
    # Removed at exit, registered now so it runs after (atexit is last-in, first-out)
    # the embedded servers' own exit hooks stop them: removing the folder first left
    # a postmaster running with its data gone.
    atexit.register(shutil.rmtree, config.option.basetemp, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Sum the simulation's ``path_counts`` (tests/reliability/simulation.py) over its tests.

    Here, not in tests/reliability/: under xdist only this conftest is loaded by the
    controlling process, which is the one that prints the summary.
    """
    totals: Counter[str] = Counter()
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name == "path_counts" and getattr(report, "when", None) == "teardown":
                    totals.update(json.loads(value))
    if totals:
        terminalreporter.write_sep("-", "reversal batch simulation: paths taken")
        for name, count in sorted(totals.items()):
            terminalreporter.write_line(f"{name:45} {count}")
