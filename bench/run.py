#!/usr/bin/env python3
"""`make bench`: the figures of issues 6 and 14, measured side by side on a fresh
testbed.

Per repetition:
  1. initial copy: `pg_dump -Fc | pg_restore` of shotserver04 from db01 into a fresh
     database on db02 (run on db02 as postgres), `pg_dump -Fd -j 2 -Z 0` + `pg_restore
     -j 2`, and PostgreSQL's logical replication's initial sync (db01 at wal_level
     logical for it), then a reset, then `inv migrate` end to end; the copy itself from
     the receiver's slon log (copy_set and per table: COPY and index rebuild); tool
     overhead = migrate minus the copy; then a no-op `inv migrate`.
  2. for each slon sync setting (--sync-interval): lag under load, pgbench on db01 at
     fixed rates, lag sampled every second from sl_status and as data (oldest row on
     db01 not yet on db02);
  3. switchover under load: testbed.writer.Writer at a steady rate, `inv switchover`
     then `inv switchback` end to end, blocked-write window from the tool's output and
     from the writer; the runbook's way beside it: altperl's `slonik_move_set` piped
     into slonik, by hand, same writer;
  4. switchover through PgBouncer: testbed/appwriter.py on the app host at --app-rate,
     `inv switchover --pooler app` then `inv switchback --pooler app`: the application's
     longest wait and its errors. Writes docs/benchmarks.md (medians of the
     repetitions), docs/benchmarks.json (every sample) and docs/lag.png, and prints the
     tables. Every load loop is bounded in count and time; load goes only to the
     testbed's containers. The testbed is the bench's own (TESTBED_PROJECT, default
     slonybench, SSH ports 2251/2252) and is removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A testbed of its own, beside the tests' (testbed.compose reads these whenever it is
# called).
os.environ.setdefault("TESTBED_PROJECT", "slonybench")
os.environ.setdefault("DB01_SSH_PORT", "2251")
os.environ.setdefault("DB02_SSH_PORT", "2252")
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import parse  # noqa: E402
import report  # noqa: E402

from fabfile import facts  # noqa: E402
from fabfile import settings as fabfile_settings  # noqa: E402
from fabfile.errors import StepError  # noqa: E402
from fabfile.model import make_cluster  # noqa: E402
from fabfile.render.files import slon_conf  # noqa: E402
from testbed import DATABASE as DB  # noqa: E402
from testbed import WRITER_TABLE as TABLE  # noqa: E402
from testbed import compose as tb  # noqa: E402
from testbed.bed import CLUSTER, Bed  # noqa: E402
from testbed.writer import AppWriter, Writer  # noqa: E402

RESTORE_DB = "bench_restore"
PAIR = ("--master", "db01", "--slave", "db02")
CONFS = " ".join(CLUSTER.slon_conf(n) for n in CLUSTER.nodes)
SLAVE_LOG, MASTER_LOG = (
    CLUSTER.slon_log(CLUSTER.slave),
    CLUSTER.slon_log(CLUSTER.master),
)
INSERT = f"INSERT INTO {TABLE} (user_id, message) VALUES (1, 'bench');\n"
SCRIPT = "/var/tmp/slony-bench-insert.sql"


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- running things -------------------------------------------------------------------


def stream(
    cmd: list[str], timeout: float, env: dict | None = None, echo: bool = False
) -> tuple[int, list[tuple[float, str]], float]:
    """Run a command (killed after `timeout`); each output line with its arrival time
    (s since start)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append((time.monotonic() - t0, line.rstrip("\n")))
            if echo:
                print(f"    {line}", end="", flush=True)
        rc = proc.wait()
    finally:
        timer.cancel()
    return rc, lines, time.monotonic() - t0


def inv(bed: Bed, *args: str, timeout: float = 3600, echo: bool = True) -> dict:
    """`inv ARGS` as an operator runs it; every output line with its arrival time."""
    e0 = time.time()
    rc, lines, wall = stream(
        [sys.executable, "-u", "-m", "invoke", *args], timeout, bed.env, echo
    )
    if rc:
        tail = "\n".join(l for _, l in lines[-15:])
        raise StepError(
            "bench", f"inv {' '.join(args)} exited {rc} after {wall:.0f} s\n{tail}"
        )
    return {"wall": wall, "start": e0, "end": e0 + wall, "lines": lines}


def ssh_stream(
    host: str, command: str, timeout: float
) -> tuple[int, list[tuple[float, str]], float]:
    """Run a command on a testbed host through ssh; each output line with its arrival
    time."""
    return stream(["ssh", "-F", str(tb.current().ssh_config), host, command], timeout)


def as_postgres(command: str) -> str:
    return (
        "sudo -n -H -u postgres bash -o pipefail -c"
        f" {shlex.quote('cd /tmp && ' + command)}"
    )


def newest(h, binary: str) -> str:
    """The newest PostgreSQL major's copy of a client binary on a host."""
    path = facts.newest_client(h, binary)
    if not path:
        raise StepError(
            h.name,
            f"no {binary} under /usr/lib/postgresql/*/bin",
            "install the PostgreSQL client programs there",
        )
    return path


# --- testbed --------------------------------------------------------------------------


