"""Waiting for something to change on the servers: the one polling loop of
slony-migrate.

Every wait has a bound (seconds or attempts) and says what it waits for while it waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from .errors import StepError

T = TypeVar("T")


def poll(
    probe: Callable[[], T],
    *,
    every: float,
    timeout: float | None = None,
    tries: int | None = None,
    done: Callable[[T], object] = bool,
    waiting: Callable[[T, float], None] | None = None,
) -> tuple[bool, T]:
    """Call `probe` until `done(value)`, at most `timeout` seconds or `tries` times,
    `every` s apart.

    Returns (True, the value that was done) or (False, the last value).
    `waiting(value, seconds left)` is called before each pause (a progress line); it
    may raise to give up early."""
    deadline = time.monotonic() + timeout if timeout is not None else None
    n = 0
    while True:
        value = probe()
        n += 1
        if done(value):
            return True, value
        left = deadline - time.monotonic() if deadline is not None else float("inf")
        if left < 0 or (tries is not None and n >= tries):
            return False, value
        if waiting:
            waiting(value, left)
        time.sleep(every)


def wait_until(
    probe: Callable[[], T],
    timeout: float,
    host: str,
    message: str,
    fix: str,
    every: float = 0.5,
) -> T:
    """Poll `probe` until it returns something true (returned); StepError after
    `timeout` s."""
    ok, value = poll(probe, every=every, timeout=timeout)
    if not ok:
        raise StepError(host, f"{message} after {timeout:.0f} s", fix)
    return value
