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
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from http.cookiejar import DefaultCookiePolicy
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import dagster as dg
import requests
import stripe
from pydantic import Field, PrivateAttr
from requests.adapters import HTTPAdapter
from stripe.params import TransferReversalListParams

from reversal_pipeline.errors import (
    ConfigurationError,
    ReversalPipelineError,
    TransientStripeError,
)
from reversal_pipeline.stripe.classify import classify_stripe_error
from reversal_pipeline.stripe.models import ReversalRecord, TransferSnapshot, embedded_reversals
from reversal_pipeline.stripe.rate_limit import TokenBucket
from reversal_pipeline.stripe.shared_budget import Priority, SharedBudget, open_shared_budget

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Metadata key on a reversal that names the ``seller_transfers`` row it was made for.
SELLER_TRANSFER_ID_KEY = "seller_transfer_id"

#: Keys of ``StripeResource.calls_made``. HTTP kinds count attempts on the wire.
CALL_KINDS = (
    "create_reversal",
    "retrieve_transfer",
    "list_transfers",
    "list_reversals",
    "other",
    "rate_limited_retries",
)

# A fraction of Stripe's ~25 (test) / ~100 (live) requests/s, leaving the rest
# to the application's own calls on the same account.
DEFAULT_RPS_TEST = 20.0
DEFAULT_RPS_LIVE = 80.0

# The job runs up to ~32 worker threads; each should find a pooled keep-alive
# connection instead of opening (and TLS-handshaking) a new one per request.
_POOL_MAXSIZE = 32

# Pacing against a server that counts requests in a sliding second: sending at
# exactly the budget means any arrival jitter (GIL hand-offs, the network, the
# server's own timers) puts budget + 1 requests in some second and draws a 429.
# At 97% a request must arrive ~30 ms later than the one `budget` places behind
# it before the window overflows. Measured (benchmarks/throughput.py, 100 rps
# budget and limit): exact pacing drew a 429 every few seconds and, with the
# old 1 s pause and halving, delivered 65% of the budget.
_PACING_HEADROOM = 0.97
# After a 429: pause everyone for a moment, slow down by a tenth, regain the full
# rate within about a second (additive increase, multiplicative decrease).
# Repeated 429s still compound down to the floor (10% of the budget), so a budget
# shared with other traffic backs off; a lone 429 from arrival jitter costs ~10
# requests instead of the ~34 a 0.25 s pause and a fifth off cost. Measured with
# benchmarks/throughput.py (3,000 rows at 100 rps): 94.4/s before, 94.8/s after;
# pause 0.02 s with a twentieth off gave the same, so this is not where the rest goes.
_PENALTY_PAUSE_SECONDS = 0.05
_PENALTY_DECREASE_FACTOR = 0.9
_PENALTY_RECOVERY_PER_SECOND = 0.1

_PAGE_LIMIT = 100
_MAX_IDEMPOTENCY_KEY_LENGTH = 255

_REVERSALS_PATH = re.compile(r"/v1/transfers/[^/]+/reversals/?$")
_TRANSFER_PATH = re.compile(r"/v1/transfers/[^/]+/?$")
_TRANSFERS_PATH = re.compile(r"/v1/transfers/?$")


def mask_secret(secret: str) -> str:
    """``sk_test_…3456``: enough for an operator to tell keys apart, like Stripe's own masking."""
    if not secret:
        return "<empty>"
    prefix = re.match(r"^[a-z]{2,4}_(?:test_|live_)?", secret)
    head = prefix.group(0) if prefix else ""
    return f"{head}…{secret[-4:]}" if len(secret) >= len(head) + 12 else f"{head}…"


