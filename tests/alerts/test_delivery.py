"""Alerts reach a real HTTP receiver once per new problem, and wait while it is down."""

from __future__ import annotations

import pytest

from reversal_pipeline.alerts.delivery import DeliveryFailed, post_webhook, scrub, secret_values
from reversal_pipeline.alerts.ledger import AlertLedger
from reversal_pipeline.alerts.problems import ProblemKind, check_failed, run_failed
from tests.alerts.receiver import down_receiver_url, running_receiver

RUN_ID = "0123abcd-0000-0000-0000-000000000000"


def test_post_sends_slack_compatible_json() -> None:
    with running_receiver() as receiver:
        post_webhook(receiver.url, "hello")
    assert receiver.bodies == [{"text": "hello"}]


@pytest.mark.parametrize("status", [404, 500])
def test_a_receiver_answering_an_error_is_a_failed_delivery(status: int) -> None:
    with running_receiver() as receiver:
        receiver.status = status
        with pytest.raises(DeliveryFailed, match=f"HTTP {status}") as failed:
            post_webhook(receiver.url, "hello")
    assert "secret-path" not in str(failed.value)  # the webhook path is itself a secret


def test_a_receiver_that_is_down_is_a_failed_delivery() -> None:
    with pytest.raises(DeliveryFailed, match="unreachable"):
        post_webhook(down_receiver_url(), "hello", timeout=5)


def test_one_alert_per_new_problem_and_again_when_it_comes_back() -> None:
    ledger = AlertLedger()
    failed_check = check_failed(["open_drift"], "no_open_critical_drift", "1 open critical")
    failed_run = run_failed("reversal_job", RUN_ID)

    assert ledger.observe([failed_check, failed_run]) == [failed_check, failed_run]
    assert ledger.observe([failed_check, failed_run]) == []  # the next tick: nothing new
    assert ledger.observe([failed_run]) == []  # the check passed: forgotten
    assert ledger.observe([failed_check, failed_run]) == [failed_check]  # it failed again
    assert [p.key for p in ledger.pending] == [failed_check.key, failed_run.key, failed_check.key]


def test_receiver_down_keeps_every_alert_for_the_next_tick_in_order() -> None:
    problems = [run_failed("reconciliation_job", f"{i}" * 8 + RUN_ID[8:]) for i in range(3)]
    ledger = AlertLedger()
    ledger.observe(problems)
    down = down_receiver_url()
    with pytest.raises(DeliveryFailed):
        ledger.deliver(lambda p: post_webhook(down, p.text(None), timeout=5))
    # The cursor round trip is what the sensor stores between ticks.
    ledger = AlertLedger.from_cursor(ledger.to_cursor())
    assert [p.key for p in ledger.pending] == [p.key for p in problems]

    with running_receiver() as receiver:
        delivered = ledger.deliver(lambda p: post_webhook(receiver.url, p.text(None)))

    assert delivered == problems
    assert receiver.texts == [p.text(None) for p in problems]
    assert ledger.pending == []


def test_a_receiver_failing_midway_keeps_the_undelivered_rest() -> None:
    problems = [run_failed("reversal_job", f"{i}" * 8 + RUN_ID[8:]) for i in range(3)]
    ledger = AlertLedger()
    ledger.observe(problems)
    with running_receiver() as receiver:

        def send(problem: object) -> None:
            post_webhook(receiver.url, "x")
            receiver.status = 503  # up for one alert, then failing

        with pytest.raises(DeliveryFailed):
            ledger.deliver(send)
    assert len(receiver.bodies) == 1
    assert ledger.pending == problems[1:]


def test_alert_text_names_the_problem_and_links_the_ui() -> None:
    problem = check_failed(["reversal_outcomes"], "freshness_check", None)
    assert problem.kind == ProblemKind.STALE
    text = problem.text("http://dagster.internal:3000/")
    assert "reversal_outcomes is STALE" in text
    assert "http://dagster.internal:3000/assets/reversal_outcomes?view=checks" in text
    assert "DAGSTER_WEBSERVER_URL" in problem.text(None)  # no link: says how to get one


def test_scrub_removes_secrets_keys_and_url_credentials() -> None:
    env = {
        "STRIPE_API_KEY": "sk_test_abcdef123456",
        "REVERSAL_DATABASE_URL": "postgresql://app:pa55word@db.internal/payments",
    }
    text = (
        "key sk_test_abcdef123456, another rk_live_XYZ987, "
        "db postgresql://app:pa55word@db.internal/payments, password pa55word"
    )
    scrubbed = scrub(text, secret_values(env))
    for secret in ("sk_test_abcdef123456", "rk_live_XYZ987", "pa55word"):
        assert secret not in scrubbed
    assert scrubbed.endswith("password [redacted]")
