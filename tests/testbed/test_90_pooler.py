"""Issue 14: a switchover through PgBouncer that the application does not notice. The
application is appwriter.py on the app host: one psycopg2 connection to PgBouncer
(transaction pooling), 100 inserts/s.
"""

import signal
import statistics
import time

from fabfile import settings
from testbed.bed import CLUSTER, ROW_LOCK
from testbed.writer import AppWriter

ARGS = ("--master", "db01", "--slave", "db02")


def assert_configured_timing(bed) -> None:
    """Both slons run with the configured timing again (issue 14: also after a failed
    switchover)."""
    for n in (1, 2):
        conf = bed["db02"].read_file(CLUSTER.slon_conf(CLUSTER.node(n)))
        assert (
            "sync_interval=1000\n" in conf and "sync_interval_timeout=2000\n" in conf
        ), conf
        assert (
            bed["db02"].read_file(CLUSTER.slon_conf(CLUSTER.node(n)) + ".configured")
            is None
        )
        deadline = time.monotonic() + 10
        while (
            logged_interval(bed, n) != 1000
        ):  # what the running slon said when it started
            assert time.monotonic() < deadline, (
                f"slon for node{n} runs with sync_interval {logged_interval(bed, n)}"
            )
            time.sleep(0.5)


def logged_interval(bed, n: int) -> int:
    lines = (
        bed["db02"]
        .run(
            "sudo -n grep -h 'Integer option sync_interval = '"
            f" {CLUSTER.slon_log(CLUSTER.node(n))}",
            check=False,
        )
        .stdout.splitlines()
    )
    return int(lines[-1].rsplit("=", 1)[1]) if lines else 0


def at_db01(bed) -> None:
    """db01 is the origin, and PgBouncer sends the application there."""
    if bed.status(*ARGS)["origin"] != "db01":
        bed.inv("switchback", *ARGS)
    bed.reset_pooler()


def test_switchover_switchback_switchover_through_pgbouncer_the_application_sees_no_error(
    migrated,
):
    bed = migrated
    at_db01(bed)
    writer = AppWriter(
        bed.ssh_config, tag="pooled", rate=100, max_count=60_000, max_seconds=500
    ).start()
    stalls = []
    try:
        time.sleep(3)
        for task, to in (
            ("switchover", "db02"),
            ("switchback", "db01"),
            ("switchover", "db02"),
        ):
            since = time.monotonic()
            out = bed.inv(task, *ARGS, "--pooler", "app").stdout
            assert (
                f"PgBouncer points shotserver04 at {to} ({to}), reloaded, resumed"
                " shotserver04" in out
            ), out
            assert bed.pooler_target() == to
            assert (
                "set sync_interval {} ms, sync_interval_timeout {} ms".format(
                    *settings.QUICK_SYNC
                )
                in out
            )
            assert_configured_timing(bed)
            time.sleep(2)
            stalls.append(writer.fetch().longest_stall(since))
            print(
                f"{task} through PgBouncer: the application's longest wait"
                f" {stalls[-1]:.2f} s"
            )
    finally:
        writer.stop()
    quick = (
        bed["db02"]
        .run(
            "sudo -n grep -c 'Integer option sync_interval ="
            f" {settings.QUICK_SYNC[0]}$'"
            f" {CLUSTER.slon_log(CLUSTER.slave)}",
            check=False,
        )
        .stdout
    )
    assert int(quick or 0) >= 3, "the slons never ran with the quick timing"
    assert writer.errors() == [], writer.errors()[:5]
    assert len(writer.acknowledged()) > 1000
    bed.assert_acknowledged_once(writer, "db02", timeout=30)
    print(
        f"through PgBouncer: median wait {statistics.median(stalls):.2f} s, longest"
        f" {max(stalls):.2f} s, {len(writer.acknowledged())} writes, 0 errors"
    )


def test_a_lock_set_failing_after_pause_resumes_pgbouncer_at_the_origin(migrated):
    """A failure after PAUSE: a transaction outside PgBouncer holds a row, LOCK SET
    gives up after 3 s. PgBouncer is resumed, still pointed at db01; the application saw
    a wait, no error, no lost row.
    """
    bed = migrated
    at_db01(bed)
    pid = bed.hold_transaction(ROW_LOCK, "pooler-blocker")
    writer = AppWriter(
        bed.ssh_config, tag="pausefail", rate=100, max_count=10_000, max_seconds=120
    ).start()
    try:
        time.sleep(2)
        since = time.monotonic()
        result = bed.inv(
            "switchover",
            *ARGS,
            "--pooler",
            "app",
            "--lock-timeout",
            "3",
            "--xact-age",
            "600",
            check=False,
        )
        time.sleep(2)
    finally:
        writer.stop()
        bed.end_transaction("pooler-blocker")
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "LOCK SET did not succeed within 3 s" in result.stderr
        and f"pid {pid}" in result.stderr
    )
    assert "PgBouncer resumed shotserver04" in result.stdout
    assert bed.pooler_target() == "db01"
    assert (
        f"configured timing back in {CLUSTER.slon_conf(CLUSTER.slave)}" in result.stdout
    )
    assert_configured_timing(bed)
    assert writer.errors() == [], writer.errors()[:5]
    print(
        "LOCK SET failed after PAUSE: the application's longest wait"
        f" {writer.longest_stall(since):.2f} s"
    )
    assert writer.longest_stall(since) < 3 + 3
    bed.assert_acknowledged_once(writer, "db01", timeout=30)


