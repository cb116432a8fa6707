"""The UI stays red while critical drift is open, whichever day was reconciled last.

A critical finding is planted on one day and reconciled; then an empty later
day is reconciled (its own checks pass, so ``reversal_reconciliation`` shows
green); ``open_drift`` is refreshed as its sensor would (no daemon here, so
the run is launched through GraphQL like the UI's button) and a real browser
must still show ``no_open_critical_drift`` failing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.plugins.marketplace import seed_rows
from tests.ui.conftest import LOCATION_SELECTOR, Webserver, launch_and_wait
from tests.ui.test_browser import CHROMIUM_ARGS, PAGE_TIMEOUT_MS, dismiss_community_dialog

CRITICAL_DAY, EMPTY_DAY = "2026-11-18", "2026-11-19"

# Three runs, each in its own process, plus the webserver: minutes on a loaded machine.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]


def reconcile(webserver: Webserver, day: str) -> str:
    params = {
        "selector": {**LOCATION_SELECTOR, "jobName": "reconciliation_job"},
        "runConfigData": {"ops": {"reversal_reconciliation": {"config": {"grace_minutes": 0}}}},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": day}]},
    }
    run_id, status = launch_and_wait(webserver, params)
    assert status == "SUCCESS", (day, run_id)
    return run_id


def test_open_critical_drift_shows_failing_after_an_empty_day_is_reconciled(
    chromium_path: Path, webserver: Webserver, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=PAGE_TIMEOUT_MS)  # a loaded machine renders slowly

    seed_rows(  # the DB says reversed; Stripe shows no reversal: db_reversed_stripe_not
        webserver.engine,
        webserver.emulator.control(),
        1,
        status="reversed",
        transferred_at=datetime(2026, 11, 18, 12, tzinfo=UTC),
        stripe_reversal_id="trr_ui_never_made",
        reversed_at=datetime(2026, 11, 18, 13, tzinfo=UTC),
        order_prefix="ord_ui_critical",
    )
    reconcile(webserver, CRITICAL_DAY)
    reconcile(webserver, EMPTY_DAY)
    params = {"selector": {**LOCATION_SELECTOR, "jobName": "open_drift_job"}, "runConfigData": {}}
    refresh_id, refresh_status = launch_and_wait(webserver, params)
    assert refresh_status == "SUCCESS"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            page.goto(
                f"{webserver.url}/assets/open_drift?view=checks&checkDetail=no_open_critical_drift"
            )
            expect(page.get_by_text("Evaluation result", exact=True)).to_be_visible()
            dismiss_community_dialog(page)
            body = page.locator("body")
            expect(page.get_by_text("no_open_critical_drift", exact=True).first).to_be_visible()
            # The detail of the selected check: its latest evaluation failed, and says why.
            expect(body).to_contain_text(re.compile(r"Evaluation result\s*Failed"))
            expect(body).to_contain_text(
                f"1 open critical finding(s) on 1 day(s), oldest {CRITICAL_DAY}"
            )
            expect(page.get_by_text("open_critical_findings", exact=True).first).to_be_visible()
            page.screenshot(path=tmp_path / "open_drift_checks.png", full_page=True)

            # The trap this closes: the daily asset's own check shows the empty day, passed.
            page.goto(
                f"{webserver.url}/assets/reversal_reconciliation"
                "?view=checks&checkDetail=no_critical_drift"
            )
            expect(page.get_by_text("Evaluation result", exact=True)).to_be_visible()
            expect(page.locator("body")).to_contain_text(re.compile(r"Evaluation result\s*Passed"))
            page.screenshot(path=tmp_path / "daily_checks.png", full_page=True)

            page.goto(f"{webserver.url}/assets/open_drift?view=events")
            dismiss_community_dialog(page)
            expect(page.get_by_text(refresh_id[:8]).first).to_be_visible()
            # .last: the metadata row that holds the whole table matches too; the finding's
            # own row comes after it in the document.
            critical = (
                page.get_by_role("row")
                .filter(has=page.get_by_role("cell", name="db_reversed_stripe_not", exact=True))
                .last
            )
            expect(critical.get_by_role("cell", name="critical", exact=True)).to_be_visible()
            expect(critical.get_by_role("cell", name=CRITICAL_DAY, exact=True)).to_be_visible()
            page.screenshot(path=tmp_path / "open_drift_findings.png", full_page=True)
        except Exception:
            page.screenshot(path=tmp_path / "failure.png", full_page=True)
            (tmp_path / "failure.txt").write_text(page.inner_text("body"))
            raise
        finally:
            browser.close()
    assert (tmp_path / "open_drift_checks.png").stat().st_size > 10_000
