"""``reverse.py`` decision by decision, against the emulator (issue 12 mutants).

Each test drives one branch of the Stripe conversation for a row with the real
SDK over HTTP and asserts what the batch would write: the decision's kind, the
reversal it names, and every audit call field by field. No database: the
functions take a ``ClaimedRow`` and return a ``RowDecision``, so a mutant of
this module is checked in about a second (``benchmarks/mutation.py reverse``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from reversal_pipeline.db.statuses import AttemptAction
from reversal_pipeline.errors import (
    StripeRateLimited,
    StripeSystemicError,
    TransferAlreadyReversed,
    TransferNotFound,
    TransientStripeError,
)
from reversal_pipeline.reversals.claim import ClaimedRow
from reversal_pipeline.reversals.record import StripeCallRecord
from reversal_pipeline.reversals.reverse import (
    call_record,
    confirm_already_reversed,
    final_status_for,
    idempotency_key_for,
    look_for_earlier_reversal,
    reversal_metadata,
    row_problem,
    send_reversal,
)
from reversal_pipeline.stripe import StripeResource
from reversal_pipeline.stripe_emulator import EmulatorClient, EmulatorServer

ROW_ID = 41


@pytest.fixture
def control(stripe_emulator: EmulatorServer) -> Iterator[EmulatorClient]:
    with stripe_emulator.control() as client:
        yield client


def _transfer(control: EmulatorClient, amount: int = 1_000, currency: str = "usd") -> str:
    return control.create_transfer(amount=amount, currency=currency, destination="acct_s1")["id"]


def _row(
    transfer_id: str | None,
    amount: int = 1_000,
    currency: str = "usd",
    *,
    target: int | None = None,
    refund_ids: tuple[str, ...] = (),
) -> ClaimedRow:
    return ClaimedRow(
        id=ROW_ID,
        order_id="ord_41",
        seller_id="seller_1",
        stripe_transfer_id=transfer_id,
        amount=amount,
        currency=currency,
        retry_count=0,
        stripe_attempts=0,
        reversal_requested_at=None,
        reversal_target=target,
        refund_ids=refund_ids,
    )


def _ours(control: EmulatorClient, transfer_id: str, amount: int, row_id: int = ROW_ID) -> str:
    """A reversal an earlier attempt of ours made (its metadata names the row)."""
    metadata = {"seller_transfer_id": str(row_id), "order_id": "ord_41", "attempt": "1"}
    return control.reverse_transfer(transfer_id, amount=amount, metadata=metadata)["id"]


def _calls(decision: Any) -> list[tuple[str, str]]:
    return [(c.action, c.outcome) for c in decision.calls]


# -- row_problem and the key ------------------------------------------------------------------


def test_a_well_formed_row_has_no_problem() -> None:
    assert row_problem(_row("tr_Abc123")) is None
    assert row_problem(_row("tr_" + "a" * 250)) is None


@pytest.mark.parametrize(
    ("transfer_id", "expected"),
    [
        (None, "seller transfer 41 (order ord_41) has no stripe_transfer_id: nothing to reverse; "),
        ("  ", "seller transfer 41 (order ord_41) has an empty stripe_transfer_id; "),
        ("", "seller transfer 41 (order ord_41) has an empty stripe_transfer_id; "),
        ("po_1Abc", "seller transfer 41 (order ord_41) has stripe_transfer_id 'po_1Abc', not "),
        ("tr_", "seller transfer 41 (order ord_41) has stripe_transfer_id 'tr_', not shaped"),
        ("tr_a-b", "seller transfer 41 (order ord_41) has stripe_transfer_id 'tr_a-b', not "),
        ("tr_" + "a" * 251, "seller transfer 41 (order ord_41) has stripe_transfer_id 'tr_aaa"),
    ],
)
def test_a_row_that_cannot_be_sent_says_which_and_why(
    transfer_id: str | None, expected: str
) -> None:
    problem = row_problem(_row(transfer_id))
    assert problem is not None
    assert problem.startswith(expected)
    assert problem.endswith("fix the row and requeue")


def test_a_bad_id_is_shown_cut_to_64_characters() -> None:
    problem = row_problem(_row("x" * 100))
    assert problem == (
        f"seller transfer 41 (order ord_41) has stripe_transfer_id {'x' * 64!r}, "
        "not shaped like tr_...; fix the row and requeue"
    )


@pytest.mark.parametrize("target", [0, -5, 1_001])
def test_a_target_outside_one_to_the_amount_is_not_sent(target: int) -> None:
    assert row_problem(_row("tr_Abc123", target=target)) == (
        f"seller transfer 41 (order ord_41) has reversal_target {target}, outside 1..1000: "
        "nothing to send; set it with `reversal-pipeline adjust` and requeue"
    )


@pytest.mark.parametrize("target", [1, 1_000])
def test_a_target_from_one_to_the_amount_is_sent(target: int) -> None:
    assert row_problem(_row("tr_Abc123", target=target)) is None


def _fitting_refund_ids(ids: list[str]) -> str:
    """The rule, written out: all ids if they fit in 500; else the oldest that fit with ",..."."""
    whole = ",".join(ids)
    if len(whole) <= 500:
        return whole
    kept: list[str] = []
    for refund_id in ids:
        if len(",".join([*kept, refund_id])) + len(",...") > 500:
            break
        kept.append(refund_id)
    return ",".join(kept) + ",..."


@pytest.mark.parametrize(
    ("first", "count"),
    [
        (12, 60),  # a comma at index 496: the id before it just fits
        (13, 60),  # a comma at index 497: the id before it does not
        (5, 46),  # exactly 500 characters: sent whole
        (6, 46),  # 501 characters: cut
    ],
)
def test_refund_ids_are_cut_at_stripes_limit_keeping_the_oldest_whole(
    first: int, count: int
) -> None:
    ids = ["r" * first] + [f"re_{i:07d}" for i in range(count - 1)]
    metadata = reversal_metadata(_row("tr_Abc123", refund_ids=tuple(ids)), attempt=1)
    expected = _fitting_refund_ids(ids)
    assert metadata["refund_ids"] == expected
    assert len(expected) <= 500
    assert expected.endswith(",...") == (len(",".join(ids)) > 500)


def test_the_idempotency_key_names_row_target_and_attempt() -> None:
    """Issue 17 put the target in the key: a raised target never replays an older reversal."""
    assert (
        idempotency_key_for(7, 3, 500) == "reversal_pipeline:seller_transfer:7:target:500:attempt:3"
    )


# -- call_record ------------------------------------------------------------------------------


def test_a_call_record_copies_the_error_unless_given_explicitly() -> None:
    error = TransientStripeError("boom", http_status=503, stripe_code="c", request_id="req_9")
    record = call_record(AttemptAction.CREATE_REVERSAL, "transient", error=error)
    assert record == StripeCallRecord(
        action="create_reversal",
        outcome="transient",
        http_status=503,
        stripe_code="c",
        stripe_request_id="req_9",
        message="TransientStripeError: boom",
    )
    kept = call_record(
        AttemptAction.LOOKUP_REVERSAL, "error", error=error, http_status=1, message="mine"
    )
    assert (kept.http_status, kept.message, kept.stripe_code) == (1, "mine", "c")
    plain = call_record(AttemptAction.CONFIRM_REVERSED, "confirmed", message="m")
    assert plain == StripeCallRecord(action="confirm_reversed", outcome="confirmed", message="m")


# -- send_reversal ----------------------------------------------------------------------------


def test_a_created_reversal_is_recorded_with_its_key_attempt_and_metadata(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control)
    earlier = StripeCallRecord(action="lookup_reversal", outcome="not_found")

    decision = send_reversal(
        _row(transfer_id), impatient_stripe, attempt=3, earlier_calls=[earlier]
    )

    [reversal] = control.get_transfer(transfer_id)["reversals"]
    key = "reversal_pipeline:seller_transfer:41:target:1000:attempt:3"
    assert reversal["amount"] == 1_000
    assert reversal["metadata"] == {
        "seller_transfer_id": "41",
        "order_id": "ord_41",
        "attempt": "3",
        "reversal_target": "1000",
    }
    assert (decision.kind, decision.reversal_id) == ("reversed", reversal["id"])
    assert decision.amount_reversed == 1_000
    assert (decision.idempotency_key, decision.attempt_number) == (key, 3)
    assert decision.message is None
    assert decision.error is None
    assert decision.calls == [
        earlier,
        StripeCallRecord(
            action="create_reversal",
            outcome="reversed",
            attempt_number=3,
            idempotency_key=key,
            stripe_reversal_id=reversal["id"],
        ),
    ]
    assert final_status_for(decision.kind) == "reversed"


def test_a_reversal_names_its_target_and_refunds_at_stripe(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control)
    row = _row(transfer_id, target=600, refund_ids=("re_1", "re_2"))

    decision = send_reversal(row, impatient_stripe, attempt=1, already_ours=200)

    [reversal] = control.get_transfer(transfer_id)["reversals"]
    assert reversal["amount"] == 400  # the target less what is already ours
    assert reversal["metadata"] == {
        "seller_transfer_id": "41",
        "order_id": "ord_41",
        "attempt": "1",
        "reversal_target": "600",
        "refund_ids": "re_1,re_2",
    }
    assert decision.idempotency_key == "reversal_pipeline:seller_transfer:41:target:600:attempt:1"
    assert decision.amount_reversed == 600


def test_a_given_key_is_sent_as_is(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control)
    first = send_reversal(_row(transfer_id), impatient_stripe, attempt=1, key="k-1")
    again = send_reversal(_row(transfer_id), impatient_stripe, attempt=1, key="k-1")
    assert first.idempotency_key == again.idempotency_key == "k-1"
    assert again.reversal_id == first.reversal_id  # Stripe replayed: one reversal only
    assert len(control.get_transfer(transfer_id)["reversals"]) == 1


def test_a_reversal_in_another_currency_is_flagged_at_once(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control, currency="eur")
    decision = send_reversal(_row(transfer_id, currency="usd"), impatient_stripe, attempt=1)
    assert decision.kind == "reversed"
    assert decision.message == (
        "reversed, but the transfer is in EUR, not the row's USD: 1000 minor units of EUR "
        "were taken back; check the order and correct it by hand (needs a person)"
    )


def test_the_same_currency_in_another_case_is_no_warning(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control, currency="usd")
    decision = send_reversal(_row(transfer_id, currency="USD"), impatient_stripe, attempt=1)
    assert (decision.kind, decision.message) == ("reversed", None)


@pytest.mark.parametrize(
    ("status", "outcome", "kind", "error_class"),
    [
        (429, "rate_limited", "transient", StripeRateLimited),
        (500, "transient", "transient", TransientStripeError),
        (401, "systemic", "systemic", StripeSystemicError),
        (403, "systemic", "systemic", StripeSystemicError),
    ],
)
def test_an_error_on_the_create_is_audited_once_and_routed(
    control: EmulatorClient,
    impatient_stripe: StripeResource,
    status: int,
    outcome: str,
    kind: str,
    error_class: type,
) -> None:
    transfer_id = _transfer(control)
    control.add_script(respond=status, method="POST", transfer_id=transfer_id)

    decision = send_reversal(_row(transfer_id), impatient_stripe, attempt=2)

    assert decision.kind == kind
    assert type(decision.error) is error_class
    assert decision.reversal_id is None
    key = "reversal_pipeline:seller_transfer:41:target:1000:attempt:2"
    assert (decision.idempotency_key, decision.attempt_number) == (key, 2)
    [call] = decision.calls
    assert (call.action, call.outcome, call.http_status) == ("create_reversal", outcome, status)
    assert (call.attempt_number, call.idempotency_key) == (2, key)
    assert call.message == f"{error_class.__name__}: {decision.error.message}"
    assert final_status_for(decision.kind) is None
    assert control.get_transfer(transfer_id)["reversals"] == []


def test_an_unknown_transfer_is_a_data_integrity_incident(
    impatient_stripe: StripeResource,
) -> None:
    decision = send_reversal(_row("tr_doesnotexist"), impatient_stripe, attempt=1)
    assert decision.kind == "not_found"
    assert isinstance(decision.error, TransferNotFound)
    assert _calls(decision) == [("create_reversal", "not_found")]
    assert decision.calls[0].http_status == 404
    assert decision.message == (
        "data-integrity incident: Stripe has no transfer tr_doesnotexist for seller transfer 41 "
        "(wrong account or test/live mode?); not retried, needs a person"
    )
    assert final_status_for(decision.kind) == "permanently_failed"


# -- "already reversed": confirmed on the transfer --------------------------------------------


def test_already_reversed_by_us_is_confirmed_with_our_earliest_reversal(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control)
    control.advance_clock(10)
    first = _ours(control, transfer_id, 400)
    control.advance_clock(10)
    _ours(control, transfer_id, 300)
    control.advance_clock(10)
    control.reverse_transfer(transfer_id, amount=300)  # out of band, newest

    decision = send_reversal(_row(transfer_id), impatient_stripe, attempt=2)

    assert (decision.kind, decision.reversal_id) == ("already_reversed", first)
    assert isinstance(decision.error, TransferAlreadyReversed)
    shown = "Stripe shows 1000 of 1000 usd reversed in 3 reversal(s)"
    assert (
        decision.message
        == f"already reversed by an earlier attempt of ours: {shown}; recorded {first}"
    )
    assert _calls(decision) == [
        ("create_reversal", "already_reversed"),
        ("confirm_reversed", "confirmed"),
    ]
    confirm = decision.calls[1]
    assert (confirm.stripe_reversal_id, confirm.message) == (first, shown)
    assert (confirm.http_status, confirm.idempotency_key) == (None, None)
    assert decision.calls[0].http_status == 400
    assert (decision.idempotency_key, decision.attempt_number) == (
        "reversal_pipeline:seller_transfer:41:target:1000:attempt:2",
        2,
    )
    assert decision.amount_reversed == 1_000  # the target: the row owes nothing more
    assert final_status_for(decision.kind) == "reversed"


def test_already_reversed_out_of_band_records_the_newest_reversal(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control)
    control.advance_clock(10)
    _ours(control, transfer_id, 200, row_id=ROW_ID + 1)  # another row's, not ours
    control.advance_clock(10)
    control.reverse_transfer(transfer_id, amount=500)
    control.advance_clock(10)
    newest = control.reverse_transfer(transfer_id, amount=300)["id"]

    decision = send_reversal(_row(transfer_id), impatient_stripe, attempt=1)

    assert (decision.kind, decision.reversal_id) == ("already_reversed", newest)
    assert decision.message == (
        "already reversed out-of-band (not by this job): Stripe shows 1000 of 1000 usd "
        f"reversed in 3 reversal(s); recorded {newest}"
    )
    assert decision.calls[1].stripe_reversal_id == newest


def test_already_reversed_for_exactly_the_row_amount_is_confirmed(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control, amount=600)
    whole = control.reverse_transfer(transfer_id)["id"]
    decision = send_reversal(_row(transfer_id, amount=600), impatient_stripe, attempt=1)
    assert (decision.kind, decision.reversal_id) == ("already_reversed", whole)


def test_already_reversed_for_less_than_the_row_is_not_confirmed(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    """The worst survivor of issue 12: ``and`` turned into ``or`` recorded this ``reversed``."""
    transfer_id = _transfer(control, amount=1_000)
    control.reverse_transfer(transfer_id)

    decision = send_reversal(_row(transfer_id, amount=1_500), impatient_stripe, attempt=1)

    assert decision.kind == "not_confirmed"
    assert decision.reversal_id is None
    assert isinstance(decision.error, TransferAlreadyReversed)
    shown = "Stripe shows 1000 of 1000 usd reversed in 1 reversal(s)"
    assert decision.message == (
        f"Stripe said the transfer is already reversed, but {shown}, "
        "less than this row's 1500 (its reversal target): needs a person"
    )
    assert _calls(decision) == [
        ("create_reversal", "already_reversed"),
        ("confirm_reversed", "not_confirmed"),
    ]
    assert decision.calls[1].message == shown
    assert decision.calls[1].stripe_reversal_id is None
    assert final_status_for(decision.kind) == "permanently_failed"


def test_already_reversed_in_another_currency_is_not_confirmed(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control, currency="eur")
    _ours(control, transfer_id, 1_000)

    decision = send_reversal(_row(transfer_id, currency="usd"), impatient_stripe, attempt=2)

    assert (decision.kind, decision.reversal_id) == ("not_confirmed", None)
    assert isinstance(decision.error, TransferAlreadyReversed)
    shown = "Stripe shows 1000 of 1000 eur reversed in 1 reversal(s)"
    assert decision.message == (
        f"Stripe said the transfer is already reversed, but {shown}, not in the row's USD: "
        "needs a person"
    )
    assert decision.calls[1] == StripeCallRecord(
        action="confirm_reversed", outcome="not_confirmed", message=shown
    )


def test_already_reversed_in_the_same_currency_another_case_is_confirmed(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control, currency="usd")
    mine = _ours(control, transfer_id, 1_000)
    decision = send_reversal(_row(transfer_id, currency="USD"), impatient_stripe, attempt=2)
    assert (decision.kind, decision.reversal_id) == ("already_reversed", mine)


@pytest.mark.parametrize(
    ("status", "kind", "error_class"),
    [
        (429, "transient", StripeRateLimited),
        (401, "systemic", StripeSystemicError),
        (404, "not_found", TransferNotFound),
    ],
)
def test_an_error_on_the_confirming_get_is_audited_and_routed(
    control: EmulatorClient,
    impatient_stripe: StripeResource,
    status: int,
    kind: str,
    error_class: type,
) -> None:
    transfer_id = _transfer(control)
    control.reverse_transfer(transfer_id)
    control.add_script(respond=status, method="GET", path=f"/v1/transfers/{transfer_id}")

    decision = send_reversal(_row(transfer_id), impatient_stripe, attempt=1)

    assert decision.kind == kind
    assert type(decision.error) is error_class
    assert decision.reversal_id is None
    assert _calls(decision) == [
        ("create_reversal", "already_reversed"),
        ("confirm_reversed", "error"),
    ]
    confirm = decision.calls[1]
    assert confirm.http_status == status
    assert confirm.message == f"{error_class.__name__}: {decision.error.message}"
    if kind == "not_found":
        assert decision.message is not None
        assert decision.message.startswith("data-integrity incident: Stripe has no transfer")
    else:
        assert decision.message is None


def test_confirm_already_reversed_called_alone_keeps_the_calls_given(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control)
    mine = _ours(control, transfer_id, 1_000)
    given = [StripeCallRecord(action="create_reversal", outcome="already_reversed")]
    error = TransferAlreadyReversed("already reversed", http_status=400)

    decision = confirm_already_reversed(_row(transfer_id), impatient_stripe, error, given)

    assert (decision.kind, decision.reversal_id, decision.error) == (
        "already_reversed",
        mine,
        error,
    )
    assert decision.calls is given
    assert _calls(decision) == [
        ("create_reversal", "already_reversed"),
        ("confirm_reversed", "confirmed"),
    ]


def test_already_reversed_with_no_reversal_on_the_transfer_is_not_confirmed(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    """Stripe's answer and its transfer disagree: believe neither, ask a person."""
    transfer_id = _transfer(control)
    error = TransferAlreadyReversed("already reversed", http_status=400)

    decision = confirm_already_reversed(_row(transfer_id), impatient_stripe, error, [])

    assert (decision.kind, decision.reversal_id, decision.error) == ("not_confirmed", None, error)
    assert decision.message == (
        "Stripe said the transfer is already reversed, but Stripe shows 0 of 1000 usd "
        "reversed in 0 reversal(s), less than this row's 1000 (its reversal target): needs a "
        "person"
    )


