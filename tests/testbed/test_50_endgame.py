"""The end-game on the real testbed: status, verify, switchover and back under a
writer, finish, failover."""

import contextlib
import time

from fabfile import facts
from testbed import compose as tb
from testbed.bed import CLUSTER, ROW_LOCK
from testbed.writer import LOCKED, SUBSCRIBER, Writer

ARGS = ("--master", "db01", "--slave", "db02")


def origin(bed) -> str:
    return bed.status(*ARGS)["origin"]


def test_status_shows_nodes_origin_subscription_slons_and_lag(migrated):
    report = migrated.status(*ARGS)
    assert report["origin"] == "db01"
    assert report["subscription"] == {
        "receiver": "db02",
        "exists": True,
        "active": True,
    }
    assert all(report["slons"].values())
    assert report["lag"][0]["node"] == "db02" and report["lag"][0]["events"] >= 0
    text = migrated.inv("status", *ARGS).stdout
    assert (
        "subscription: db02: copy done, replicating" in text and "lag to db02" in text
    )


def test_verify_passes_then_names_a_table_changed_behind_slonys_back(migrated):
    bed = migrated
    assert "tables" in bed.inv("verify", *ARGS).stdout
    email = bed.sql("db02", "SELECT email FROM auth_user WHERE id = 3")[0][0]
    bed.sql(
        "db02",
        "SET session_replication_role = replica; UPDATE auth_user SET email ="
        " 'tampered' WHERE id = 3",
    )
    try:
        result = bed.inv("verify", *ARGS, check=False)
        assert result.returncode == 1
        assert "table public.auth_user" in result.stderr
        assert "public.auth_message" not in result.stderr
    finally:
        bed.sql(
            "db02",
            "SET session_replication_role = replica; "
            f"UPDATE auth_user SET email = '{email}' WHERE id = 3",
        )


def switch_under_writer(
    bed, task: str, new_origin: str, tag: str
) -> tuple[Writer, str]:
    """Run `inv TASK` while a writer inserts rows; return the writer and the task's
    output."""
    writer = Writer(
        bed.ssh_config, tag=tag, rate=5, max_seconds=240, max_count=1200
    ).start()
    try:
        time.sleep(3)
        since = time.monotonic()
        result = bed.inv(task, *ARGS, timeout=300)
        time.sleep(4)
    finally:
        writer.stop()
    assert writer.target == new_origin
    window = writer.blocked_window(since)
    print(
        f"{task}: writer saw writes blocked for {window:.2f} s"
        if window is not None
        else f"{task}: the writer saw no write refused or stalled"
    )
    return writer, result.stdout


def assert_every_acknowledged_write_once(bed, writer: Writer, host: str):
    bed.assert_acknowledged_once(writer, host)
    failures = [a.error for a in writer.attempts if not a.ok]
    assert failures, "the writer never saw the lock: no blocked window was measured"
    assert all(LOCKED in e or SUBSCRIBER in e for e in failures), failures


def test_switchover_under_a_writer_loses_no_acknowledged_write(migrated):
    bed = migrated
    writer, out = switch_under_writer(bed, "switchover", "db02", "so1")
    assert "writes were blocked for at most" in out
    assert (
        "db01 is a subscriber: Slony's deny-access trigger refuses writes on all 8"
        " tables" in out
    )
    assert (
        "db02 is the origin: all 8 tables log and take writes" in out
        and "replicated back" in out
    )
    assert_every_acknowledged_write_once(bed, writer, "db02")
    assert origin(bed) == "db02"
    assert bed.inv("verify", *ARGS).returncode == 0
    assert (
        "cannot be modified on a subscriber"
        in bed["db01"]
        .sudo(
            'psql -X -d shotserver04 -c "INSERT INTO websites_domain (name) VALUES'
            " ('refused.example')\"",
            user="postgres",
            check=False,
        )
        .stderr
    )
    bed.sql("db02", "INSERT INTO websites_domain (name) VALUES ('from-db02.example')")
    deadline = time.monotonic() + 30
    while not bed.sql(
        "db01", "SELECT 1 FROM websites_domain WHERE name = 'from-db02.example'"
    ):
        assert time.monotonic() < deadline, "a write on db02 did not reach db01"
        time.sleep(1)


def test_switchback_restores_db01_as_origin(migrated):
    bed = migrated
    if origin(bed) != "db02":
        bed.inv("switchover", *ARGS)
    writer, out = switch_under_writer(bed, "switchback", "db01", "sb1")
    assert "set 1 moved to db01" in out
    assert_every_acknowledged_write_once(bed, writer, "db01")
    assert origin(bed) == "db01"
    bed.inv("verify", *ARGS)


