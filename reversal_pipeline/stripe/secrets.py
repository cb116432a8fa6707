"""Keeping the Stripe key out of logs and exceptions.

``mask_secret`` is how a key may be shown; ``_STRIPE_LOG_FILTER`` masks every key
a resource has used in the records of the SDK's ``stripe`` logger, installed
once at import.
"""

from __future__ import annotations

import logging
import re
import threading


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


def _mentions(err: BaseException, secret: str) -> bool:
    texts: list[object] = [str(err), repr(err), getattr(err, "http_body", None)]
    return any(isinstance(t, str) and secret in t for t in texts)