def fresh_testbed(size_mb: int) -> None:
    current = tb.current()
    say(
        f"fresh testbed {current.project} (ssh ports"
        f" {current.ports['db01']}/{current.ports['db02']}), seeding {size_mb} MB"
    )
    tb.compose("down", "-v", "--remove-orphans", check=False)
    times = tb.up(size_mb)
    say(
        "testbed up: "
        + ", ".join(f"{phase} {secs:.0f} s" for phase, secs in times.items())
    )


def reset(bed: Bed) -> None:
    """Back to a freshly seeded pair (Slony packages stay installed), without the
    rows the load added."""
    bed["db02"].psql(f"DROP DATABASE IF EXISTS {RESTORE_DB} WITH (FORCE)")
    bed.reset()
    # pgbench inserts 'bench', the writer 'benchNxM K'; the seed's messages are hex
    # digits.
    deleted = bed["db01"].psql(
        f"WITH d AS (DELETE FROM {TABLE} WHERE message LIKE 'bench%' RETURNING 1) "
        "SELECT count(*) FROM d",
        DB,
    )[0][0]
    if int(deleted):
        bed["db01"].psql(f"VACUUM ANALYZE {TABLE}", DB, timeout=3600)


# --- 1. initial copy ------------------------------------------------------------------


def restore_target(bed: Bed) -> None:
    """The database's owner on db02, and an empty RESTORE_DB there owned by it."""
    db01, db02 = bed["db01"], bed["db02"]
    owner = db01.value(
        f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{DB}'"
    )
    db02.psql(
        f"DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{owner}')"
        f" THEN CREATE ROLE {owner} LOGIN; END IF; END$$"
    )
    db02.psql(f"DROP DATABASE IF EXISTS {RESTORE_DB} WITH (FORCE)")
    db02.psql(
        f"CREATE DATABASE {RESTORE_DB} OWNER {owner} ENCODING 'UTF8' TEMPLATE template0"
    )


def on_db02(what: str, cmd: str) -> tuple[list[tuple[float, str]], float]:
    """A shell command on db02 as postgres; its lines with arrival times and its wall
    time."""
    say(f"{what}: {cmd}")
    rc, lines, wall = ssh_stream("db02", as_postgres(cmd), timeout=4 * 3600)
    if rc:
        tail = "\n".join(l for _, l in lines[-10:])
        raise StepError("db02", f"{what} exited {rc}\n{tail}")
    return lines, wall


def same_rows(bed: Bed, what: str) -> int:
    """The writer table's rows on db01, which RESTORE_DB on db02 must have too."""
    rows = [
        db.value(f"SELECT count(*) FROM {TABLE}", name)
        for db, name in ((bed["db01"], DB), (bed["db02"], RESTORE_DB))
    ]
    if rows[0] != rows[1]:
        raise StepError(
            "db02",
            f"{what} incomplete: {TABLE} has {rows[1]} rows here, {rows[0]} on db01",
        )
    return int(rows[0])


def dump_restore(bed: Bed) -> dict:
    """pg_dump -Fc | pg_restore of shotserver04, db01 to a fresh database on db02, run
    on db02 as postgres.

    pg_dump connects to db01 as the replication user; pg_restore writes over db02's
    local socket.
    """
    restore_target(bed)
    dump, restore = newest(bed["db02"], "pg_dump"), newest(bed["db02"], "pg_restore")
    cmd = (
        f"{dump} -w -h db01 -U slony -Fc {DB} | "
        f"{restore} -w -v --exit-on-error -d {RESTORE_DB}"
    )
    lines, wall = on_db02("pg_dump | pg_restore", cmd)
    rows = same_rows(bed, "pg_dump | pg_restore")
    phases = parse.restore_phases(lines, wall)
    say(
        f"pg_dump | pg_restore: {wall:.1f} s ("
        + ", ".join(f"{k} {v:.1f}" for k, v in phases.items())
        + ")"
    )
    bed["db02"].psql(f"DROP DATABASE {RESTORE_DB} WITH (FORCE)")
    return {"wall": wall, "phases": phases, "command": cmd, "rows": rows}


DUMP_DIR = "/var/tmp/bench-dump"


def dump_restore_parallel(bed: Bed) -> dict:
    """The strongest dump/restore: `pg_dump -Fd -j 2 -Z 0` into a directory on db02,
    then `pg_restore -j 2` (two jobs: the machine has two CPUs, shared by both
    servers), with the server settings the tool gives slon's copy (COPY_TUNING)."""
    restore_target(bed)
    dump, restore = newest(bed["db02"], "pg_dump"), newest(bed["db02"], "pg_restore")
    _, dumped = on_db02(
        "pg_dump -Fd -j 2",
        f"rm -rf {DUMP_DIR} && {dump} -w -h db01 -U slony -Fd -j 2 -Z 0 "
        f"-f {DUMP_DIR} {DB}",
    )
    # The same server tuning as the tool gives slon's copy (a fair race).
    tuned = " ".join(f"-c {k}={v}" for k, v in fabfile_settings.COPY_TUNING.items())
    _, restored = on_db02(
        "pg_restore -j 2",
        f"PGOPTIONS='{tuned}' {restore} -w -j 2 --exit-on-error -d {RESTORE_DB}"
        f" {DUMP_DIR}",
    )
    rows = same_rows(bed, "pg_dump -Fd | pg_restore -j 2")
    say(
        f"pg_dump -Fd -j 2 -Z 0 {dumped:.1f} s, pg_restore -j 2 {restored:.1f} s:"
        f" {dumped + restored:.1f} s"
    )
    bed["db02"].run(f"sudo -n rm -rf {DUMP_DIR}")
    bed["db02"].psql(f"DROP DATABASE {RESTORE_DB} WITH (FORCE)")
    return {
        "wall": dumped + restored,
        "dump": dumped,
        "restore": restored,
        "rows": rows,
    }


