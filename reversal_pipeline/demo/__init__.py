"""``reversal-pipeline demo``: a realistic marketplace, the cases an operator must see, the runs.

Read in order: ``marketplace`` (sellers, orders, transfers at the emulator and
in the database, refunds), ``cases`` (what goes wrong on purpose), ``run``
(the ticks and the reconciliation, through the persistent Dagster instance),
``summary`` (what the terminal shows at the end).
"""
