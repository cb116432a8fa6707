"""The parent/child scaffold of the reconciliation benchmarks.

The parent seeds a database and an in-process emulator, then measures the run
in a child process so the child's peak RSS is the run's own (not the seeding's).
The child prints one JSON object per line behind a marker; the parent reads
them back. Shared by ``reconciliation.py`` and ``refund_reconciliation.py``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from _common import API_KEY

from reversal_pipeline.stripe.resource import StripeResource

RESULT = "RESULT "


def child_stripe(stripe_url: str) -> StripeResource:
    """The child's Stripe resource: the emulator, unpaced (the figure is the run's own)."""
    return StripeResource(api_key=API_KEY, api_base=stripe_url, requests_per_second=1e6)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(fields: dict[str, Any], marker: str = RESULT) -> None:
    """In the child: one line for the parent."""
    print(marker + json.dumps(fields), flush=True)


def run_child(
    script: str, args: Sequence[str], *, timeout: float, marker: str = RESULT
) -> list[dict[str, Any]]:
    """Run ``script`` with ``args`` in a child; its report lines, or exit with its output."""
    proc = subprocess.run(
        [sys.executable, script, *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(marker)]
    if proc.returncode != 0 or not lines:
        print(proc.stdout[-2000:], proc.stderr[-4000:])
        raise SystemExit(f"child failed with {proc.returncode}")
    return [json.loads(line[len(marker) :]) for line in lines]
