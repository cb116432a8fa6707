"""Mutation testing of the money path with mutmut 3 (slow; not in CI).

For each module, a throwaway copy of the repository is made (tracked files
only), ``[tool.mutmut]`` is set in its ``pyproject.toml`` to mutate that one
file against its targeted test files, and ``mutmut run`` is started there under
a time bound (SIGINT at the bound: mutmut stops and keeps what it checked). Then
``mutmut results --all true`` is read and killed/survived are printed per
module.

Why a copy per module: mutmut 3 reads its configuration from the working
directory and writes ``mutants/`` there; a copy keeps the worktree clean and
lets modules run one after the other with different test selections.

Each pytest session mutmut starts (one per mutant, forked) gets its own base
temp directory (``tests/conftest.py``): a shared ``/tmp/pytest-of-root`` once
made PostgreSQL fail under parallel sessions, and mutmut counted those failures
as kills. A module whose tests need PostgreSQL (``database=True``) gets one
embedded server for its whole run, handed to every session through
``TEST_DATABASE_URL``: starting one per mutant took ~25 s on a loaded machine,
longer than the tests. The template is migrated once, before the run, and
handed over through ``TEST_DATABASE_TEMPLATE`` (a migration per session was
most of a killed mutant's time); each test clones its own database from it,
so sessions running at once share nothing but the server and a template
nobody writes to; if the server is not answering at the end of the run,
the module is reported as not measured (its failures would have counted as
kills). The script also refuses a module whose targeted tests fail on the
unmutated code (mutmut's clean run).

    uv run python benchmarks/mutation.py                      # every module
    uv run python benchmarks/mutation.py classify backoff     # some modules
    uv run python benchmarks/mutation.py --time-limit 600 --max-children 2 reverse
    uv run python benchmarks/mutation.py batch --only _finish --only _account  # some functions

Kill rate = (killed + timeout) / (killed + timeout + survived); mutants not
checked before the time bound are reported apart, never counted as kills.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from reversal_pipeline.db import migrate
from reversal_pipeline.db.embedded import ensure_database, throwaway_embedded_server
from reversal_pipeline.db.engine import create_db_engine

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    source: str
    tests: tuple[str, ...]
    #: The tests need PostgreSQL: one server is started for the module's whole run.
    database: bool = False


TARGETS: dict[str, Target] = {
    "classify": Target(
        "reversal_pipeline/stripe/classify.py",
        ("tests/stripe/test_classify.py", "tests/stripe/test_classify_mutants.py"),
    ),
    "backoff": Target(
        "reversal_pipeline/reversals/backoff.py",
        ("tests/reversals/test_backoff.py", "tests/reversals/test_backoff_mutants.py"),
    ),
    # outcome and reverse are plain functions of a row and a decision: their targeted
    # tests need no database (reverse talks to the emulator only), about a second each.
    "outcome": Target(
        "reversal_pipeline/reversals/outcome.py",
        ("tests/reversals/test_outcome_mutants.py",),
    ),
    "reverse": Target(
        "reversal_pipeline/reversals/reverse.py",
        ("tests/reversals/test_reverse_mutants.py",),
    ),
    "batch": Target(
        "reversal_pipeline/reversals/batch.py",
        # test_fencing.py: the batch's claim, its first page then the rest, and a stop.
        ("tests/reversals/test_batch_mutants.py", "tests/reversals/test_fencing.py"),
        database=True,
    ),
    "writer": Target(
        "reversal_pipeline/reversals/writer.py",
        ("tests/reversals/test_writer.py", "tests/reversals/test_writer_mutants.py"),
        database=True,
    ),
    # Reconciliation (issue 13): the comparison, its frames and the findings store.
    # Focused selections (no Dagster, no emulator; compare's without a database). frames
    # and store read and write PostgreSQL: without database=True every mutant's session
    # started its own embedded server and migrated it (most of a killed mutant's time).
    "compare": Target(
        "reversal_pipeline/reconciliation/compare.py",
        ("tests/reconciliation/test_compare.py", "tests/reconciliation/test_compare_mutants.py"),
    ),
    "frames": Target(
        "reversal_pipeline/reconciliation/frames.py",
        (
            "tests/reconciliation/test_compare.py",
            "tests/reconciliation/test_frames.py",
            "tests/reconciliation/test_frames_mutants.py",
        ),
        database=True,
    ),
    "store": Target(
        "reversal_pipeline/reconciliation/store.py",
        ("tests/reconciliation/test_store.py", "tests/reconciliation/test_store_mutants.py"),
        database=True,
    ),
}

#: Every pytest session mutmut starts: one process (mutmut runs its own workers), no
#: coverage (mutmut measures its own), no cache written into the copy.
PYTEST_ARGS = ["-n", "0", "--no-cov", "-p", "no:cacheprovider", "-x", "-q"]
KEEP = bool(os.environ.get("MUTATION_KEEP"))  # keep the copies, for debugging a run
RESULT_LINE = re.compile(r"^\s*(\S+): (.+)$")
#: Read by ``tests/plugins/database.py``: use this server instead of starting one.
TEST_DATABASE_URL_ENV = "TEST_DATABASE_URL"
#: Read by ``tests/plugins/database.py``: clone this database, migrated here once.
TEST_DATABASE_TEMPLATE_ENV = "TEST_DATABASE_TEMPLATE"
SHARED_TEMPLATE = "rp_mutation_template"


def tracked_copy(destination: Path) -> None:
    """The repository's tracked files (what a fresh clone has), under ``destination``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = REPO / name.decode()
        if source.is_file():
            target = destination / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def configure(copy: Path, target: Target) -> None:
    existing = [t for t in target.tests if (copy / t).exists()]
    pyproject = copy / "pyproject.toml"
    quoted = ", ".join(f'"{a}"' for a in PYTEST_ARGS)
    tests = ", ".join(f'"{t}"' for t in existing)
    pyproject.write_text(
        pyproject.read_text()
        + "\n[tool.mutmut]\n"
        + f'only_mutate = ["{target.source}"]\n'
        + 'source_paths = ["reversal_pipeline"]\n'
        + f"pytest_add_cli_args = [{quoted}]\n"
        + f"pytest_add_cli_args_test_selection = [{tests}]\n"
        + "use_git_change_detection = false\n"
        # The database tests migrate a template from these (mutmut copies only code).
        + 'also_copy = ["migrations", "alembic.ini", "dagster.yaml", "workspace.yaml"]\n'
    )


