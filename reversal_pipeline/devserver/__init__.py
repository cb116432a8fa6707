"""The local stack behind ``reversal-pipeline dev`` and the demo.

``home`` prepares the Dagster instance folder and its PostgreSQL storage (the
demo and ``dev`` share it, so the demo's runs show when the UI opens);
``stack`` starts what is missing (embedded PostgreSQL, the Stripe emulator)
and then ``dagster dev``, and stops all of it on Ctrl-C.
"""
