"""What an alert is about, and the words and link an operator receives.

An alert says what is wrong and where to look; it never carries a run's error
text or any value from the environment (those may hold a key or a database
password). The link leads to the page with the details.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from reversal_pipeline.environment import WEBSERVER_URL_ENV


class ProblemKind(StrEnum):
    """The kinds of problem an operator is told about."""

    RUN_FAILED = "run_failed"
    CHECK_FAILED = "check_failed"
    STALE = "stale"
    SENSOR_FAILING = "sensor_failing"


@dataclass(frozen=True, slots=True)
class Problem:
    """One open problem. ``key`` identifies it across sensor ticks (the dedup key)."""

    key: str
    kind: ProblemKind
    summary: str
    ui_path: str  # path in the Dagster UI, joined to DAGSTER_WEBSERVER_URL

    def text(self, webserver_url: str | None) -> str:
        """The alert's text: what is wrong, then where to look."""
        where = (
            f"{webserver_url.rstrip('/')}{self.ui_path}"
            if webserver_url
            else f"{self.ui_path} in the Dagster UI (set {WEBSERVER_URL_ENV} for a link)"
        )
        return f"[reversal_pipeline] {self.summary}\n{where}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Problem:
        return cls(data["key"], ProblemKind(data["kind"]), data["summary"], data["ui_path"])


def run_failed(job_name: str, run_id: str) -> Problem:
    return Problem(
        key=f"run:{run_id}",
        kind=ProblemKind.RUN_FAILED,
        summary=f"run {run_id[:8]} of {job_name} FAILED",
        ui_path=f"/runs/{run_id}",
    )


def check_failed(asset_path: Sequence[str], check_name: str, description: str | None) -> Problem:
    """A failed ERROR check; a freshness check's failure is reported as the asset being stale."""
    asset = "/".join(asset_path)
    stale = check_name.startswith("freshness_check")
    summary = (
        f"{asset} is STALE ({check_name} failed)"
        if stale
        else f"ERROR check {check_name} on {asset} FAILED"
    )
    if description:
        summary += f": {description}"
    return Problem(
        key=f"check:{asset}:{check_name}",
        kind=ProblemKind.STALE if stale else ProblemKind.CHECK_FAILED,
        summary=summary,
        ui_path=f"/assets/{'/'.join(quote(p) for p in asset_path)}?view=checks",
    )


def sensor_failing(sensor_name: str, code_location: str, since: datetime) -> Problem:
    """A running sensor whose every tick has failed since ``since`` (its page lists the errors).

    The key is the sensor's: while it keeps failing it is one problem, alerted
    once; after a tick that succeeds it is forgotten, so failing again alerts again.
    """
    return Problem(
        key=f"sensor:{sensor_name}",
        kind=ProblemKind.SENSOR_FAILING,
        summary=(
            f"sensor {sensor_name} is FAILING: every tick since "
            f"{since.astimezone(UTC):%Y-%m-%d %H:%M} UTC failed"
        ),
        ui_path=f"/locations/{quote(code_location, safe='@')}/sensors/{quote(sensor_name)}",
    )