def test_switchover_aborts_cleanly_when_a_long_transaction_is_open(migrated):
    bed = migrated
    if origin(bed) != "db01":
        bed.inv("switchback", *ARGS)
    db01 = bed["db01"]
    db01.sudo(
        "setsid -f psql -X -d shotserver04 -c 'BEGIN; SELECT txid_current(); SELECT"
        " pg_sleep(90); COMMIT' >/dev/null 2>&1 </dev/null",
        user="postgres",
    )
    try:
        time.sleep(3)
        before = bed.snapshot()
        result = bed.inv(
            "switchover", *ARGS, "--xact-age", "1", "--wait-xacts", "5", check=False
        )
        assert result.returncode == 1
        assert (
            "error: db01:" in result.stderr and "would block LOCK SET" in result.stderr
        )
        assert "nothing was locked" in result.stderr
        assert origin(bed) == "db01"
        bed.sql(
            "db01", "UPDATE auth_group SET name = name WHERE id = 1"
        )  # writes not blocked
        assert bed.snapshot() == before
    finally:
        db01.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE"
            " '%pg_sleep(90)%' AND pid <> pg_backend_pid()"
        )


def test_lock_set_that_cannot_get_its_locks_is_undone_within_lock_timeout(migrated):
    """Issue 11, case 3: a transaction holds a row of a replicated table; LOCK SET
    gives up, nothing locked."""
    bed = migrated
    if origin(bed) != "db01":
        bed.inv("switchback", *ARGS)
    pid = bed.hold_transaction(ROW_LOCK, "blocker-test")
    writer = Writer(
        bed.ssh_config, tag="locktimeout", rate=5, max_seconds=120, max_count=600
    ).start()
    try:
        time.sleep(2)
        since = time.monotonic()
        t0 = time.monotonic()
        result = bed.inv(
            "switchover", *ARGS, "--lock-timeout", "3", "--xact-age", "600", check=False
        )
        took = time.monotonic() - t0
        time.sleep(3)
    finally:
        writer.stop()
        bed.end_transaction("blocker-test")
    assert result.returncode == 1, result.stdout + result.stderr
    line = result.stderr
    assert (
        "error: db01: LOCK SET did not succeed within 3 s" in line
        and "set 1 unlocked, nothing changed" in line
    )
    assert f"pid {pid} user postgres application blocker-test" in line, line
    report = bed.status(*ARGS)
    assert (
        report["origin"] == "db01"
        and report["locked"] == []
        and report["slonik"] is None
    )
    window = writer.blocked_window(since) or 0.0
    print(
        f"lock timeout 3 s: switchover exited after {took:.1f} s; the writer's longest"
        f" stall {window:.2f} s"
    )
    assert window <= 3 + 1, f"writes stalled {window:.1f} s with --lock-timeout 3"
    bed.assert_acknowledged_once(writer, "db01", timeout=30)


def test_a_table_left_out_of_the_set_fails_verify_and_blocks_the_switchover(migrated):
    """Issue 11, case 6: a table created on both nodes after the subscription, never
    added to the set."""
    bed = migrated
    for h in ("db01", "db02"):
        bed.sql(
            h,
            "CREATE TABLE public.late_table (id integer PRIMARY KEY); CREATE SEQUENCE"
            " public.late_seq",
        )
    try:
        result = bed.inv("verify", *ARGS, check=False)
        assert result.returncode == 1
        assert (
            "table public.late_table is not in set 1: not replicated" in result.stderr
        ), result.stderr
        assert "sequence public.late_seq is not in set 1" in result.stderr
        before = origin(bed)
        target = "switchover" if before == "db01" else "switchback"
        refused = bed.inv(target, *ARGS, check=False)
        assert refused.returncode == 1
        assert (
            "table public.late_table, sequence public.late_seq not in set 1"
            in refused.stderr
        ), refused.stderr
        assert origin(bed) == before
    finally:
        for h in ("db01", "db02"):
            bed.sql(
                h,
                "DROP TABLE IF EXISTS public.late_table; DROP SEQUENCE IF EXISTS"
                " public.late_seq",
            )


def test_failover_is_refused_while_db01_answers_even_without_ssh(migrated, tmp_path):
    """Issue 11, case 4: SSH to db01 refused, but its PostgreSQL answers from the
    slon host."""
    bed = migrated
    if origin(bed) != "db01":
        bed.inv("switchback", *ARGS)
    config = tmp_path / "ssh_config"
    text = open(bed.ssh_config).read()
    port = f"Port {tb.current().ports['db01']}"
    assert port in text
    config.write_text(text.replace(port, "Port 9"))
    before = bed.snapshot()
    result = bed.inv("failover", *ARGS, "--yes", check=False, ssh_config=str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "error: db01: db01 still answers (PostgreSQL on db01 from db02)"
        in result.stderr
    ), result.stderr
    assert "--fenced" in result.stderr
    assert bed.snapshot() == before


def test_failover_is_refused_during_the_initial_copy(bed):
    """Issue 11, case 4: the receiver's copy is not done: nothing to promote."""
    bed.reset()
    bed.steps_before("subscribe", *ARGS)
    # A transaction older than the subscription holds the copy back (slon retries until
    # it ends).
    pid = bed.hold_transaction("SELECT txid_current();", "copy-blocker")
    try:
        bed.inv("subscribe", *ARGS)
        assert not bed.status(*ARGS)["subscription"]["active"]
        result = bed.inv("failover", *ARGS, "--yes", check=False)
        assert result.returncode == 1
        assert (
            "error: db02: db02's initial copy of set 1 is not done" in result.stderr
        ), result.stderr
        assert bed.status(*ARGS)["origin"] == "db01"
    finally:
        bed.end_transaction("copy-blocker")
    assert pid
    bed.inv("subscribe", *ARGS, "--wait")


