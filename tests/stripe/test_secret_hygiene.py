"""The API key never shows: not in reprs, logs (DEBUG, stripe's too), exceptions or metadata."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Iterator

import dagster as dg
import pydantic
import pytest
import stripe

from reversal_pipeline.errors import (
    ConfigurationError,
    StripeSentinel,
    StripeSystemicError,
    TransferNotFound,
    TransientStripeError,
)
from reversal_pipeline.stripe import StripeResource, mask_secret
from reversal_pipeline.stripe_emulator import EmulatorServer, ScriptedResponse

CANARY = "sk_test_SECRETCANARY123456"


def assert_clean(*texts: object) -> None:
    for text in texts:
        assert CANARY not in str(text)


def exception_texts(exc: BaseException) -> list[str]:
    """Everything an operator could see of an exception: str, repr, traceback, chain, original."""
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(getattr(current, "args", ()))]
        for attr in ("message", "http_body", "json_body", "headers", "original"):
            texts.append(repr(getattr(current, attr, None)))
        original = getattr(current, "original", None)
        current = current.__cause__ or current.__context__ or original
    return texts


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    for name in ("stripe", "urllib3", "reversal_pipeline"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


@pytest.fixture
def canary(stripe_emulator: EmulatorServer) -> Iterator[StripeResource]:
    stripe_emulator.state.keys.accept(CANARY)
    res = StripeResource(
        api_key=CANARY,
        api_base=stripe_emulator.url,
        requests_per_second=500,
        max_network_retries=1,
        rate_limit_max_wait_seconds=0,
    )
    yield res
    res.close()


def test_repr_and_str_mask_the_key() -> None:
    res = StripeResource(api_key=CANARY)

    shown = [repr(res), str(res), f"{res}", "%r" % (res,), "%s" % (res,)]  # noqa: UP031

    assert_clean(*shown)
    assert mask_secret(CANARY) in repr(res)
    assert mask_secret(CANARY) == "sk_test_…3456"


def test_failing_calls_leak_nothing(
    stripe_emulator: EmulatorServer,
    canary: StripeResource,
    debug_logs: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Also the SDK's own console logging (stripe.log = "debug" prints to stderr).
    monkeypatch.setattr(stripe, "log", "debug")
    tid = stripe_emulator.state.create_transfer(amount=1000).id
    raised: list[StripeSentinel] = []

    canary.reverse_transfer(tid, 100, "ok-1", {"seller_transfer_id": "1"})
    for transfer_id, script in [
        ("tr_doesnotexist", None),  # 404
        (tid, {"respond": 500, "method": "POST"}),  # 500
        (tid, {"respond": "reset", "method": "POST", "times": 5}),  # network
    ]:
        if script:
            stripe_emulator.faults.add_script(ScriptedResponse(transfer_id=tid, **script))
        with pytest.raises(StripeSentinel) as info:
            canary.reverse_transfer(transfer_id, 100, f"fail-{len(raised)}", {})
        raised.append(info.value)
    stripe_emulator.state.keys.revoke(CANARY)  # 401, answered with a masked key like Stripe's
    with pytest.raises(StripeSystemicError) as info401:
        canary.get_transfer(tid)
    raised.append(info401.value)

    assert [type(e) for e in raised] == [
        TransferNotFound,
        TransientStripeError,
        TransientStripeError,
        StripeSystemicError,
    ]
    for exc in raised:
        assert_clean(*exception_texts(exc))
    assert "Request to Stripe api" in debug_logs.text  # stripe's DEBUG logs were captured
    assert_clean(debug_logs.text, *(r.getMessage() for r in debug_logs.records))
    console = capsys.readouterr()
    assert "Request to Stripe api" in console.err
    assert_clean(console.out, console.err)
    assert_clean(canary.calls_made, repr(canary))


def test_network_error_on_a_dead_port_leaks_nothing(debug_logs: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    res = StripeResource(api_key=CANARY, api_base=f"http://127.0.0.1:{port}", max_network_retries=0)

    with pytest.raises(TransientStripeError) as info:
        res.get_transfer("tr_1")

    assert info.value.http_status is None
    assert_clean(*exception_texts(info.value), debug_logs.text)


def test_a_server_echoing_the_key_is_redacted(
    stripe_emulator: EmulatorServer,
    canary: StripeResource,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    # Stripe masks keys in its messages; a proxy or a broken server may not.
    tid = stripe_emulator.state.create_transfer(amount=1000).id
    stripe_emulator.faults.add_script(
        ScriptedResponse(respond=400, method="POST", message=f"Bad key {CANARY} for {tid}")
    )

    with pytest.raises(TransientStripeError) as info:
        canary.reverse_transfer(tid, 100, "echo-1", {})

    assert info.value.message == f"Bad key {mask_secret(CANARY)} for {tid}"
    assert info.value.original is None
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert_clean(*exception_texts(info.value))
    # stripe logs the response body at DEBUG: the filter on its logger masks it.
    assert mask_secret(CANARY) in debug_logs.text
    assert_clean(debug_logs.text, *(r.getMessage() for r in debug_logs.records))


def test_configuration_errors_do_not_echo_the_key() -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        StripeResource(api_key=CANARY, timeout_seconds=0)
    assert_clean(*exception_texts(refused.value))

    with pytest.raises(ConfigurationError) as info:
        StripeResource(api_key=f" {CANARY}").get_transfer("tr_1")
    assert_clean(*exception_texts(info.value))

    with pytest.raises(pydantic.ValidationError) as invalid:
        StripeResource(api_key=CANARY, timeout_seconds="soon")  # type: ignore[arg-type]
    assert_clean(*exception_texts(invalid.value))


def test_a_dagster_run_keeps_the_key_out_of_events_and_metadata(
    stripe_emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", CANARY)
    stripe_emulator.state.keys.accept(CANARY)
    tid = stripe_emulator.state.create_transfer(amount=1000).id

    # `context` unannotated: with postponed annotations Dagster sees a string and refuses it.
    @dg.asset
    def stripe_probe(context, stripe: StripeResource) -> None:  # type: ignore[no-untyped-def]
        snapshot = stripe.get_transfer(tid)
        try:
            stripe.get_transfer("tr_doesnotexist")
        except TransferNotFound as err:
            context.log.warning(f"not found: {err!r} via {stripe!r}")
        context.add_output_metadata({"calls_made": stripe.calls_made, "transfer": snapshot.id})

    resource = StripeResource(api_key=dg.EnvVar("STRIPE_API_KEY"), api_base=stripe_emulator.url)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([stripe_probe], resources={"stripe": resource}, instance=instance)
    assert result.success
    records = instance.all_logs(result.run_id)

    warnings = [r.user_message for r in records if "not found:" in r.user_message]
    assert warnings
    assert mask_secret(CANARY) in warnings[0]  # the resource's repr went into the log, masked
    materialization = result.asset_materializations_for_node("stripe_probe")[0]
    assert materialization.metadata["calls_made"].value["retrieve_transfer"] == 2
    assert_clean(
        *(repr(r) for r in records),
        repr(result.dagster_run),
        repr(resource),
        debug_logs.text,
    )
