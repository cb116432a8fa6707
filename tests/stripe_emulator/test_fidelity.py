"""The emulator's bodies validate against Stripe's own OpenAPI schemas and examples.

Reads the committed copies in ``tests/data`` (never ``../shared``): an extract
of Stripe's ``spec3.json`` at API version 2023-08-16 and Stripe's example
objects. Raw bodies are fetched with ``requests`` so nothing the SDK does can
hide a wrong field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS30Validator

from reversal_pipeline.stripe_emulator import EmulatorServer

DATA = Path(__file__).resolve().parents[1] / "data"
RAW_SPEC: dict[str, Any] = json.loads((DATA / "openapi-transfers-2023-08-16.json").read_text())


def _with_nullable_any_of(node: Any) -> Any:
    """Let ``null`` through where the spec says ``nullable: true`` on an ``anyOf``.

    Stripe marks expandable fields as ``{"anyOf": [id string, object], "nullable": true}``
    with no ``type``; openapi-schema-validator applies ``nullable`` only next to a
    ``type``, so without this a null ``source_transaction`` would fail validation.
    """
    if isinstance(node, list):
        return [_with_nullable_any_of(item) for item in node]
    if not isinstance(node, dict):
        return node
    copied = {key: _with_nullable_any_of(value) for key, value in node.items()}
    if copied.get("nullable") is True and "anyOf" in copied and "type" not in copied:
        copied["anyOf"] = [*copied["anyOf"], {"enum": [None]}]
    return copied


SPEC: dict[str, Any] = _with_nullable_any_of(RAW_SPEC)
FIXTURES: dict[str, Any] = json.loads((DATA / "fixtures.json").read_text())


def _validator(schema: dict[str, Any]) -> OAS30Validator:
    """Validate against ``schema`` with ``#/components/...`` refs resolved in the spec."""
    return OAS30Validator({**schema, "components": SPEC["components"]})


def _component(name: str, spec: dict[str, Any] | None = None) -> OAS30Validator:
    components = (spec or SPEC)["components"]
    return OAS30Validator({"$ref": f"#/components/schemas/{name}", "components": components})


def _response_schema(path: str, method: str, status: str) -> OAS30Validator:
    content = SPEC["paths"][path][method]["responses"][status]["content"]
    return _validator(content["application/json"]["schema"])


class _Api:
    def __init__(self, server: EmulatorServer, api_key: str) -> None:
        self.base = server.url
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def get(self, path: str, **params: Any) -> requests.Response:
        return requests.get(self.base + path, params=params, headers=self.headers, timeout=10)

    def post(self, path: str, data: dict[str, Any]) -> requests.Response:
        return requests.post(self.base + path, data=data, headers=self.headers, timeout=10)


@pytest.fixture
def api(stripe_emulator: EmulatorServer, stripe_api_key: str) -> _Api:
    return _Api(stripe_emulator, stripe_api_key)


@pytest.fixture
def reversed_transfer(stripe_emulator: EmulatorServer) -> str:
    transfer = stripe_emulator.state.create_transfer(
        amount=1100, metadata={"order": "1"}, transfer_group="g"
    )
    stripe_emulator.state.reverse_transfer(transfer.id, amount=100, metadata={"row_id": "7"})
    return transfer.id


def test_the_validator_accepts_stripes_examples_and_rejects_a_broken_object() -> None:
    _component("transfer").validate(FIXTURES["transfer"])
    _component("transfer_reversal").validate(FIXTURES["transfer_reversal"])

    broken = {**FIXTURES["transfer"], "amount": "1100", "reversals": {"object": "list"}}
    with pytest.raises(ValidationError):
        _component("transfer").validate(broken)


def test_nullable_any_of_fields_take_null_but_nothing_else_off_schema(
    api: _Api, reversed_transfer: str
) -> None:
    transfer = api.get(f"/v1/transfers/{reversed_transfer}").json()
    assert transfer["source_transaction"] is None  # a nullable anyOf field, null here

    with pytest.raises(ValidationError):  # what the spec as published does to it
        _component("transfer", RAW_SPEC).validate(transfer)
    _component("transfer").validate(transfer)
    with pytest.raises(ValidationError):
        _component("transfer").validate({**transfer, "source_transaction": 12})


def test_expanded_bodies_match_the_schemas(api: _Api, reversed_transfer: str) -> None:
    transfer = api.get(
        f"/v1/transfers/{reversed_transfer}",
        **{"expand[]": ["destination", "balance_transaction"]},
    ).json()
    reversals = api.get(
        f"/v1/transfers/{reversed_transfer}/reversals",
        **{"expand[]": ["data.transfer", "data.balance_transaction"]},
    ).json()

    assert transfer["destination"]["object"] == "account"
    assert reversals["data"][0]["transfer"]["object"] == "transfer"
    _response_schema("/v1/transfers/{transfer}", "get", "200").validate(transfer)
    _response_schema("/v1/transfers/{id}/reversals", "get", "200").validate(reversals)