@contextlib.contextmanager
def trusted(bed, host: str, role: str):
    """Let `role` log in on `host` over the local socket without a password (to try
    its CONNECT right)."""
    h = bed[host]
    hba = facts.hba_file(h)
    h.run(f"sudo -n sed -i '1i local all {role} trust # test-trusted' {hba}")
    h.psql("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        h.run(f"sudo -n sed -i '/# test-trusted$/d' {hba}")
        h.psql("SELECT pg_reload_conf()")


def test_finish_fences_db01_keeps_db02_writable_and_leaves_no_access(migrated):
    """Issue 11, case 5 (and the data: every table, sequence and acknowledged write
    stays)."""
    bed = migrated
    if origin(bed) != "db02":
        bed.inv("switchover", *ARGS)
    digests = bed.wait_same()
    writer = Writer(
        bed.ssh_config,
        tag="finish",
        rate=5,
        max_seconds=120,
        max_count=600,
        hosts=("db02", "db01"),
    ).start()
    try:
        time.sleep(2)
        since = time.monotonic()
        out = bed.inv("finish", *ARGS, "--yes").stdout
        time.sleep(2)
    finally:
        writer.stop()
    assert "[db01] finish: fence shotserver04: no application may connect" in out, out
    window = writer.blocked_window(since) or 0.0
    longest = max(a.end - a.start for a in writer.attempts if a.start >= since)
    print(
        f"finish: the writer on db02 was blocked {window:.2f} s at most, longest write"
        f" {longest:.2f} s"
    )
    assert all(a.ok for a in writer.attempts), [
        a.error for a in writer.attempts if not a.ok
    ][:3]
    assert longest <= 5, f"a write on db02 waited {longest:.1f} s during finish"
    bed.assert_acknowledged_once(writer, "db02")
    for name in ("db01", "db02"):
        assert not facts.cluster_exists(bed[name], CLUSTER)
        assert (
            bed.sql(
                name, "SELECT tgname FROM pg_trigger WHERE tgname LIKE '_replication%'"
            )
            == []
        )
        hba = bed[name].read_file(facts.hba_file(bed[name]))
        assert "slony-migrate" not in hba and " slony " not in hba
        assert bed.sql(
            name, "SELECT count(*) FROM pg_roles WHERE rolname = 'slony'", "postgres"
        ) == [["0"]]
    for name in (
        "db01",
        "db02",
    ):  # every table as before finish, but the one the writer went on writing
        after = bed.table_digests(name)
        assert {t: d for t, d in after.items() if t != "public.auth_message"} == {
            t: d for t, d in digests.items() if t != "public.auth_message"
        }, name
    assert bed["db02"].run("pgrep -x slon", check=False).failed
    assert "slony-migrate" not in (
        bed["db02"].read_file("/var/lib/postgresql/.pgpass") or ""
    )
    assert not (bed.home / "role-slony.password").exists()
    with trusted(bed, "db01", "johann"):
        refused = bed["db01"].sudo(
            'psql -X -U johann -d shotserver04 -c "INSERT INTO websites_domain (name) '
            "VALUES ('after-finish.example')\"",
            user="postgres",
            check=False,
        )
    assert refused.failed and "permission denied for database" in refused.stderr, (
        refused.stderr
    )
    bed.sql(
        "db02", "INSERT INTO websites_domain (name) VALUES ('after-finish.example')"
    )


def test_failover_with_db01_stopped_makes_db02_writable(bed):
    bed.reset()
    bed.inv("migrate", *ARGS)
    writer = Writer(
        bed.ssh_config, tag="failover", rate=5, max_seconds=60, max_count=40
    ).start()
    time.sleep(5)
    writer.stop()
    digests = bed.wait_same()
    tb.compose("stop", "db01")
    try:
        refused = bed.inv("switchover", *ARGS, check=False)
        assert refused.returncode == 1 and "db01" in refused.stderr
        refused = bed.inv("failover", *ARGS, "--yes", check=False)
        assert refused.returncode == 1 and "db01 does not answer" in refused.stderr
        result = bed.inv("failover", *ARGS, "--yes", "--fenced", timeout=600)
        assert "transactions committed on db01 after that are lost" in result.stdout
        # what db01 had replicated before it stopped is all on db02, every table
        assert bed.table_digests("db02") == digests
        bed.assert_acknowledged_once(writer, "db02")
        bed.sql(
            "db02",
            "INSERT INTO websites_domain (name) VALUES ('after-failover.example')",
        )
        assert bed.sql(
            "db02",
            "SELECT count(*) FROM websites_domain WHERE name ="
            " 'after-failover.example'",
        ) == [["1"]]
    finally:
        tb.compose("start", "db01")
        tb.wait_healthy()
        bed.hosts["db01"].close()
        bed.reset()
