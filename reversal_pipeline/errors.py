"""The error sentinels every layer routes on.

This module is a leaf: it imports nothing from the package, so the Stripe
resource, the plain core, the Dagster layer and the CLI can all import it
without creating a cycle. Keep it that way: the dependency graph of the
package is a tree with this module at the bottom.

The Stripe sentinels are the contract of ``../shared/DESIGN.md`` ("Stripe error
classification"): the resource turns every ``stripe.StripeError`` into exactly
one of them, and the job decides a row's fate from the sentinel alone.
"""

from __future__ import annotations


class ReversalPipelineError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(ReversalPipelineError):
    """Configuration is missing or out of range.

    Raised before any row is claimed or any Stripe call is made, so a bad
    setting never leaves half-processed work behind.
    """


class DatabaseUnavailable(ReversalPipelineError):
    """The application database cannot be reached.

    Its message names the host with the password masked; the CLI prints it as
    one line instead of a traceback.
    """


class StripeSentinel(ReversalPipelineError):
    """A classified answer from Stripe, carrying what the audit trail needs.

    ``http_status``, ``stripe_code`` and ``request_id`` are copied into the
    ``reversal_attempts`` row; ``message`` is Stripe's own wording (it never
    contains the API key: the SDK does not echo it, and we never add it).
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        stripe_code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.stripe_code = stripe_code
        self.request_id = request_id


class StripeObjectNotFound(StripeSentinel):
    """Stripe has no such object (404 ``resource_missing``); a subclass names which kind.

    The resource raises the subclass of the object it asked for, so a message
    about a missing charge never reads as a missing transfer.
    """


class TransferNotFound(StripeObjectNotFound):
    """Stripe has no such transfer (404 ``resource_missing``).

    The job marks the row ``permanently_failed`` after this one call and never
    retries: the database points at a transfer that does not exist in this
    account and mode, which is a data-integrity incident for a person to look
    at (wrong account, test/live mix-up, or a corrupted id). Retrying cannot
    fix it and would only hide it.
    """


class ChargeNotFound(StripeObjectNotFound):
    """Stripe has no such charge (404 ``resource_missing``): the refund intake's lookup of a
    refund's charge, a wrong id or another account or mode."""


class RefundNotFound(StripeObjectNotFound):
    """Stripe has no such refund (404 ``resource_missing``): an id from an event or a
    command that this account and mode do not know."""


class TransferAlreadyReversed(StripeSentinel):
    """Stripe says the transfer is already (fully) reversed (400, no code).

    Benign when the transfer really is reversed for at least the row's amount:
    somebody reversed it out of band (Dashboard, support script) or a reply
    was lost. The job confirms that on the transfer before marking the row
    ``reversed``; otherwise the row fails for a person to look at.
    """


class TransientStripeError(StripeSentinel):
    """Anything that may succeed later: 5xx, 409, 429, network, other 4xx.

    The job retries it with exponential backoff and a fresh idempotency key per
    attempt, and marks the row ``permanently_failed`` with the last error once
    ``max_attempts`` is reached. ``original`` keeps the SDK's exception for
    logs and debugging.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        stripe_code: str | None = None,
        request_id: str | None = None,
        original: BaseException | None = None,
    ) -> None:
        super().__init__(
            message, http_status=http_status, stripe_code=stripe_code, request_id=request_id
        )
        self.original = original


class StripeRateLimited(TransientStripeError):
    """Stripe answered 429 and the resource could not send within its wait budget.

    Not the row's fault: the job sends the same request again in the same run
    (Stripe does not store rate-limited requests, so the same idempotency key
    is safe) and counts an attempt only if the row cannot be sent before the
    run ends.
    """


class StripeSystemicError(StripeSentinel):
    """The key is missing, revoked or lacks permission (401/403).

    Every further call would fail the same way, so the job stops sending,
    releases every unfinished claim without counting an attempt, and fails the
    run with this message for an operator to fix the credentials.
    """


class StripeCursorExpired(StripeSentinel):
    """Stripe no longer knows the event a listing was to continue from.

    Stripe keeps events for 30 days; a cursor older than that (or one from
    another account or mode) is answered as an unknown object. The caller
    falls back to listing by ``created`` from its own high-water mark, so no
    event still kept is skipped.
    """


class InvalidRowError(ReversalPipelineError):
    """A database row cannot be processed as it stands (e.g. a malformed transfer id).

    The message names the row id and what is wrong; the row is surfaced as
    ``permanently_failed`` with that message, never dropped or retried forever.
    """


class OperatorInputError(ReversalPipelineError):
    """The operator asked for something that cannot be done as asked; nothing was changed.

    Raised by the runbook actions (``reversal_pipeline.runbook``) before they
    write anything; the CLI prints its message and exits non-zero.
    """
