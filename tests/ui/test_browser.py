"""The UI in a real browser: the asset graph, and the assets' latest materializations.

What an operator opens first: the graph, then ``reversal_reconciliation``'s
latest materialization, whose markdown ``report`` is the drift table they act
on. Rendering it in a browser (not just storing it) is the point: a report
that only exists in the event log is one nobody reads.

Headless Chromium from Debian's ``chromium`` package, driven by Playwright
(its own browser downloads are not used). Screenshots are saved under the
test's temporary folder for a person to look at when it fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import MISSING_TRANSFER_ID, RECONCILED_DAY, ReconciliationRun, Webserver

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE_TIMEOUT_MS = 60_000

pytestmark = pytest.mark.browser


def visible_text(page: Any, text: str) -> Any:
    """The first element showing exactly ``text``."""
    return page.get_by_text(text, exact=True).first


def dismiss_community_dialog(page: Any) -> None:
    """A fresh instance greets with a newsletter dialog over the page; skip it when it shows."""
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.first.click()


def test_asset_graph_and_latest_materializations_render(
    chromium_path: Path,
    webserver: Webserver,
    launched_run: tuple[str, str],
    reconciliation_run: ReconciliationRun,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    run_id, status = launched_run
    assert status == "SUCCESS"
    assert reconciliation_run.status == "SUCCESS"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)

            page.goto(f"{webserver.url}/asset-groups")
            for group in ("reversals", "reconciliation"):
                expect(visible_text(page, group)).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            page.screenshot(path=tmp_path / "global_lineage.png", full_page=True)
            page.goto(f"{webserver.url}/locations/reversal_pipeline/asset-groups/reversals")
            for asset in ("refund_intake", "due_reversals", "reversal_outcomes"):
                expect(visible_text(page, asset)).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            dismiss_community_dialog(page)
            page.screenshot(path=tmp_path / "asset_graph.png", full_page=True)

            page.goto(f"{webserver.url}/assets/reversal_outcomes?view=events")
            dismiss_community_dialog(page)
            expect(visible_text(page, "rows_reversed")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            expect(page.get_by_text(run_id[:8]).first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            page.screenshot(path=tmp_path / "reversal_outcomes_latest.png", full_page=True)

            page.goto(f"{webserver.url}/locations/reversal_pipeline/asset-groups/reconciliation")
            expect(visible_text(page, "reversal_reconciliation")).to_be_visible(
                timeout=PAGE_TIMEOUT_MS
            )
            page.screenshot(path=tmp_path / "reconciliation_graph.png", full_page=True)

            # The latest materialization of the day: its markdown report renders as a table.
            page.goto(
                f"{webserver.url}/assets/reversal_reconciliation"
                f"?view=events&partition={RECONCILED_DAY}"
            )
            dismiss_community_dialog(page)
            expect(visible_text(page, "report")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            expect(page.get_by_text(reconciliation_run.run_id[:8]).first).to_be_visible()
            # The `findings` table may repeat a header or the finding: take the first.
            for header in ("severity", "category", "Stripe transfer"):
                header_cell = page.get_by_role("columnheader", name=header, exact=True).first
                expect(header_cell).to_be_visible()
            drift = page.get_by_role("row").filter(
                has=page.get_by_role("cell", name="missing_at_stripe", exact=True)
            )
            for cell in (MISSING_TRANSFER_ID, "high"):
                expect(drift.get_by_role("cell", name=cell, exact=True).first).to_be_visible()
            page.screenshot(path=tmp_path / "reconciliation_latest.png", full_page=True)
        except Exception:
            page.screenshot(path=tmp_path / "failure.png", full_page=True)
            (tmp_path / "failure.txt").write_text(page.inner_text("body"))
            raise
        finally:
            browser.close()
    assert (tmp_path / "asset_graph.png").stat().st_size > 10_000
    assert (tmp_path / "reversal_outcomes_latest.png").stat().st_size > 10_000
    assert (tmp_path / "reconciliation_latest.png").stat().st_size > 10_000