def test_a_run_killed_while_pgbouncer_is_paused_is_resumed_by_the_next_one(migrated):
    """The tool SIGKILLed after PAUSE, while LOCK SET waits for an older transaction:
    PgBouncer stays paused and the application waits. The next switchover unlocks the
    set, resumes PgBouncer at the origin, then moves the set: the application saw a
    wait, no error, no lost row."""
    bed = migrated
    at_db01(bed)
    bed.hold_transaction(
        "SELECT txid_current();", "held-xact"
    )  # an xid: LOCK SET waits for it
    writer = AppWriter(
        bed.ssh_config, tag="pausekill", rate=100, max_count=20_000, max_seconds=180
    ).start()
    try:
        time.sleep(2)
        proc = bed.popen(
            "switchover",
            *ARGS,
            "--pooler",
            "app",
            "--lock-timeout",
            "60",
            "--xact-age",
            "600",
        )
        deadline = time.monotonic() + 60
        while bed.sql("db01", "SELECT set_locked IS NULL FROM _replication.sl_set") == [
            ["t"]
        ]:
            assert time.monotonic() < deadline, "the set was never locked"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        killed = time.monotonic()
        assert (
            bed["db02"].read_file(CLUSTER.pooler_mark)
            == "app\n/etc/pgbouncer/pgbouncer.ini\n"
        )
        bed.end_transaction(
            "held-xact"
        )  # the orphaned LOCK SET completes; the move never comes
        out = bed.inv("switchover", *ARGS, "--pooler", "app", timeout=300).stdout
        time.sleep(2)
    finally:
        writer.stop()
        bed.end_transaction("held-xact")
    assert (
        "RESUME shotserver04 on PgBouncer (/etc/pgbouncer/pgbouncer.ini), left paused"
        " by an interrupted switchover, pointed at the origin db01" in out
    ), out
    assert "set 1 moved to db02" in out and bed.pooler_target() == "db02"
    assert bed["db02"].read_file(CLUSTER.pooler_mark) is None
    assert writer.errors() == [], writer.errors()[:5]
    print(
        "tool killed while PgBouncer was paused: the application waited"
        f" {writer.longest_stall(killed - 5):.1f} s until the next run resumed it"
    )
    bed.assert_acknowledged_once(writer, "db02", timeout=30)


def test_pause_that_cannot_complete_resumes_and_changes_nothing(migrated):
    """A transaction through PgBouncer that stays open: PAUSE cannot complete within
    --lock-timeout; PgBouncer resumes, nothing is locked or moved."""
    bed = migrated
    at_db01(bed)
    app = bed["app"]
    app.run(
        "setsid -f psql -X -q -h 127.0.0.1 -p 6432 -d shotserver04 -U johann -c 'BEGIN'"
        " -c 'SELECT pg_sleep(60)' >/dev/null 2>&1 </dev/null"
    )
    time.sleep(2)
    try:
        result = bed.inv(
            "switchover", *ARGS, "--pooler", "app", "--lock-timeout", "2", check=False
        )
    finally:
        app.run("pkill -f '[p]g_sleep'; true", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PAUSE shotserver04 did not complete within 2 s" in result.stderr, (
        result.stderr
    )
    assert "resumed, nothing changed" in result.stderr
    assert "set 1 locked" not in result.stdout
    assert bed.pooler_target() == "db01"
    probe = app.run(
        "psql -X -At -h 127.0.0.1 -p 6432 -d shotserver04 -U johann -c 'SELECT 1'",
        timeout=20,
    )
    assert probe.stdout.strip() == "1"


def test_a_pooler_left_at_the_old_origin_is_pointed_at_the_origin_by_the_next_run(
    migrated,
):
    """After a move whose RELOAD failed, PgBouncer still sends the application to the
    old origin, where Slony refuses its writes. The next `switchover --pooler` has
    nothing to move; it points PgBouncer at the origin and RELOADs, and the
    application's writes go through again."""
    bed = migrated
    at_db01(bed)
    bed.inv(
        "switchover", *ARGS
    )  # the set moves; PgBouncer is left at db01, as if its RELOAD had failed
    assert bed.pooler_target() == "db01"
    app = bed["app"]
    insert = (
        'psql -X -At -h 127.0.0.1 -p 6432 -d shotserver04 -U johann -c "INSERT INTO'
        " auth_message (user_id, message) VALUES (1, 'via pgbouncer') RETURNING 1\""
    )
    refused = app.run(insert, check=False, timeout=20)
    assert refused.failed and "cannot be modified on a subscriber" in refused.stderr, (
        refused.stderr
    )
    out = bed.inv("switchover", *ARGS, "--pooler", "app").stdout
    assert "db02 is already the origin of set 1; nothing to do" in out
    assert (
        "point PgBouncer's shotserver04 at the origin db02 (db02), then RELOAD: it"
        " sends it to db01" in out
    )
    assert bed.pooler_target() == "db02"
    assert (
        app.run(insert, timeout=20).stdout.splitlines()[0] == "1"
    )  # the row went to db02
    again = bed.inv("switchover", *ARGS, "--pooler", "app").stdout
    assert "PgBouncer sends shotserver04 to the origin db02" in again
