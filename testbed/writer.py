"""A bounded writer for rehearsals and tests: inserts numbered rows into the set's
origin.

Each insert takes its id from the table's sequence (as the application does) and carries
a unique number in its message. It is one psql over SSH on the host it currently writes
to; when that host says it is a subscriber now, the writer moves to the other host.
Every attempt is logged with its outcome, so a test can prove that every acknowledged
row arrived once and measure how long writes were blocked. Bounded in count and time, it
stops by itself.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fabfile.errors import StepError
from fabfile.remote import Host, Hosts

from . import DATABASE, WRITER_TABLE

SUBSCRIBER = "cannot be modified on a subscriber"
LOCKED = "locked against updates"
STALL = 2.0  # an accepted write that took longer than this counts as blocked


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
    database: str = DATABASE
    table: str = WRITER_TABLE
    tag: str = "writer"
    rate: float = 5.0  # attempts per second
    max_count: int = 20_000
    max_seconds: float = 1800
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="writer", daemon=True)
        self.target = self.hosts[0]

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> Writer:
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
                sql = (
                    f"INSERT INTO {self.table} (user_id, message) VALUES (1,"
                    f" '{self.tag} {i}')"
                )
                t0 = time.monotonic()
                try:
                    error = hosts[self.target].try_psql(
                        sql, self.database, timeout=10, app=True
                    )
                except (
                    Exception
                ) as e:  # a hang (timeout) or a lost connection is an outcome too
                    error = f"{type(e).__name__}: {e}"
                self.attempts.append(
                    Attempt(t0, time.monotonic(), self.target, i, not error, error)
                )
                if SUBSCRIBER in error:
                    self.target = (
                        self.hosts[1] if self.target == self.hosts[0] else self.hosts[0]
                    )
                time.sleep(max(0.0, 1 / self.rate - (time.monotonic() - t0)))

    def acknowledged(self) -> list[int]:
        return [a.id for a in self.attempts if a.ok]

    def count_sql(self) -> str:
        """Rows per writer number on a server: compare with acknowledged() (each
        exactly once)."""
        return (
            f"SELECT split_part(message, ' ', 2)::int, count(*) FROM {self.table} "
            f"WHERE message LIKE '{self.tag} %' GROUP BY 1"
        )

    def not_once(self, host: Host) -> tuple[list[int], list[int]]:
        """(acknowledged writes missing on `host`, writes there more than once)."""
        rows = {int(n): int(c) for n, c in host.psql(self.count_sql(), self.database)}
        return [n for n in self.acknowledged() if rows.get(n) != 1], [
            n for n, c in rows.items() if c > 1
        ]

    def check_acknowledged(self, host: Host, timeout: float = 0) -> None:
        """Every acknowledged write is on `host` exactly once (waiting up to
        `timeout` s); else StepError."""
        deadline = time.monotonic() + timeout
        while True:
            missing, doubled = self.not_once(host)
            if not missing and not doubled:
                return
            if time.monotonic() >= deadline:
                raise StepError(
                    host.name,
                    f"{len(missing)} acknowledged writes not there exactly once "
                    f"{missing[:10]}; rows written more than once {doubled[:10]}",
                    "compare the writer's log with the table",
                )
            time.sleep(2)

    def blocked_window(self, since: float) -> float | None:
        """Seconds from the first refused or stalled write after `since` to the next
        accepted write."""
        first_bad = next(
            (
                a
                for a in self.attempts
                if a.start >= since and (not a.ok or a.end - a.start > STALL)
            ),
            None,
        )
        if first_bad is None:
            return None
        next_ok = next(
            (a for a in self.attempts if a.start > first_bad.start and a.ok), None
        )
        return (next_ok.end if next_ok else time.monotonic()) - first_bad.start


APPWRITER = Path(__file__).with_name("appwriter.py")


@dataclass
class AppWriter(Writer):
    """The application-like writer (appwriter.py) on the testbed's `app` host: one
    psycopg2 connection to PgBouncer there, which sends it to the origin. Same checks
    as Writer; its attempts are read from the host when it stops (or on `fetch`)."""

    host: str = "app"
    dsn: str = (  # password: admin's .pgpass there
        f"host=127.0.0.1 port=6432 dbname={DATABASE} user=johann"
    )
    tag: str = "app"
    rate: float = 100.0
    max_seconds: float = 600

    def start(self) -> AppWriter:
        # the app container shares this machine's clock
        self._offset = time.monotonic() - time.time()
        with Hosts(self.ssh_config) as hosts:
            h = hosts[self.host]
            h.put(str(APPWRITER), "/tmp/appwriter.py")
            args = " ".join(
                shlex.quote(str(a))
                for a in (
                    self.dsn,
                    self.table,
                    self.tag,
                    self.rate,
                    self.max_count,
                    self.max_seconds,
                    "/tmp/appwriter.stop",
                )
            )
            h.run(
                "rm -f /tmp/appwriter.stop /tmp/appwriter.out; setsid nohup python3"
                f" /tmp/appwriter.py {args} > /tmp/appwriter.out 2> /tmp/appwriter.err"
                " < /dev/null &"
            )
        return self

    def stop(self) -> AppWriter:
        with Hosts(self.ssh_config) as hosts:
            h = hosts[self.host]
            h.run(
                "touch /tmp/appwriter.stop; for i in $(seq 100); do pgrep -f"
                " '[a]ppwriter.py' >/dev/null || exit 0; sleep 0.1; done; pkill -f"
                " '[a]ppwriter.py'; true"
            )
            self._read(h)
        return self

    def fetch(self) -> AppWriter:
        with Hosts(self.ssh_config) as hosts:
            self._read(hosts[self.host])
        return self

    def _read(self, h: Host) -> None:
        text = h.run("cat /tmp/appwriter.out").stdout
        # one may be half written
        lines = text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]
        self.attempts = [
            Attempt(
                a["start"] + self._offset,
                a["end"] + self._offset,
                self.host,
                a["id"],
                a["ok"],
                a["error"],
            )
            for a in map(json.loads, lines)
        ]

    def errors(self) -> list[str]:
        return [f"{a.id}: {a.error}" for a in self.attempts if not a.ok]

    def longest_stall(self, since: float = 0.0) -> float:
        """The longest time one attempt took after `since`: what the application
        waited, at most."""
        return max(
            (a.end - a.start for a in self.attempts if a.start >= since), default=0.0
        )
