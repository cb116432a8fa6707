"""Run the emulator: in a background thread for tests, or in the foreground for the CLI.

The socket is bound before uvicorn starts (port 0 picks a free port), so the
URL is known and valid as soon as ``start`` returns and two test sessions never
race for a port. uvicorn runs with ``log_config=None`` so embedding the
emulator never reconfigures the host process's logging.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import uvicorn

from reversal_pipeline.stripe_emulator.app import EmulatorApp
from reversal_pipeline.stripe_emulator.control_client import EmulatorClient
from reversal_pipeline.stripe_emulator.faults import FaultConfig, Faults
from reversal_pipeline.stripe_emulator.state import (
    DEFAULT_IDEMPOTENCY_TTL_SECONDS,
    EmulatorClock,
    EmulatorState,
    load_snapshot,
    save_snapshot,
)

if TYPE_CHECKING:
    import stripe

DEFAULT_PORT = 12111


def _http_implementation() -> str:
    """httptools when installed (several times faster than h11), else h11."""
    return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


def _bind(host: str, port: int) -> socket.socket:
    """Bind a listening socket; ``IPPROTO_TCP`` explicitly so asyncio sets TCP_NODELAY.

    asyncio enables TCP_NODELAY only on sockets whose ``proto`` is IPPROTO_TCP;
    with the default 0, Nagle plus delayed ACKs cap a keep-alive client at
    about 25 requests/s.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening now (uvicorn listens again, harmlessly) means "listening on" is
        # printed only once connections are accepted into the backlog.
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class EmulatorServer:
    """A stateful Stripe emulator on ``host:port`` (default 127.0.0.1 and a free port).

    ``state``, ``faults`` and ``clock`` are the live objects the app uses, so a
    test in the same process can seed a million transfers or change faults
    without HTTP; ``control()`` gives the HTTP client other processes use.

    With ``state_file``, Stripe's side outlives the process: the transfers and
    reversals saved there are loaded when the server is built (if the file
    exists), and saved back when it stops (``stop``, or the end of
    ``serve_forever``, SIGTERM included) and on ``POST /_emulator/state/save``.
    What a snapshot keeps and leaves out is in ``snapshot.py``'s docstring.

    Like Stripe, it answers 401 to a key it does not know: pass the keys the
    clients use as ``api_keys``, or ``accept_any_key=True`` for ad-hoc use
    (any well-formed ``sk_``/``rk_`` key). With neither, every /v1 request is a 401.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultConfig | None = None,
        clock: Callable[[], float] | None = None,
        idempotency_ttl_seconds: float = DEFAULT_IDEMPOTENCY_TTL_SECONDS,
        request_log_limit: int = 100_000,
        state_file: Path | None = None,
        api_keys: Iterable[str] = (),
        accept_any_key: bool = False,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.clock = EmulatorClock(clock or time.time)
        self.state = EmulatorState(
            self.clock,
            idempotency_ttl_seconds=idempotency_ttl_seconds,
            request_log_limit=request_log_limit,
            api_keys=api_keys,
            accept_any_key=accept_any_key,
        )
        self.faults = Faults(faults)
        self.state_file = Path(state_file) if state_file is not None else None
        #: Transfers loaded from ``state_file`` at construction (None: nothing was loaded).
        self.loaded_transfers: int | None = None
        if self.state_file is not None and self.state_file.is_file():
            self.loaded_transfers = load_snapshot(self.state, self.state_file)
        self.app = EmulatorApp(self.state, self.faults, state_file=self.state_file)
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- addresses

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("the emulator is not started")
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        """Base URL to give the SDK: ``base_addresses={"api": server.url}``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # ----------------------------------------------------------------- lifecycle

    def _uvicorn(self) -> uvicorn.Server:
        config = uvicorn.Config(
            self.app.asgi,
            loop="asyncio",
            http=_http_implementation(),
            lifespan="off",
            access_log=False,
            log_level="warning",
            log_config=None,
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
        )
        return uvicorn.Server(config)

    def start(self, timeout: float = 10.0) -> Self:
        """Serve in a daemon thread; returns once the socket accepts requests."""
        if self._thread is not None:
            return self
        self._sock = _bind(self.host, self._requested_port)
        self._server = self._uvicorn()
        server, sock = self._server, self._sock
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])),
            name=f"stripe-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Stripe emulator did not start")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving; held requests are released first so shutdown never hangs.

        With ``state_file``, the state is saved once no request is being served
        (and only if the server was running, so a failed start writes nothing).
        """
        self.faults.release_holds()
        running = self._thread is not None
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None
        if running and self.state_file is not None:
            self.save_state()

    def save_state(self, path: Path | None = None) -> Path:
        """Save transfers and reversals to ``path`` (default ``state_file``); returns the path."""
        target = path if path is not None else self.state_file
        if target is None:
            raise ValueError("no path given and the emulator has no state_file")
        return save_snapshot(self.state, Path(target))

    def load_state(self, path: Path | None = None) -> int:
        """Replace transfers and reversals with those saved at ``path`` (default ``state_file``)."""
        source = path if path is not None else self.state_file
        if source is None:
            raise ValueError("no path given and the emulator has no state_file")
        return load_snapshot(self.state, Path(source))

    def serve_forever(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM.

        uvicorn shuts down gracefully, then re-raises the signal: SIGTERM ends the
        process as a default SIGTERM would, and Ctrl-C returns here quietly
        instead of printing a KeyboardInterrupt traceback.
        """
        self._sock = _bind(self.host, self._requested_port)
        self._server = self._uvicorn()
        if self.state_file is not None:
            # uvicorn re-raises SIGTERM once it has shut down, which ends the
            # process before a ``finally`` here: save from its shutdown instead.
            self._server = _SavingServer(self._server.config, self.save_state)
        print(f"Stripe emulator listening on {self.url}", flush=True)
        try:
            self._server.run(sockets=[self._sock])
        except KeyboardInterrupt:
            pass
        finally:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._server = self._sock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- conveniences

    def reset(self) -> None:
        """Fresh state: no transfers or keys rules, initial faults, no scripts, real time."""
        self.app.reset()

    def control(self, timeout: float = 30.0) -> EmulatorClient:
        return EmulatorClient(self.url, timeout=timeout)

    def stripe_client(self, api_key: str, **kwargs: Any) -> stripe.StripeClient:
        """A real ``stripe.StripeClient`` pointed at this emulator."""
        import stripe

        return stripe.StripeClient(api_key, base_addresses={"api": self.url}, **kwargs)


