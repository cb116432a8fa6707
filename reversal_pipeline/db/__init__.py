"""The application database: engine, tables, migrations and queries.

Nothing in this package knows whether the server is embedded; only
``reversal_pipeline.db.embedded`` does, and only the CLI calls it.
"""
