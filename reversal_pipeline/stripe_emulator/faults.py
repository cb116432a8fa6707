"""What can go wrong, on purpose: fault configuration, scripted responses, holds.

Faults exist so the pipeline's retry, idempotency and lost-response handling can
be exercised against the real SDK. Everything random draws from one seedable
RNG so a failing run can be replayed; everything else is a script consumed in
order, so a test can say exactly what the next requests see.

Where each fault acts in a /v1 request (see ``app.py``):

1. latency (``asyncio.sleep``, so concurrent requests overlap);
2. **edge** faults, before the API looks at the request, nothing committed or
   stored: scripted ``reset``/``html_502``/401/403/409/429/502/503/504, random
   resets, then authentication and the rate limiter;
3. idempotency: replays are answered here and consume no script;
4. **app** faults, for requests that really execute: scripted ``hold``,
   scripted 500/4xx and random 500s answer instead of the handler and are
   stored for idempotency like Stripe stores its own errors; scripted
   ``lost``/``truncated``/``malformed_json``/``wrong_object`` and random lost
   responses let the request commit and store the genuine answer, then
   damage what is sent.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

BAD_BODIES = frozenset({"lost", "reset", "html_502", "malformed_json", "truncated", "wrong_object"})
#: Bad bodies produced after the request committed (the genuine answer is stored).
AFTER_COMMIT_BODIES = frozenset({"lost", "truncated", "malformed_json", "wrong_object"})
#: Statuses a gateway or auth layer answers: never stored for idempotency.
EDGE_STATUSES = frozenset({401, 403, 409, 429, 502, 503, 504})
HOLD = "hold"

Stage = Literal["edge", "app"]


@dataclass(frozen=True)
class FaultConfig:
    """Random faults and latency; immutable, swapped whole so readers never see half an update.

    Rates are probabilities per request in [0, 1] and apply to ``fault_methods``.
    ``latency_min_ms``/``latency_max_ms``, when both set, replace the fixed
    ``latency_ms`` with a uniform draw. ``rate_limit_per_second`` admits at most
    that many /v1 requests in any sliding second (rejected ones do not count).
    """

    latency_ms: float = 0.0
    latency_min_ms: float | None = None
    latency_max_ms: float | None = None
    rate_limit_per_second: int | None = None
    rate_limit_should_retry: bool = False
    error_rate: float = 0.0
    #: ``Stripe-Should-Retry`` on the random 500s: None is Stripe's default (``false`` on a
    #: POST, whose 500 is stored under its key; no header on a GET), True/False force it.
    error_should_retry: bool | None = None
    lost_response_rate: float = 0.0
    reset_rate: float = 0.0
    fault_methods: tuple[str, ...] = ("GET", "POST")
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("error_rate", "lost_response_rate", "reset_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        low, high = self.latency_min_ms, self.latency_max_ms
        if (low is None) != (high is None):
            raise ValueError("set both latency_min_ms and latency_max_ms, or neither")
        if low is not None and high is not None and not 0 <= low <= high:
            raise ValueError("need 0 <= latency_min_ms <= latency_max_ms")
        if self.rate_limit_per_second is not None and self.rate_limit_per_second < 1:
            raise ValueError("rate_limit_per_second must be >= 1 (or None for no limit)")
        object.__setattr__(self, "fault_methods", tuple(m.upper() for m in self.fault_methods))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: FaultConfig | None = None) -> FaultConfig:
        """Build from JSON-like data, on top of ``base``; unknown fields are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        changes = dict(data)
        if "fault_methods" in changes:
            changes["fault_methods"] = tuple(changes["fault_methods"])
        return replace(base or cls(), **changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fault_methods"] = list(self.fault_methods)
        return data


@dataclass
class ScriptedResponse:
    """One scripted answer for the next matching request(s).

    ``respond`` is an HTTP status (answered with a Stripe-style error body;
    ``message``/``type``/``code``/``param`` override the defaults) or one of
    ``BAD_BODIES`` or ``"hold"`` (park the request, in flight, until released).
    It matches on ``method`` (any if None), ``path`` (exact) or ``path_prefix``,
    and ``transfer_id``; ``times`` is how many requests it answers.
    ``should_retry`` sets ``Stripe-Should-Retry``; when None, a 429 follows
    ``FaultConfig.rate_limit_should_retry`` and a 500 Stripe's default
    (``false`` on a POST, none on a GET).
    """

    respond: int | str
    method: str | None = None
    path: str | None = None
    path_prefix: str | None = None
    transfer_id: str | None = None
    times: int = 1
    message: str | None = None
    type: str | None = None
    code: str | None = None
    param: str | None = None
    should_retry: bool | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.respond, bool):
            raise ValueError("respond must be a status or a bad-body name")
        if isinstance(self.respond, int):
            if not 400 <= self.respond <= 599:
                raise ValueError(f"scripted status must be 4xx or 5xx, got {self.respond}")
        elif self.respond not in BAD_BODIES | {HOLD}:
            raise ValueError(
                f"respond must be a status or one of {sorted(BAD_BODIES | {HOLD})},"
                f" got {self.respond!r}"
            )
        if self.times < 1:
            raise ValueError("times must be >= 1")
        if self.method is not None:
            self.method = self.method.upper()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ScriptedResponse:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown script fields: {sorted(unknown)}")
        return cls(**data)

    @property
    def stage(self) -> Stage:
        if self.respond in ("reset", "html_502") or self.respond in EDGE_STATUSES:
            return "edge"
        return "app"

    def matches(self, method: str, path: str, transfer_id: str | None) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.path is not None and self.path != path:
            return False
        if self.path_prefix is not None and not path.startswith(self.path_prefix):
            return False
        return self.transfer_id is None or self.transfer_id == transfer_id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Holds:
    """Requests parked by a ``hold`` script, released from any thread.

    Lets a test keep a request in flight (its idempotency key reserved) for as
    long as it needs, and know when it got there, without sleeping.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def hold(self) -> None:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        item = (loop, event)
        with self._condition:
            self._waiting.append(item)
            self._condition.notify_all()
        try:
            await event.wait()
        finally:
            with self._condition:
                if item in self._waiting:
                    self._waiting.remove(item)

    def count(self) -> int:
        with self._condition:
            return len(self._waiting)

    def release_all(self) -> int:
        with self._condition:
            released, self._waiting = self._waiting, []
        for loop, event in released:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)
        return len(released)

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block (a non-loop thread) until ``count`` requests are held; False on timeout."""
        with self._condition:
            return self._condition.wait_for(lambda: len(self._waiting) >= count, timeout)

    async def async_wait_for(self, count: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.count() < count:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True


class RateLimiter:
    """Sliding one-second window over admitted requests, on the emulator's clock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._admitted: deque[float] = deque()

    def admit(self, limit: int | None, now: float) -> bool:
        if limit is None:
            return True
        with self._lock:
            while self._admitted and self._admitted[0] <= now - 1.0:
                self._admitted.popleft()
            if len(self._admitted) >= limit:
                return False
            self._admitted.append(now)
            return True

    def reset(self) -> None:
        with self._lock:
            self._admitted.clear()


class Faults:
    """The live fault state of one emulator: config, RNG, scripts, holds, rate window."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._initial = config or FaultConfig()
        self._config = self._initial
        self._rng = random.Random(self._config.seed)  # noqa: S311 - fault injection, not crypto
        self._scripts: list[ScriptedResponse] = []
        self.holds = Holds()
        self.rate_limiter = RateLimiter()

    # ----------------------------------------------------------------- config

    @property
    def config(self) -> FaultConfig:
        return self._config

    def configure(self, config: FaultConfig) -> FaultConfig:
        """Replace the whole configuration; a seed in it restarts the RNG."""
        with self._lock:
            self._config = config
            if config.seed is not None:
                self._rng.seed(config.seed)
        return config

    def update(self, **changes: Any) -> FaultConfig:
        """Change some fields, keep the rest (``server.faults.update(error_rate=0.1)``)."""
        new = FaultConfig.from_mapping(changes, base=self._config)
        with self._lock:
            self._config = new
            if "seed" in changes and new.seed is not None:
                self._rng.seed(new.seed)
        return new

    def reset(self) -> None:
        """Back to the configuration the emulator started with; scripts and holds cleared."""
        self.configure(self._initial)
        with self._lock:
            self._rng.seed(self._initial.seed)
            self._scripts.clear()
        self.holds.release_all()
        self.rate_limiter.reset()

    # ----------------------------------------------------------------- draws

    def latency_seconds(self) -> float:
        config = self._config
        if config.latency_min_ms is not None and config.latency_max_ms is not None:
            with self._lock:
                return self._rng.uniform(config.latency_min_ms, config.latency_max_ms) / 1000.0
        return config.latency_ms / 1000.0

    def roll(self, rate_name: str, method: str) -> bool:
        """Draw one random fault; no draw at all when the rate is 0, to keep sequences stable."""
        config = self._config
        rate: float = getattr(config, rate_name)
        if rate <= 0.0 or method not in config.fault_methods:
            return False
        with self._lock:
            return self._rng.random() < rate

    def admit(self, now: float) -> bool:
        return self.rate_limiter.admit(self._config.rate_limit_per_second, now)

    # ----------------------------------------------------------------- scripts

    def add_script(self, *entries: ScriptedResponse | Mapping[str, Any]) -> list[ScriptedResponse]:
        built = [
            e if isinstance(e, ScriptedResponse) else ScriptedResponse.from_mapping(e)
            for e in entries
        ]
        with self._lock:
            self._scripts.extend(built)
        return built

    def add_scripts(
        self, entries: Iterable[ScriptedResponse | Mapping[str, Any]]
    ) -> list[ScriptedResponse]:
        return self.add_script(*entries)

    def clear_scripts(self) -> None:
        with self._lock:
            self._scripts.clear()

    def scripts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.to_dict() for s in self._scripts]

    def take_script(
        self, stage: Stage, method: str, path: str, transfer_id: str | None
    ) -> ScriptedResponse | None:
        """Consume one use of the first matching entry, if it acts at ``stage``.

        Only the first matching entry is considered, so entries for the same
        request keep their order whatever their stage.
        """
        with self._lock:
            for position, entry in enumerate(self._scripts):
                if not entry.matches(method, path, transfer_id):
                    continue
                if entry.stage != stage:
                    return None
                if entry.times <= 1:
                    del self._scripts[position]
                else:
                    entry.times -= 1
                return replace(entry, times=1)
        return None

    # ----------------------------------------------------------------- holds

    def held(self) -> int:
        return self.holds.count()

    def wait_for_held(self, count: int = 1, timeout: float = 10.0) -> bool:
        return self.holds.wait_for(count, timeout)

    def release_holds(self) -> int:
        return self.holds.release_all()
