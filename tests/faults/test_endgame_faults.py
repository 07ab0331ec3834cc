"""Faults in the end-game (issue 11): slonik killed, the tool killed, an
application's transaction in a deadlock with finish, the origin's server dead after a
switchover. Each time under a writer; every acknowledged write exactly once; no set
left locked.

After a failover (issue 24): the old origin's container killed under the application,
failover, the old origin started again: it refuses the application, status says what
happened (CRITICAL), lost-rows names the acknowledged writes only it has, rejoin (killed
once on the way) makes it a subscriber, verify passes, the origin moves back; in both
directions. And an origin that only restarted takes writes again once its slon is back.
"""

import re
import signal
import time
from pathlib import Path

from fabfile import facts
from testbed import compose as tb
from testbed.bed import CLUSTER
from testbed.writer import AppWriter, Writer

ARGS = ("--master", "db01", "--slave", "db02")


def status(bed, *extra: str) -> dict:
    return bed.status(*ARGS, *extra)


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
pkill -STOP -f '[s]lon -f {conf}'
on_db01 "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'held-xact'"
sleep 1
p=$(cat {slonik_pid}) && kill -s KILL -- "-$p" && date +%s.%N > /tmp/slonik-killed
sleep 1
pkill -CONT -f '[s]lon -f {conf}'
""".replace("{conf}", CLUSTER.slon_conf(CLUSTER.slave)).replace(
        "{slonik_pid}", CLUSTER.slonik_pidfile
    )
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
        text = bed.inv("status", *ARGS, check=False).stdout
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
        assert not db02.run(f"test -e {CLUSTER.lock_mark}", check=False).ok
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


# --- after a failover (issue 24) -----------------------------------------------------


def app_insert(bed, host: str, text: str):
    """The application's role, johann, logging in to `host` with its password from the
    app host (not through PgBouncer) and inserting a row: the result."""
    password = (tb.current().state / "app" / "johann.password").read_text().strip()
    app = bed["app"]
    app.run(
        "umask 077; cat > /tmp/direct.pgpass",
        stdin=f"{host}:5432:shotserver04:johann:{password}\n",
    )
    return app.run(
        f"PGPASSFILE=/tmp/direct.pgpass PGCONNECT_TIMEOUT=5 psql -X -w 'host={host}"
        " dbname=shotserver04 user=johann sslmode=require' -c \"INSERT INTO"
        f" auth_message (user_id, message) VALUES (1, '{text}')\"",
        check=False,
    )


def lost_ids(path: str, tag: str) -> set[int]:
    """The writer's numbers in a lost-rows file's INSERT statements."""
    return {int(n) for n in re.findall(rf"'{tag} (\d+)'", Path(path).read_text())}


def rejoin_killed_then_again(bed, pair: tuple[str, ...], node: str) -> str:
    """rejoin killed right after it stored the node again (before the slon, the
    subscription, the copy), then run again: its output."""
    proc = bed.popen("rejoin", *pair, "--yes")
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if f"[{node}] rejoin: guard:" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    text = "".join(seen)
    assert "lost row" in text or "write(s)" in text, text
    return bed.inv("rejoin", *pair, "--yes", timeout=600).stdout


def fail_over_and_return(bed, pair: tuple[str, ...], dead: str, survivor: str) -> None:
    """The lifecycle of issue 24 with the application writing through PgBouncer on
    app: `dead` (the origin) killed, failover --pooler app, `dead` back and refused,
    status, lost-rows, rejoin, verify, the origin moved back to `dead`; every
    acknowledged write once on the final origin, but the lost ones, which are all and
    only in the lost-rows file."""
    writer = AppWriter(
        bed.ssh_config, tag=f"ret{dead[-1]}", rate=8, max_count=4000, max_seconds=400
    ).start()
    try:
        time.sleep(6)
        tb.compose("kill", dead)
        killed = time.monotonic()
        bed.hosts[dead].close()
        failover = bed.inv("failover", *pair, "--yes", "--pooler", "app", timeout=300)
        assert f"{survivor} is the origin and accepts writes" in failover.stdout
        print(failover.stdout.strip().splitlines()[-1])
        time.sleep(3)
        writer.fetch()
        first = next((a for a in writer.attempts if a.ok and a.start > killed), None)
        assert first, "no write accepted after the failover"
        print(
            f"failover: the application's writes accepted again {first.end - killed:.1f}"
            f" s after {dead} was killed (through PgBouncer)"
        )
        tb.compose("start", dead)
        tb.wait_healthy()
        bed.hosts[dead].close()
        # Back, before any command of the tool: it refuses the application by itself.
        refused = app_insert(bed, dead, "after the return")
        assert refused.failed and "slony-migrate: writes refused" in refused.stderr, (
            refused.stdout + refused.stderr
        )
        # The slon host boots meanwhile: Debian's slony1 service starts a slon for
        # every /etc/slony1/*/slon.conf. The dropped node's was set aside by the
        # failover, so its slon (which would uninstall Slony there) stays down.
        conf = CLUSTER.slon_conf(CLUSTER.master if dead == "db01" else CLUSTER.slave)
        slon_host = bed[survivor]
        assert slon_host.sudo(
            f"test -e {conf}.failed-over && test ! -e {conf}", check=False
        ).ok
        slon_host.sudo("/etc/init.d/slony1 start", check=False)
        time.sleep(3)
        running = slon_host.run("ps -eo args", check=False).stdout
        assert conf not in running and "slon" in running, running
        check = bed.inv("status", *pair, "--check", check=False)
        assert check.returncode == 2, check.stdout + check.stderr
        assert check.stdout.startswith(f"SLONY CRITICAL - {dead}, failed over at")
        assert "(fenced now)" in check.stdout and check.stdout.count("\n") == 1
        assert f"[{dead}] fence: fence shotserver04" in check.stderr, check.stderr
        refused = app_insert(bed, dead, "after the fence")
        assert refused.failed and "permission denied for database" in refused.stderr
        text = bed.inv("status", *pair, check=False).stdout
        assert f"{dead}: FAILED OVER at" in text and "still holds" in text, text
        assert "MOVE IN FLIGHT" not in text and "fenced (no application" in text
        assert f"origin: {survivor}" in text
        again = bed.inv("status", *pair, "--check", check=False)
        assert again.returncode == 1 and again.stdout.startswith("SLONY WARNING"), (
            again.stdout
        )
        listed = bed.inv("lost-rows", *pair).stdout
        path = re.search(r"written to (\S+\.sql) \(mode 0600\)", listed).group(1)
        assert oct(Path(path).stat().st_mode & 0o777) == "0o600"
        lost = lost_ids(path, writer.tag)
        writer.fetch()
        missing, doubled = writer.not_once(bed[survivor])
        assert not doubled
        unacked = {a.id for a in writer.attempts if not a.ok}
        print(
            f"lost-rows: {len(lost)} write(s) of the application only on {dead},"
            f" {len(missing)} acknowledged writes missing on {survivor}"
        )
        assert set(missing) <= lost and lost - set(missing) <= unacked, (
            sorted(missing),
            sorted(lost),
        )
        out = rejoin_killed_then_again(bed, pair, dead)
        assert "initial copy of set 1 done" in out and "lift the fence" in out, out
        assert "nothing to do" in bed.inv("rejoin", *pair, "--yes").stdout
        assert bed.inv("status", *pair, "--check").stdout.startswith("SLONY OK")
        bed.inv("verify", *pair, timeout=300)
        target = "switchback" if dead == "db01" else "switchover"
        moved = bed.inv(target, *pair, "--pooler", "app", timeout=300).stdout
        assert f"set 1 moved to {dead}" in moved, moved
        time.sleep(3)
    finally:
        writer.stop()
        if not tb.healthy():
            tb.compose("start", dead)
            tb.wait_healthy()
            bed.hosts[dead].close()
    never = lost
    on_dead = {
        int(n): int(c) for n, c in bed[dead].psql(writer.count_sql(), "shotserver04")
    }
    assert not [n for n in never if n in on_dead], "a lost row was applied by itself"
    kept = [n for n in writer.acknowledged() if n not in never]
    assert len(kept) > 20 and [n for n in kept if on_dead.get(n) != 1] == []


def test_failover_then_the_old_origin_comes_back_and_rejoins(bed):
    """db01, the origin, is killed under the application (PgBouncer on app); db02 is
    promoted; db01 comes back and is rebuilt as db02's subscriber; switchback."""
    bed.reset()
    bed.inv("migrate", *ARGS, timeout=900)
    fail_over_and_return(bed, ARGS, "db01", "db02")