class _RedactSecrets(logging.Filter):
    """Scrubs known keys from records of the ``stripe`` logger.

    The SDK never logs the Authorization header (checked in stripe 16:
    ``_api_requestor`` logs method, URL, form body and response body), but it
    does log response bodies at DEBUG, and a proxy or a non-Stripe server may
    echo the key in an error body. This closes that door for the logging
    path; the SDK's ``stripe.log``/``STRIPE_LOG`` console printing bypasses
    logging and must stay off in production.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        with self._lock:
            self._secrets = self._secrets | {secret}

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        if secrets:
            text = record.getMessage()
            if any(s in text for s in secrets):
                for s in secrets:
                    text = text.replace(s, mask_secret(s))
                record.msg, record.args = text, None
        return True


_STRIPE_LOG_FILTER = _RedactSecrets()
logging.getLogger("stripe").addFilter(_STRIPE_LOG_FILTER)


class CallCounter:
    """Thread-safe counts of Stripe HTTP attempts by kind, plus 429 re-sends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(CALL_KINDS, 0)

    def add(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def _call_kind(method: str, url: str) -> str:
    path = urlsplit(url).path
    if _REVERSALS_PATH.search(path):
        return "create_reversal" if method == "post" else "list_reversals"
    if method == "get" and _TRANSFERS_PATH.search(path):
        return "list_transfers"
    if method == "get" and _TRANSFER_PATH.search(path):
        return "retrieve_transfer"
    return "other"


class _PacedRequestsClient(stripe.RequestsClient):
    """The SDK's requests client, with every attempt paced, counted and 429-aware.

    Hooked at ``request()`` (one call per HTTP attempt, below the SDK's retry
    loop) because that is the only place that also sees the SDK's own retries
    and the pages of a listing; wrapping service calls would miss both.

    Thread safety: given no session, ``RequestsClient`` makes one
    ``requests.Session`` per *thread* (``threading.local``), so every worker
    thread gets its own small pool and ``close()`` only closes the caller's.
    We pass one shared session instead, whose ``HTTPAdapter`` (urllib3's
    thread-safe pool) keeps up to ``_POOL_MAXSIZE`` connections per host.
    ``Session.request`` with per-call headers is safe to share; the one piece
    of shared mutable state, the cookie jar, is told to accept nothing.
    """

    def __init__(
        self,
        *,
        bucket: TokenBucket | SharedBudget,
        counter: CallCounter,
        timeout: float,
        session: requests.Session,
    ) -> None:
        super().__init__(timeout=timeout, session=session)
        self._bucket = bucket
        self._counter = counter

    def request_with_retries(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        post_data: Any = None,
        max_network_retries: int | None = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        # _should_retry is not told the method; remember it for this thread.
        self._thread_local.paced_method = method
        return super().request_with_retries(
            method, url, headers, post_data, max_network_retries, _usage=_usage
        )

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        kind = _call_kind(method, url)
        if isinstance(self._bucket, SharedBudget):
            # Listing is bookkeeping: it takes what reversals leave (shared_budget.py).
            listing = kind == "list_transfers"
            self._bucket.acquire(Priority.LISTING if listing else Priority.REVERSAL)
        else:
            self._bucket.acquire()
        self._counter.add(kind)
        content, status, rheaders = super().request(method, url, headers, post_data)
        if status == 429:
            self._bucket.penalize()
        return content, status, rheaders

    def _handle_request_error(self, e: Exception) -> NoReturn:
        # The SDK retries only requests' ConnectionError/Timeout. A connection
        # that drops mid-body (ChunkedEncodingError: the answer was lost after
        # Stripe committed it) is the very case a same-key retry recovers, and
        # every request here is safe to repeat: GETs, and POSTs that always
        # carry an idempotency key.
        try:
            super()._handle_request_error(e)
        except stripe.APIConnectionError as err:
            if isinstance(e, requests.exceptions.ChunkedEncodingError):
                err.should_retry = True
            raise

    def _should_retry(
        self,
        response: tuple[Any, int, Mapping[str, str] | None] | None,
        api_connection_error: stripe.APIConnectionError | None,
        num_retries: int,
        max_network_retries: int | None,
    ) -> bool:
        # A POST answered 500 reached Stripe's idempotency layer, which stored
        # that 500: re-sending with the same key only replays it, one wasted
        # request per retry. Stripe says so with ``Stripe-Should-Retry:
        # false``; a server that omits the header (the emulator, a proxy) gets
        # the same treatment unless it says "true". 502/503/504 come from the
        # edge before anything is stored, and connection errors and 409 (key
        # in use) are exactly where a same-key retry recovers a lost response:
        # those keep the SDK's retries.
        if response is not None and getattr(self._thread_local, "paced_method", None) == "post":
            _, status, rheaders = response
            should = (rheaders or {}).get("stripe-should-retry")
            if status == 500 and should != "true":
                return False
        return super()._should_retry(
            response, api_connection_error, num_retries, max_network_retries
        )


def _epoch_seconds_ceil(value: datetime, name: str) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value!r}")
    # Stripe's `created` is whole seconds: created >= 10.5 <=> created >= 11,
    # and created < 10.5 <=> created < 11, so both bounds round up.
    return math.ceil(value.timestamp())


class StripeResource(dg.ConfigurableResource):
    """Thread-safe, rate-limited Stripe access that answers in records or error sentinels."""

    api_key: str = Field(
        description="Stripe secret or restricted key; wire it from dg.EnvVar('STRIPE_API_KEY')."
    )
    api_base: str | None = Field(
        default=None,
        description="Stripe-compatible API base URL (STRIPE_API_BASE); unset means Stripe.",
    )
    max_network_retries: int = Field(
        default=2,
        description=(
            "SDK retries, same idempotency key: connection errors, 409, 5xx"
            " (not a POST's 500, which Stripe stored and would only replay)."
        ),
    )
    timeout_seconds: float = Field(default=30, description="Per-request HTTP timeout.")
    requests_per_second: float | None = Field(
        default=None,
        description="Request budget for this resource; unset: 20 for test keys, 80 for live.",
    )
    rate_limit_max_wait_seconds: float = Field(
        default=30,
        description="How long a 429'd request keeps being re-sent before StripeRateLimited.",
    )
    shared_budget_database_url: str | None = Field(
        default=None,
        description=(
            "Database holding the account's shared request budget (REVERSAL_DATABASE_URL);"
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
            problems.append("api_key is empty (set STRIPE_API_KEY)")
        elif self.api_key != self.api_key.strip():
            problems.append("api_key has leading or trailing whitespace")
        if self.api_base is not None and not re.match(r"^https?://[^/\s]+", self.api_base):
            problems.append(f"api_base must be an http(s) URL, got {self.api_base!r}")
        if self.max_network_retries < 0:
            problems.append("max_network_retries must be >= 0")
        if not self.timeout_seconds > 0:
            problems.append("timeout_seconds must be > 0")
        if self.requests_per_second is not None and not self.requests_per_second > 0:
            problems.append("requests_per_second must be > 0")
        if not self.rate_limit_max_wait_seconds >= 0:
            problems.append("rate_limit_max_wait_seconds must be >= 0")
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
                self.effective_requests_per_second * _PACING_HEADROOM,
                description=self._budget_description,
                pause_seconds=_PENALTY_PAUSE_SECONDS,
                decrease_factor=_PENALTY_DECREASE_FACTOR,
                recovery_per_second=_PENALTY_RECOVERY_PER_SECOND,
            )
        if self._bucket is None:
            self._bucket = TokenBucket(
                self.effective_requests_per_second * _PACING_HEADROOM,
                pause_seconds=_PENALTY_PAUSE_SECONDS,
                decrease_factor=_PENALTY_DECREASE_FACTOR,
                recovery_per_second=_PENALTY_RECOVERY_PER_SECOND,
            )
        session = requests.Session()
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        # requests re-reads the whole environment for proxy settings on every
        # request (twice per Stripe call): under yappi that was a third of the
        # client's CPU per reversal (benchmarks/pipeline_cost.py), and far worse
        # in containers with thousands of variables (psf/requests#5600). The
        # environment does not change under a running job, so the proxies it
        # names (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY) are read once here, for
        # the API host, exactly as requests would apply them, and the
        # per-request scan is off. That also stops a ~/.netrc entry from
        # replacing the SDK's Authorization header. TLS verification is
        # unaffected: the SDK always passes its own CA bundle.
        session.trust_env = False
        session.proxies.update(
            requests.utils.get_environ_proxies(self.api_base or stripe.DEFAULT_API_BASE)
        )
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=_POOL_MAXSIZE)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
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
        # Checked as an object: callers outside the type checker pass numpy integers (kept,
        # they are Integral) or floats (refused). Checked as an int, mypy (which does not
        # know int is registered as Integral) thought the raise always ran and skipped the
        # rest of this method as unreachable.
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
        params: dict[str, Any] = {"created": {"gte": gte, "lt": lt}, "limit": _PAGE_LIMIT}
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

    # -- internals -----------------------------------------------------------

    # We page by hand instead of ListObject.auto_paging_iter(): its generator
    # dies on the first exception, so a 429'd page could not be re-sent, and
    # its page fetches happen inside the SDK where we cannot classify them.
    # The loop is a few lines and keeps one page in memory, like the SDK's.

    def _iter_transfer_pages(self, params: dict[str, Any]) -> Iterator[TransferSnapshot]:
        client = self._stripe()
        starting_after: str | None = None
        while True:
            page_params = dict(params)
            if starting_after is not None:
                page_params["starting_after"] = starting_after
            # raw_request: same requestor, pacing, retries and errors as
            # transfers.list(), but the page stays the parsed JSON. Building
            # StripeObjects for 100 transfers (then to_dict() back) took ~90% of
            # each page's time, 10,000 pages for a 1,000,000-transfer day.
            page = self._call(
                "list transfers", None, functools.partial(_raw_transfers_page, client, page_params)
            )
            items = page.get("data") or []
            for item in items:
                yield self._snapshot(item)
            if not page.get("has_more") or not items:
                return
            starting_after = str(items[-1]["id"])

    def _iter_reversals(
        self, transfer_id: str, *, starting_after: str | None = None
    ) -> Iterator[ReversalRecord]:
        client = self._stripe()
        while True:
            params: TransferReversalListParams = {"limit": _PAGE_LIMIT}
            if starting_after is not None:
                params["starting_after"] = starting_after
            page = self._call(
                "list reversals",
                transfer_id,
                functools.partial(_reversals_page, client, transfer_id, params),
            )
            items = page.get("data") or []
            for item in items:
                yield self._convert(
                    functools.partial(ReversalRecord.from_stripe, item, transfer_id=transfer_id)
                )
            if not page.get("has_more") or not items:
                return
            starting_after = str(items[-1]["id"])

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

    def _call(self, what: str, transfer_id: str | None, fn: Callable[[], T]) -> T:
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
                        f" on {transfer_id}" if transfer_id else "",
                        delay,
                    )
                    continue
                failure: BaseException = err
            except Exception as err:
                failure = err
            # Raised outside the except blocks so that, when we must drop the
            # original (see below), it is not kept as implicit __context__.
            self._raise_sentinel(failure)

    def _raise_sentinel(self, err: BaseException) -> NoReturn:
        sentinel = classify_stripe_error(err)
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


def _mentions(err: BaseException, secret: str) -> bool:
    texts: list[object] = [str(err), repr(err), getattr(err, "http_body", None)]
    return any(isinstance(t, str) and secret in t for t in texts)


# Page fetchers for ``_call``, bound with functools.partial inside the paging loops: a
# lambda there must bind the loop's values through default arguments, which hides its
# type from the type checker.
def _raw_transfers_page(client: stripe.StripeClient, params: dict[str, Any]) -> Any:
    return client.raw_request("get", "/v1/transfers", **params).data


def _reversals_page(
    client: stripe.StripeClient, transfer_id: str, params: TransferReversalListParams
) -> dict[str, Any]:
    return client.v1.transfers.reversals.list(transfer_id, params).to_dict()
