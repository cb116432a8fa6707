"""Shared fixtures live in ``tests/plugins/``, one module per real part the tests run against."""

pytest_plugins = [
    "tests.plugins.database",
    "tests.plugins.stripe_emulator",
    "tests.plugins.dagster_job",
]