def test_failover_after_a_switchover_then_db02_comes_back_and_rejoins(bed):
    """The same the other way: slon host db01, switchover to db02 (PgBouncer with
    it), db02 killed, db01 promoted, db02 back, rejoined, switchover again."""
    bed.reset()
    pair = (*ARGS, "--slon-host", "db01")
    try:
        bed.inv("migrate", *pair, timeout=900)
        bed.inv("switchover", *pair, "--pooler", "app", timeout=300)
        fail_over_and_return(bed, pair, "db02", "db01")
    finally:
        bed.reset()


def test_an_origin_that_only_restarted_takes_writes_again_once_its_slon_is_back(
    migrated,
):
    """The guard's price: after a restart of the origin's PostgreSQL its writes are
    refused until its slon has reconnected (slon waits 10 s before it retries)."""
    bed = migrated
    on_db01_origin(bed)
    writer = Writer(
        bed.ssh_config, tag="restarted", rate=5, max_seconds=120, max_count=500
    ).start()
    try:
        time.sleep(3)
        since = time.monotonic()
        bed["db01"].sudo("pg_ctlcluster 15 main restart")
        deadline = time.monotonic() + 60
        while True:
            time.sleep(1)
            late = [a for a in writer.attempts if a.start > since + 1]
            if any(a.ok for a in late):
                break
            assert time.monotonic() < deadline, [a.error for a in late][-3:]
        time.sleep(2)
    finally:
        writer.stop()
    refused = [a for a in writer.attempts if a.start > since and not a.ok]
    assert any("slony-migrate: writes refused" in a.error for a in refused), [
        a.error for a in refused
    ][:3]
    window = writer.blocked_window(since) or 0.0
    print(f"origin restarted: writes refused or failing for {window:.1f} s")
    assert window < 30
    bed.assert_acknowledged_once(writer, "db02", timeout=60)