def wal_level(bed: Bed, level: str) -> None:
    """wal_level on db01 (a restart of its PostgreSQL when it changes)."""
    db01 = bed["db01"]
    if db01.value("SHOW wal_level") == level:
        return
    db01.psql(f"ALTER SYSTEM SET wal_level = '{level}'")
    db01.sudo(f"pg_ctlcluster {facts.pg_major(db01)} main restart")
    say(f"db01: wal_level = {level}, PostgreSQL restarted")


def logical_sync(bed: Bed) -> dict:
    """PostgreSQL's own logical replication (PUBLICATION FOR ALL TABLES on db01,
    SUBSCRIPTION on db02 as postgres, connecting as the replication user): from
    CREATE SUBSCRIPTION until every table's initial sync is done
    (pg_subscription_rel: every table 's' or 'r'). The schema first, with pg_dump -s,
    not counted. db01 runs with wal_level = logical only for this."""
    restore_target(bed)
    db01, db02 = bed["db01"], bed["db02"]
    wal_level(bed, "logical")
    try:
        dump = newest(db02, "pg_dump")
        on_db02(
            "schema",
            f"{dump} -w -h db01 -U slony -s {DB} | psql -X -q -v ON_ERROR_STOP=1 -d"
            f" {RESTORE_DB}",
        )
        db01.psql(
            "DROP PUBLICATION IF EXISTS bench_pub; CREATE PUBLICATION bench_pub FOR ALL"
            " TABLES; SELECT 1",
            DB,
        )
        tables = int(
            db01.value(
                "SELECT count(*) FROM pg_publication_tables WHERE pubname ="
                " 'bench_pub'",
                DB,
            )
        )
        say(
            f"logical replication: CREATE SUBSCRIPTION for {tables} tables (2 sync"
            " workers, the default)"
        )
        t0 = time.monotonic()
        db02.psql(
            f"CREATE SUBSCRIPTION bench_sub CONNECTION 'host=db01 dbname={DB}"
            " user=slony sslmode=require' PUBLICATION bench_pub; SELECT 1",
            RESTORE_DB,
        )
        deadline = t0 + 4 * 3600
        while True:
            done, total = map(
                int,
                db02.psql(
                    "SELECT count(*) FILTER (WHERE srsubstate IN ('s', 'r')), count(*) "
                    "FROM pg_subscription_rel",
                    RESTORE_DB,
                )[0],
            )
            if total == tables and done == total:
                break
            if time.monotonic() > deadline:
                raise StepError(
                    "db02",
                    f"logical replication: {done}/{total} tables synchronized"
                    " after 4 h",
                )
            time.sleep(0.5)
        wall = time.monotonic() - t0
        rows = same_rows(bed, "logical replication's initial sync")
        say(f"logical replication initial sync: {wall:.1f} s")
        return {"wall": wall, "tables": tables, "rows": rows}
    finally:
        db02.psql("DROP SUBSCRIPTION IF EXISTS bench_sub; SELECT 1", RESTORE_DB)
        db01.psql("DROP PUBLICATION IF EXISTS bench_pub; SELECT 1", DB)
        db02.psql(f"DROP DATABASE IF EXISTS {RESTORE_DB} WITH (FORCE)")
        wal_level(bed, "replica")


def migrate(bed: Bed) -> dict:
    say("inv migrate (timed end to end)")
    run = inv(bed, "migrate", *PAIR, timeout=4 * 3600)
    log = bed["db02"].sudo(f"cat {SLAVE_LOG}").stdout
    copy = parse.slon_copy(log)
    if copy is None:
        raise StepError(
            "db02",
            f"no finished copy_set in {SLAVE_LOG}",
            "read that log",
        )
    steps = parse.migrate_steps(run["lines"], run["wall"])
    sub_at = parse.step_start(run["lines"], "subscribe")
    sub_start = run["start"] + (sub_at or 0.0)
    # Log times are whole seconds: the copy began within [start, start + 1).
    before = max(0.0, copy["start"] + 0.5 - sub_start)
    subscribe = steps.get("subscribe", 0.0)
    out = {
        "wall": run["wall"],
        "steps": steps,
        "copy": copy,
        "overhead": run["wall"] - copy["seconds"],
        "before_copy": before,
        "after_copy": max(0.0, subscribe - before - copy["seconds"]),
        "before_subscribe": run["wall"] - subscribe,
    }
    say(
        f"migrate {run['wall']:.1f} s; copy_set {copy['seconds']:.1f} s (COPY"
        f" {copy['data']:.0f} s, index rebuild {copy['index']:.0f} s, other"
        f" {copy['other']:.1f} s); overhead {out['overhead']:.1f} s"
    )
    return out


def noop(bed: Bed) -> dict:
    say("inv migrate again (no-op)")
    run = inv(bed, "migrate", *PAIR, timeout=900, echo=False)
    ok = any("nothing to do" in l for _, l in run["lines"])
    if not ok:
        raise StepError(
            "bench",
            "the second inv migrate did something:\n"
            + "\n".join(l for _, l in run["lines"]),
        )
    say(f"no-op migrate {run['wall']:.1f} s")
    return {
        "wall": run["wall"],
        "steps": parse.migrate_steps(run["lines"], run["wall"]),
    }


