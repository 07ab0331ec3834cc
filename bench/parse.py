"""Pure parsers and statistics for the benchmark (no network): slon log, pg_restore
-v, pgbench, migrate output."""

from __future__ import annotations

import math
import re
import statistics

from fabfile.render.parse import SET_START as COPY_START
from fabfile.render.parse import epoch, plain

TS = r"(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?: [A-Z]{2,5})?"
WORKER = r"\s+\w+\s+remoteWorkerThread_\d+: "
COPY_DONE = re.compile(
    rf"^{TS}\s+\w+\s+copy_set (?P<set>\d+) done in (?P<secs>[\d.]+) seconds", re.M
)
BEGIN = re.compile(rf"^{TS}{WORKER}Begin COPY of table (?P<table>\S+)", re.M)
BYTES = re.compile(
    rf"^{TS}{WORKER}(?P<bytes>\d+) bytes copied for table (?P<table>\S+)", re.M
)
TABLE_SECS = re.compile(
    rf"^{TS}{WORKER}(?P<secs>[\d.]+) seconds to copy table (?P<table>\S+)", re.M
)
SEQ_SECS = re.compile(rf"^{TS}{WORKER}(?P<secs>[\d.]+) seconds to copy sequences", re.M)
SETSYNC_SECS = re.compile(
    rf"^{TS}{WORKER}(?P<secs>[\d.]+) seconds to build initial setsync status", re.M
)
SUBSCRIBE_SEEN = re.compile(rf"^{TS}\s+\w+\s+storeSubscribe: sub_set=", re.M)
SLON_OPTION = re.compile(
    r"Integer option (?P<name>sync_interval(?:_timeout)?) = (?P<value>\d+)"
)


def slon_copy(text: str) -> dict | None:
    """The latest finished initial copy in a receiver's slon log.

    copy_set seconds and each table's total are slon's own (millisecond) figures; the
    split of a table's time into COPY (data) and index rebuild comes from the line
    timestamps, whole seconds, so each part is good to about one second. "other" is
    copy_set minus the tables: preparing, sequences, setsync.
    """
    starts = list(COPY_START.finditer(text))
    if not starts:
        return None
    start = starts[-1]
    tail = text[start.start() :]
    done = COPY_DONE.search(tail)
    if not done:
        return None
    tables: dict[str, dict] = {}
    for m in BEGIN.finditer(tail):
        tables.setdefault(plain(m["table"]), {})["begin"] = epoch(m["ts"])
    for m in BYTES.finditer(tail):
        t = tables.setdefault(plain(m["table"]), {})
        t["bytes"], t["bytes_at"] = int(m["bytes"]), epoch(m["ts"])
    for m in TABLE_SECS.finditer(tail):
        t = tables.setdefault(plain(m["table"]), {})
        t["seconds"], t["end"] = float(m["secs"]), epoch(m["ts"])
    for t in tables.values():
        secs = t.get("seconds", 0.0)
        index = max(
            0.0, min(secs, t.get("end", 0) - t.get("bytes_at", t.get("end", 0)))
        )
        t["index"], t["data"] = index, secs - index
    seq, setsync = SEQ_SECS.search(tail), SETSYNC_SECS.search(tail)
    subscribed = [m for m in SUBSCRIBE_SEEN.finditer(text) if m.start() < start.start()]
    total = float(done["secs"])
    table_secs = sum(t.get("seconds", 0.0) for t in tables.values())
    return {
        "set": int(start["set"]),
        "start": epoch(start["ts"]),
        "done": epoch(done["ts"]),
        "subscribe_seen": epoch(subscribed[-1]["ts"]) if subscribed else None,
        "seconds": total,
        "tables": tables,
        "bytes": sum(t.get("bytes", 0) for t in tables.values()),
        "data": sum(t["data"] for t in tables.values()),
        "index": sum(t["index"] for t in tables.values()),
        "sequences": float(seq["secs"]) if seq else 0.0,
        "setsync": float(setsync["secs"]) if setsync else 0.0,
        "other": max(0.0, total - table_secs),
    }


def slon_options(text: str) -> dict[str, int]:
    """The sync settings the latest slon start logged."""
    out: dict[str, int] = {}
    for m in SLON_OPTION.finditer(text):
        out[m["name"]] = int(m["value"])
    return out


RESTORE_PHASE = [
    ("fk", re.compile(r"creating FK CONSTRAINT")),
    ("index", re.compile(r"creating (INDEX|CONSTRAINT)")),
    ("data", re.compile(r"processing data for table")),
    ("schema", re.compile(r"creating |executing |processing |setting owner")),
]


def restore_phases(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """Seconds per phase of `pg_dump | pg_restore -v`, from the arrival time of each
    verbose line.

    pg_restore names an item when it starts on it, so the time up to the next line
    belongs to that item's phase: schema (tables, sequences, ...), data (COPY), index
    (indexes and primary/unique keys), fk (foreign keys, validated); "start" is until
    the first line (connecting, pg_dump's catalog reads).
    """
    phases = {"start": 0.0, "schema": 0.0, "data": 0.0, "index": 0.0, "fk": 0.0}
    marks = []
    for t, line in lines:
        if "pg_restore:" not in line:
            continue
        phase = next((name for name, rx in RESTORE_PHASE if rx.search(line)), None)
        if phase:
            marks.append((t, phase))
    if not marks:
        phases["start"] = wall
        return phases
    phases["start"] = marks[0][0]
    for (t, phase), nxt in zip(marks, marks[1:] + [(wall, None)]):
        phases[phase] += max(0.0, nxt[0] - t)
    return phases


def pgbench(text: str) -> dict:
    """tps and counts from pgbench's summary."""

    def num(rx: str):
        m = re.search(rx, text)
        return float(m.group(1)) if m else None

    return {
        "tps": num(r"tps = ([\d.]+)"),
        "transactions": num(r"number of transactions actually processed: (\d+)"),
        "failed": num(r"number of failed transactions: (\d+)"),
        "latency_ms": num(r"latency average = ([\d.]+) ms"),
        "schedule_lag_ms": num(r"rate limit schedule lag: avg ([\d.]+)"),
    }


STEP = re.compile(r"^== (?:(\d+)/(\d+) )?(?P<name>\S+)")


def migrate_steps(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """Seconds per step of `inv migrate`, from the arrival time of its '== N/M step'
    lines."""
    marks = [(t, m["name"]) for t, line in lines if (m := STEP.match(line))]
    out: dict[str, float] = {}
    for (t, name), nxt in zip(marks, marks[1:] + [(wall, None)]):
        out[name] = out.get(name, 0.0) + max(0.0, nxt[0] - t)
    return out


def step_start(lines: list[tuple[float, str]], name: str) -> float | None:
    return next(
        (t for t, line in lines if (m := STEP.match(line)) and m["name"] == name), None
    )


# --- statistics -----------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    k = max(0, min(len(vals) - 1, math.ceil(q / 100 * len(vals)) - 1))
    return vals[k]


def median(values) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope (units of y per unit of x)."""
    pts = [(x, y) for x, y in points if y is not None]
    if len(pts) < 3:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / den if den else None


def data_lag(history: list[tuple[float, int]], applied: int, now: float) -> float:
    """Seconds since the origin first showed the newest key the receiver has now (0 when
    it has them all).

    history: (time, newest key on the origin) samples in time order.
    """
    if not history or applied >= history[-1][1]:
        return 0.0
    first = next((t for t, top in history if top > applied), None)
    # The receiver has everything up to `applied`; the next row it lacks appeared at
    # `first` or before.
    return max(0.0, now - first) if first is not None else 0.0


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile (p in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def spread(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }
