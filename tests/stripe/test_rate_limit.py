"""TokenBucket: pacing, burst, 429 back-off and recovery on a fake clock; real threads once."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from reversal_pipeline.stripe import TokenBucket


class FakeTime:
    """A clock that only moves when the bucket waits; single-threaded tests only."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def wait(self, cond: threading.Condition, timeout: float) -> None:
        self.waits.append(timeout)
        self.now += timeout


def make_bucket(rate: float, **kwargs: float) -> tuple[TokenBucket, FakeTime]:
    fake = FakeTime()
    return TokenBucket(rate, clock=fake.clock, wait=fake.wait, **kwargs), fake  # type: ignore[arg-type]


def test_paces_at_rate_with_burst_of_one() -> None:
    bucket, fake = make_bucket(10)
    start = fake.now

    send_times = []
    for _ in range(21):
        bucket.acquire()
        send_times.append(fake.now - start)

    assert send_times[0] == 0
    assert send_times[-1] == pytest.approx(2.0)
    gaps = [b - a for a, b in itertools.pairwise(send_times)]
    assert gaps == pytest.approx([0.1] * 20)


def test_burst_after_idle_then_pacing() -> None:
    bucket, fake = make_bucket(10, burst=5)
    fake.now += 60  # long idle: the bucket is full, but holds no more than `burst`

    for _ in range(5):
        bucket.acquire()
    assert fake.waits == []
    bucket.acquire()
    assert fake.waits == pytest.approx([0.1])


def test_acquire_timeout_gives_up_without_taking_a_slot() -> None:
    bucket, fake = make_bucket(1)
    bucket.acquire()  # next slot is 1 s away

    assert bucket.acquire(timeout=0.5) is False
    assert fake.waits == []  # gave up without waiting
    assert bucket.expected_delay() == pytest.approx(1.0)  # and left no hole
    assert bucket.acquire(timeout=1.0) is True


def test_penalize_pauses_then_halves_rate_then_recovers() -> None:
    bucket, fake = make_bucket(10, pause_seconds=2.0, recovery_per_second=0.25, min_rate_factor=0.1)
    bucket.acquire()

    bucket.penalize()

    assert bucket.penalties == 1
    assert bucket.expected_delay() == pytest.approx(2.0)
    assert bucket.current_rate() == pytest.approx(5.0)
    t0 = fake.now
    bucket.acquire()
    assert fake.now - t0 == pytest.approx(2.0)  # waited out the pause
    bucket.acquire()
    assert fake.now - t0 == pytest.approx(2.2)  # then one slot at half rate
    # Recovery is linear from the end of the pause: +25% of the rate per second.
    fake.now = t0 + 2.0 + 1.0
    assert bucket.current_rate() == pytest.approx(7.5)
    fake.now = t0 + 2.0 + 10.0
    assert bucket.current_rate() == pytest.approx(10.0)


def test_penalties_during_a_pause_extend_it_but_do_not_compound() -> None:
    bucket, fake = make_bucket(10, pause_seconds=1.0)
    bucket.penalize()
    fake.now += 0.5
    for _ in range(15):  # the other threads of the same 429 burst
        bucket.penalize()

    assert bucket.penalties == 1
    assert bucket.current_rate() == pytest.approx(5.0)
    assert bucket.expected_delay() == pytest.approx(1.0)


def test_repeated_penalties_bottom_out_at_the_floor() -> None:
    bucket, fake = make_bucket(10, pause_seconds=0.1, min_rate_factor=0.2, recovery_per_second=0)
    for _ in range(10):
        bucket.penalize()
        fake.now += 0.2  # past the pause: each one is a new 429 burst

    assert bucket.penalties == 10
    assert bucket.current_rate() == pytest.approx(2.0)


def _lone_and_full(**kwargs: float) -> tuple[TokenBucket, FakeTime]:
    return make_bucket(
        10,
        pause_seconds=1.0,
        decrease_factor=0.5,
        lone_pause_seconds=0.1,
        lone_decrease_factor=0.9,
        repeat_within_seconds=5.0,
        recovery_per_second=0,
        **kwargs,
    )


def test_a_lone_429_pauses_briefly_and_slows_a_little() -> None:
    """Arrival jitter against a sliding second: the account is not over its limit."""
    bucket, _ = _lone_and_full()

    bucket.penalize()

    assert (bucket.penalties, bucket.lone_penalties) == (1, 1)
    assert bucket.expected_delay() == pytest.approx(0.1)
    assert bucket.current_rate() == pytest.approx(9.0)


