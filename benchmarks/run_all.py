"""Run every benchmark of issue 8 once, in order, and keep the full output.

    uv run python benchmarks/run_all.py            # the recorded sizes (see README.md)
    uv run python benchmarks/run_all.py --quick    # small sizes, for a smoke run

Output goes to the terminal and to ``benchmarks/results/run-<UTC time>.txt``;
``RESULTS.md`` is written from that file.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import machine_line

HERE = Path(__file__).resolve().parent

RECORDED = {
    "throughput": ["--rows", "10000", "--rows-25", "2500"],
    "pipeline_cost": ["--rows", "3000", "--profile-rows", "500"],
    "memory": ["--backlogs", "10000", "100000", "--batch", "2000"],
    "baseline": ["--rows", "1000"],
    "reconciliation": ["--sizes", "100000", "1000000"],
}
QUICK = {
    "throughput": ["--rows", "500", "--rows-25", "125"],
    "pipeline_cost": ["--rows", "500", "--profile-rows", "100"],
    "memory": ["--backlogs", "500", "5000", "--batch", "500"],
    "baseline": ["--rows", "50"],
    "reconciliation": ["--sizes", "10000", "20000"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="script names to run")
    args = parser.parse_args()
    plan = QUICK if args.quick else RECORDED
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_path = out_dir / f"run-{stamp}{'-quick' if args.quick else ''}.txt"
    job_rate: str | None = None
    with log_path.open("w") as log:

        def emit(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()
            log.write(text)
            log.flush()

        emit(f"run_all {stamp} ({'quick' if args.quick else 'recorded sizes'})\n")
        emit(machine_line() + f", nproc {os.cpu_count()}\n")
        for name, script_args in plan.items():
            if args.only and name not in args.only:
                continue
            extra = ["--job-rate", job_rate] if name == "baseline" and job_rate else []
            command = [sys.executable, str(HERE / f"{name}.py"), *script_args, *extra]
            emit(f"\n$ uv run python benchmarks/{name}.py {' '.join(script_args + extra)}\n")
            started = time.perf_counter()
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=HERE
            )
            assert proc.stdout is not None
            output: list[str] = []
            for line in proc.stdout:
                output.append(line)
                emit(line)
            code = proc.wait()
            emit(f"[{name}: exit {code}, {time.perf_counter() - started:.0f}s]\n")
            if name == "throughput":
                found = re.search(r"reversals/s, reversal step @100\s+([0-9.]+)", "".join(output))
                job_rate = found.group(1) if found else None
        emit("\n" + machine_line() + " (at the end)\n")
    print(f"\nfull output: {log_path}")


if __name__ == "__main__":
    main()
