"""The code location as the UI sees it, and a run launched through the UI's API."""

from __future__ import annotations

import sqlalchemy as sa

from reversal_pipeline.db.tables import reconciliation_drift, seller_transfers
from tests.plugins.dagster_job import load_defs
from tests.ui.conftest import ReconciliationRun, Webserver

LOCATION = "reversal_pipeline"

REPOSITORY_QUERY = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation {
            repositories {
              name
              jobs { name }
              schedules { name }
              sensors { name }
              assetNodes {
                assetKey { path }
                assetChecksOrError { ... on AssetChecks { checks { name } } }
              }
            }
          }
        }
      }
    }
  }
}
"""


def _repository(webserver: Webserver) -> dict:
    data = webserver.graphql(REPOSITORY_QUERY)
    [entry] = [e for e in data["workspaceOrError"]["locationEntries"] if e["name"] == LOCATION]
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location
    [repository] = location["repositories"]
    return repository


def test_code_location_loads_with_jobs_assets_checks_schedules_and_sensors(
    webserver: Webserver,
) -> None:
    repository = _repository(webserver)
    jobs = {j["name"] for j in repository["jobs"]}
    schedules = {s["name"] for s in repository["schedules"]}
    sensors = {s["name"] for s in repository["sensors"]}
    assets = {"/".join(a["assetKey"]["path"]) for a in repository["assetNodes"]}
    checks = {
        c["name"]
        for a in repository["assetNodes"]
        for c in (a["assetChecksOrError"].get("checks") or [])
    }

    assert "reversal_job" in jobs
    assert {"refund_intake", "due_reversals", "reversal_outcomes"} <= assets
    assert {"no_pending_without_next_retry_at", "no_new_permanent_failures"} <= checks
    assert "reversal_schedule" in schedules
    assert "refund_events_sensor" in sensors
    # Whatever else the definitions hold (reconciliation, as it lands) is served too.
    repo_def = load_defs().get_repository_def()
    assert {j.name for j in repo_def.get_all_jobs() if not j.name.startswith("__")} <= jobs
    assert {s.name for s in repo_def.schedule_defs} == schedules
    assert {s.name for s in repo_def.sensor_defs} == sensors


def test_reversal_job_launched_from_the_api_succeeds(
    webserver: Webserver, launched_run: tuple[str, str]
) -> None:
    _, status = launched_run

    assert status == "SUCCESS"
    with webserver.engine.connect() as connection:
        row_status = connection.execute(
            sa.select(seller_transfers.c.status).where(seller_transfers.c.id == webserver.row.id)
        ).scalar_one()
    assert row_status == "reversed"


def test_reconciliation_partition_launched_from_the_api_records_the_planted_drift(
    webserver: Webserver, reconciliation_run: ReconciliationRun
) -> None:
    """The partition launch the browser test looks at: it must have found the planted row."""
    assert reconciliation_run.status == "SUCCESS"
    with webserver.engine.connect() as connection:
        findings = connection.execute(
            sa.select(reconciliation_drift.c.category, reconciliation_drift.c.in_grace).where(
                reconciliation_drift.c.seller_transfer_id == reconciliation_run.drift_row.id
            )
        ).all()
    assert [tuple(f) for f in findings] == [("missing_at_stripe", False)]
