"""Neither the Stripe key nor the database password shows anywhere a person or a log can see.

One test drives everything with recognisable secrets: a good run (with a lost
response and a 500 on the way, so error paths log too), a failing run (the
key revoked at the emulator), and the CLI (``run-job`` failing on the revoked
key, ``migrate --status``, and ``validate-constraints`` against a database it
cannot reach). Then it searches: captured logs at DEBUG (caplog) and the
process's stdout/stderr (capfd), the Dagster event log of every run, asset
metadata and check metadata, exception texts, and every text column of every
table of the application database. ``tests/stripe/test_secret_hygiene.py``
covers the resource alone; this is the end-to-end sweep.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from reversal_pipeline.cli import main as cli
from reversal_pipeline.db.resource import _ENGINES
from reversal_pipeline.db.url import mask_url
from reversal_pipeline.stripe_emulator import EmulatorServer
from tests.plugins.dagster_job import run_reversal_job
from tests.plugins.marketplace import seed_rows

MARK = uuid.uuid4().hex[:16]
CANARY_KEY = f"sk_test_CANARY{MARK}Zq7w"
CANARY_PASSWORD = f"pw_CANARY_{MARK}_s3cr3t"
# What must never appear: the whole secrets, and their unique middles (a partial leak).
NEEDLES = (CANARY_KEY, CANARY_PASSWORD, f"CANARY{MARK}", f"CANARY_{MARK}")


@pytest.fixture
def canary_database_url(
    postgres_server_url: str, database_url: str, engine: sa.Engine
) -> Iterator[str]:
    """The test database reached as a role with a password (trust auth: sent, not checked)."""
    role = f"rp_canary_{MARK[:8]}_{uuid.uuid4().hex[:6]}"
    database = sa.make_url(database_url).database
    admin = sa.create_engine(
        postgres_server_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE ROLE {role} LOGIN PASSWORD '{CANARY_PASSWORD}'"))
        connection.execute(sa.text(f'ALTER DATABASE "{database}" OWNER TO {role}'))
    with engine.begin() as connection:
        connection.execute(sa.text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"))
        connection.execute(sa.text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"))
    url = sa.make_url(database_url).set(username=role, password=CANARY_PASSWORD)
    rendered = url.render_as_string(hide_password=False)
    yield rendered
    # The job's database resource keeps one engine per URL in the process: close ours.
    cached = _ENGINES.pop(rendered, None)
    if cached is not None:
        cached.dispose()
    with admin.connect() as connection:
        connection.execute(sa.text(f'ALTER DATABASE "{database}" OWNER TO CURRENT_USER'))
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP OWNED BY {role}"))
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP ROLE {role}"))
    admin.dispose()


def _database_texts(engine: sa.Engine) -> list[str]:
    """Every text-like value of every table of the application database."""
    texts: list[str] = []
    with engine.connect() as connection:
        columns = connection.execute(
            sa.text(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = 'public'"
                " AND data_type IN ('text', 'character varying', 'jsonb', 'json')"
            )
        ).all()
        for table, column in columns:
            texts += [
                str(v)
                for v in connection.execute(
                    sa.text(f'SELECT "{column}"::text FROM "{table}" WHERE "{column}" IS NOT NULL')
                ).scalars()
            ]
    assert texts, "nothing to search: the test would pass vacuously"
    return texts


def _dagster_texts(instance: dg.DagsterInstance) -> list[str]:
    """The event log of every run (messages, errors, metadata) and every run's config and tags."""
    texts: list[str] = []
    for run in instance.get_runs():
        texts += [repr(run.run_config), repr(run.tags)]
        for entry in instance.all_logs(run.run_id):
            texts += [entry.message or "", repr(entry.dagster_event)]
    return texts


def test_no_secret_in_logs_events_metadata_errors_or_database(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    canary_database_url: str,
    stripe_emulator: EmulatorServer,
    dagster_instance: dg.DagsterInstance,
    engine: sa.Engine,
    tmp_path: object,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("REVERSAL_DATABASE_URL", canary_database_url)
    monkeypatch.setenv("STRIPE_API_KEY", CANARY_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", stripe_emulator.url)
    monkeypatch.setenv("STRIPE_REQUESTS_PER_SECOND", "500")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    control = stripe_emulator.control()
    control.accept_key(CANARY_KEY)
    rows = seed_rows(engine, control, 6)
    control.add_scripts(
        [
            {"respond": "lost", "method": "POST", "transfer_id": rows[0].stripe_transfer_id},
            {"respond": 500, "method": "POST", "transfer_id": rows[1].stripe_transfer_id},
        ]
    )

    good = run_reversal_job(dagster_instance)
    control.revoke_key(CANARY_KEY)
    seed_rows(engine, control, 2, order_prefix="after_revoke")
    failing = run_reversal_job(dagster_instance)

    runner = CliRunner()
    cli_failing = runner.invoke(cli, ["run-job"])
    cli_status = runner.invoke(cli, ["migrate", "--status"])
    unreachable = sa.make_url(canary_database_url).set(query={"host": "/nonexistent/socket"})
    monkeypatch.setenv("REVERSAL_DATABASE_URL", unreachable.render_as_string(hide_password=False))
    cli_unreachable = runner.invoke(cli, ["validate-constraints"])

    # The runs did what the search relies on: real successes, failures and error paths.
    assert good.success
    assert not failing.success
    assert cli_failing.exit_code == 1
    assert "Stripe refused our credentials" in cli_failing.output
    assert cli_status.exit_code == 0
    assert cli_unreachable.exit_code == 2
    # Connection URLs are shown, masked.
    assert f"database: {mask_url(canary_database_url)}" in cli_status.output
    assert ":***@" in cli_status.output

    texts: list[str] = [caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    texts += [r.exc_text or "" for r in caplog.records]
    captured = capfd.readouterr()
    texts += [captured.out, captured.err]
    texts += [cli_failing.output, cli_status.output, cli_unreachable.output]
    texts += [repr(r.exception) for r in (cli_failing, cli_status, cli_unreachable)]
    texts += _dagster_texts(dagster_instance)
    for result in (good, failing):
        texts += [repr(e.event_specific_data) for e in result.all_events]
        texts += [
            repr(e.materialization.metadata) for e in result.get_asset_materialization_events()
        ]
    texts += _database_texts(engine)

    leaks = [
        (needle, text[max(0, text.find(needle) - 80) : text.find(needle) + 80])
        for text in texts
        for needle in NEEDLES
        if needle in text
    ]
    assert leaks == []
    # And the search could have found them: the secrets were really in use.
    assert any("sk_test_" in t for t in texts) or control.counters()["calls_total"] > 0
    assert sa.make_url(canary_database_url).password == CANARY_PASSWORD