# --- slon settings --------------------------------------------------------------------


def parse_settings(spec: str) -> list[dict]:
    """'default,500,500:2000' -> settings; MS sets sync_interval, MS:MS also
    sync_interval_timeout."""
    out = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item == "default":
            out.append(
                {
                    "label": "default",
                    "sync_interval": None,
                    "sync_interval_timeout": None,
                }
            )
            continue
        m = re.fullmatch(r"(\d+)(?::(\d+))?", item)
        if not m:
            raise SystemExit(
                f"--sync-interval: {item!r} is neither 'default' nor MS nor"
                " MS:TIMEOUT_MS"
            )
        out.append(
            {
                "label": item,
                "sync_interval": int(m[1]),
                "sync_interval_timeout": int(m[2]) if m[2] else None,
            }
        )
    return out


def sync_values(text: str) -> dict[str, int]:
    return {
        k: int(v)
        for k, v in re.findall(r"^(sync_interval(?:_timeout)?)=(\d+)", text, re.M)
    }


def conf_values(bed: Bed) -> dict[str, int]:
    return sync_values(
        bed["db02"].sudo(f"cat {CLUSTER.slon_conf(CLUSTER.master)}").stdout
    )


def tool_defaults() -> dict[str, int]:
    """The sync settings `inv config` writes (fabfile.render.files.slon_conf)."""
    cluster = make_cluster("db01", "db02", database="shotserver04")
    return sync_values(slon_conf(cluster, cluster.master))


def apply_setting(bed: Bed, setting: dict, defaults: dict[str, int]) -> dict[str, int]:
    """Edit both slon.conf files on db02 and restart the slons (inv slons --stop; inv
    slons) if needed."""
    want = {
        "sync_interval": setting["sync_interval"] or defaults["sync_interval"],
        "sync_interval_timeout": (
            setting["sync_interval_timeout"] or defaults["sync_interval_timeout"]
        ),
    }
    if conf_values(bed) != want:
        say(f"slon settings {want}: editing {CONFS} on db02, restarting the slons")
        sed = " ".join(f"-e 's/^{k}=.*/{k}={v}/'" for k, v in want.items())
        bed["db02"].run(f"sudo -n sed -i {sed} {CONFS}")
        inv(bed, "slons", "--stop", *PAIR, echo=False, timeout=120)
        inv(bed, "slons", *PAIR, echo=False, timeout=120)
        time.sleep(2)
    logged = parse.slon_options(bed["db02"].sudo(f"cat {MASTER_LOG}").stdout)
    if logged and logged != want:
        # slon corrects some combinations (a timeout not above the interval becomes
        # twice the interval)
        say(
            f"slon for {CLUSTER.instance(CLUSTER.master)} runs with {logged} (asked for"
            f" {want}); recording what it runs with"
        )
    return {**want, **logged, "asked": want}


# --- 2. lag under load ----------------------------------------------------------------

TOP_SQL = f"SELECT coalesce(max(id), 0) FROM {TABLE}"
LAG_SQL = (
    "SELECT st_lag_num_events, coalesce(extract(epoch FROM st_lag_time), 0),"
    f" ({TOP_SQL}) FROM _replication.sl_status"
)