def test_transfer_and_reversal_bodies_match_the_schemas(api: _Api, reversed_transfer: str) -> None:
    transfer = api.get(f"/v1/transfers/{reversed_transfer}").json()
    reversal_id = transfer["reversals"]["data"][0]["id"]
    reversal = api.get(f"/v1/transfers/{reversed_transfer}/reversals/{reversal_id}").json()
    created = api.post(
        "/v1/transfers", {"amount": 5, "currency": "usd", "destination": "acct_1"}
    ).json()
    new_reversal = api.post(f"/v1/transfers/{created['id']}/reversals", {"amount": 5}).json()

    _response_schema("/v1/transfers/{transfer}", "get", "200").validate(transfer)
    _response_schema("/v1/transfers/{transfer}/reversals/{id}", "get", "200").validate(reversal)
    _response_schema("/v1/transfers", "post", "200").validate(created)
    _response_schema("/v1/transfers/{id}/reversals", "post", "200").validate(new_reversal)


def test_list_bodies_match_the_schemas(api: _Api, reversed_transfer: str) -> None:
    transfers = api.get("/v1/transfers", limit=5).json()
    reversals = api.get(f"/v1/transfers/{reversed_transfer}/reversals").json()

    _response_schema("/v1/transfers", "get", "200").validate(transfers)
    _response_schema("/v1/transfers/{id}/reversals", "get", "200").validate(reversals)
    assert transfers["url"] == "/v1/transfers"
    assert len(transfers["data"]) == 1
    assert reversals["url"] == f"/v1/transfers/{reversed_transfer}/reversals"


def test_emulator_objects_carry_exactly_the_fields_of_stripes_examples(
    api: _Api, reversed_transfer: str
) -> None:
    transfer = api.get(f"/v1/transfers/{reversed_transfer}").json()
    reversal = transfer["reversals"]["data"][0]

    assert set(transfer) == set(FIXTURES["transfer"])
    assert set(transfer["reversals"]) == set(FIXTURES["transfer"]["reversals"])
    assert set(reversal) == set(FIXTURES["transfer_reversal"])


def test_error_bodies_match_the_error_schema(
    stripe_emulator: EmulatorServer, api: _Api, reversed_transfer: str
) -> None:
    validator = _component("error")
    stripe_emulator.faults.add_script(
        {"respond": 500, "path_prefix": "/v1/transfers/tr_script500"},
        {"respond": 409, "path_prefix": "/v1/transfers/tr_script409"},
        {"respond": 403, "path_prefix": "/v1/transfers/tr_script403"},
    )
    idempotent = {**api.headers, "Idempotency-Key": "fidelity"}
    requests.post(
        f"{api.base}/v1/transfers/{reversed_transfer}/reversals",
        data={"amount": 1},
        headers=idempotent,
        timeout=10,
    )

    responses = {
        "404": api.get("/v1/transfers/tr_missing"),
        "already": api.post(f"/v1/transfers/{reversed_transfer}/reversals", {"amount": 5000}),
        "param": api.post(f"/v1/transfers/{reversed_transfer}/reversals", {"amount": "x"}),
        "401": requests.get(f"{api.base}/v1/transfers", timeout=10),
        "500": api.get("/v1/transfers/tr_script500"),
        "409": api.get("/v1/transfers/tr_script409"),
        "403": api.get("/v1/transfers/tr_script403"),
        "idempotency": requests.post(
            f"{api.base}/v1/transfers/{reversed_transfer}/reversals",
            data={"amount": 2},
            headers=idempotent,
            timeout=10,
        ),
    }
    stripe_emulator.clock.freeze()
    stripe_emulator.faults.update(rate_limit_per_second=1)
    api.get("/v1/transfers")
    responses["429"] = api.get("/v1/transfers")

    for name, response in responses.items():
        assert response.status_code >= 400, name
        assert response.headers["Request-Id"].startswith("req_"), name
        validator.validate(response.json())
    assert responses["idempotency"].json()["error"]["type"] == "idempotency_error"
    assert responses["429"].json()["error"]["code"] == "rate_limit"


# ----------------------------------------------------------------- charges, refunds, events

RAW_REFUNDS_SPEC: dict[str, Any] = json.loads(
    (DATA / "openapi-refunds-events-2023-08-16.json").read_text()
)