def test_a_429_soon_after_another_gets_the_full_answer() -> None:
    bucket, fake = _lone_and_full()
    bucket.penalize()
    fake.now += 0.2  # past the lone pause, within repeat_within_seconds: a new burst

    bucket.penalize()

    assert (bucket.penalties, bucket.lone_penalties) == (2, 1)
    assert bucket.expected_delay() == pytest.approx(1.0)
    assert bucket.current_rate() == pytest.approx(4.5)  # 10 x 0.9 x 0.5


def test_a_429_long_after_the_last_is_lone_again() -> None:
    bucket, fake = _lone_and_full()
    bucket.penalize()
    fake.now += 0.2
    bucket.penalize()  # the full answer: 4.5/s
    fake.now += 1.0 + 5.0  # past the pause, and the window counts from the last burst

    bucket.penalize()

    assert (bucket.penalties, bucket.lone_penalties) == (3, 2)
    assert bucket.expected_delay() == pytest.approx(0.1)
    assert bucket.current_rate() == pytest.approx(4.05)


def test_a_429_inside_a_pause_extends_it_by_the_lone_pause_only() -> None:
    """Its request was sent before the pause began: it adds nothing to the 429 that began it."""
    bucket, fake = _lone_and_full()
    bucket.penalize()
    fake.now += 0.2
    bucket.penalize()  # a full pause, to 1.2 s after the first
    fake.now += 0.95

    bucket.penalize()  # 0.05 s left: extended to 0.1 s, not to a full second

    assert bucket.penalties == 2
    assert bucket.expected_delay() == pytest.approx(0.1)
    assert bucket.current_rate() == pytest.approx(4.5)


def test_repeated_429s_still_compound_to_the_floor_when_lone_ones_are_light() -> None:
    bucket, fake = _lone_and_full(min_rate_factor=0.2)
    for _ in range(10):
        bucket.penalize()
        fake.now += 1.1  # past even the full pause, within the window

    assert (bucket.penalties, bucket.lone_penalties) == (10, 1)
    assert bucket.current_rate() == pytest.approx(2.0)


def test_slow_down_is_penalize() -> None:
    bucket, _ = make_bucket(10)
    bucket.slow_down()
    assert bucket.penalties == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0},
        {"rate": -1},
        {"rate": 1, "burst": 0},
        {"rate": 1, "min_rate_factor": 0},
        {"rate": 1, "decrease_factor": 0},
        {"rate": 1, "lone_decrease_factor": 0},
        {"rate": 1, "lone_decrease_factor": 1.5},
    ],
)
def test_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        TokenBucket(**kwargs)  # type: ignore[arg-type]


def test_penalize_wakes_waiters_who_rebook_behind_the_pause() -> None:
    # Real threads, but synchronised on events, not on sleeps.
    bucket = TokenBucket(0.5, pause_seconds=0.05)  # next slot 2 s after the first
    bucket.acquire()
    started, done = threading.Event(), threading.Event()

    def waiter() -> None:
        started.set()
        bucket.acquire()
        done.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    started.wait()
    # The penalty drops the 2 s booking; the waiter re-books right after the
    # 0.05 s pause (at the halved rate, its slot is the start of the schedule).
    bucket.penalize()
    assert done.wait(timeout=1.5)
    thread.join()


def test_sixteen_threads_hold_the_rate_for_three_seconds() -> None:
    """Within 5% of rate * 3 s, and about one wake-up per acquisition (no busy-waiting)."""
    rate, seconds, threads = 100.0, 3.0, 16
    wakeups = 0
    wake_lock = threading.Lock()

    def counting_wait(cond: threading.Condition, timeout: float) -> object:
        nonlocal wakeups
        with wake_lock:
            wakeups += 1
        return cond.wait(timeout)

    bucket = TokenBucket(rate, wait=counting_wait)
    barrier = threading.Barrier(threads + 1)
    counts = [0] * threads
    window: dict[str, float] = {}

    def worker(i: int) -> None:
        barrier.wait()
        end = window["end"]
        while True:
            bucket.acquire()
            if time.monotonic() >= end:
                return
            counts[i] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    window["end"] = time.monotonic() + seconds
    barrier.wait()
    for t in pool:
        t.join()

    total = sum(counts)
    expected = rate * seconds
    assert abs(total - expected) <= 0.05 * expected, total
    # Every thread got turns (reservations are first come, first served).
    assert min(counts) > 0
    # A polling limiter wakes many times per token; ours about once per acquire.
    assert wakeups <= 2 * (total + threads), (wakeups, total)