def lag_run(
    bed: Bed,
    pgbench: str,
    rate: int,
    seconds: int,
    clients: int,
    threads: int,
    catchup_timeout: float,
    history: list,
) -> dict:
    """pgbench at `rate` tps on db01 while sampling lag every second; then until db02
    has every row."""
    db01, db02 = bed["db01"], bed["db02"]
    cmd = (
        f"{pgbench} -n -f {SCRIPT} -R {rate} -T {seconds} -c {clients} -j {threads}"
        f" {DB}"
    )
    samples: list[list[float]] = []

    def sample(t0: float) -> tuple[float, int, int]:
        row = db01.psql(LAG_SQL, DB)[0]
        top1, top2 = int(row[2]), int(db02.value(TOP_SQL, DB))
        now = time.monotonic()
        history.append((now, top1))
        samples.append(
            [
                round(now - t0, 2),
                int(row[0]),
                float(row[1]),
                parse.data_lag(history, top2, now),
            ]
        )
        return now, top1, top2

    t0 = time.monotonic()
    for _ in range(3):  # a short baseline before the load
        sample(t0)
        time.sleep(max(0.0, 1 - (time.monotonic() - t0) % 1))
    start = time.monotonic() - t0
    out: list = []
    proc = threading.Thread(
        target=lambda: out.append(ssh_stream("db01", as_postgres(cmd), seconds + 120)),
        daemon=True,
    )
    proc.start()
    deadline = time.monotonic() + seconds + 120
    while proc.is_alive() and time.monotonic() < deadline:
        sample(t0)
        time.sleep(max(0.0, 1 - (time.monotonic() - t0) % 1))
    proc.join(timeout=10)
    end = time.monotonic() - t0
    if not out or out[0][0]:
        raise StepError(
            "db01",
            f"pgbench -R {rate} failed: "
            + ("\n".join(l for _, l in out[0][1][-5:]) if out else "did not finish"),
        )
    bench = parse.pgbench("\n".join(l for _, l in out[0][1]))
    final = int(db01.value(TOP_SQL, DB))
    caught_up = None
    limit = time.monotonic() + catchup_timeout
    while time.monotonic() < limit:
        now, _, top2 = sample(t0)
        if top2 >= final:
            caught_up = now - t0 - end
            break
        time.sleep(max(0.0, 1 - (time.monotonic() - t0) % 1))
    for _ in range(3):
        sample(t0)
        time.sleep(max(0.0, 1 - (time.monotonic() - t0) % 1))
    window = [s for s in samples if start <= s[0] <= end]
    stats = {
        "target": rate,
        "tps": bench["tps"],
        "schedule_lag_ms": bench["schedule_lag_ms"],
        "transactions": bench["transactions"],
        "reached": bool(bench["tps"] and bench["tps"] >= 0.9 * rate),
        "lag_median": parse.median([s[2] for s in window]),
        "lag_p95": parse.pct([s[2] for s in window], 95),
        "lag_max": max((s[2] for s in window), default=None),
        "events_max": max((s[1] for s in window), default=None),
        "data_median": parse.median([s[3] for s in window]),
        "data_p95": parse.pct([s[3] for s in window], 95),
        # Growing = the second half of the load lags more than the first (which includes
        # slon noticing that the load began, up to sync_interval_timeout).
        "data_slope": parse.slope(
            [(s[0], s[3]) for s in window if s[0] >= (start + end) / 2]
        ),
        "data_max_1st": max(
            (s[3] for s in window if s[0] < (start + end) / 2), default=None
        ),
        "data_max_2nd": max(
            (s[3] for s in window if s[0] >= (start + end) / 2), default=None
        ),
        "catch_up": caught_up,
    }
    say(
        f"  -R {rate}: {bench['tps'] or 0:.0f} tps; sl_status lag median"
        f" {stats['lag_median']:.1f} s, p95 {stats['lag_p95']:.1f} s; data lag median"
        f" {stats['data_median']:.1f} s, p95 {stats['data_p95']:.1f} s; caught up"
        f" {f'{caught_up:.0f} s' if caught_up is not None else 'NOT'} after the load"
    )
    return {
        "rate": rate,
        "start": start,
        "end": end,
        "samples": samples,
        "pgbench": bench,
        "stats": stats,
    }


def settle(
    bed: Bed,
    timeout: float = 120,
    max_lag: float | None = None,
    origin: str = "db01",
    receiver: str = "db02",
    rows: bool = True,
) -> float:
    """Wait (bounded) until the receiver has every row of the origin, then 2 s more;
    return the seconds.

    max_lag: also until sl_status on the origin shows no backlog older than that (inv
    switchover refuses more than one unconfirmed event older than its --max-lag,
    although the rows may all be there). rows=False: only that (while a writer runs, the
    receiver is always a few rows behind).
    """
    t0 = time.monotonic()
    limit = t0 + timeout
    while time.monotonic() < limit:
        row = bed[origin].psql(LAG_SQL, DB)[0]
        rows_in = not rows or int(bed[receiver].value(TOP_SQL, DB)) >= int(row[2])
        if rows_in and (
            max_lag is None or int(row[0]) <= 1 or float(row[1]) <= max_lag
        ):
            time.sleep(2)
            return time.monotonic() - t0
        time.sleep(1)
    say(f"  ({receiver} not settled after {timeout:.0f} s; going on)")
    return time.monotonic() - t0


def lag_phase(bed: Bed, args) -> list[dict]:
    db01 = bed["db01"]
    pgbench = newest(db01, "pgbench")
    db01.write_file(SCRIPT, INSERT, owner="postgres:postgres", mode="644")
    runs, history = [], []
    for rate in args.rates:
        settle(bed)
        runs.append(
            lag_run(
                bed,
                pgbench,
                rate,
                args.load_seconds,
                args.clients,
                args.threads,
                args.catchup_timeout,
                history,
            )
        )
    return runs


# --- 3. switchover under load ---------------------------------------------------------

BLOCKED = re.compile(r"blocked for at most ([\d.]+) s")


MOVES = (("switchover", "db01", "db02"), ("switchback", "db02", "db01"))


def both_ways(bed: Bed, writer, move) -> dict:
    """Switchover, then switchback, with `writer` running: for each, wait until inv
    switchover's own lag check would pass (see settle), then `move(name, origin,
    receiver, since)`; its figures by name, with that wait as "settle". The writer is
    stopped at the end, whatever happens."""
    settle(bed)
    writer.start()
    out: dict = {}
    try:
        time.sleep(5)
        for name, origin, receiver in MOVES:
            waited = settle(
                bed, max_lag=8, origin=origin, receiver=receiver, rows=False
            )
            out[name] = {
                **move(name, origin, receiver, time.monotonic()),
                "settle": waited,
            }
    finally:
        writer.stop()
    return out


def writer_stats(bed: Bed, writer, failed: str) -> dict:
    """A writer's attempts, acknowledged writes, failed ones (under the name
    `failed`), achieved rate, and acknowledged writes not on db01 exactly once."""
    span = (
        (writer.attempts[-1].end - writer.attempts[0].start) if writer.attempts else 0
    )
    missing, _ = writer.not_once(bed["db01"])
    return {
        "attempts": len(writer.attempts),
        "acknowledged": len(writer.acknowledged()),
        failed: sum(1 for a in writer.attempts if not a.ok),
        "achieved_rate": len(writer.attempts) / span if span else None,
        "lost_or_doubled": len(missing),
    }


