"""Faults in the end-game (issue 11): slonik killed, the tool killed, an
application's transaction in a deadlock with finish, the origin's server dead after a
switchover. Each time under a writer; every acknowledged write exactly once; no set
left locked."""

import json
import signal
import time

from fabfile import facts
from testbed import compose as tb
from testbed.bed import CLUSTER
from testbed.writer import Writer

ARGS = ("--master", "db01", "--slave", "db02")


def status(bed, *extra: str) -> dict:
    return json.loads(bed.inv("status", *ARGS, *extra, "--json").stdout)


def on_db01_origin(bed) -> None:
    if status(bed)["origin"] != "db01":
        bed.inv("switchback", *ARGS)


def test_the_move_killed_between_lock_set_and_move_set(migrated):
    """Case 1: the set is unlocked, writes go on at db01 within a few seconds, no
    wait is left running in db02's server; the next switchover works."""
    bed = migrated
    on_db01_origin(bed)
    # A transaction with an xid on db01 holds LOCK SET in its wait for older
    # transactions. On db02 (the slon host): as soon as db01's set is locked, freeze the
    # receiver's slon (so the move phase waits for its SYNC), end that transaction (the
    # move phase starts), then kill the move's process group (psql, and the timeout that
    # bounds it), as a crash or an operator's kill would. Gives up after 120 s.
    watcher = """#!/bin/sh
end=$(( $(date +%s) + 120 ))
on_db01() { psql -w -X -A -t -h db01 -U slony -d shotserver04 -c "$1"; }
until [ "$(on_db01 'SELECT set_locked IS NOT NULL FROM _replication.sl_set' 2>/dev/null)" = t ]; do
    [ "$(date +%s)" -lt "$end" ] || exit 1
    sleep 0.05
done
pkill -STOP -f '[s]lon -f /etc/slony1/node2/'
on_db01 "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'held-xact'"
sleep 1
p=$(cat /var/run/slony1/slonik-replication.pid) && kill -s KILL -- "-$p" && date +%s.%N > /tmp/slonik-killed
sleep 1
pkill -CONT -f '[s]lon -f /etc/slony1/node2/'
"""
    db02 = bed["db02"]
    db02.run("sudo -n rm -f /tmp/slonik-killed")
    db02.write_file(
        "/tmp/kill-slonik.sh", watcher, owner="postgres:postgres", mode="755"
    )
    db02.sudo(
        "setsid -f /tmp/kill-slonik.sh >/dev/null 2>&1 </dev/null", user="postgres"
    )
    writer = Writer(
        bed.ssh_config, tag="slonikkill", rate=5, max_seconds=240, max_count=1200
    ).start()
    try:
        time.sleep(2)
        bed["db01"].sudo(
            "PGAPPNAME=held-xact setsid -f psql -X -q -d shotserver04 -c 'BEGIN; SELECT"
            " txid_current(); SELECT pg_sleep(60); COMMIT' >/dev/null 2>&1 </dev/null",
            user="postgres",
            stdin="",
        )
        result = bed.inv(
            "switchover", *ARGS, "--xact-age", "600", check=False, timeout=300
        )
        ended = time.monotonic()
        time.sleep(5)
    finally:
        writer.stop()
    assert db02.run("cat /tmp/slonik-killed", check=False).ok, (
        "the move was never killed"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "move set failed (db02 to confirm SYNC" in result.stderr, result.stderr
    assert "set 1 unlocked, writes go on at db01" in result.stderr
    # PostgreSQL 17 on db02 notices within a second that psql is gone
    # (client_connection_check_interval)
    assert bed.sql(
        "db02", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'DO $w$%'"
    ) == [["0"]]
    report = status(bed)
    assert (
        report["origin"] == "db01"
        and report["locked"] == []
        and report["slonik"] is None
    )
    last_refused = max(a.start for a in writer.attempts if not a.ok)
    resumed = next(a for a in writer.attempts if a.ok and a.start > last_refused)
    print(
        f"the move killed: writes accepted on db01 again {resumed.end - ended:+.1f} s"
        " after the tool returned"
    )
    assert resumed.end - ended < 5
    bed.assert_acknowledged_once(writer, "db01")
    out = bed.inv("switchover", *ARGS).stdout
    assert "set 1 moved to db02" in out and status(bed)["origin"] == "db02"


def test_tool_killed_in_the_middle_of_a_switchover(migrated):
    """Case 2: status shows the truth (set locked, its psql running); the orphaned lock
    phase completes, never gets the move, and the slon host unlocks the set itself;
    switchover again completes.
    """
    bed = migrated
    on_db01_origin(bed)
    db01, db02 = bed["db01"], bed["db02"]
    # A transaction with an xid and no table lock: LOCK SET locks the set, then waits
    # for it.
    db01.sudo(
        "PGAPPNAME=held-xact setsid -f psql -X -q -d shotserver04 -c 'BEGIN; SELECT"
        " txid_current(); SELECT pg_sleep(120); COMMIT' >/dev/null 2>&1 </dev/null",
        user="postgres",
        stdin="",
    )
    writer = Writer(
        bed.ssh_config, tag="toolkill", rate=5, max_seconds=300, max_count=1500
    ).start()
    try:
        time.sleep(2)
        proc = bed.popen(
            "switchover", *ARGS, "--lock-timeout", "60", "--xact-age", "600"
        )
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "lock set 1 on db01, move it to db02" in line:
                break
        deadline = time.monotonic() + 30
        while bed.sql("db01", "SELECT set_locked IS NULL FROM _replication.sl_set") == [
            ["t"]
        ]:
            assert time.monotonic() < deadline, "".join(seen)
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        report = status(bed)
        assert report["locked"] == ["db01"] and report["slonik"], report
        text = bed.inv("status", *ARGS).stdout
        assert (
            "SET LOCKED on db01: application writes are refused" in text
            and "slonik still running" in text
        )
        # The transaction ends: the orphaned LOCK SET completes, the move never comes
        # (its stdin ends with the tool's SSH connection): the slon host unlocks the
        # set, writes go on at db01.
        db01.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE"
            " application_name = 'held-xact'"
        )
        deadline = time.monotonic() + 30
        while status(bed)["slonik"] or status(bed)["locked"]:
            assert time.monotonic() < deadline, (
                f"the orphaned lock phase did not end and unlock: {status(bed)}"
            )
            time.sleep(1)
        report = status(bed)
        assert report["locked"] == [] and report["origin"] == "db01", report
        assert not db02.run(
            "test -e /var/run/slony1/locked-replication", check=False
        ).ok
        out = bed.inv("switchover", *ARGS, timeout=300).stdout
        time.sleep(3)
    finally:
        writer.stop()
        db01.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE"
            " application_name = 'held-xact'"
        )
    assert "left locked by an interrupted switchover" not in out, out
    assert "set 1 moved to db02" in out
    report = status(bed)
    assert report["origin"] == "db02" and report["locked"] == []
    bed.assert_acknowledged_once(writer, "db02", timeout=30)


