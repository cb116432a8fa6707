"""Stripe's form-encoded parameters: decoding, and the checks with Stripe's error wording."""

from __future__ import annotations

import re
from typing import Any

from reversal_pipeline.stripe_emulator.errors import ParameterError

_PARAM_NAME = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_SUBSCRIPT = re.compile(r"\[([^\[\]]*)\]")
_INTEGER = re.compile(r"-?\d{1,15}")


def unknown_param(name: str) -> ParameterError:
    return ParameterError(
        400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
    )


def decode_params(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding, one level deep.

    ``a=1`` is a scalar, ``a[k]=v`` a hash, ``a[]=v`` or ``a[0]=v`` a list.
    """
    params: dict[str, Any] = {}
    for raw_name, value in pairs:
        match = _PARAM_NAME.fullmatch(raw_name)
        if match is None:
            raise unknown_param(raw_name)
        name, rest = match.groups()
        subscripts = _SUBSCRIPT.findall(rest)
        if not subscripts:
            params[name] = value
        elif len(subscripts) > 1:
            raise unknown_param(raw_name)
        elif subscripts[0] == "" or subscripts[0].isdigit():
            existing = params.setdefault(name, [])
            if not isinstance(existing, list):
                raise ParameterError(400, f"Invalid array: {name}", param=name)
            existing.append(value)
        else:
            existing = params.setdefault(name, {})
            if existing == "":  # "metadata=" then "metadata[k]=v": the hash wins
                existing = params[name] = {}
            if not isinstance(existing, dict):
                raise ParameterError(400, f"Invalid hash: {name}", param=name)
            existing[subscripts[0]] = value
    return params


def check_allowed(params: dict[str, Any], allowed: frozenset[str]) -> None:
    for name in params:
        if name not in allowed:
            raise unknown_param(name)


def int_param(
    value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    if not isinstance(value, str):
        raise ParameterError(
            400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=name
        )
    if value == "":
        raise ParameterError(
            400,
            f"You passed an empty string for '{name}'. We assume empty values are an attempt to"
            f" unset a parameter; however '{name}' cannot be unset. You should remove '{name}'"
            " from your request or supply a non-empty value.",
            code="parameter_invalid_empty",
            param=name,
        )
    if not _INTEGER.fullmatch(value):
        raise ParameterError(
            400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=name
        )
    number = int(value)
    if minimum is not None and number < minimum:
        raise ParameterError(
            400,
            f"This value must be greater than or equal to {minimum}.",
            code="parameter_invalid_integer",
            param=name,
        )
    if maximum is not None and number > maximum:
        raise ParameterError(
            400,
            f"This value must be less than or equal to {maximum}.",
            code="parameter_invalid_integer",
            param=name,
        )
    return number


def str_param(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ParameterError(
            400, f"Invalid string: {name}", code="parameter_invalid_string", param=name
        )
    return value


def required_param(params: dict[str, Any], name: str) -> Any:
    if name not in params:
        raise ParameterError(
            400, f"Missing required param: {name}.", code="parameter_missing", param=name
        )
    return params[name]


def metadata_param(params: dict[str, Any]) -> dict[str, str] | None:
    raw = params.get("metadata")
    if raw is None:
        return None
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise ParameterError(400, "Invalid hash", param="metadata")
    return {key: value for key, value in raw.items() if value != ""}


def limit_param(params: dict[str, Any]) -> int:
    if "limit" not in params:
        return 10
    return int_param(params["limit"], "limit", minimum=1, maximum=100)


def cursor_params(params: dict[str, Any]) -> tuple[str | None, str | None]:
    starting_after = str_param(params, "starting_after") or None
    ending_before = str_param(params, "ending_before") or None
    if starting_after and ending_before:
        raise ParameterError(
            400, "You may only specify one of these parameters: ending_before, starting_after."
        )
    return starting_after, ending_before


RANGE_KEYS = ("gt", "gte", "lt", "lte")


def created_params(params: dict[str, Any]) -> dict[str, int]:
    raw = params.get("created")
    if raw is None:
        return {}
    if isinstance(raw, str):
        exact = int_param(raw, "created")
        return {"created_gte": exact, "created_lte": exact}
    if not isinstance(raw, dict):
        raise ParameterError(400, "Invalid hash", param="created")
    bounds: dict[str, int] = {}
    for key, value in raw.items():
        if key not in RANGE_KEYS:
            raise unknown_param(f"created[{key}]")
        bounds[f"created_{key}"] = int_param(value, f"created[{key}]")
    return bounds


#: ISO codes Stripe accepts for a transfer (lowercase), from Stripe's list of supported
#: currencies; anything else is Stripe's 400 before the endpoint runs.
_CURRENCY_CODES = (
    "usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd "
    "bwp byn bzd cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp "
    "gel gip gmd gnf gtq gyd hkd hnl htg huf idr ils inr isk jmd jod jpy kes kgs khr kmf krw "
    "kwd kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop mur mvr mwk mxn myr mzn nad "
    "ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sek "
    "sgd shp sle sos srd std szl thb tjs tnd top try ttd twd tzs uah ugx uyu uzs vnd vuv wst "
    "xaf xcd xof xpf yer zar zmw"
)
SUPPORTED_CURRENCIES = frozenset(_CURRENCY_CODES.split())


def currency_param(params: dict[str, Any]) -> str:
    """The required ``currency``, lowercased; an unknown code gets Stripe's 400."""
    currency = str_param(params, "currency") or required_param(params, "currency")
    lowered = currency.lower()
    if lowered not in SUPPORTED_CURRENCIES:
        raise ParameterError(
            400,
            f"Invalid currency: {lowered}. Stripe currently supports these currencies: "
            + ", ".join(sorted(SUPPORTED_CURRENCIES)),
            param="currency",
        )
    return lowered