def switch_phase(bed: Bed, args, tag: str) -> dict:
    writer = Writer(
        str(tb.current().ssh_config),
        rate=args.writer_rate,
        tag=tag,
        max_seconds=900,
        max_count=int(args.writer_rate * 900),
    )
    t0 = time.monotonic()

    def move(name: str, origin: str, receiver: str, since: float) -> dict:
        say(f"inv {name} with the writer at {args.writer_rate}/s")
        run = inv(bed, name, *PAIR, timeout=900, echo=False)
        end = time.monotonic()
        time.sleep(4)
        tool = next(
            (float(m[1]) for _, l in run["lines"] if (m := BLOCKED.search(l))), None
        )
        seen = writer.blocked_window(since)
        say(
            f"  {name}: {run['wall']:.1f} s end to end; writes blocked {tool} s (tool),"
            f" {f'{seen:.1f}' if seen is not None else 'none seen'} s (writer)"
        )
        return {
            "wall": run["wall"],
            "tool": tool,
            "writer": seen,
            "start": since - t0,
            "end": end - t0,
        }

    out: dict = {"rate": args.writer_rate, **both_ways(bed, writer, move)}
    out["writer_stats"] = writer_stats(bed, writer, failed="refused")
    out["attempts"] = [
        [round(a.start - t0, 3), round(a.end - a.start, 3), a.ok]
        for a in writer.attempts
    ]
    writer.check_acknowledged(
        bed["db01"]
    )  # StepError when a write is missing or doubled
    return out


# --- 3b. the runbook's way: altperl's slonik_move_set ---------------------------------


def wait_origin(bed: Bed, node: int, timeout: float = 120) -> None:
    """Until both nodes' catalogs name `node` as the set's origin."""
    deadline = time.monotonic() + timeout
    while any(bed.state(h)["origin"] != node for h in ("db01", "db02")):
        if time.monotonic() > deadline:
            raise StepError("bench", f"set 1 not at node {node} after {timeout:.0f} s")
        time.sleep(0.5)


def altperl_phase(bed: Bed, args, tag: str) -> dict:
    """The runbook's switchover, by hand: `slonik_move_set 1 node1 node2 | slonik` on
    the slon host as postgres (altperl, with the slon_tools.conf the config step writes;
    LOCK SET, SYNC, WAIT FOR EVENT, MOVE SET; the slons at their configured timing),
    then back; the same writer as phase 3.
    """
    writer = Writer(
        str(tb.current().ssh_config),
        rate=args.writer_rate,
        tag=tag,
        max_seconds=600,
        max_count=int(args.writer_rate * 600),
    )

    def move(name: str, origin: str, receiver: str, since: float) -> dict:
        a, b = origin[-1], receiver[-1]
        cmd = (
            f"slonik_move_set --config {CLUSTER.tools_conf} 1 node{a} node{b} | slonik"
        )
        say(f"altperl {name}: {cmd} (db02, as postgres)")
        rc, lines, wall = ssh_stream("db02", as_postgres(cmd), timeout=600)
        if rc:
            raise StepError(
                "db02", f"{cmd} exited {rc}: " + " ".join(l for _, l in lines[-5:])
            )
        wait_origin(bed, int(b))
        time.sleep(4)
        seen = writer.blocked_window(since)
        say(
            f"  altperl {name}: slonik {wall:.1f} s; writes blocked "
            f"{f'{seen:.1f}' if seen is not None else 'none seen'} s (writer)"
        )
        return {"wall": wall, "writer": seen}

    out: dict = {"rate": args.writer_rate, **both_ways(bed, writer, move)}
    writer.check_acknowledged(bed["db01"], timeout=30)
    out["acknowledged"] = len(writer.acknowledged())
    return out


# --- 4. switchover through PgBouncer --------------------------------------------------


def pooler_phase(bed: Bed, args, tag: str) -> dict:
    """The application (testbed/appwriter.py on app: one psycopg2 connection to
    PgBouncer, --app-rate inserts/s) while `inv switchover --pooler app` and `inv
    switchback --pooler app` run: the longest time one insert waited, errors, and every
    acknowledged row on db01 exactly once at the end.
    """
    bed.reset_pooler()
    writer = AppWriter(
        str(tb.current().ssh_config),
        tag=tag,
        rate=args.app_rate,
        max_seconds=900,
        max_count=int(args.app_rate * 900),
    )
    t0 = time.monotonic()

    def move(name: str, origin: str, receiver: str, since: float) -> dict:
        say(f"inv {name} --pooler app with the application at {args.app_rate:g}/s")
        run = inv(bed, name, *PAIR, "--pooler", "app", timeout=900, echo=False)
        end = time.monotonic()
        time.sleep(3)
        writer.fetch()
        stall = writer.longest_stall(since)
        errors = sum(1 for a in writer.attempts if a.start >= since and not a.ok)
        say(
            f"  {name} --pooler: {run['wall']:.1f} s end to end; the application's"
            f" longest wait {stall:.2f} s, {errors} error(s)"
        )
        return {
            "wall": run["wall"],
            "stall": stall,
            "errors": errors,
            "start": since - t0,
            "end": end - t0,
        }

    out: dict = {"rate": args.app_rate, **both_ways(bed, writer, move)}
    out["writer_stats"] = writer_stats(bed, writer, failed="errors")
    out["attempts"] = [
        [round(a.start - t0, 3), round(a.end - a.start, 3), a.ok]
        for a in writer.attempts
    ]
    writer.check_acknowledged(
        bed["db01"], timeout=30
    )  # StepError when a write is missing or doubled
    return out


