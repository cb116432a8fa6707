"""The HTTP transport under ``StripeResource``: every attempt paced, counted and 429-aware.

What stripe-python keeps in ``_http_client.py``: sending one request and
deciding whether to send it again. The resource above it maps answers to
records and sentinels; this module only sees requests on the wire.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from http.cookiejar import DefaultCookiePolicy
from typing import Any, NoReturn
from urllib.parse import urlsplit

import requests
import stripe
from requests.adapters import HTTPAdapter

from reversal_pipeline.stripe.rate_limit import TokenBucket
from reversal_pipeline.stripe.shared_budget import Priority, SharedBudget

#: Keys of ``StripeResource.calls_made``. HTTP kinds count attempts on the wire.
CALL_KINDS = (
    "create_reversal",
    "retrieve_transfer",
    "list_transfers",
    "list_reversals",
    "list_events",
    "retrieve_event",
    "list_refunds",
    "retrieve_refund",
    "retrieve_charge",
    "other",
    "rate_limited_retries",
)

# The job runs up to ~32 worker threads; each should find a pooled keep-alive
# connection instead of opening (and TLS-handshaking) a new one per request.
_POOL_MAXSIZE = 32

_REVERSALS_PATH = re.compile(r"/v1/transfers/[^/]+/reversals/?$")
_TRANSFER_PATH = re.compile(r"/v1/transfers/[^/]+/?$")
_TRANSFERS_PATH = re.compile(r"/v1/transfers/?$")
#: GETs of refunds and events (issue 18), by path: each has its own kind.
_READ_PATHS = (
    (re.compile(r"/v1/events/?$"), "list_events"),
    (re.compile(r"/v1/events/[^/]+/?$"), "retrieve_event"),
    (re.compile(r"/v1/refunds/?$"), "list_refunds"),
    (re.compile(r"/v1/refunds/[^/]+/?$"), "retrieve_refund"),
    (re.compile(r"/v1/charges/[^/]+/?$"), "retrieve_charge"),
)
#: Kinds that draw on the shared budget at LISTING priority: reconciliation and the
#: refund intake read; they take what reversals leave (shared_budget.py).
LISTING_KINDS = frozenset(
    {"list_transfers", "list_events", "retrieve_event", "list_refunds", "retrieve_refund",
     "retrieve_charge"}
)  # fmt: skip


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


def pooled_session(api_base: str) -> requests.Session:
    """One session for all of a resource's threads: a shared pool, no cookies, proxies read once.

    requests re-reads the whole environment for proxy settings on every
    request (twice per Stripe call): under yappi that was a third of the
    client's CPU per reversal (benchmarks/pipeline_cost.py), and far worse
    in containers with thousands of variables (psf/requests#5600). The
    environment does not change under a running job, so the proxies it
    names (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY) are read once here, for
    the API host, exactly as requests would apply them, and the
    per-request scan is off. That also stops a ~/.netrc entry from
    replacing the SDK's Authorization header. TLS verification is
    unaffected: the SDK always passes its own CA bundle.
    """
    session = requests.Session()
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(api_base))
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=_POOL_MAXSIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _call_kind(method: str, url: str) -> str:
    path = urlsplit(url).path
    if _REVERSALS_PATH.search(path):
        return "create_reversal" if method == "post" else "list_reversals"
    if method == "get" and _TRANSFERS_PATH.search(path):
        return "list_transfers"
    if method == "get" and _TRANSFER_PATH.search(path):
        return "retrieve_transfer"
    if method == "get":
        for pattern, kind in _READ_PATHS:
            if pattern.search(path):
                return kind
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
            listing = kind in LISTING_KINDS
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