# On db02 (the origin), as postgres, while `inv finish` runs: an application's insert in
# a lock cycle with the uninstall, where the application began waiting first (found by
# CI: the writer's insert got "deadlock detected"). A transaction holds websites_website
# (the first table whose trigger DROP SCHEMA _replication CASCADE drops), so the
# uninstall, holding Slony's tables, waits there; the application inserts into
# auth_message and waits for Slony's tables; then the holder ends and the uninstall goes
# on to the tables the application holds. Each round the uninstall gives up before the
# application waited is tried again in the next attempt. Gives up after 60 s; the holder
# never outlives it.
DEADLOCK = """#!/bin/sh
P="psql -X -A -t -q -d shotserver04"
end=$(( $(date +%s) + 60 ))
waiting() { [ "$($P -c "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted AND $1")" != 0 ]; }
holder() { $P -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'holder'" >/dev/null; }
trap holder EXIT
PGAPPNAME=holder $P -c "BEGIN; LOCK TABLE websites_website IN ROW EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT" >/dev/null 2>&1 &
for round in 1 2 3 4 5 6 7 8 9 10; do
    until waiting "l.relation = 'websites_website'::regclass AND l.mode = 'AccessExclusiveLock'"; do
        [ "$(date +%s)" -lt "$end" ] || exit 1
        sleep 0.02
    done
    PGAPPNAME=app $P -c "INSERT INTO auth_message (user_id, message) VALUES (1, 'deadlock $round')" >> /tmp/app.out 2>&1 &
    app=$!
    until waiting "a.application_name = 'app'"; do
        kill -0 $app 2>/dev/null || continue 2
        sleep 0.02
    done
    echo "$round" > /tmp/app.waited
    holder
    wait $app
    echo "rc=$?" >> /tmp/app.out
    exit 0
done
"""


