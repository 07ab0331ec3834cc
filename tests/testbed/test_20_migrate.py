"""`inv migrate --master db01 --slave db02` end to end on the real testbed (issue:
runbook steps)."""

import re
import time

from fabfile import facts
from testbed.bed import CLUSTER

ARGS = ("--master", "db01", "--slave", "db02")


def test_dry_run_on_a_fresh_testbed_changes_nothing(bed):
    before = bed.snapshot()
    result = bed.inv("migrate", *ARGS, "--dry-run")
    assert "would init cluster replication" in result.stdout
    assert (
        "subscribe set (id = 1, provider = 1, receiver = 2, forward = yes);"
        in result.stdout
    )
    assert "PASSWORD '********'" in result.stdout
    assert bed.snapshot() == before
    assert not (bed.home / "role-slony.password").exists()


def test_migrate_replicates_every_table_and_sequence(bed):
    result = bed.inv("migrate", *ARGS)
    assert "initial copy of set 1 done" in result.stdout
    digests = bed.wait_same(timeout=30)
    assert int(digests["public.auth_message"][0]) > 10000
    state = facts.slony_state(bed["db02"], CLUSTER)
    assert state.subscribed is True
    assert len(state.tables) == 8 and len(state.sequences) == 8
    assert state.tables[
        "public.websites_alias"
    ]  # no primary key: replicated by its unique index


def test_changes_on_db01_reach_db02_within_30_seconds(migrated):
    bed = migrated
    bed.sql(
        "db01",
        """
        INSERT INTO auth_user (username, email, password) VALUES ('replicated', 'r@example.org', 'x');
        UPDATE auth_message SET message = 'changed' WHERE id % 1000 = 7;
        DELETE FROM websites_alias WHERE website_id % 10 = 3;
        INSERT INTO websites_domain (name) VALUES ('new.example');
        SELECT nextval('shot_number_seq') FROM generate_series(1, 5);""",
    )
    start = time.monotonic()
    bed.wait_same(timeout=30)
    assert time.monotonic() - start < 30
    assert bed.sql(
        "db02", "SELECT count(*) FROM auth_user WHERE username = 'replicated'"
    ) == [["1"]]
    deadline = time.monotonic() + 30
    while True:
        master, slave = bed.sequences("db01"), bed.sequences("db02")
        if all(slave[s] >= v for s, v in master.items()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert all(slave[s] >= v for s, v in master.items()), (master, slave)


def test_second_migrate_changes_nothing(migrated):
    bed = migrated
    before = bed.snapshot()
    result = bed.inv("migrate", *ARGS)
    assert "migrate: nothing to do, every step was already done" in result.stdout
    assert " would " not in result.stdout
    assert bed.snapshot() == before


def test_no_password_in_processes_logs_config_or_sl_path(migrated):
    bed = migrated
    password = bed.password()
    result = bed.inv("migrate", *ARGS, "--dry-run")
    assert password not in result.stdout + result.stderr
    for name in ("db01", "db02"):
        h = bed[name]
        assert password not in h.run("ps -eo args").stdout
        conninfo = bed.sql(
            name, "SELECT string_agg(pa_conninfo, ' ') FROM _replication.sl_path"
        )[0][0]
        assert (
            "host=" in conninfo
            and password not in conninfo
            and "password" not in conninfo
        )
    db02 = bed["db02"]
    conf = CLUSTER.slon_conf(CLUSTER.master)
    assert f"slon -f {conf}" in db02.run("ps -eo args").stdout
    files = db02.run(
        f"sudo -n cat {CLUSTER.tools_conf} {conf} "
        f"{CLUSTER.slon_conf(CLUSTER.slave)} /var/log/slony1/*"
    ).stdout
    assert "add_node(node => 2" in files and password not in files
    assert db02.run(
        "sudo -n stat -c '%a %U' /var/lib/postgresql/.pgpass"
    ).stdout.split() == ["600", "postgres"]
    assert (bed.home / "role-slony.password").stat().st_mode & 0o777 == 0o600


def test_show_config_lists_both_nodes(migrated):
    out = migrated.inv("show-config", *ARGS).stdout
    assert "Slony-I Cluster: replication" in out
    assert re.search(r"Node:\s+1 Host:\s+db01 ", out) and re.search(
        r"Node:\s+2 Host:\s+db02 ", out
    ), out
    assert "password" not in out


def test_pg_hba_has_one_managed_line_per_peer(migrated):
    for name in ("db01", "db02"):
        h = migrated[name]
        text = h.read_file(h.value("SHOW hba_file"))
        lines = [
            l for l in text.splitlines() if l.startswith("host") and " slony " in l
        ]
        assert len(lines) == 1 and lines[0].endswith("/32    scram-sha-256")
        assert text.count("# BEGIN slony-migrate cluster replication") == 1


def test_sql_for_older_servers_reads_the_same_on_real_ones(migrated):
    """Issue 13, item 9, on real servers: psql's unaligned output (the reader for
    clients before 12) and the queries written for servers before 10 give what CSV
    and today's catalog give."""
    h = migrated["db01"]
    held = migrated.hold_transaction(
        "SELECT 1;", "old-sql-test"
    )  # one long transaction, not slon's passing ones

    def read():
        return (
            facts.table_keys(h, CLUSTER),
            facts.set_sequences(h, CLUSTER),
            facts.schema_objects(h, CLUSTER),
            [t[:4] for t in facts.long_transactions(h, 0.5) if t[0] == held],
            facts.tables_with_rows(h, CLUSTER.database, ["public.auth_user"]),
            h.psql("SELECT NULL::text, '', E'two\\nlines', 'o''brien, \"quoted\"'"),
        )

    try:
        time.sleep(1)
        current = read()
        assert current[3] == [(held, "shotserver04", "postgres", "active")]
        assert current[5] == [["", "", "two\nlines", 'o\'brien, "quoted"']]
        assert len(current[1]) == 8 and current[4] == ["public.auth_user"]
        h.csv = False
        assert read() == current
        h._version_num = 90624  # as if 9.6: sequences one by one, no backend_type
        assert read() == current
    finally:
        migrated.end_transaction("old-sql-test")
        h.csv, h._version_num = True, None
