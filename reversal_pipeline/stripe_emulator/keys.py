"""Object ids and API keys: id generation, key masking and fingerprints, which keys authenticate."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
from collections.abc import Iterable

from reversal_pipeline.stripe_emulator.errors import EmulatorError

ID_SUFFIX_LENGTH = 24
_B64_TO_ALNUM = bytes.maketrans(b"+/", b"xZ")


def new_ids(prefix: str, count: int, length: int = ID_SUFFIX_LENGTH) -> list[str]:
    """``count`` random ids ``prefix`` + ``length`` alphanumerics, fast enough for 1M.

    One ``os.urandom`` call and one base64 pass instead of a per-character loop:
    a million ids take a fraction of a second.
    """
    if count <= 0:
        return []
    raw_bytes = (length * 3 + 3) // 4  # base64 gives 4 chars per 3 bytes
    chunk = base64.b64encode(os.urandom(raw_bytes * count)).translate(_B64_TO_ALNUM).decode()
    step = len(chunk) // count
    return [prefix + chunk[i : i + length] for i in range(0, step * count, step)]


def new_id(prefix: str, length: int = ID_SUFFIX_LENGTH) -> str:
    return new_ids(prefix, 1, length)[0]


_KEY_PREFIX = re.compile(r"^((?:sk|rk|pk)_(?:test|live)_)(.*)$", re.DOTALL)
VALID_KEY_PREFIXES = ("sk_test_", "sk_live_", "rk_test_", "rk_live_")


def mask_key(api_key: str) -> str:
    """Mask a key as Stripe does in its messages (``sk_test_****abcd``); never the full key.

    The last four characters are shown only when at least five others stay hidden,
    so a short key is masked entirely.
    """
    match = _KEY_PREFIX.match(api_key)
    prefix, secret = (match.group(1), match.group(2)) if match else ("", api_key)
    if len(secret) > 8:
        return prefix + "*" * (len(secret) - 4) + secret[-4:]
    return prefix + "*" * len(secret)


def key_fingerprint(api_key: str) -> str:
    """Stable id for a key, so stores never keep the secret itself."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()[:24]


MISSING_KEY_MESSAGE = (
    "You did not provide an API key. You need to provide your API key in the Authorization"
    " header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See"
    " https://stripe.com/docs/api#authentication for details, or we can help at"
    " https://support.stripe.com/."
)


class KeyRegistry:
    """Which API keys authenticate: the keys the emulator was started with, minus revoked ones.

    Stripe answers 401 for a key it does not know, so by default only the keys
    given at start (and any :meth:`accept`-ed later) authenticate: a client
    wired with the wrong key fails here as it would against Stripe, instead of
    passing unnoticed. ``accept_any=True`` (``--accept-any-key``) admits every
    well-formed key, for ad-hoc use. :meth:`reset` returns to the start rule.
    """

    def __init__(self, api_keys: Iterable[str] = (), *, accept_any: bool = False) -> None:
        self._lock = threading.Lock()
        self._revoked: set[str] = set()
        self._initial: frozenset[str] | None = (
            None if accept_any else frozenset(key_fingerprint(k) for k in api_keys)
        )
        self._required: set[str] | None = None if self._initial is None else set(self._initial)

    @property
    def accepts_any(self) -> bool:
        with self._lock:
            return self._required is None

    def revoke(self, api_key: str) -> None:
        with self._lock:
            self._revoked.add(key_fingerprint(api_key))

    def unrevoke(self, api_key: str) -> None:
        with self._lock:
            self._revoked.discard(key_fingerprint(api_key))

    def accept(self, api_key: str) -> None:
        """Accept one more key (until :meth:`reset`); a no-op when any key is accepted."""
        with self._lock:
            if self._required is not None:
                self._required.add(key_fingerprint(api_key))

    def require(self, api_keys: Iterable[str] | None) -> None:
        """Accept only these keys from now on (``None``: any well-formed key)."""
        with self._lock:
            self._required = None if api_keys is None else {key_fingerprint(k) for k in api_keys}

    def reset(self) -> None:
        """Back to the keys the emulator was started with; nothing revoked."""
        with self._lock:
            self._revoked.clear()
            self._required = None if self._initial is None else set(self._initial)

    def authenticate(self, api_key: str | None) -> bool:
        """Return ``livemode`` for a valid key; raise a 401 :class:`EmulatorError` otherwise."""
        if not api_key:
            raise EmulatorError(401, MISSING_KEY_MESSAGE)
        fingerprint = key_fingerprint(api_key)
        well_formed = api_key.startswith(VALID_KEY_PREFIXES) and api_key.isprintable()
        well_formed = well_formed and " " not in api_key
        with self._lock:
            if fingerprint in self._revoked:
                raise EmulatorError(401, f"Expired API Key provided: {mask_key(api_key)}")
            allowed = self._required is None or fingerprint in self._required
        if not (well_formed and allowed):
            raise EmulatorError(401, f"Invalid API Key provided: {mask_key(api_key)}")
        return "_live_" in api_key[:8]
