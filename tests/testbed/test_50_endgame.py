"""The end-game on the real testbed: status, verify, switchover and back under a writer, finish, failover."""
import json
import time


from fabfile import facts
from testbed import compose as tb
from testbed.writer import LOCKED, SUBSCRIBER, Writer

ARGS = ("--master", "db01", "--slave", "db02")


def origin(bed) -> str:
    return json.loads(bed.inv("status", *ARGS, "--json").stdout)["origin"]


def test_status_shows_nodes_origin_subscription_slons_and_lag(migrated):
    report = json.loads(migrated.inv("status", *ARGS, "--json").stdout)
    assert report["origin"] == "db01"
    assert report["subscription"] == {"receiver": "db02", "exists": True, "active": True}
    assert all(report["slons"].values())
    assert report["lag"][0]["node"] == "db02" and report["lag"][0]["events"] >= 0
    text = migrated.inv("status", *ARGS).stdout
    assert "subscription: db02: copy done, replicating" in text and "lag to db02" in text


def test_verify_passes_then_names_a_table_changed_behind_slonys_back(migrated):
    bed = migrated
    assert "tables" in bed.inv("verify", *ARGS).stdout
    email = bed.sql("db02", "SELECT email FROM auth_user WHERE id = 3")[0][0]
    bed.sql("db02", "SET session_replication_role = replica; UPDATE auth_user SET email = 'tampered' WHERE id = 3")
    try:
        result = bed.inv("verify", *ARGS, check=False)
        assert result.returncode == 1
        assert "table public.auth_user" in result.stderr
        assert "public.auth_message" not in result.stderr
    finally:
        bed.sql("db02", f"SET session_replication_role = replica; "
                        f"UPDATE auth_user SET email = '{email}' WHERE id = 3")


def switch_under_writer(bed, task: str, new_origin: str, tag: str) -> tuple[Writer, str]:
    """Run `inv TASK` while a writer inserts rows; return the writer and the task's output."""
    writer = Writer(bed.ssh_config, tag=tag, rate=5, max_seconds=240, max_count=1200).start()
    try:
        time.sleep(3)
        since = time.monotonic()
        result = bed.inv(task, *ARGS, timeout=300)
        time.sleep(4)
    finally:
        writer.stop()
    assert writer.target == new_origin
    window = writer.blocked_window(since)
    print(f"{task}: writer saw writes blocked for {window:.2f} s")
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
    assert "write on public.auth_group refused" in out and "replicated back" in out
    assert_every_acknowledged_write_once(bed, writer, "db02")
    assert origin(bed) == "db02"
    assert bed.inv("verify", *ARGS).returncode == 0
    assert "cannot be modified on a subscriber" in bed["db01"].sudo(
        "psql -X -d shotserver04 -c \"INSERT INTO websites_domain (name) VALUES ('refused.example')\"",
        user="postgres", check=False).stderr
    bed.sql("db02", "INSERT INTO websites_domain (name) VALUES ('from-db02.example')")
    deadline = time.monotonic() + 30
    while not bed.sql("db01", "SELECT 1 FROM websites_domain WHERE name = 'from-db02.example'"):
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
    db01.sudo("setsid -f psql -X -d shotserver04 -c 'BEGIN; SELECT txid_current(); SELECT pg_sleep(90); COMMIT' "
              ">/dev/null 2>&1 </dev/null", user="postgres")
    try:
        time.sleep(3)
        before = bed.snapshot()
        result = bed.inv("switchover", *ARGS, "--xact-age", "1", "--wait-xacts", "5", check=False)
        assert result.returncode == 1
        assert "error: db01:" in result.stderr and "would block LOCK SET" in result.stderr
        assert "nothing was locked" in result.stderr
        assert origin(bed) == "db01"
        db01.psql("UPDATE auth_group SET name = name WHERE id = 1", "shotserver04")  # writes not blocked
        assert bed.snapshot() == before
    finally:
        db01.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(90)%' "
                  "AND pid <> pg_backend_pid()")


def test_finish_leaves_both_databases_clean_with_all_data(migrated):
    bed = migrated
    if origin(bed) != "db02":
        bed.inv("switchover", *ARGS)
    digests = bed.wait_same()
    sequences = bed.sequences("db02")
    bed.inv("finish", *ARGS, "--yes")
    for name in ("db01", "db02"):
        assert not facts.schema_exists(bed[name], "shotserver04", "_replication")
        assert bed.sql(name, "SELECT tgname FROM pg_trigger WHERE tgname LIKE '_replication%'") == []
        assert bed.table_digests(name) == digests
        hba = bed[name].read_file(bed[name].value("SHOW hba_file"))
        assert "slony-migrate" not in hba and " slony " not in hba
    assert bed.sequences("db02") == sequences
    assert bed["db02"].run("pgrep -x slon", check=False).failed
    assert "slony-migrate" not in (bed["db02"].read_file("/var/lib/postgresql/.pgpass") or "")


def test_failover_with_db01_stopped_makes_db02_writable(bed):
    bed.reset()
    bed.inv("migrate", *ARGS)
    writer = Writer(bed.ssh_config, tag="failover", rate=5, max_seconds=60, max_count=40).start()
    time.sleep(5)
    writer.stop()
    digests = bed.wait_same()
    tb.compose("stop", "db01")
    try:
        refused = bed.inv("switchover", *ARGS, check=False)
        assert refused.returncode == 1 and "db01" in refused.stderr
        result = bed.inv("failover", *ARGS, "--yes", timeout=600)
        assert "transactions committed on db01 after that are lost" in result.stdout
        # what db01 had replicated before it stopped is all on db02, every table
        assert bed.table_digests("db02") == digests
        bed.assert_acknowledged_once(writer, "db02")
        bed.sql("db02", "INSERT INTO websites_domain (name) VALUES ('after-failover.example')")
        assert bed.sql("db02", "SELECT count(*) FROM websites_domain WHERE name = 'after-failover.example'") == [["1"]]
    finally:
        tb.compose("start", "db01")
        tb.wait_healthy()
        bed.hosts["db01"].close()
        bed.reset()