def _with_nullable_enums(node: Any) -> Any:
    """Let ``null`` through a ``nullable: true`` field that also has an ``enum``.

    OpenAPI 3.0.3 wants ``null`` listed in such an enum; Stripe's spec does not
    list it (a refund's ``reason`` is ``null`` unless one was given), and
    openapi-schema-validator follows 3.0.3, so the published spec as it stands
    would refuse Stripe's own refunds.
    """
    if isinstance(node, list):
        return [_with_nullable_enums(item) for item in node]
    if not isinstance(node, dict):
        return node
    copied = {key: _with_nullable_enums(value) for key, value in node.items()}
    if copied.get("nullable") is True and "enum" in copied and None not in copied["enum"]:
        copied["enum"] = [*copied["enum"], None]
    return copied


REFUNDS_SPEC: dict[str, Any] = _with_nullable_enums(_with_nullable_any_of(RAW_REFUNDS_SPEC))


def _refunds_component(name: str) -> OAS30Validator:
    return _component(name, REFUNDS_SPEC)


def _refunds_response(path: str) -> OAS30Validator:
    content = REFUNDS_SPEC["paths"][path]["get"]["responses"]["200"]["content"]
    schema = content["application/json"]["schema"]
    return OAS30Validator({**schema, "components": REFUNDS_SPEC["components"]})


@pytest.fixture
def refund_history(stripe_emulator: EmulatorServer) -> dict[str, str]:
    """Every shape the emulator renders: partial, pending then succeeded, failed, metadata."""
    control = stripe_emulator.control()
    charge = control.create_charge(1000, transfer_group="order_9", metadata={"order_id": "9"})
    partial = control.create_refund(charge["id"], amount=100, metadata={"seller": "3"})
    pending = control.create_refund(charge["id"], amount=200, status="pending")
    failed = control.create_refund(charge["id"], amount=300, status="pending")
    control.set_refund_status(pending["id"], "succeeded")
    control.set_refund_status(failed["id"], "failed")
    return {"charge": charge["id"], "partial": partial["id"], "failed": failed["id"]}


def test_charge_refund_and_event_bodies_match_the_schemas(
    api: _Api, refund_history: dict[str, str]
) -> None:
    charge = api.get(f"/v1/charges/{refund_history['charge']}").json()
    created = api.post("/v1/charges", {"amount": 50, "currency": "eur"}).json()
    refund = api.get(f"/v1/refunds/{refund_history['partial']}").json()
    failed = api.get(f"/v1/refunds/{refund_history['failed']}").json()
    new_refund = api.post("/v1/refunds", {"charge": created["id"]}).json()
    refunds = api.get("/v1/refunds", limit=100).json()
    events = api.get("/v1/events", limit=100).json()
    event = api.get(f"/v1/events/{events['data'][0]['id']}").json()

    _refunds_response("/v1/charges/{charge}").validate(charge)
    _refunds_component("charge").validate(created)
    for body in (refund, failed, new_refund):
        _refunds_response("/v1/refunds/{refund}").validate(body)
    _refunds_response("/v1/refunds").validate(refunds)
    _refunds_response("/v1/events").validate(events)
    _refunds_response("/v1/events/{id}").validate(event)
    # The spec stubs an event's `data`: what it carries is checked against its own schema.
    kinds = set()
    for item in events["data"]:
        inner = item["data"]["object"]
        kinds.add((item["type"], inner["object"]))
        _refunds_component(inner["object"]).validate(inner)
    assert kinds == {
        ("refund.created", "refund"),
        ("refund.updated", "refund"),
        ("charge.refunded", "charge"),
    }
    assert (charge["amount_refunded"], failed["status"]) == (300, "failed")
    assert "refunds" not in charge  # not embedded in API 2023-08-16


def test_the_refund_schemas_reject_a_broken_body(api: _Api, refund_history: dict[str, str]) -> None:
    refund = api.get(f"/v1/refunds/{refund_history['partial']}").json()
    charge = api.get(f"/v1/charges/{refund_history['charge']}").json()

    with pytest.raises(ValidationError):
        _refunds_component("refund").validate({**refund, "amount": "100"})
    with pytest.raises(ValidationError):
        _refunds_component("charge").validate({**charge, "status": "refunded"})


def test_refund_side_error_bodies_match_the_error_schema(
    api: _Api, refund_history: dict[str, str]
) -> None:
    responses = {
        "charge": api.get("/v1/charges/ch_missing"),
        "refund": api.get("/v1/refunds/re_missing"),
        "event": api.get("/v1/events/evt_missing"),
        "cursor": api.get("/v1/events", ending_before="evt_missing"),
        "too_large": api.post("/v1/refunds", {"charge": refund_history["charge"], "amount": 9999}),
        "limit": api.get("/v1/refunds", limit=101),
    }

    for name, response in responses.items():
        assert response.status_code in (400, 404), name
        _refunds_component("error").validate(response.json())
