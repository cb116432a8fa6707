"""The Dagster resource through which every Stripe call of the pipeline goes.

What it adds to ``stripe.StripeClient``:

* one client, one connection pool and one ``TokenBucket`` per resource
  instance, shared by all the job's threads, so the whole run stays under the
  account's request budget;
* every HTTP attempt (SDK retries and list pages included) waits for the
  bucket and is counted, by kind, for the run's metadata;
* 429s slow the shared bucket down and are re-sent with the *same*
  idempotency key (Stripe does not store rate-limited requests) until
  ``rate_limit_max_wait_seconds`` runs out;
* every failure leaves as exactly one sentinel of ``reversal_pipeline.errors``;
* the API key never shows in reprs, logs, exceptions or metadata.

Its parts live apart, as in stripe-python: the HTTP transport (pacing, counting,
the retry decision) in ``transport.py``, the key's masking in ``secrets.py``;
this module maps calls to records and failures to sentinels.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import dagster as dg
import requests
import stripe
from pydantic import Field, PrivateAttr

if TYPE_CHECKING:
    from stripe.params import TransferReversalListParams

from reversal_pipeline.environment import (
    DATABASE_URL_ENV,
    STRIPE_API_BASE_ENV,
    STRIPE_API_KEY_ENV,
)
from reversal_pipeline.errors import (
    ChargeNotFound,
    ConfigurationError,
    RefundNotFound,
    ReversalPipelineError,
    StripeCursorExpired,
    StripeSentinel,
    TransferNotFound,
    TransientStripeError,
)
from reversal_pipeline.stripe.classify import NotFound, classify_stripe_error
from reversal_pipeline.stripe.models import (
    ChargeSnapshot,
    RefundSnapshot,
    ReversalRecord,
    StripeEventRecord,
    TransferSnapshot,
    embedded_reversals,
)
from reversal_pipeline.stripe.pacing import CATCH_UP_TO, PACING_HEADROOM, PENALTY
from reversal_pipeline.stripe.paging import PAGE_LIMIT, events_after, events_since, forward_items
from reversal_pipeline.stripe.rate_limit import TokenBucket
from reversal_pipeline.stripe.secrets import _STRIPE_LOG_FILTER, _mentions
from reversal_pipeline.stripe.secrets import mask_secret as mask_secret  # re-exported
from reversal_pipeline.stripe.shared_budget import SharedBudget, open_shared_budget
from reversal_pipeline.stripe.transport import CALL_KINDS as CALL_KINDS  # re-exported
from reversal_pipeline.stripe.transport import CallCounter, _PacedRequestsClient, pooled_session

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Metadata key on a reversal that names the ``seller_transfers`` row it was made for.
SELLER_TRANSFER_ID_KEY = "seller_transfer_id"

# A fraction of Stripe's ~25 (test) / ~100 (live) requests/s, leaving the rest
# to the application's own calls on the same account.
DEFAULT_RPS_TEST = 20.0
DEFAULT_RPS_LIVE = 80.0

_MAX_IDEMPOTENCY_KEY_LENGTH = 255


def _epoch_seconds_ceil(value: datetime, name: str) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value!r}")
    # Stripe's `created` is whole seconds: both bounds round up (>= 10.5 is >= 11, < 10.5 is < 11).
    return math.ceil(value.timestamp())


class StripeResource(dg.ConfigurableResource):
    """Thread-safe, rate-limited Stripe access that answers in records or error sentinels."""

    api_key: str = Field(
        description=f"Stripe secret or restricted key: dg.EnvVar({STRIPE_API_KEY_ENV}) in a job."
    )
    api_base: str | None = Field(
        default=None,
        description=f"Stripe-compatible API base URL ({STRIPE_API_BASE_ENV}); unset means Stripe.",
    )
    max_network_retries: int = Field(
        default=2,
        ge=0,
        description=(
            "SDK retries, same idempotency key: connection errors, 409, 5xx"
            " (not a POST's 500, which Stripe stored and would only replay)."
        ),
    )
    timeout_seconds: float = Field(default=30, gt=0, description="Per-request HTTP timeout.")
    requests_per_second: float | None = Field(
        default=None,
        gt=0,
        description="Request budget for this resource; unset: 20 for test keys, 80 for live.",
    )
    rate_limit_max_wait_seconds: float = Field(
        default=30,
        ge=0,
        description="How long a 429'd request keeps being re-sent before StripeRateLimited.",
    )
    shared_budget_database_url: str | None = Field(
        default=None,
        description=(
            f"Database holding the account's shared request budget ({DATABASE_URL_ENV});"
            " unset: this process paces alone."
        ),
    )

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _client: stripe.StripeClient | None = PrivateAttr(default=None)
    _bucket: TokenBucket | SharedBudget | None = PrivateAttr(default=None)
    _budget_description: str = PrivateAttr(default="")
    _session: requests.Session | None = PrivateAttr(default=None)
    _counter: CallCounter = PrivateAttr(default_factory=CallCounter)

    # -- secrecy -------------------------------------------------------------

    def __repr_args__(self) -> Any:
        # pydantic builds repr() and str() from these pairs.
        for name, value in super().__repr_args__():
            if name == "api_key" and isinstance(value, dg.EnvVar):
                # Not resolved yet: only the variable's name, and str() would raise.
                yield name, f"EnvVar({str.__str__(value)!r})"
            elif name == "api_key":
                yield name, mask_secret(str(value))
            else:
                yield name, value

    # -- configuration -------------------------------------------------------

    @property
    def effective_requests_per_second(self) -> float:
        """The request budget in force: the configured one, else a default by key mode."""
        if self.requests_per_second is not None:
            return float(self.requests_per_second)
        if self.api_key.startswith(("sk_live_", "rk_live_")):
            return DEFAULT_RPS_LIVE
        # Test keys, and anything unrecognised: the smaller budget is the safe guess.
        return DEFAULT_RPS_TEST

    def validate_config(self) -> None:
        """Raise ConfigurationError before any Stripe call if a setting is unusable."""
        problems: list[str] = []
        if not self.api_key:
            problems.append(f"api_key is empty (set {STRIPE_API_KEY_ENV})")
        elif self.api_key != self.api_key.strip():
            problems.append("api_key has leading or trailing whitespace")
        if self.api_base is not None and not re.match(r"^https?://[^/\s]+", self.api_base):
            problems.append(f"api_base must be an http(s) URL, got {self.api_base!r}")
        if problems:
            raise ConfigurationError("StripeResource: " + "; ".join(problems))

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.validate_config()
        run = context.run
        self._budget_description = f"run {run.run_id} ({run.job_name})" if run else ""

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections; the next call builds a fresh client."""
        with self._lock:
            session, self._session, self._client = self._session, None, None
        if session is not None:
            session.close()
        if isinstance(self._bucket, SharedBudget):
            self._bucket.close()  # its pool only; the budget stays usable

    @property
    def calls_made(self) -> dict[str, int]:
        """Stripe HTTP attempts by kind (SDK retries included) and 429 re-sends."""
        return self._counter.snapshot()

    def budget_usage(self) -> dict[str, float | int | str]:
        """This process's draw on the shared budget, for run metadata ({} if pacing alone)."""
        bucket = self._bucket
        return bucket.usage().as_metadata() if isinstance(bucket, SharedBudget) else {}

    @property
    def rate_limiter(self) -> TokenBucket | SharedBudget:
        """The bucket shared by every thread using this instance."""
        self._stripe()
        assert self._bucket is not None
        return self._bucket

    def _stripe(self) -> stripe.StripeClient:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._build_client()
            assert self._client is not None
            return self._client

    def _build_client(self) -> None:
        self.validate_config()
        _STRIPE_LOG_FILTER.add(self.api_key)
        if self._bucket is None and self.shared_budget_database_url:
            self._bucket = open_shared_budget(
                self.shared_budget_database_url,
                self.api_key,
                self.effective_requests_per_second * PACING_HEADROOM,
                description=self._budget_description,
                catch_up=CATCH_UP_TO / PACING_HEADROOM,
                **PENALTY,
            )
        if self._bucket is None:
            self._bucket = TokenBucket(
                self.effective_requests_per_second * PACING_HEADROOM,
                **PENALTY,
            )
        session = pooled_session(self.api_base or stripe.DEFAULT_API_BASE)
        http_client = _PacedRequestsClient(
            bucket=self._bucket,
            counter=self._counter,
            timeout=self.timeout_seconds,
            session=session,
        )
        base_addresses: Any = None
        if self.api_base:
            base = self.api_base.rstrip("/")
            base_addresses = {"api": base, "files": base, "connect": base}
        self._client = stripe.StripeClient(
            self.api_key,
            base_addresses=base_addresses,
            max_network_retries=self.max_network_retries,
            http_client=http_client,
        )
        self._session = session

    # -- calls ---------------------------------------------------------------

    def reverse_transfer(
        self,
        transfer_id: str,
        amount: int,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> ReversalRecord:
        """Reverse ``amount`` of the transfer, or raise a sentinel.

        Safe to call again with the same ``idempotency_key``: Stripe replays
        the first answer. A 429 is re-sent with that same key (nothing was
        stored) after slowing the shared limiter, for up to
        ``rate_limit_max_wait_seconds``, then ``StripeRateLimited``.
        """
        # Checked as an object: numpy integers are Integral (kept), floats are refused; as an
        # int, mypy (not knowing int is Integral) took the raise as certain and skipped the rest.
        given: object = amount
        if isinstance(given, bool) or not isinstance(given, numbers.Integral) or given <= 0:
            raise ValueError(f"amount must be a positive integer (minor units), got {amount!r}")
        amount = int(amount)
        if not 0 < len(idempotency_key) <= _MAX_IDEMPOTENCY_KEY_LENGTH:
            raise ValueError("idempotency_key must be 1..255 characters (Stripe's limit)")
        client = self._stripe()

        def send() -> ReversalRecord:
            reversal = client.v1.transfers.reversals.create(
                transfer_id,
                {"amount": amount, "metadata": dict(metadata)},
                {"idempotency_key": idempotency_key},
            )
            return ReversalRecord.from_stripe(reversal, transfer_id=transfer_id)

        return self._call("create reversal", transfer_id, send)

    def get_transfer(self, transfer_id: str) -> TransferSnapshot:
        """The transfer with all its reversals (paged only past the embedded ten)."""
        client = self._stripe()
        data = self._call(
            "retrieve transfer",
            transfer_id,
            lambda: client.v1.transfers.retrieve(transfer_id).to_dict(),
        )
        return self._snapshot(data)

    def iter_transfers_created(
        self,
        created_gte: datetime,
        created_lt: datetime,
        *,
        destination: str | None = None,
    ) -> Iterator[TransferSnapshot]:
        """Transfers created in [created_gte, created_lt), newest first, one page in memory.

        A page that still fails after the SDK's retries raises its sentinel
        out of the iterator, so the caller knows the listing is incomplete.
        """
        gte = _epoch_seconds_ceil(created_gte, "created_gte")
        lt = _epoch_seconds_ceil(created_lt, "created_lt")
        if lt < gte:
            raise ValueError("created_lt is before created_gte")
        params: dict[str, Any] = {"created": {"gte": gte, "lt": lt}, "limit": PAGE_LIMIT}
        if destination is not None:
            params["destination"] = destination
        # Validation above runs at call time; the paging below runs lazily.
        return self._iter_transfer_pages(params)

    def find_reversal_for_seller_transfer(
        self, transfer_id: str, seller_transfer_id: str | int
    ) -> ReversalRecord | None:
        """The reversal on the transfer made for this ``seller_transfers`` row, if any.

        The answer to a lost response: Stripe has no search on reversal
        metadata, so this lists the transfer's reversals (usually one call).
        """
        matches = self._ours_oldest_first(transfer_id, seller_transfer_id)
        if not matches:
            return None
        if len(matches) > 1:
            # Two reversals for one row is a double reversal: reconciliation
            # reports it; here we answer deterministically with the first made.
            log.warning(
                "transfer %s has %d reversals for seller_transfer_id %s: %s",
                transfer_id,
                len(matches),
                seller_transfer_id,
                ", ".join(r.id for r in matches),
            )
        return matches[0]

    def reversals_for_seller_transfer(
        self, transfer_id: str, seller_transfer_id: str | int
    ) -> list[ReversalRecord]:
        """Every reversal on the transfer made for this ``seller_transfers`` row, oldest first.

        A row with partial refunds has one reversal per raise of its target;
        their sum is what Stripe shows of our reversals for the row, the
        amount the job subtracts from the target before sending (issue 17).
        The same listing as ``find_reversal_for_seller_transfer``.
        """
        return self._ours_oldest_first(transfer_id, seller_transfer_id)

    def _ours_oldest_first(
        self, transfer_id: str, seller_transfer_id: str | int
    ) -> list[ReversalRecord]:
        # Oldest first as `reversals_on_transfer` gives them (see there why the
        # listing's own order, not the id, breaks ties within one second).
        wanted = str(seller_transfer_id)
        return [
            r
            for r in self.reversals_on_transfer(transfer_id)
            if r.metadata.get(SELLER_TRANSFER_ID_KEY) == wanted
        ]

    def reversals_on_transfer(self, transfer_id: str) -> list[ReversalRecord]:
        """Every reversal on the transfer, ours and out-of-band, oldest first.

        The look-up before sending reads this one listing: our reversals for
        the row (by metadata) and, from the rest, how much of the transfer is
        left to reverse, so the job never asks for more than Stripe can give.
        Stripe lists newest first. ``created`` has a one-second resolution and ids
        are random, so within one second only the listing's order says which came
        first: the listing is reversed, then a stable sort on ``created`` keeps
        that order among equal seconds (sorting on the id made the "newest" of two
        same-second reversals a coin toss: a flaky ``stripe_reversal_id``).
        """
        return sorted(reversed(list(self._iter_reversals(transfer_id))), key=lambda r: r.created)

    # -- refunds and events (issue 18) ---------------------------------------

    def iter_events_oldest_first(
        self,
        types: Sequence[str],
        *,
        after_event_id: str | None,
        created_since: datetime | None = None,
    ) -> Iterator[StripeEventRecord]:
        """Events of ``types`` (all if empty), oldest first, one page in memory.

        With ``after_event_id``: every event newer than it (``ending_before``
        pages, each reversed). If Stripe no longer knows that event (kept 30
        days), raises ``StripeCursorExpired`` so the caller can fall back to
        ``created_since``. Without it: every event created at or after
        ``created_since`` (or every event Stripe still keeps), oldest first.
        """
        wanted = [str(t) for t in types]
        if after_event_id is not None:
            if not after_event_id:
                raise ValueError("after_event_id is empty")
            return self._event_records(events_after(self._events_page, wanted, after_event_id))
        since = None
        if created_since is not None:
            since = _epoch_seconds_ceil(created_since, "created_since")
        return self._event_records(events_since(self._events_page, wanted, since))

    def iter_refunds_created(
        self, start: datetime, end: datetime, *, with_charges: bool = False
    ) -> Iterator[RefundSnapshot]:
        """Refunds created in [start, end), every status, newest first (any order promised).
        ``with_charges``: each carries its charge (``expand[]=data.charge``), no retrieves."""
        gte = _epoch_seconds_ceil(start, "start")
        lt = _epoch_seconds_ceil(end, "end")
        if lt < gte:
            raise ValueError("end is before start")
        params: dict[str, Any] = {"created": {"gte": gte, "lt": lt}, "limit": PAGE_LIMIT}
        if with_charges:
            params["expand"] = ["data.charge"]
        return self._iter_refund_pages(params, None)

    def refunds_for_charge(self, charge_id: str) -> list[RefundSnapshot]:
        """Every refund of the charge, every status, newest first."""
        params: dict[str, Any] = {"charge": charge_id, "limit": PAGE_LIMIT}
        return list(self._iter_refund_pages(params, charge_id))

    def get_charge(self, charge_id: str) -> ChargeSnapshot:
        """The charge (404: ``ChargeNotFound``)."""
        retrieve = self._stripe().v1.charges.retrieve
        data = self._call(
            "retrieve charge", charge_id, lambda: retrieve(charge_id).to_dict(), ChargeNotFound
        )
        return self._convert(lambda: ChargeSnapshot.from_dict(data))

    def get_refund(self, refund_id: str) -> RefundSnapshot:
        """The refund (404: ``RefundNotFound``)."""
        retrieve = self._stripe().v1.refunds.retrieve
        data = self._call(
            "retrieve refund", refund_id, lambda: retrieve(refund_id).to_dict(), RefundNotFound
        )
        return self._convert(lambda: RefundSnapshot.from_dict(data))

    # -- internals -----------------------------------------------------------

    def _transfers_page(self, params: dict[str, Any]) -> dict[str, Any]:
        client = self._stripe()
        # raw_request: as transfers.list(), but the page stays parsed JSON: building
        # StripeObjects (then to_dict() back) was most of a large day's time (RESULTS.md).
        return self._call(
            "list transfers",
            None,
            lambda: client.raw_request("get", "/v1/transfers", **params).data,
        )

    def _iter_transfer_pages(self, params: dict[str, Any]) -> Iterator[TransferSnapshot]:
        for item in forward_items(self._transfers_page, params):
            yield self._snapshot(item)

    def _iter_reversals(
        self, transfer_id: str, *, starting_after: str | None = None
    ) -> Iterator[ReversalRecord]:
        client = self._stripe()

        def fetch(params: dict[str, Any]) -> dict[str, Any]:
            return self._call(
                "list reversals",
                transfer_id,
                lambda: client.v1.transfers.reversals.list(
                    transfer_id, cast("TransferReversalListParams", params)
                ).to_dict(),
            )

        pages = forward_items(fetch, {"limit": PAGE_LIMIT}, starting_after=starting_after)
        for item in pages:
            yield self._convert(
                functools.partial(ReversalRecord.from_stripe, item, transfer_id=transfer_id)
            )

    def _iter_refund_pages(
        self, params: dict[str, Any], about: str | None
    ) -> Iterator[RefundSnapshot]:
        client = self._stripe()

        def fetch(page_params: dict[str, Any]) -> dict[str, Any]:
            return self._call(
                "list refunds",
                about,
                lambda: client.raw_request("get", "/v1/refunds", **page_params).data,
            )

        for item in forward_items(fetch, params):
            yield self._convert(functools.partial(RefundSnapshot.from_dict, item))

    def _events_page(self, params: dict[str, Any]) -> dict[str, Any]:
        client = self._stripe()
        try:
            return self._call(
                "list events",
                None,
                lambda: client.raw_request("get", "/v1/events", **params).data,
            )
        except StripeSentinel as err:
            cursor = params.get("ending_before") or params.get("starting_after")
            # Stripe answers an unknown list cursor as a missing object (400; 404
            # from some proxies): for an event, that is one past its 30 days.
            if cursor and err.stripe_code == "resource_missing" and err.http_status in (400, 404):
                raise StripeCursorExpired(
                    f"Stripe no longer has event {cursor} to list from: {err.message}",
                    http_status=err.http_status,
                    stripe_code=err.stripe_code,
                    request_id=err.request_id,
                ) from err
            raise

    def _event_records(self, items: Iterator[dict[str, Any]]) -> Iterator[StripeEventRecord]:
        for item in items:
            yield self._convert(functools.partial(StripeEventRecord.from_dict, item))

    def _snapshot(self, data: Mapping[str, Any]) -> TransferSnapshot:
        embedded, has_more = embedded_reversals(data)
        extra: tuple[ReversalRecord, ...] = ()
        if has_more:
            # The embedded list is the newest ten; continue after the oldest.
            after = str(embedded[-1]["id"]) if embedded else None
            extra = tuple(self._iter_reversals(str(data["id"]), starting_after=after))
        return self._convert(lambda: TransferSnapshot.from_dict(data, extra_reversals=extra))

    def _convert(self, build: Callable[[], T]) -> T:
        # A response we cannot read is Stripe-side weirdness: transient, so the
        # row is retried (after looking for its reversal) rather than crashing.
        try:
            return build()
        except Exception as err:
            failure: BaseException = err
        self._raise_sentinel(failure)

    def _call(
        self,
        what: str,
        about: str | None,
        fn: Callable[[], T],
        missing: NotFound = TransferNotFound,
    ) -> T:
        deadline = time.monotonic() + self.rate_limit_max_wait_seconds
        while True:
            try:
                return fn()
            except ReversalPipelineError:
                raise
            except stripe.RateLimitError as err:
                # The paced client has already slowed the shared bucket; the
                # next attempt waits its turn behind the pause.
                bucket = self._bucket
                delay = bucket.expected_delay() if bucket is not None else 0.0
                if time.monotonic() + delay <= deadline:
                    self._counter.add("rate_limited_retries")
                    log.info(
                        "Stripe rate-limited %s%s; re-sending in ~%.2fs",
                        what,
                        f" on {about}" if about else "",
                        delay,
                    )
                    continue
                failure: BaseException = err
            except Exception as err:
                failure = err
            # Raised outside the except blocks so that, when we must drop the
            # original (see below), it is not kept as implicit __context__.
            self._raise_sentinel(failure, missing)

    def _raise_sentinel(self, err: BaseException, missing: NotFound = TransferNotFound) -> NoReturn:
        sentinel = classify_stripe_error(err, missing)
        key = self.api_key
        if key and _mentions(err, key):
            # Only if a server echoed the key back: keep Stripe's wording,
            # masked, and drop the original exception that carries it.
            sentinel.message = sentinel.message.replace(key, mask_secret(key))
            sentinel.args = (sentinel.message,)
            if isinstance(sentinel, TransientStripeError):
                sentinel.original = None
            raise sentinel from None
        raise sentinel from err
