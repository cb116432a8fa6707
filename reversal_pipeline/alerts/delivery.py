"""Posting an alert to a Slack-compatible incoming webhook, with secrets scrubbed out.

``{"text": ...}`` is what Slack, Mattermost, Teams workflows and any HTTP
receiver accept. The text is built from names and ids only (see
``problems``); ``scrub`` is the second line of defence: it removes anything
shaped like a Stripe key and every secret value of the environment before a
byte leaves the process.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable
from urllib.parse import urlsplit

from reversal_pipeline.environment import WEBHOOK_URL_ENV, secret_names

TIMEOUT_SECONDS = 10.0

#: Environment variables whose values (or whose URL passwords) must never leave in an alert.
SECRET_ENV = secret_names()

_KEY_SHAPED = re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]+|\bwhsec_[A-Za-z0-9]+")
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@", re.I)


class DeliveryFailed(Exception):
    """The receiver did not take the alert (down, refused, or answered non-2xx)."""


def secret_values(environ: os._Environ[str] | dict[str, str] | None = None) -> list[str]:
    """The values to scrub: each secret variable, and the password inside a URL."""
    env = os.environ if environ is None else environ
    secrets: list[str] = []
    for name in SECRET_ENV:
        value = env.get(name) or ""
        if len(value) >= 6:
            secrets.append(value)
        password = urlsplit(value).password if "://" in value else None
        if password and len(password) >= 4:
            secrets.append(password)
    return secrets


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value, key-shaped token and URL credential replaced."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    text = _KEY_SHAPED.sub("[redacted]", text)
    return _URL_CREDENTIALS.sub(r"\g<scheme>[redacted]@", text)


def post_webhook(url: str, text: str, *, timeout: float = TIMEOUT_SECONDS) -> None:
    """POST ``{"text": text}`` as JSON; raise ``DeliveryFailed`` unless the receiver says 2xx.

    The error names the receiver's host only: the webhook URL's path is itself
    a secret (Slack's carries the token).
    """
    host = urlsplit(url).hostname or "?"
    if urlsplit(url).scheme not in ("http", "https"):
        raise DeliveryFailed(f"{WEBHOOK_URL_ENV} must be an http(s) URL")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url,
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as error:
        raise DeliveryFailed(f"alert receiver at {host} answered HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DeliveryFailed(f"alert receiver at {host} unreachable: {reason}") from None
    if not 200 <= status < 300:
        raise DeliveryFailed(f"alert receiver at {host} answered HTTP {status}")
