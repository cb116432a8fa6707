"""The plain core of the daily reconciliation: no Dagster here, so tests call it directly.

Read in data-path order:

- ``categories``: the kinds of drift, their severity and what an operator does.
- ``frames``: the day's rows (``COPY``) and Stripe's transfers (streamed) as compact frames.
- ``compare``: one merge, one vectorized mask per category -> findings.
- ``store``: upsert/resolve findings and record the run, in one transaction.
- ``report``: markdown for people, CSV/JSON for tools, counts for Dagster metadata.
- ``repair``: fix only the DB side that Stripe proves, audited; never calls Stripe.

The Dagster asset (``defs/reconciliation``) wires these together.
"""
