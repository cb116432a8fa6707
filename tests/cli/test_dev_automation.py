"""`dev` with a live key starts schedules and sensors only with --live, and says so."""

from __future__ import annotations

import importlib

import dagster as dg
import pytest

from reversal_pipeline.devserver.automation import AUTOMATION_ENV, automation_plan

AUTOMATION_MODULES = (
    "reversal_pipeline.defs.reversals.sensors",
    "reversal_pipeline.defs.reversals.schedules",
    "reversal_pipeline.defs.reconciliation.sensors",
    "reversal_pipeline.defs.reconciliation.schedules",
)


@pytest.mark.parametrize("key", ["sk_test_abc", "rk_test_abc", "sk_test_reversal_pipeline_local"])
@pytest.mark.parametrize("live", [False, True])
def test_test_keys_turn_automation_on(key: str, live: bool) -> None:
    plan = automation_plan(key, live=live)
    assert plan.on
    assert plan.env_value == "on"
    assert plan.message.startswith("schedules and sensors: ON (test key")


@pytest.mark.parametrize("key", ["sk_live_abc", "rk_live_abc", " sk_live_padded"])
def test_live_key_without_flag_keeps_automation_off_and_says_how_to_turn_it_on(key: str) -> None:
    plan = automation_plan(key, live=False)
    assert not plan.on
    assert plan.env_value == "off"
    assert "OFF because STRIPE_API_KEY is a live key" in plan.message
    assert "reversal-pipeline dev --live" in plan.message
    assert key.strip() not in plan.message  # the key itself is never printed


@pytest.mark.parametrize("key", ["sk_live_abc", "rk_live_abc"])
def test_live_key_with_flag_turns_automation_on_and_warns(key: str) -> None:
    plan = automation_plan(key, live=True)
    assert plan.on
    assert "ON with a LIVE Stripe key" in plan.message
    assert "real Stripe" in plan.message


def _default_statuses() -> set[str]:
    statuses = set()
    for name in AUTOMATION_MODULES:
        module = importlib.reload(importlib.import_module(name))
        for value in vars(module).values():
            if isinstance(value, dg.SensorDefinition | dg.ScheduleDefinition):
                statuses.add(value.default_status.value)
    return statuses


def test_definitions_follow_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `dev` exports is what the code server's schedules and sensors default to."""
    try:
        monkeypatch.setenv(AUTOMATION_ENV, automation_plan("sk_live_x", live=False).env_value)
        assert _default_statuses() == {"STOPPED"}
        monkeypatch.setenv(AUTOMATION_ENV, automation_plan("sk_live_x", live=True).env_value)
        assert _default_statuses() == {"RUNNING"}
        monkeypatch.delenv(AUTOMATION_ENV)
        assert _default_statuses() == {"RUNNING"}  # every deployment: as before
    finally:
        monkeypatch.delenv(AUTOMATION_ENV, raising=False)
        _default_statuses()
