"""Whether ``dev`` turns schedules and sensors on, and the line that says so.

With a test key (or the emulator) a developer wants the stack to behave as
deployed: schedules tick and sensors react. With a live key the same default
would start sending real reversals the moment someone opens the UI to look
around, so ``dev`` starts them only when asked (``--live``). The switch is the
environment variable ``REVERSAL_AUTOMATION`` that ``dev`` exports to
``dagster dev`` and that the definitions read for their default status
(``reversal_pipeline.defs.automation``).
"""

from __future__ import annotations

from dataclasses import dataclass

from reversal_pipeline.environment import AUTOMATION_ENV

__all__ = ["AUTOMATION_ENV", "AutomationPlan", "automation_plan", "is_live_key"]
LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")


def is_live_key(api_key: str | None) -> bool:
    return bool(api_key) and api_key.strip().startswith(LIVE_KEY_PREFIXES)  # type: ignore[union-attr]


@dataclass(frozen=True)
class AutomationPlan:
    """``on``: schedules and sensors default to running; ``message``: what ``dev`` prints."""

    on: bool
    message: str

    @property
    def env_value(self) -> str:
        return "on" if self.on else "off"


def automation_plan(api_key: str | None, *, live: bool) -> AutomationPlan:
    """The decision for ``dev``: on unless the key is live and ``--live`` was not given."""
    if not is_live_key(api_key):
        return AutomationPlan(
            True,
            "schedules and sensors: ON (test key: reversal_schedule, refund_events_sensor, "
            "reconciliation_schedule, refund_reconciliation_schedule, "
            "reconciliation_backfill_sensor; stripe_refunds_sensor stays off until "
            "switched on in the UI)",
        )
    if live:
        return AutomationPlan(
            True,
            "schedules and sensors: ON with a LIVE Stripe key (--live): "
            "reversals are sent to real Stripe",
        )
    return AutomationPlan(
        False,
        "schedules and sensors: OFF because STRIPE_API_KEY is a live key; "
        "restart with `reversal-pipeline dev --live` to turn them on "
        "(a run launched from the UI still sends real reversals, "
        "and one switched on in the UI stays on)",
    )
