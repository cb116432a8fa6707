"""What an operator does by hand: look (status, show) and act (requeue, resolve).

Plain functions over a SQLAlchemy engine (and the Stripe resource for
``resolve``); the CLI only parses arguments and prints. Each action checks
everything before it writes, writes the state change and its audit row in
one transaction, and refuses with an ``OperatorInputError`` otherwise.
"""

# Re-exported so code written against the package before the error moved to
# the leaf ``errors.py`` keeps importing it from here.
from reversal_pipeline.errors import OperatorInputError

__all__ = ["OperatorInputError"]
