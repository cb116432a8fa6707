"""The emulator's one time source: a base clock plus an offset, freezable."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Clock = Callable[[], float]


class EmulatorClock:
    """The one time source of an emulator: a base clock plus an offset, freezable.

    Idempotency expiry, the rate-limit window and ``created`` timestamps all read
    it, so a test can advance past a 24 h TTL or freeze the rate-limit window
    without sleeping, and the same works over HTTP from another process.
    """

    def __init__(self, base: Clock = time.time) -> None:
        self._base = base
        self._lock = threading.Lock()
        self._offset = 0.0
        self._frozen_at: float | None = None

    def now(self) -> float:
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return self._base() + self._offset

    __call__ = now

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def advance(self, seconds: float) -> float:
        """Move time forward (or back, with a negative value); returns the new now."""
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._offset += seconds
        return self.now()

    def set(self, timestamp: float) -> float:
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at = float(timestamp)
            else:
                self._offset = float(timestamp) - self._base()
        return self.now()

    def freeze(self, at: float | None = None) -> float:
        """Stop time at ``at`` (default: now) until :meth:`unfreeze`."""
        current = self.now() if at is None else float(at)
        with self._lock:
            self._frozen_at = current
        return current

    def unfreeze(self) -> float:
        """Let time run again from the frozen value, without a jump."""
        with self._lock:
            if self._frozen_at is not None:
                self._offset = self._frozen_at - self._base()
                self._frozen_at = None
        return self.now()

    def reset(self) -> None:
        with self._lock:
            self._offset = 0.0
            self._frozen_at = None

    def snapshot(self) -> dict[str, Any]:
        return {"now": self.now(), "frozen": self.frozen}