def test_finish_gives_way_in_a_deadlock_with_the_application(migrated):
    """The application's insert is never the one PostgreSQL cancels: the uninstall
    gives way and tries again."""
    bed = migrated
    if status(bed)["origin"] != "db02":
        bed.inv("switchover", *ARGS)
    db02 = bed["db02"]
    db02.run("sudo -n rm -f /tmp/app.out /tmp/app.waited")
    db02.write_file("/tmp/deadlock.sh", DEADLOCK, owner="postgres:postgres", mode="755")
    db02.sudo("setsid -f /tmp/deadlock.sh >/dev/null 2>&1 </dev/null", user="postgres")
    out = bed.inv("finish", *ARGS, "--yes", timeout=300).stdout
    deadline = time.monotonic() + 20
    while "rc=" not in (db02.read_file("/tmp/app.out") or ""):
        assert time.monotonic() < deadline, db02.read_file("/tmp/app.out")
        time.sleep(0.3)
    assert db02.read_file("/tmp/app.waited"), (
        "the application never waited for the uninstall"
    )
    assert db02.read_file("/tmp/app.out").strip().splitlines()[-1] == "rc=0", (
        db02.read_file("/tmp/app.out")
    )
    assert (
        "a deadlock with the application's transaction: the uninstall gave way; trying"
        " again" in out
    ), out
    assert "replication removed" in out
    rows = bed.sql(
        "db02",
        "SELECT count(*), count(DISTINCT message) FROM auth_message WHERE message LIKE"
        " 'deadlock %'",
    )
    assert rows[0][0] == rows[0][1] and int(rows[0][0]) >= 1, rows
    assert not facts.cluster_exists(db02, CLUSTER)
    assert (
        bed.sql("db02", "SELECT pid FROM pg_locks WHERE NOT granted", "postgres") == []
    )
    assert (
        bed.sql(
            "db02",
            "SELECT pid FROM pg_stat_activity WHERE application_name IN ('holder',"
            " 'app')",
            "postgres",
        )
        == []
    )


def test_failover_after_a_switchover_promotes_db01(bed):
    """Case 4: slon host db01, switchover to db02, then db02 dies: db01 is promoted,
    nothing acknowledged lost."""
    bed.reset()
    pair = (*ARGS, "--slon-host", "db01")
    bed.inv("migrate", *pair, timeout=900)
    bed.inv("switchover", *pair, timeout=300)
    writer = Writer(
        bed.ssh_config,
        tag="failback",
        rate=5,
        max_seconds=60,
        max_count=40,
        hosts=("db02", "db01"),
    ).start()
    time.sleep(5)
    writer.stop()
    digests = bed.wait_same()
    tb.compose("stop", "db02")
    try:
        result = bed.inv("failover", *pair, "--yes", timeout=600)
        assert "last event from db02 received at" in result.stdout, result.stdout
        assert "db01 is the origin and accepts writes" in result.stdout
        assert bed.table_digests("db01") == digests
        bed.assert_acknowledged_once(writer, "db01")
        bed.sql(
            "db01",
            "INSERT INTO websites_domain (name) VALUES ('after-failback.example')",
        )
    finally:
        tb.compose("start", "db02")
        tb.wait_healthy()
        bed.hosts["db02"].close()
        bed.reset()
