"""Reading and masking database URLs.

A URL with a password must never reach a log line, metadata or an exception,
so every place that shows a URL goes through ``mask_url``.
"""

from __future__ import annotations

import sqlalchemy as sa

from reversal_pipeline.environment import DATABASE_URL_ENV, setting
from reversal_pipeline.errors import ConfigurationError


def normalize_url(url: str) -> str:
    """Use the psycopg 3 driver for plain ``postgresql://`` URLs.

    Operators paste the URL their provider shows them; SQLAlchemy would pick
    psycopg2 for ``postgresql://``, which the project does not install.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def mask_url(url: str | sa.URL) -> str:
    """The URL as it may be shown to a person: the password replaced by ``***``."""
    try:
        parsed = sa.make_url(url) if isinstance(url, str) else url
    except Exception:  # an unparseable URL may still hold a password: show nothing of it
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def describe_target(url: str | sa.URL) -> str:
    """Host (or socket folder), port and database of a URL, for one-line errors."""
    parsed = sa.make_url(url) if isinstance(url, str) else url
    host = parsed.host or parsed.query.get("host") or "localhost"
    if isinstance(host, tuple):
        host = ",".join(host)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{host}{port}/{parsed.database or ''}"


def database_url_from_env() -> str | None:
    """The application database URL from ``REVERSAL_DATABASE_URL``, or None when unset."""
    raw = setting(DATABASE_URL_ENV)
    if not raw:
        return None
    url = normalize_url(raw)
    try:
        sa.make_url(url)
    except Exception as exc:
        raise ConfigurationError(
            f"{DATABASE_URL_ENV} is not a valid SQLAlchemy URL ({type(exc).__name__})"
        ) from None
    return url
