"""Telling someone: problems become alerts, alerts go to a webhook. No Dagster here.

- ``problems``: what an alert is about (a failed run, a failed ERROR check, a stale asset),
  its one-line text and its link in the UI.
- ``ledger``: which problems were already alerted and which alerts still wait for delivery;
  kept in the alert sensor's cursor, so one problem is one alert and a receiver that is down
  loses nothing.
- ``delivery``: the Slack-compatible webhook POST, and the scrubbing that keeps secrets out.

The sensor that gathers problems from the Dagster instance is ``defs/alerts``.
"""
