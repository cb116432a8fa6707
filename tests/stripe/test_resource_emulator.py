"""StripeResource end to end: real SDK, real HTTP, against the Stripe emulator.

Call counts come from the emulator's own request log (what reached the wire)
and are checked against the resource's ``calls_made``.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pydantic
import pytest

from reversal_pipeline.errors import (
    ConfigurationError,
    StripeRateLimited,
    StripeSystemicError,
    TransferAlreadyReversed,
    TransferNotFound,
    TransientStripeError,
)
from reversal_pipeline.stripe import (
    SELLER_TRANSFER_ID_KEY,
    ReversalRecord,
    StripeResource,
    TransferSnapshot,
)
from reversal_pipeline.stripe_emulator import EmulatorServer, ScriptedResponse

CREATE = "POST /v1/transfers/{id}/reversals"
RETRIEVE = "GET /v1/transfers/{id}"
LIST_TRANSFERS = "GET /v1/transfers"
LIST_REVERSALS = "GET /v1/transfers/{id}/reversals"


def make_resource(server: EmulatorServer, api_key: str, **overrides: Any) -> StripeResource:
    settings: dict[str, Any] = {
        "api_key": api_key,
        "api_base": server.url,
        # Fast enough that pacing never dominates a test; the limiter is still on.
        "requests_per_second": 500,
        "max_network_retries": 2,
        "rate_limit_max_wait_seconds": 10,
    }
    settings.update(overrides)
    return StripeResource(**settings)


@pytest.fixture
def resource(stripe_emulator: EmulatorServer, stripe_api_key: str) -> Iterator[StripeResource]:
    res = make_resource(stripe_emulator, stripe_api_key)
    yield res
    res.close()


def wire(server: EmulatorServer) -> dict[str, int]:
    """Requests that reached the emulator, by endpoint."""
    return dict(server.state.requests.counters()["by_endpoint"])


def new_transfer(server: EmulatorServer, amount: int = 1000, **fields: Any) -> str:
    return server.state.create_transfer(amount=amount, **fields).id


def script(server: EmulatorServer, **entry: Any) -> None:
    server.faults.add_script(ScriptedResponse(**entry))


# -- the happy path --------------------------------------------------------------------


def test_reverse_transfer_returns_the_record(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    tid = new_transfer(stripe_emulator, 1000)

    record = resource.reverse_transfer(tid, 400, "rev-1-attempt-1", {SELLER_TRANSFER_ID_KEY: "1"})

    assert isinstance(record, ReversalRecord)
    assert (record.transfer_id, record.amount, record.currency) == (tid, 400, "usd")
    assert record.id.startswith("trr_")
    assert record.metadata == {SELLER_TRANSFER_ID_KEY: "1"}
    assert record.created.tzinfo is UTC
    assert wire(stripe_emulator) == {CREATE: 1}
    assert resource.calls_made["create_reversal"] == 1


def test_same_idempotency_key_replays_instead_of_reversing_twice(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    tid = new_transfer(stripe_emulator, 1000)

    first = resource.reverse_transfer(tid, 400, "rev-2-attempt-1", {})
    second = resource.reverse_transfer(tid, 400, "rev-2-attempt-1", {})

    assert first == second
    assert len(stripe_emulator.state.reversals_of(tid)) == 1
    assert [e.replayed for e in stripe_emulator.state.requests.entries()] == [False, True]


# -- one test per classification row, through HTTP ----------------------------------------


def test_unknown_transfer_is_not_found_after_exactly_one_call(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    with pytest.raises(TransferNotFound) as info:
        resource.reverse_transfer("tr_doesnotexist", 100, "rev-3-attempt-1", {})

    (entry,) = stripe_emulator.state.requests.entries()
    assert info.value.http_status == 404
    assert info.value.stripe_code == "resource_missing"
    assert info.value.request_id == entry.request_id
    assert wire(stripe_emulator) == {CREATE: 1}


def test_get_transfer_not_found(stripe_emulator: EmulatorServer, resource: StripeResource) -> None:
    with pytest.raises(TransferNotFound):
        resource.get_transfer("tr_doesnotexist")
    assert wire(stripe_emulator) == {RETRIEVE: 1}


def test_already_reversed_out_of_band(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    tid = new_transfer(stripe_emulator, 1000)
    stripe_emulator.state.reverse_transfer(tid)  # e.g. from the Dashboard, in full

    with pytest.raises(TransferAlreadyReversed) as info:
        resource.reverse_transfer(tid, 1000, "rev-4-attempt-1", {})

    assert info.value.http_status == 400
    assert "already" in info.value.message
    assert wire(stripe_emulator) == {CREATE: 1}


def test_more_than_remaining_is_transient_not_already_reversed(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    tid = new_transfer(stripe_emulator, 1000)
    stripe_emulator.state.reverse_transfer(tid, amount=700)

    with pytest.raises(TransientStripeError) as info:
        resource.reverse_transfer(tid, 1000, "rev-5-attempt-1", {})

    assert type(info.value) is TransientStripeError
    assert info.value.http_status == 400
    assert wire(stripe_emulator) == {CREATE: 1}


def test_revoked_key_is_systemic_after_one_call(
    stripe_emulator: EmulatorServer, resource: StripeResource, stripe_api_key: str
) -> None:
    tid = new_transfer(stripe_emulator)
    stripe_emulator.state.keys.revoke(stripe_api_key)

    with pytest.raises(StripeSystemicError) as info:
        resource.reverse_transfer(tid, 100, "rev-6-attempt-1", {})

    assert info.value.http_status == 401
    assert wire(stripe_emulator) == {CREATE: 1}
    assert stripe_emulator.state.reversals_of(tid) == []


def test_500_on_create_is_transient_and_not_replayed_by_the_sdk(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    tid = new_transfer(stripe_emulator)
    script(stripe_emulator, respond=500, method="POST", transfer_id=tid, times=5)

    with pytest.raises(TransientStripeError) as info:
        resource.reverse_transfer(tid, 100, "rev-7-attempt-1", {})

    assert info.value.http_status == 500
    assert isinstance(info.value.original, Exception)
    # max_network_retries=2, yet one call: the 500 is stored under the key, and a
    # same-key retry would only replay it (shown here by doing it once by hand).
    assert wire(stripe_emulator) == {CREATE: 1}
    with pytest.raises(TransientStripeError):
        resource.reverse_transfer(tid, 100, "rev-7-attempt-1", {})
    assert [e.replayed for e in stripe_emulator.state.requests.entries()] == [False, True]
    assert stripe_emulator.state.reversals_of(tid) == []


def test_500_on_get_is_retried_max_network_retries_times(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    tid = new_transfer(stripe_emulator)
    script(stripe_emulator, respond=500, method="GET", transfer_id=tid, times=10)
    res = make_resource(stripe_emulator, stripe_api_key, max_network_retries=2)

    with pytest.raises(TransientStripeError) as info:
        res.get_transfer(tid)

    assert info.value.http_status == 500
    assert wire(stripe_emulator) == {RETRIEVE: 3}
    assert res.calls_made["retrieve_transfer"] == 3


def test_503_at_the_edge_is_retried_with_the_same_key_and_succeeds(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    tid = new_transfer(stripe_emulator)
    script(stripe_emulator, respond=503, method="POST", transfer_id=tid, times=2)

    record = resource.reverse_transfer(tid, 100, "rev-8-attempt-1", {})

    entries = stripe_emulator.state.requests.entries()
    assert [e.status for e in entries] == [503, 503, 200]
    assert {e.idempotency_key for e in entries} == {"rev-8-attempt-1"}
    assert [r.id for r in stripe_emulator.state.reversals_of(tid)] == [record.id]


def test_429_is_resent_with_the_same_key_after_slowing_down(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    tid = new_transfer(stripe_emulator)
    script(stripe_emulator, respond=429, method="POST", transfer_id=tid, times=2)

    record = resource.reverse_transfer(tid, 100, "rev-9-attempt-1", {})

    entries = stripe_emulator.state.requests.entries()
    assert [e.status for e in entries] == [429, 429, 200]
    assert {e.idempotency_key for e in entries} == {"rev-9-attempt-1"}
    assert [r.id for r in stripe_emulator.state.reversals_of(tid)] == [record.id]
    assert resource.calls_made["rate_limited_retries"] == 2
    assert resource.calls_made["create_reversal"] == 3
    assert resource.rate_limiter.penalties == 2
    # The first was lone (answered lightly); the second came within the second after it.
    assert resource.rate_limiter.lone_penalties == 1


def test_429_past_the_wait_budget_raises_rate_limited(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    tid = new_transfer(stripe_emulator)
    script(stripe_emulator, respond=429, method="POST", transfer_id=tid, times=5)
    res = make_resource(stripe_emulator, stripe_api_key, rate_limit_max_wait_seconds=0)

    with pytest.raises(StripeRateLimited) as info:
        res.reverse_transfer(tid, 100, "rev-10-attempt-1", {})

    assert info.value.http_status == 429
    assert info.value.stripe_code == "rate_limit"
    assert wire(stripe_emulator) == {CREATE: 1}
    assert stripe_emulator.state.reversals_of(tid) == []


def test_network_error_is_transient_after_the_sdk_retries(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    tid = new_transfer(stripe_emulator)
    script(stripe_emulator, respond="reset", method="POST", transfer_id=tid, times=10)

    with pytest.raises(TransientStripeError) as info:
        resource.reverse_transfer(tid, 100, "rev-11-attempt-1", {})

    assert info.value.http_status is None
    assert wire(stripe_emulator) == {CREATE: 3}  # 1 + max_network_retries
    assert resource.calls_made["create_reversal"] == 3


def test_lost_response_is_recovered_by_a_same_key_retry(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    tid = new_transfer(stripe_emulator)
    # The reversal is made and stored, then the connection drops before the answer.
    script(stripe_emulator, respond="lost", method="POST", transfer_id=tid, times=1)

    record = resource.reverse_transfer(tid, 100, "rev-12-attempt-1", {})

    assert [e.replayed for e in stripe_emulator.state.requests.entries()] == [False, True]
    assert [r.id for r in stripe_emulator.state.reversals_of(tid)] == [record.id]


@pytest.mark.parametrize("damage", ["wrong_object", "malformed_json", "truncated"])
def test_a_damaged_200_is_transient_never_a_bogus_record(
    stripe_emulator: EmulatorServer, resource: StripeResource, damage: str
) -> None:
    tid = new_transfer(stripe_emulator)
    script(stripe_emulator, respond=damage, method="POST", transfer_id=tid, times=1)

    with pytest.raises(TransientStripeError):
        resource.reverse_transfer(tid, 100, "rev-13-attempt-1", {})
    # The reversal did happen: the job's next attempt finds it by metadata.
    assert len(stripe_emulator.state.reversals_of(tid)) == 1


# -- reads ----------------------------------------------------------------------------


def test_get_transfer_pages_past_the_embedded_ten(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    tid = new_transfer(stripe_emulator, 2500)
    made = [
        stripe_emulator.state.reverse_transfer(tid, amount=100, metadata={"n": str(i)}).id
        for i in range(25)
    ]

    snapshot = resource.get_transfer(tid)

    assert isinstance(snapshot, TransferSnapshot)
    assert [r.id for r in snapshot.reversals] == list(reversed(made))  # all, newest first
    assert (snapshot.amount_reversed, snapshot.reversed) == (2500, True)
    assert sum(r.amount for r in snapshot.reversals) == snapshot.amount_reversed
    assert wire(stripe_emulator) == {RETRIEVE: 1, LIST_REVERSALS: 1}


def test_get_transfer_without_has_more_is_one_call(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    tid = new_transfer(stripe_emulator, 1000)
    for _ in range(10):
        stripe_emulator.state.reverse_transfer(tid, amount=10)

    snapshot = resource.get_transfer(tid)

    assert len(snapshot.reversals) == 10
    assert snapshot.destination is not None
    assert snapshot.created.tzinfo is UTC
    assert wire(stripe_emulator) == {RETRIEVE: 1}


def test_iter_transfers_created_yields_each_once_with_minimal_calls(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    base = int(start.timestamp())
    n = 250
    specs = [{"amount": 1000, "created": base + i * 60} for i in range(n)]
    # Just outside the window on both sides.
    specs += [{"amount": 1000, "created": base - 1}, {"amount": 1000, "created": base + 86400}]
    transfers = stripe_emulator.state.create_transfers_bulk(specs)
    inside = {t.id for t in transfers[:n]}
    many_reversals = [t.id for t in transfers[:3]]
    for tid in many_reversals:
        for _ in range(12):
            stripe_emulator.state.reverse_transfer(tid, amount=10)

    got = list(resource.iter_transfers_created(start, start + timedelta(days=1)))

    assert [s.id for s in got].count(got[0].id) == 1
    assert {s.id for s in got} == inside
    assert len(got) == n
    assert [s.created for s in got] == sorted((s.created for s in got), reverse=True)
    by_id = {s.id: s for s in got}
    assert all(len(by_id[tid].reversals) == 12 for tid in many_reversals)
    assert wire(stripe_emulator) == {
        LIST_TRANSFERS: math.ceil(n / 100),
        LIST_REVERSALS: len(many_reversals),
    }
    assert resource.calls_made["list_transfers"] == 3
    assert resource.calls_made["list_reversals"] == 3


def test_iter_transfers_created_filters_on_destination(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    start = datetime(2026, 3, 2, tzinfo=UTC)
    base = int(start.timestamp())
    stripe_emulator.state.create_transfers_bulk(
        [{"amount": 10, "created": base + i, "destination": f"acct_{i % 2}"} for i in range(10)]
    )

    got = list(
        resource.iter_transfers_created(start, start + timedelta(hours=1), destination="acct_1")
    )

    assert len(got) == 5
    assert {s.destination for s in got} == {"acct_1"}


def test_iter_transfers_created_raises_when_a_page_fails(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    start = datetime(2026, 3, 3, tzinfo=UTC)
    base = int(start.timestamp())
    stripe_emulator.state.create_transfers_bulk(
        [{"amount": 10, "created": base + i} for i in range(150)]
    )
    res = make_resource(stripe_emulator, stripe_api_key, max_network_retries=0)
    pages = res.iter_transfers_created(start, start + timedelta(hours=1))
    first_page = [next(pages) for _ in range(100)]
    script(stripe_emulator, respond=500, method="GET", path="/v1/transfers", times=1)

    with pytest.raises(TransientStripeError) as info:
        next(pages)

    assert len(first_page) == 100
    assert info.value.http_status == 500


def test_iter_transfers_created_validates_eagerly(resource: StripeResource) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        resource.iter_transfers_created(datetime(2026, 1, 1), datetime(2026, 1, 2))
    assert resource.calls_made["list_transfers"] == 0


def test_find_reversal_for_seller_transfer(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    tid = new_transfer(stripe_emulator, 1000)
    made = {
        seller_id: stripe_emulator.state.reverse_transfer(
            tid, amount=100, metadata={SELLER_TRANSFER_ID_KEY: seller_id}
        ).id
        for seller_id in ("41", "42", "43")
    }

    found = resource.find_reversal_for_seller_transfer(tid, 42)
    missing = resource.find_reversal_for_seller_transfer(tid, "44")

    assert found is not None
    assert found.id == made["42"]
    assert found.metadata[SELLER_TRANSFER_ID_KEY] == "42"
    assert missing is None
    assert wire(stripe_emulator) == {LIST_REVERSALS: 2}
    with pytest.raises(TransferNotFound):
        resource.find_reversal_for_seller_transfer("tr_doesnotexist", 1)


def test_reversals_made_in_one_second_come_back_in_the_order_they_were_made(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    """Within one second of ``created`` only Stripe's listing order tells which
    reversal came first; with random ids, ordering by id gets six of them in
    creation order once in 720 tries."""
    tid = new_transfer(stripe_emulator, 1000)
    stripe_emulator.state.clock.freeze()
    try:
        made = [
            stripe_emulator.state.reverse_transfer(
                tid, amount=10, metadata={SELLER_TRANSFER_ID_KEY: "9"}
            ).id
            for _ in range(6)
        ]
    finally:
        stripe_emulator.state.clock.unfreeze()

    listed = resource.reversals_for_seller_transfer(tid, 9)
    first = resource.find_reversal_for_seller_transfer(tid, 9)

    assert len({r.created for r in listed}) == 1  # truly one second
    assert [r.id for r in listed] == made
    assert first is not None
    assert first.id == made[0]


def test_find_reversal_pages_through_many_reversals(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    tid = new_transfer(stripe_emulator, 100_000)
    target = stripe_emulator.state.reverse_transfer(
        tid, amount=1, metadata={SELLER_TRANSFER_ID_KEY: "7"}
    ).id
    for _ in range(150):  # the one we want ends up on the second page
        stripe_emulator.state.reverse_transfer(tid, amount=1)

    found = resource.find_reversal_for_seller_transfer(tid, "7")

    assert found is not None
    assert found.id == target
    assert wire(stripe_emulator) == {LIST_REVERSALS: 2}


# -- sharing across threads --------------------------------------------------------------


def test_one_resource_serves_many_threads(
    stripe_emulator: EmulatorServer, resource: StripeResource
) -> None:
    tids = [t.id for t in stripe_emulator.state.create_transfers_bulk([{"amount": 500}] * 64)]
    client_ids: set[int] = set()
    lock = threading.Lock()

    def reverse(i: int) -> ReversalRecord:
        with lock:
            client_ids.add(id(resource._stripe()))
        return resource.reverse_transfer(
            tids[i], 500, f"rev-mt-{i}", {SELLER_TRANSFER_ID_KEY: str(i)}
        )

    with ThreadPoolExecutor(max_workers=32) as pool:
        records = list(pool.map(reverse, range(len(tids))))

    assert len(client_ids) == 1
    assert Counter(r.transfer_id for r in records) == Counter(tids)
    assert all(len(stripe_emulator.state.reversals_of(t)) == 1 for t in tids)
    assert resource.calls_made["create_reversal"] == 64 == wire(stripe_emulator)[CREATE]


def test_default_budget_stays_under_the_accounts_limit(
    stripe_emulator: EmulatorServer, stripe_api_key: str
) -> None:
    # The emulator enforces Stripe's test-mode ~25/s; the default test budget is 20/s.
    stripe_emulator.faults.update(rate_limit_per_second=25)
    tid = new_transfer(stripe_emulator)
    res = make_resource(stripe_emulator, stripe_api_key, requests_per_second=None)
    assert res.effective_requests_per_second == 20

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda _: res.get_transfer(tid), range(40)))

    counters = stripe_emulator.state.requests.counters()
    assert counters["by_status"] == {"200": 40}
    assert res.calls_made["rate_limited_retries"] == 0


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [("sk_test_x", 20.0), ("rk_test_x", 20.0), ("sk_live_x", 80.0), ("rk_live_x", 80.0)],
)
def test_default_requests_per_second_by_key_mode(key: str, expected: float) -> None:
    assert StripeResource(api_key=key).effective_requests_per_second == expected
    assert StripeResource(api_key=key, requests_per_second=5).effective_requests_per_second == 5


@pytest.mark.parametrize(
    "overrides",
    [
        {"api_key": ""},
        {"api_key": " sk_test_x"},
        {"api_base": "localhost:12111"},
    ],
)
def test_bad_configuration_fails_before_any_call(overrides: dict[str, Any]) -> None:
    settings: dict[str, Any] = {"api_key": "sk_test_x", **overrides}
    res = StripeResource(**settings)
    with pytest.raises(ConfigurationError):
        res.get_transfer("tr_1")
    assert sum(res.calls_made.values()) == 0


BAD_NUMBERS = [
    ("max_network_retries", -1, "greater than or equal to 0"),
    ("timeout_seconds", 0, "greater than 0"),
    ("requests_per_second", 0, "greater than 0"),
    ("rate_limit_max_wait_seconds", -1, "greater than or equal to 0"),
]


@pytest.mark.parametrize(("field", "value", "bound"), BAD_NUMBERS)
def test_a_bad_number_is_refused_on_construction_naming_the_field(
    field: str, value: float, bound: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        StripeResource(api_key="sk_test_x", **{field: value})
    [error] = info.value.errors()
    assert error["loc"] == (field,)
    assert field in str(info.value)
    assert bound in str(info.value)


@pytest.mark.parametrize(("field", "value", "bound"), BAD_NUMBERS[1:2])
def test_a_bad_number_in_run_config_fails_the_run_before_any_step_body(
    field: str, value: float, bound: str
) -> None:
    bodies_run: list[str] = []

    @dg.asset
    def stripe_probe(stripe: StripeResource) -> None:
        bodies_run.append("stripe_probe")

    result = dg.materialize(
        [stripe_probe],
        resources={"stripe": StripeResource.configure_at_launch()},
        run_config={"resources": {"stripe": {"config": {"api_key": "sk_test_x", field: value}}}},
        raise_on_error=False,
    )

    assert not result.success
    assert bodies_run == []
    [failure] = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    error = failure.event_specific_data.error  # type: ignore[union-attr]
    text = "".join(
        part.to_string() for part in (error, *(c for c in [error.cause] if c is not None))
    )
    assert field in text
    assert bound in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": True}, "amount"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 256}, "idempotency_key"),
    ],
)
def test_reverse_transfer_rejects_bad_arguments_locally(
    resource: StripeResource, kwargs: dict[str, Any], message: str
) -> None:
    call: dict[str, Any] = {
        "transfer_id": "tr_1",
        "amount": 100,
        "idempotency_key": "k",
        "metadata": {},
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        resource.reverse_transfer(**call)
    assert resource.calls_made["create_reversal"] == 0


# -- proxies from the environment, read once ----------------------------------------------

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def _clear_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_proxy_named_in_the_environment_is_used(
    stripe_emulator: EmulatorServer, stripe_api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests' per-request environment scan is off; the proxy must still apply."""
    _clear_proxy_environment(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")
    tid = new_transfer(stripe_emulator)
    res = make_resource(stripe_emulator, stripe_api_key, max_network_retries=0)
    before = wire(stripe_emulator)
    try:
        with pytest.raises(TransientStripeError):
            res.reverse_transfer(tid, 100, "proxy-key-1", {})
    finally:
        res.close()
    assert wire(stripe_emulator) == before  # it went to the (dead) proxy, not around it


def test_no_proxy_for_the_api_host_goes_direct(
    stripe_emulator: EmulatorServer, stripe_api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clear_proxy_environment(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    tid = new_transfer(stripe_emulator)
    res = make_resource(stripe_emulator, stripe_api_key, max_network_retries=0)
    try:
        assert res.reverse_transfer(tid, 100, "proxy-key-2", {}).amount == 100
    finally:
        res.close()


def test_a_netrc_entry_does_not_replace_the_api_key(
    stripe_emulator: EmulatorServer,
    stripe_api_key: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    """With requests' environment trust on, ~/.netrc basic auth would override the key."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password not-the-key\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    tid = new_transfer(stripe_emulator)
    res = make_resource(stripe_emulator, stripe_api_key)
    try:
        assert res.reverse_transfer(tid, 100, "netrc-key", {}).amount == 100
    finally:
        res.close()