# --- machine and versions -------------------------------------------------------------


def machine() -> dict:
    cpu = next(
        (
            l.split(":", 1)[1].strip()
            for l in Path("/proc/cpuinfo").read_text().splitlines()
            if l.startswith("model name")
        ),
        "?",
    )
    mem = next(
        (
            int(l.split()[1])
            for l in Path("/proc/meminfo").read_text().splitlines()
            if l.startswith("MemTotal")
        ),
        0,
    )
    docker = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    compose = subprocess.run(
        [*tb.compose_command(), "version", "--short"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem / 1024 / 1024, 1),
        "cpu": cpu,
        "kernel": os.uname().release,
        "docker": docker,
        "compose": compose,
        "loadavg_start": os.getloadavg(),
    }


def versions(bed: Bed) -> dict:
    out = {}
    for name in ("db01", "db02"):
        h = bed[name]
        out[name] = {
            "postgresql": h.value("SHOW server_version"),
            "os": h.run(". /etc/os-release && echo $PRETTY_NAME").stdout.strip(),
        }
    out["slony"] = bed["db02"].run("slon -v 2>&1 || true").stdout.strip()
    out["slony_db01"] = (
        bed["db01"]
        .run(
            "dpkg-query -W -f '${Version}' 'postgresql-*-slony1-2' 2>/dev/null || true"
        )
        .stdout.strip()
    )
    return out


# --- main -----------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--size-mb",
        type=int,
        default=1000,
        help="size of the demo database (default 1000)",
    )
    p.add_argument(
        "--reps",
        type=int,
        default=3,
        help="repetitions (default 3); the report shows medians",
    )
    p.add_argument(
        "--rates",
        default="50,200,800,2000,4000",
        help="pgbench rates in tps (default 50,200,800,2000,4000)",
    )
    p.add_argument(
        "--load-seconds", type=int, default=30, help="pgbench -T per rate (default 30)"
    )
    p.add_argument("--clients", type=int, default=4, help="pgbench -c (default 4)")
    p.add_argument("--threads", type=int, default=2, help="pgbench -j (default 2)")
    p.add_argument(
        "--catchup-timeout",
        type=float,
        default=300,
        help=(
            "wait at most this long for db02 to "
            "catch up after each load (default 300 s)"
        ),
    )
    p.add_argument(
        "--lag-bound",
        type=float,
        default=10.0,
        help=(
            "lag counts as bounded when its p95 (sl_status) "
            "stays below this many seconds and the data lag does not grow (default 10)"
        ),
    )
    p.add_argument(
        "--writer-rate",
        type=float,
        default=10.0,
        help="writer inserts/s during switchover (default 10)",
    )
    p.add_argument(
        "--sync-interval",
        default="2000:10000,default",
        help=(
            "slon sync settings to compare, comma-separated: 'default' (as inv config"
            " writes them), MS (sync_interval) or MS:MS"
            " (sync_interval:sync_interval_timeout); applied after migrate by editing"
            " both slon.conf files on db02 and restarting the slons (default:"
            " 2000:10000,default: the old slon defaults against the current ones)"
        ),
    )
    p.add_argument(
        "--app-rate",
        type=float,
        default=100.0,
        help=(
            "the application's inserts/s through PgBouncer "
            "during the pooler phase (default 100)"
        ),
    )
    p.add_argument(
        "--phases",
        default="copy,lag,switchover,altperl,pooler",
        help="what to measure (default copy,lag,switchover,altperl,pooler)",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="use the running testbed as it is (development)",
    )
    p.add_argument(
        "--keep", action="store_true", help="leave the testbed running at the end"
    )
    p.add_argument(
        "--out",
        default=str(ROOT / "docs"),
        help="where benchmarks.md/.json and lag.png go (docs/)",
    )
    p.add_argument(
        "--render",
        metavar="JSON",
        help="only rewrite the report from a benchmarks.json",
    )
    return p.parse_args()


def new_results(args, settings: list[dict], phases: set[str]) -> dict:
    """The results so far: how the run was asked for, on which machine; no
    repetitions yet."""
    return {
        "meta": {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "size_mb": args.size_mb,
            "reps": args.reps,
            "rates": args.rates,
            "load_seconds": args.load_seconds,
            "clients": args.clients,
            "threads": args.threads,
            "writer_rate": args.writer_rate,
            "app_rate": args.app_rate,
            "quick_sync": list(fabfile_settings.QUICK_SYNC),
            "lag_bound": args.lag_bound,
            "settings": [s["label"] for s in settings],
            "phases": sorted(phases),
            "command": " ".join(["bench/run.py", *sys.argv[1:]]),
            "testbed": tb.current().project,
            "machine": machine(),
        },
        "reps": [],
    }


def open_bed() -> Bed:
    """The testbed's hosts and the CLI's environment, with a SLONY_MIGRATE_HOME of
    the bench's own."""
    current = tb.current()
    bed = Bed(
        str(current.ssh_config),
        Path(os.environ.get("SLONY_MIGRATE_HOME") or (current.state / "bench-home")),
    )
    bed.home.mkdir(parents=True, exist_ok=True)
    bed.env["SLONY_MIGRATE_HOME"] = str(bed.home)
    return bed