class _SavingServer(uvicorn.Server):
    """uvicorn's server, calling ``on_shutdown`` once connections are closed."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], object]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets=sockets)
        self._on_shutdown()


def run_forever(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    state_file: Path | None = None,
    api_keys: Iterable[str] = (),
    accept_any_key: bool = False,
    **fault_kwargs: Any,
) -> None:
    """Entry point of ``reversal-pipeline stripe-emulator``: serve until interrupted.

    ``fault_kwargs`` are :class:`FaultConfig` fields (e.g. ``latency_ms=50``,
    ``error_rate=0.01``, ``seed=7``) plus ``idempotency_ttl_seconds``; faults can
    also be changed later through ``/_emulator/faults``. ``state_file``: load
    the transfers saved there, and save them back on exit. ``api_keys`` and
    ``accept_any_key``: which API keys authenticate (see :class:`EmulatorServer`).
    """
    ttl = float(fault_kwargs.pop("idempotency_ttl_seconds", DEFAULT_IDEMPOTENCY_TTL_SECONDS))
    faults = FaultConfig.from_mapping(fault_kwargs) if fault_kwargs else FaultConfig()
    server = EmulatorServer(
        host=host,
        port=port,
        faults=faults,
        idempotency_ttl_seconds=ttl,
        state_file=state_file,
        api_keys=api_keys,
        accept_any_key=accept_any_key,
    )
    if server.loaded_transfers is not None:
        print(f"loaded {server.loaded_transfers} transfers from {state_file}", flush=True)
    server.serve_forever()
