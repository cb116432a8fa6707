"""Everything the pipeline needs from Stripe, behind one resource.

``StripeResource`` makes the calls; ``classify_stripe_error`` is the single
place that turns Stripe's answers into the sentinels of
``reversal_pipeline.errors``; ``TokenBucket`` keeps all threads under the
account's request budget; the models are the plain records callers get back.
"""

from reversal_pipeline.stripe.classify import classify_stripe_error, is_already_reversed_message
from reversal_pipeline.stripe.models import (
    ChargeSnapshot,
    RefundSnapshot,
    ReversalRecord,
    StripeEventRecord,
    TransferSnapshot,
)
from reversal_pipeline.stripe.rate_limit import TokenBucket
from reversal_pipeline.stripe.resource import (
    CALL_KINDS,
    SELLER_TRANSFER_ID_KEY,
    StripeResource,
    mask_secret,
)

__all__ = [
    "CALL_KINDS",
    "SELLER_TRANSFER_ID_KEY",
    "ChargeSnapshot",
    "RefundSnapshot",
    "ReversalRecord",
    "StripeEventRecord",
    "StripeResource",
    "TokenBucket",
    "TransferSnapshot",
    "classify_stripe_error",
    "is_already_reversed_message",
    "mask_secret",
]