def measure(
    bed: Bed, args, settings: list[dict], phases: set[str], results: dict
) -> None:
    """The database's size, then every repetition; into `results` as they are
    measured."""
    run_id = time.strftime("%H%M%S")
    results["meta"]["database"] = {
        "bytes": int(bed["db01"].value(f"SELECT pg_database_size('{DB}')")),
        "auth_message_rows": int(
            bed["db01"].value(f"SELECT count(*) FROM {TABLE}", DB)
        ),
    }
    say(f"database {DB} on db01: {results['meta']['database']['bytes'] / 1e6:.0f} MB")
    if "copy" in phases:
        say("Slony packages (once, outside the repetitions): inv install")
        results["install"] = inv(bed, "install", *PAIR, timeout=1800, echo=False)[
            "wall"
        ]
        say(f"install {results['install']:.1f} s")
    for rep in range(1, args.reps + 1):
        say(f"=== repetition {rep}/{args.reps}")
        r: dict = {"rep": rep}
        results["reps"].append(r)
        if "copy" in phases:
            copy_phase(bed, r)
        if phases & {"lag", "switchover"}:
            results["defaults"] = tool_defaults()
            r["settings"] = []
            setting_phases(
                bed,
                args,
                settings,
                phases,
                results["defaults"],
                r["settings"],
                tag=f"bench{run_id}r{rep}",
            )
        if "altperl" in phases:
            r["altperl"] = altperl_phase(bed, args, tag=f"bench{run_id}r{rep}a")
        if "pooler" in phases:
            r["pooler"] = pooler_phase(bed, args, tag=f"bench{run_id}r{rep}p")


def copy_phase(bed: Bed, r: dict) -> None:
    """1. the dump/restores and logical replication's initial sync, then (from a
    reset testbed) migrate and a no-op migrate; into the repetition `r`."""
    reset(bed)
    say(
        "the users and hba steps: db02 connects to db01 as the replication user (a"
        " .pgpass entry, a pg_hba line)"
    )
    inv(bed, "users", *PAIR, echo=False, timeout=300)
    inv(bed, "hba", *PAIR, echo=False, timeout=300)
    r["dump"] = dump_restore(bed)
    r["dump_parallel"] = dump_restore_parallel(bed)
    r["logical"] = logical_sync(bed)
    reset(bed)
    r["migrate"] = migrate(bed)
    r["noop"] = noop(bed)


def setting_phases(
    bed: Bed,
    args,
    settings: list[dict],
    phases: set[str],
    defaults: dict[str, int],
    out: list[dict],
    tag: str,
) -> None:
    """2. and 3. for each slon setting; appended to `out` as they are measured."""
    for i, setting in enumerate(settings):
        applied = apply_setting(bed, setting, defaults)
        s = {"label": setting["label"], **applied}
        out.append(s)
        say(
            f"--- slon setting {setting['label']}:"
            f" sync_interval={applied['sync_interval']} ms,"
            f" sync_interval_timeout={applied['sync_interval_timeout']} ms"
        )
        if "lag" in phases:
            s["lag"] = lag_phase(bed, args)
        if "switchover" in phases:
            # unique per run: the check counts the writer's rows by tag
            s["switch"] = switch_phase(bed, args, tag=f"{tag}s{i}")


def finish(
    bed: Bed | None, args, results: dict, started: float, failed: str | None
) -> None:
    """Versions, elapsed time and the failure into `results`; then remove the testbed
    unless kept."""
    if bed is not None:
        try:
            results["versions"] = versions(bed)
        except Exception as e:  # noqa: BLE001 - the report says what it could not read
            say(f"versions not read: {e}")
    results["meta"]["elapsed_s"] = round(time.monotonic() - started)
    results["meta"]["loadavg_end"] = os.getloadavg()
    if failed:
        results["meta"]["failed"] = failed
    if bed is not None:
        bed.hosts.__exit__()
    if not args.keep and not args.reuse:
        say(f"removing testbed {tb.current().project}")
        tb.compose("down", "-v", "--remove-orphans", check=False)


def write_results(results: dict, out: Path) -> None:
    """benchmarks.md, benchmarks.json and lag.png when a repetition began; the report
    on stdout."""
    if results["reps"]:
        report.write(results, out)
        print()
        print(report.markdown(results))
        say(
            f"wrote {out / 'benchmarks.md'}, {out / 'benchmarks.json'},"
            f" {out / 'lag.png'}"
        )
    say(f"elapsed {results['meta']['elapsed_s'] / 60:.1f} min")


def main() -> int:
    args = parse_args()
    out = Path(args.out)
    if args.render:
        results = json.loads(Path(args.render).read_text())
        report.write(results, out)
        print(report.markdown(results))
        return 0
    args.rates = [int(r) for r in args.rates.split(",") if r.strip()]
    settings = parse_settings(args.sync_interval)
    phases = set(args.phases.split(","))
    started = time.monotonic()
    results = new_results(args, settings, phases)
    failed = None
    bed = None
    try:
        if not args.reuse:
            fresh_testbed(args.size_mb)
        bed = open_bed()
        measure(bed, args, settings, phases, results)
    except Exception as e:  # keep what was measured; say what failed
        failed = f"{type(e).__name__}: {e}"
        say(f"FAILED: {failed}")
    finally:
        finish(bed, args, results, started, failed)
    write_results(results, out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