def run_module(
    name: str, target: Target, time_limit: float, max_children: int, only: list[str]
) -> Counter[str]:
    copy = Path(tempfile.mkdtemp(prefix=f"mutmut-{name}-"))
    try:
        if not target.database:
            return _measure(name, target, copy, time_limit, max_children, dict(os.environ), only)
        with throwaway_embedded_server(prefix=f"mutmut-{name}-pg-") as server_url:
            _migrate_shared_template(server_url)
            environment = {
                **os.environ,
                TEST_DATABASE_URL_ENV: server_url,
                TEST_DATABASE_TEMPLATE_ENV: SHARED_TEMPLATE,
            }
            statuses = _measure(name, target, copy, time_limit, max_children, environment, only)
            if statuses and not _server_answers(server_url):
                # Every mutant checked after the server died "failed": not kills.
                print(f"{name}: the shared PostgreSQL stopped during the run; not measured")
                return Counter()
            return statuses
    finally:
        if not KEEP:
            shutil.rmtree(copy, ignore_errors=True)


def _migrate_shared_template(server_url: str) -> None:
    """Migrate one template for every session of the run (mutants never touch migrations)."""
    url = ensure_database(server_url, SHARED_TEMPLATE)
    engine = create_db_engine(url)
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()


def _server_answers(server_url: str) -> bool:
    engine = sa.create_engine(server_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT 1")).scalar() == 1
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def _measure(
    name: str,
    target: Target,
    copy: Path,
    time_limit: float,
    max_children: int,
    environment: dict[str, str],
    only: list[str],
) -> Counter[str]:
    tracked_copy(copy)
    configure(copy, target)
    started = time.monotonic()
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    # mutmut matches these with fnmatch against names like
    # reversal_pipeline.reversals.batch.xǁReversalBatchǁ_finish__mutmut_3
    command += [f"*{pattern}*" for pattern in only]
    with open(copy / "mutmut-run.log", "w") as log:
        process = subprocess.Popen(
            command, cwd=copy, stdout=log, stderr=subprocess.STDOUT, env=environment
        )
        try:
            process.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            process.send_signal(2)  # SIGINT: mutmut stops and saves what it checked
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    elapsed = time.monotonic() - started
    run_log = (copy / "mutmut-run.log").read_text(errors="replace")
    if "Failed to run clean test" in run_log or "failed to collect stats" in run_log:
        print(f"{name}: the targeted tests fail on the unmutated code; not measured")
        print(run_log[-3000:])
        return Counter()
    results = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=copy,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    by_mutant: dict[str, str] = {}  # mutmut may list a mutant twice; count each once
    for line in results.splitlines():
        match = RESULT_LINE.match(line)
        if match:
            by_mutant[match.group(1)] = match.group(2)
    if only:  # mutants outside the selection are listed "not checked": leave them out
        by_mutant = {
            mutant: status
            for mutant, status in by_mutant.items()
            if any(fnmatch.fnmatch(mutant, f"*{pattern}*") for pattern in only)
        }
    statuses: Counter[str] = Counter(by_mutant.values())
    survivors = sorted(name for name, status in by_mutant.items() if status == "survived")
    killed = statuses["killed"] + statuses["timeout"]
    checked = killed + statuses["survived"]
    rate = f"{100 * killed / checked:.1f}%" if checked else "n/a"
    others = {k: v for k, v in statuses.items() if k not in ("killed", "timeout", "survived")}
    print(
        f"{name:9} {target.source}: {sum(statuses.values())} mutants, killed {killed}, "
        f"survived {statuses['survived']}, kill rate {rate}, other {others or '{}'} "
        f"({elapsed:.0f} s)",
        flush=True,
    )
    mutated = (copy / "mutants" / target.source).read_text(errors="replace").splitlines()
    for survivor in survivors:
        print(f"  survived {survivor}: {mutant_diff(mutated, survivor)[:300]}")
    return statuses


def mutant_diff(mutated: list[str], mutant: str) -> str:
    """The lines a mutant changes, read from mutmut's ``mutants/`` copy of the source.

    ``mutmut show`` gives the same, but starts a Python per survivor (minutes for a
    few dozen on a loaded machine); mutmut 3 keeps each mutant as a function
    ``<name>__mutmut_<n>`` next to ``<name>__mutmut_orig``, so a diff of the two does.
    """
    function = mutant.rsplit(".", 1)[-1]
    original = re.sub(r"__mutmut_\d+$", "__mutmut_orig", function)
    changed = difflib.unified_diff(
        _function_body(mutated, original), _function_body(mutated, function), lineterm="", n=0
    )
    return " | ".join(
        line.strip() if line[:1] not in "+-" else f"{line[0]} {line[1:].strip()}"
        for line in changed
        if line[:1] in "+-" and line[1:].strip() and not line.startswith(("+++", "---"))
    )


def _function_body(lines: list[str], name: str) -> list[str]:
    """The lines of ``def name(`` after its first (that one names the mutant)."""
    start = next((i for i, line in enumerate(lines) if f"def {name}(" in line), None)
    if start is None:
        return []
    indent = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start + 1 :]:
        outdented = line.strip() and len(line) - len(line.lstrip()) <= indent
        if outdented and not line.lstrip().startswith(")"):  # ")": a signature's end
            break
        body.append(line)
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=[], help=f"any of {sorted(TARGETS)}")
    parser.add_argument("--time-limit", type=float, default=900, help="seconds per module")
    parser.add_argument("--max-children", type=int, default=2, help="mutmut's parallel workers")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="only mutants whose name contains NAME (a function, e.g. _finish); repeatable",
    )
    args = parser.parse_args()
    totals: Counter[str] = Counter()
    for name in args.modules or list(TARGETS):
        totals += run_module(name, TARGETS[name], args.time_limit, args.max_children, args.only)
    killed = totals["killed"] + totals["timeout"]
    checked = killed + totals["survived"]
    if checked:
        print(f"total: killed {killed} of {checked} checked ({100 * killed / checked:.1f}%)")


if __name__ == "__main__":
    main()