# -- the look-up for an earlier reversal ------------------------------------------------------


def test_no_earlier_reversal_lets_the_row_continue(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    # A target of 600: another row's 300 leaves 700 of the row's 1,000, room for
    # the target, so only "not ours" is at stake (a transfer without room for the
    # target is the remaining-amount rule's test in test_partial_refunds.py).
    transfer_id = _transfer(control)
    _ours(control, transfer_id, 300, row_id=ROW_ID + 1)  # another row's
    decision = look_for_earlier_reversal(_row(transfer_id, target=600), impatient_stripe)
    assert decision is not None
    assert (decision.kind, decision.reversal_id, decision.error) == ("continue", None, None)
    assert (decision.amount_reversed, decision.already_ours) == (0, 0)  # known: none of ours
    assert decision.calls == [
        StripeCallRecord(
            action="lookup_reversal",
            outcome="not_found",
            message="no reversal from an earlier attempt",
        )
    ]


def test_an_earlier_reversal_covering_the_row_is_found(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control, amount=2_000)
    mine = _ours(control, transfer_id, 1_000)
    decision = look_for_earlier_reversal(_row(transfer_id, currency="USD"), impatient_stripe)
    assert decision is not None
    assert (decision.kind, decision.reversal_id, decision.message) == (
        "found_existing",
        mine,
        None,
    )
    assert (decision.amount_reversed, decision.already_ours) == (1_000, 0)
    assert decision.calls == [
        StripeCallRecord(
            action="lookup_reversal",
            outcome="found_existing",
            stripe_reversal_id=mine,
            message=(
                f"reversal(s) {mine} of 1000 USD from earlier attempts found by their "
                "metadata: 1000 covers the target 1000"
            ),
        )
    ]
    assert final_status_for(decision.kind) == "reversed"


def test_an_earlier_reversal_larger_than_the_row_is_found(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control, amount=2_000)
    mine = _ours(control, transfer_id, 1_200)
    decision = look_for_earlier_reversal(_row(transfer_id), impatient_stripe)
    assert decision is not None
    assert (decision.kind, decision.reversal_id) == ("found_existing", mine)


def test_an_earlier_smaller_reversal_is_counted_and_only_the_rest_is_sent(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    """Issue 12 pinned "a smaller reversal of ours is never taken as covering the row"; that
    still holds. Issue 17 changed the rest: it is counted and only the difference is sent."""
    transfer_id = _transfer(control, amount=2_000)
    mine = _ours(control, transfer_id, 999)

    decision = look_for_earlier_reversal(_row(transfer_id), impatient_stripe)

    assert decision is not None
    assert (decision.kind, decision.reversal_id, decision.error) == ("continue", None, None)
    assert (decision.already_ours, decision.amount_reversed) == (999, 999)
    assert decision.calls == [
        StripeCallRecord(
            action="lookup_reversal",
            outcome="partial",
            stripe_reversal_id=mine,
            message=(
                f"ours at Stripe: {mine} of 999 USD (999 in all), short of the target 1000: "
                "sending the difference 1"
            ),
        )
    ]
    assert final_status_for(decision.kind) is None  # never reversed as it stands

    sent = send_reversal(
        _row(transfer_id), impatient_stripe, attempt=2, already_ours=decision.already_ours
    )

    assert (sent.kind, sent.amount_reversed) == ("reversed", 1_000)
    amounts = [r["amount"] for r in control.get_transfer(transfer_id)["reversals"]]
    assert sorted(amounts) == [1, 999]


def test_earlier_reversals_are_summed_and_the_newest_is_named(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control, amount=2_000)
    control.advance_clock(10)
    first = _ours(control, transfer_id, 400)
    control.advance_clock(10)
    second = _ours(control, transfer_id, 600)

    decision = look_for_earlier_reversal(_row(transfer_id), impatient_stripe)

    assert decision is not None
    assert (decision.kind, decision.reversal_id, decision.message) == (
        "found_existing",
        second,
        None,
    )
    assert (decision.amount_reversed, decision.already_ours) == (1_000, 0)
    listed = f"{first} of 400 USD, {second} of 600 USD"
    assert decision.calls == [
        StripeCallRecord(
            action="lookup_reversal",
            outcome="found_existing",
            stripe_reversal_id=second,
            message=(
                f"reversal(s) {listed} from earlier attempts found by their metadata: "
                "1000 covers the target 1000"
            ),
        )
    ]


def test_earlier_reversals_beyond_the_target_are_found_and_flagged_over_reversed(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control, amount=2_000)
    mine = _ours(control, transfer_id, 1_001)

    decision = look_for_earlier_reversal(_row(transfer_id), impatient_stripe)

    assert decision is not None
    assert (decision.kind, decision.reversal_id) == ("found_existing", mine)
    assert decision.amount_reversed == 1_001
    over = "; 1001 is more than the target 1000: over-reversed, needs a person"
    assert decision.message == f"over-reversed: ours at Stripe {mine} of 1001 USD{over}"
    assert decision.calls[0].message == (
        f"reversal(s) {mine} of 1001 USD from earlier attempts found by their metadata: "
        f"1001 covers the target 1000{over}"
    )


def test_an_earlier_reversal_in_another_currency_needs_a_person(
    control: EmulatorClient, impatient_stripe: StripeResource
) -> None:
    transfer_id = _transfer(control, amount=2_000, currency="eur")
    mine = _ours(control, transfer_id, 1_000)
    decision = look_for_earlier_reversal(_row(transfer_id, currency="usd"), impatient_stripe)
    assert decision is not None
    assert (decision.kind, decision.reversal_id, decision.amount_reversed) == (
        "not_confirmed",
        None,
        None,
    )
    assert decision.calls == [
        StripeCallRecord(
            action="lookup_reversal",
            outcome="not_confirmed",
            stripe_reversal_id=mine,
            message=(
                f"reversal(s) {mine} of 1000 EUR from earlier attempts found by their "
                "metadata; it is in EUR, not the row's USD"
            ),
        )
    ]
    assert final_status_for(decision.kind) == "permanently_failed"
    assert decision.message == (
        f"an earlier attempt made reversal(s) {mine} of 1000 EUR for seller transfer 41, but "
        "it is in EUR, not the row's USD: not sent again, needs a person (resolve, or "
        "correct the row)"
    )


@pytest.mark.parametrize(
    ("status", "kind", "error_class"),
    [
        (429, "transient", StripeRateLimited),
        (401, "systemic", StripeSystemicError),
        (404, "not_found", TransferNotFound),
    ],
)
def test_an_error_on_the_look_up_is_audited_and_routed(
    control: EmulatorClient,
    impatient_stripe: StripeResource,
    status: int,
    kind: str,
    error_class: type,
) -> None:
    transfer_id = _transfer(control)
    control.add_script(respond=status, method="GET", transfer_id=transfer_id)

    decision = look_for_earlier_reversal(_row(transfer_id), impatient_stripe)

    assert decision is not None
    assert (decision.kind, decision.reversal_id) == (kind, None)
    assert type(decision.error) is error_class
    [call] = decision.calls
    assert (call.action, call.outcome, call.http_status) == ("lookup_reversal", "error", status)
    assert call.message == f"{error_class.__name__}: {decision.error.message}"


# -- final_status_for -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("reversed", "reversed"),
        ("already_reversed", "reversed"),
        ("found_existing", "reversed"),
        ("not_found", "permanently_failed"),
        ("not_confirmed", "permanently_failed"),
        ("invalid", "permanently_failed"),
        ("transient", None),
        ("systemic", None),
        ("lookup_failed", None),
        ("continue", None),
    ],
)
def test_each_decision_leads_to_its_status(kind: str, status: str | None) -> None:
    assert final_status_for(kind) == status
