"""The reversal data path, in reading order: intake, claim, reverse, record.

Plain functions over a SQLAlchemy engine and the Stripe resource; the
Dagster layer in ``reversal_pipeline.defs.reversals`` only wires them.
"""
