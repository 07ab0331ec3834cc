"""A bounded writer for rehearsals and tests: inserts numbered rows into the set's origin.

Each insert takes its id from the table's sequence (as the application does) and carries a unique
number in its message. It is one psql over SSH on the host it currently writes to; when that host says it is a
subscriber now, the writer moves to the other host. Every attempt is logged with its outcome, so a
test can prove that every acknowledged row arrived once and measure how long writes were blocked.
Bounded in count and time, it stops by itself.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from .remote import Hosts

SUBSCRIBER = "cannot be modified on a subscriber"
LOCKED = "locked against updates"


@dataclass
class Attempt:
    start: float
    end: float
    host: str
    id: int
    ok: bool
    error: str


@dataclass
class Writer:
    ssh_config: str
    hosts: tuple[str, str] = ("db01", "db02")
    database: str = "shotserver04"
    tag: str = "writer"
    rate: float = 5.0            # attempts per second
    max_count: int = 20_000
    max_seconds: float = 1800
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="writer", daemon=True)
        self.target = self.hosts[0]

    def start(self) -> "Writer":
        self._thread.start()
        return self

    def stop(self) -> "Writer":
        self._stop.set()
        self._thread.join(timeout=30)
        return self

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with Hosts(self.ssh_config) as hosts:
            for n in range(self.max_count):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                i = n + 1
                sql = f"INSERT INTO auth_message (user_id, message) VALUES (1, '{self.tag} {i}')"
                t0 = time.monotonic()
                try:
                    r = hosts[self.target].sudo(f"psql -X -q -v ON_ERROR_STOP=1 -d {self.database} -f -",
                                                user="postgres", stdin=sql, check=False, timeout=10)
                    ok, error = r.ok, "" if r.ok else (r.stderr.strip().splitlines() or ["failed"])[-1]
                except Exception as e:  # a hang (timeout) or a lost connection is an outcome too
                    ok, error = False, f"{type(e).__name__}: {e}"
                self.attempts.append(Attempt(t0, time.monotonic(), self.target, i, ok, error))
                if SUBSCRIBER in error:
                    self.target = self.hosts[1] if self.target == self.hosts[0] else self.hosts[0]
                time.sleep(max(0.0, 1 / self.rate - (time.monotonic() - t0)))

    def acknowledged(self) -> list[int]:
        return [a.id for a in self.attempts if a.ok]

    def count_sql(self) -> str:
        """Rows per writer number on a server: compare with acknowledged() (each exactly once)."""
        return (f"SELECT split_part(message, ' ', 2)::int, count(*) FROM auth_message "
                f"WHERE message LIKE '{self.tag} %' GROUP BY 1")

    def blocked_window(self, since: float) -> float | None:
        """Seconds from the first refused or stalled write after `since` to the next accepted write."""
        first_bad = next((a for a in self.attempts if a.start >= since and (not a.ok or a.end - a.start > 2)), None)
        if first_bad is None:
            return None
        next_ok = next((a for a in self.attempts if a.start > first_bad.start and a.ok), None)
        return (next_ok.end if next_ok else time.monotonic()) - first_bad.start
