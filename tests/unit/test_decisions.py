"""The steps' and operations' decisions with canned facts: what they plan, refuse or
leave alone. No I/O."""

from __future__ import annotations

import pytest

from fabfile import facts, replication, settings
from fabfile.endgame.status import Lag, NodeStatus, Status, Subscription
from fabfile.endgame.switchover import blockers, lag_acceptable, refuse_unready
from fabfile.endgame.verify import sequence_differences, table_differences
from fabfile.errors import StepError
from fabfile.model import SlonyState, Table, make_cluster
from fabfile.render.files import BEGIN, END
from fabfile.render.sql import scram_verifier
from fabfile.steps import access, cluster, software
from tests.unit.fakes import canned, output, session

CL = make_cluster("db01", "db02", database="shotserver04")
PASSWORD = "correct-horse-battery-staple"


# --- users: the replication role ------------------------------------------------------

MARK = "slony-migrate replication role"
NEW = 150004


def test_role_plan_pins_the_search_path_of_a_role_made_before_it_did():
    """A replication role made by an earlier version (no search_path setting) is
    updated: slon's sessions must not resolve names in the application's schemas."""
    role = (True, True, scram_verifier(PASSWORD), MARK)
    assert access.role_plan(CL, "db01", role, PASSWORD, version_num=NEW) == (
        "update role slony (superuser, login, SCRAM password, search_path pg_catalog)",
        True,
    )


def test_role_plan_creates_a_missing_role():
    assert access.role_plan(CL, "db01", None, PASSWORD, version_num=NEW) == (
        "create role slony (superuser, SCRAM password, search_path pg_catalog)",
        False,
    )


def test_role_plan_leaves_a_current_role_alone():
    assert (
        access.role_plan(
            CL,
            "db01",
            (True, True, scram_verifier(PASSWORD), MARK),
            PASSWORD,
            version_num=NEW,
            settings=["search_path=pg_catalog"],
        )
        is None
    )


@pytest.mark.parametrize(
    "role",
    [
        (True, True, scram_verifier("another-password-x"), MARK),
        (False, True, "", MARK),
        (True, False, scram_verifier(PASSWORD), MARK),
        (True, True, scram_verifier(PASSWORD), ""),
    ],
)
def test_role_plan_updates_its_own_role_with_the_wrong_password_rights_or_mark(role):
    assert access.role_plan(CL, "db01", role, PASSWORD, version_num=NEW) == (
        "update role slony (superuser, login, SCRAM password, search_path pg_catalog)",
        True,
    )


@pytest.mark.parametrize(
    "role",
    [
        (False, True, scram_verifier("the-applications-own"), ""),
        (True, True, "", ""),
        (False, False, "", "the app's role"),
    ],
)
def test_role_plan_refuses_a_role_it_did_not_create(role):
    with pytest.raises(StepError) as e:
        access.role_plan(CL, "db01", role, PASSWORD, version_num=NEW)
    assert (
        e.value.host == "db01" and "was not created by slony-migrate" in e.value.message
    )
    assert "another --user" in e.value.fix


def pgpass_facts(monkeypatch, mode="600"):
    canned(
        monkeypatch,
        postgres_home="/var/lib/postgresql",
        file_stat=("postgres:postgres", mode),
        hba_clusters={},
    )


def test_users_dry_run_shows_masked_sql_and_runs_nothing(monkeypatch):
    s = session(dry_run=True)
    s._password = PASSWORD
    canned(
        monkeypatch,
        role={"db01": (True, True, scram_verifier(PASSWORD), MARK), "db02": None},
        role_settings=["search_path=pg_catalog"],
    )
    pgpass_facts(monkeypatch)
    access.users(s)
    out = output(s)
    assert "[db01] users: role slony exists (superuser, password current)" in out
    assert (
        "[db02] users: would create role slony (superuser, SCRAM password, search_path"
        " pg_catalog)" in out
    )
    assert 'ALTER ROLE "slony" SET search_path = pg_catalog;' in out
    assert "CREATE ROLE \"slony\" WITH LOGIN SUPERUSER PASSWORD '********';" in out
    assert (
        "SET log_statement = 'none'" in out
        and "COMMENT ON ROLE \"slony\" IS 'slony-migrate replication role'" in out
    )
    assert (
        "would create /var/lib/postgresql/.pgpass (mode 600, contents not shown)" in out
    )
    assert PASSWORD not in out
    assert s.hosts["db01"].commands == s.hosts["db02"].commands == []


def test_users_applies_a_verifier_never_the_password(monkeypatch):
    s = session()
    s._password = PASSWORD
    canned(monkeypatch, role=None)
    pgpass_facts(monkeypatch)
    access.users(s)
    for name in ("db01", "db02"):
        command = s.hosts[name].commands[0]
        assert (
            'CREATE ROLE "slony" WITH LOGIN SUPERUSER PASSWORD \'SCRAM-SHA-256$4096:'
            in command
        )
        assert command.startswith("psql postgres: SET log_statement = 'none';")
        assert PASSWORD not in command
    assert PASSWORD in s.hosts["db02"].files["/var/lib/postgresql/.pgpass"]
    assert (
        s.hosts["db02"].commands[-1]
        == "write /var/lib/postgresql/.pgpass postgres:postgres 600"
    )


def test_pgpass_with_the_right_block_but_a_loose_mode_is_made_0600(monkeypatch):
    s = session()
    s._password = PASSWORD
    pgpass_facts(monkeypatch, mode="644")
    access.pgpass(s, "users")  # first: write it
    s.hosts["db02"].commands.clear()
    access.pgpass(s, "users")
    assert "[db02] users: set mode 600 on /var/lib/postgresql/.pgpass" in output(s)
    assert s.hosts["db02"].commands == [
        "write /var/lib/postgresql/.pgpass postgres:postgres 600"
    ]


def test_pgpass_up_to_date_changes_nothing(monkeypatch):
    s = session()
    s._password = PASSWORD
    pgpass_facts(monkeypatch)
    access.pgpass(s, "users")
    s.hosts["db02"].commands.clear()
    access.pgpass(s, "users")
    assert (
        output(s)
        .rstrip()
        .endswith("[db02] users: /var/lib/postgresql/.pgpass is up to date")
    )
    assert s.hosts["db02"].commands == []


def test_pgpass_remove_keeps_other_lines(monkeypatch):
    s = session()
    s._password = PASSWORD
    pgpass_facts(monkeypatch)
    s.hosts["db02"].files["/var/lib/postgresql/.pgpass"] = "other:5432:*:app:secret\n"
    access.pgpass(s, "users")
    access.pgpass(s, "finish", remove=True)
    assert (
        s.hosts["db02"].files["/var/lib/postgresql/.pgpass"]
        == "other:5432:*:app:secret\n"
    )


# --- hba ------------------------------------------------------------------------------

HBA = "/etc/postgresql/15/main/pg_hba.conf"


def hba_facts(monkeypatch, unloaded=False):
    canned(monkeypatch, hba_file=HBA, source_address="10.0.0.2", hba_unloaded=unloaded)


def test_hba_plans_the_block_with_a_diff(monkeypatch):
    s = session(dry_run=True)
    hba_facts(monkeypatch)
    for h in ("db01", "db02"):
        s.hosts[h].files[HBA] = "local all postgres peer\n"
    access.hba(s)
    out = output(s)
    assert out.count(f"would update {HBA} and reload") == 2
    assert "+hostssl    shotserver04    slony    10.0.0.2/32    scram-sha-256" in out


def test_hba_reloads_a_file_written_but_never_loaded(monkeypatch):
    s = session()
    hba_facts(monkeypatch, unloaded=True)
    block = (
        f"{BEGIN.format('cluster replication')}\nhostssl    shotserver04    slony   "
        f" 10.0.0.2/32    scram-sha-256\n{END.format('cluster replication')}\n"
    )
    for h in ("db01", "db02"):
        s.hosts[h].files[HBA] = block + "local all postgres peer\n"
    access.hba(s)
    assert (
        f"[db01] hba: reload PostgreSQL ({HBA} changed since the last load)"
        in output(s)
    )
    assert s.hosts["db01"].commands == ["psql postgres: SELECT pg_reload_conf()"]


def test_hba_with_a_stray_marker_is_an_error_naming_the_file_and_changes_nothing(
    monkeypatch,
):
    s = session()
    hba_facts(monkeypatch)
    s.hosts["db01"].files[HBA] = (
        BEGIN.format("cluster replication") + "\nlocal all all peer\n"
    )
    with pytest.raises(StepError) as e:
        access.hba(s)
    assert (
        e.value.host == "db01"
        and HBA in e.value.message
        and "no END marker" in e.value.message
    )
    assert "repair the slony-migrate markers by hand" in e.value.fix
    assert s.hosts["db01"].commands == s.hosts["db02"].commands == []


# --- install --------------------------------------------------------------------------


def test_install_refuses_differing_versions_before_any_change(monkeypatch):
    s = session()
    canned(
        monkeypatch,
        pg_major={"db01": 15, "db02": 17},
        slony_modules={"db01": ["2.2.10"], "db02": []},
        database_exists=False,
        slonik_version=None,
        package_versions={
            "db02": {
                "postgresql-17-slony1-2": ("", "2.2.11-6"),
                "slony1-2-bin": ("", "2.2.11-6"),
                "libswitch-perl": ("", "2.17-3"),
            }
        },
    )
    with pytest.raises(StepError) as e:
        software.install(s)
    assert (
        e.value.host == "db01, db02" and "db01 2.2.10, db02 2.2.11" in e.value.message
    )
    assert s.hosts["db01"].commands == s.hosts["db02"].commands == []


def test_install_dry_run_shows_the_refresh_and_the_packages(monkeypatch):
    s = session(dry_run=True)
    canned(
        monkeypatch,
        pg_major={"db01": 15, "db02": 17},
        slony_modules=[],
        slonik_version=None,
        database_exists=False,
        package_versions={
            "db01": {"postgresql-15-slony1-2": ("", "")},
            "db02": {
                "postgresql-17-slony1-2": ("", "2.2.11-6"),
                "slony1-2-bin": ("", "2.2.11-6"),
                "libswitch-perl": ("", "2.17-3"),
            },
        },
    )
    software.install(s)
    out = output(s)
    assert "[db01] install: would refresh the package lists (apt-get update)" in out
    assert "[db01] install: would install postgresql-15-slony1-2 (?)" in out
    assert (
        "[db02] install: would install postgresql-17-slony1-2 slony1-2-bin"
        " libswitch-perl (2.2.11)" in out
    )
    assert s.hosts["db01"].commands == s.hosts["db02"].commands == []


def test_differing():
    assert software.differing({"a": "2.2.11", "b": "2.2.11"}) == ""
    assert software.differing({"a": "2.2.11", "b": "2.2.10"}) == "a 2.2.11, b 2.2.10"


@pytest.mark.parametrize(
    "tarball, sha, words",
    [
        ("slony.tar.bz2", "", "is not named slony1-VERSION"),
        ("/nonexistent/slony1-2.2.11.tar.bz2", "", "not found"),
        ("https://example.org/slony1-2.2.11.tar.bz2", "abc", "is not a SHA-256"),
        (
            "http://example.org/slony1-2.2.11.tar.bz2",
            "a" * 64,
            "only https:// downloads are accepted",
        ),
        (
            "ftp://example.org/slony1-2.2.11.tar.bz2",
            "a" * 64,
            "only https:// downloads are accepted",
        ),
        (
            "https://example.org/slony1-2.2.11.tar.bz2",
            "",
            "downloaded without --sha256",
        ),
    ],
)
def test_tarball_version_refuses_bad_input(tarball, sha, words):
    with pytest.raises(StepError, match=words):
        software.tarball_version("db01", tarball, sha)


# --- init, create-set -----------------------------------------------------------------


def state(**kw) -> SlonyState:
    return SlonyState(**kw)


def test_init_plan_on_fresh_nodes_does_everything():
    assert cluster.init_plan(CL, state(), state()) == {
        "init": True,
        "store_slave": True,
        "paths": [(1, 2), (2, 1)],
    }


def test_init_plan_only_what_is_missing():
    origin = state(schema=True, nodes={1, 2}, paths={(2, 1)})
    assert cluster.init_plan(CL, origin, state(schema=True)) == {
        "init": False,
        "store_slave": False,
        "paths": [(1, 2)],
    }
    assert cluster.init_plan(CL, origin, state(schema=True, paths={(1, 2)})) is None


def test_init_plan_refuses_a_leftover_schema_on_the_slave():
    with pytest.raises(StepError, match="exists on the slave but not on the master"):
        cluster.init_plan(CL, state(), state(schema=True))


TABLES = [Table('public."a"'), Table("public.b", "b_key")]


def test_set_plan_new_set_numbers_in_order():
    assert cluster.set_plan(CL, TABLES, ["public.s"], state(schema=True)) == (
        [(1, TABLES[0]), (2, TABLES[1])],
        [(1, "public.s")],
    )


def test_set_plan_complete_set_is_none():
    st = state(
        schema=True,
        has_set=True,
        tables={'public."a"': 1, "public.b": 2},
        sequences={"public.s": 1},
    )
    assert cluster.set_plan(CL, TABLES, ["public.s"], st) is None


def test_set_plan_keeps_ids_unique_when_resuming():
    st = state(schema=True, has_set=True, tables={"public.b": 1})
    assert cluster.set_plan(CL, TABLES, [], st) == ([(2, TABLES[0])], [])


def test_a_subscribed_set_takes_new_tables_through_a_second_set_and_merge(monkeypatch):
    s = session(dry_run=True)
    canned(
        monkeypatch,
        replicable=([Table("public.a"), Table("public.new")], ["public.s"]),
        slony_state=state(
            schema=True,
            has_set=True,
            origin=1,
            tables={"public.a": 1},
            sequences={"public.s": 1},
            subscribed=True,
        ),
        app_tables=[
            (Table("public.a"), "public.a"),
            (Table("public.new"), "public.new"),
        ],
        app_sequences=["public.s"],
        slony_ids=({1}, {1}, {1}),
        slony_tool="/usr/bin/slonik",
    )
    cluster.create_set(s)
    out = output(s)
    assert (
        "would add public.new to the replication: set 2, subscribed by db02, merged"
        " into set 1" in out
    )
    assert (
        "set add table (set id = 2, origin = 1, id = 2, fully qualified name ="
        " 'public.new'" in out
    )
    assert "merge set (id = 1, add id = 2, origin = 1);" in out


def test_a_table_on_the_origin_only_is_refused(monkeypatch):
    s = session()
    canned(
        monkeypatch,
        replicable=([Table("public.a"), Table("public.new")], []),
        slony_state=state(
            schema=True, has_set=True, origin=1, tables={"public.a": 1}, subscribed=True
        ),
        app_tables={"db01": [], "db02": [(Table("public.a"), "public.a")]},
        app_sequences=[],
    )
    with pytest.raises(StepError) as e:
        cluster.extend(s, "create-set", s.cluster.master)
    assert (
        e.value.host == "db02"
        and "public.new exist on db01 only" in e.value.message
        and "inv ddl" in e.value.fix
    )


# --- switchover checks ----------------------------------------------------------------


def ready(**kw) -> Status:
    st = Status(
        "replication",
        1,
        "shotserver04",
        [NodeStatus(1, "db01", True, True), NodeStatus(2, "db02", True, True)],
        "db01",
        Subscription("db02", True, True),
        {"replication-node1": 11, "replication-node2": 12},
        "",
        [Lag("db02", 1, 0.5)],
    )
    for k, v in kw.items():
        setattr(st, k, v)
    return st


def test_refuse_unready_passes_a_healthy_pair():
    refuse_unready(ready(), CL.slave, CL, "db02")


@pytest.mark.parametrize(
    "change, host, words",
    [
        (
            {"nodes": [NodeStatus(1, "db01", False, error="db01: host unreachable")]},
            "db01",
            "unreachable",
        ),
        (
            {"subscription": Subscription("db02", True, False)},
            "db02",
            "not an active subscriber",
        ),
        ({"subscription": None}, "db02", "not an active subscriber"),
        (
            {"slons": {"replication-node1": 11, "replication-node2": None}},
            "db02",
            "slon not running for replication-node2",
        ),
        (
            {"slons_error": "db02: host unreachable"},
            "db02",
            "cannot tell whether the slons run",
        ),
    ],
)
def test_refuse_unready(change, host, words):
    with pytest.raises(StepError) as e:
        refuse_unready(ready(**change), CL.slave, CL, "db02")
    assert e.value.host == host and words in e.value.message


@pytest.mark.parametrize(
    "lag, ok",
    [
        (None, False),
        (Lag("db02", 1, 50), True),
        (Lag("db02", 5, 29), True),
        (Lag("db02", 5, 31), False),
    ],
)
def test_lag_acceptable(lag, ok):
    assert lag_acceptable(lag, 30) is ok


def test_blockers_oldest_first_with_prepared_transactions():
    found = blockers(
        [
            ("101", "app", "johann", "active", 70),
            ("102", "app", "x", "idle in transaction", 300),
        ],
        [("gid1", "app", 100)],
    )
    assert found == [
        ("102", "app", "idle in transaction", 300),
        ("-", "app", "prepared gid1", 100),
        ("101", "app", "active", 70),
    ]


# --- verify ---------------------------------------------------------------------------


def test_table_differences_count_rows_and_chunks():
    a = {
        ("public.t", "0"): ("10", "x"),
        ("public.t", "1"): ("10", "y"),
        ("public.u", "all"): ("1", "z"),
    }
    b = {
        ("public.t", "0"): ("10", "x"),
        ("public.t", "1"): ("9", "w"),
        ("public.u", "all"): ("1", "z"),
    }
    assert table_differences(a, b, "db01", "db02") == [
        "table public.t: 20 rows on db01, 19 on db02, 1 chunk(s) differ"
    ]
    assert table_differences(a, a, "db01", "db02") == []


def test_sequence_differences_only_behind_counts():
    assert sequence_differences({"s": 5, "t": 7}, {"s": 6, "t": 3}, "db01", "db02") == [
        "sequence t: 7 on db01, 3 on db02"
    ]
    assert sequence_differences({"s": 5}, {}, "db01", "db02") == [
        "sequence s: 5 on db01, None on db02"
    ]


# --- origin ---------------------------------------------------------------------------


def test_origin_reads_the_node_that_answers(monkeypatch):
    def slony_state(host, cl):
        if host.name == "db01":
            raise StepError("db01", "host unreachable")
        return SlonyState(schema=True, has_set=True, origin=2)

    monkeypatch.setattr(facts, "slony_state", slony_state)
    assert replication.origin(session()).host == "db02"


def test_origin_raises_when_no_node_tells(monkeypatch):
    def slony_state(host, cl):
        raise StepError(host.name, "host unreachable")

    monkeypatch.setattr(facts, "slony_state", slony_state)
    with pytest.raises(StepError, match="host unreachable"):
        replication.origin(session())


def test_origin_without_a_set_is_none(monkeypatch):
    canned(monkeypatch, slony_state=SlonyState(schema=True))
    assert replication.origin(session()) is None


# --- switchover as a whole, in a dry run ----------------------------------------------


def test_switchover_dry_run_checks_everything_then_shows_the_script(monkeypatch):
    from fabfile.endgame import switchover as so

    s = session(dry_run=True)
    canned(
        monkeypatch,
        slony_state=SlonyState(schema=True, has_set=True, origin=1, subscribed=True),
        max_event=41,
        confirmed_since=True,
        schema_objects={("column", "public.t.id", "integer not null")},
        long_transactions=[],
        prepared_transactions=[],
        slonik_running=None,
        app_tables=[],
        app_sequences=[],
        slon_running=4242,
        cluster_exists=True,
        unpinned_definers=[],
        code_run_by_replication=[],
        set_table_lockers=[],
    )
    for n in (1, 2):
        s.hosts["db02"].files[f"/etc/slony1/replication-node{n}/slon.conf"] = (
            "sync_interval=1000\nsync_interval_timeout=2000\n"
        )
    monkeypatch.setattr(so, "status", lambda s: ready())
    assert so.switchover(s, s.cluster.slave) == {"moved": False}
    out = output(s)
    interval, timeout = settings.QUICK_SYNC
    assert (
        f"[db02] switchover: would set sync_interval {interval} ms,"
        f" sync_interval_timeout {timeout} ms in /etc/slony1/replication-node1/slon.conf"
        in out
    )
    assert (
        "would stop slon for replication-node2 (watchdog 4242)" in out
        and "would start slon for replication-node2" in out
    )
    assert "[db02] switchover: lag 0.5 s (1 events), a fresh SYNC confirmed" in out
    assert "[db02] switchover: schema identical on both nodes" in out
    assert "[db01] switchover: no transaction older than 60 s on db01" in out
    assert "[db02] switchover: would lock set 1 on db01, move it to db02" in out
    assert (
        'SELECT "_replication".lockSet(1);' in out
        and 'SELECT "_replication".moveSet(1, 2);' in out
    )
    assert all(h.commands == [] for h in s.hosts.values())


def test_switchover_refuses_code_slon_would_run_as_a_superuser(monkeypatch):
    """Checked again on both nodes before the lock: a trigger or CHECK added after
    preflight (to the old origin, say, while it subscribes) refuses the move."""
    from fabfile.endgame import switchover as so

    s = session()
    canned(
        monkeypatch,
        slony_state=SlonyState(schema=True, has_set=True, origin=1, subscribed=True),
        schema_objects=set(),
        slonik_running=None,
        app_tables=[],
        app_sequences=[],
        cluster_exists=True,
        unpinned_definers=[],
        code_run_by_replication={
            "db01": ["trigger audit on public.t fires ALWAYS"],
            "db02": [],
        },
    )
    monkeypatch.setattr(so, "status", lambda s: ready())
    monkeypatch.setattr(so.slontiming, "restore", lambda s, step: None)
    with pytest.raises(StepError) as e:
        so.switchover(s, s.cluster.slave)
    assert e.value.host == "db01" and "trigger audit on public.t fires ALWAYS" in str(
        e.value
    )
    assert "nothing was locked" in e.value.message


def test_switchover_to_the_origin_is_nothing_to_do(monkeypatch):
    from fabfile.endgame import switchover as so

    s = session()
    canned(monkeypatch, slony_state=SlonyState(schema=True, has_set=True, origin=2))
    assert so.switchover(s, s.cluster.slave) == {"moved": False}
    assert "db02 is already the origin of set 1; nothing to do" in output(s)


@pytest.mark.parametrize(
    "deps", ["{0}", "{major", "make; rm -rf /", "", "make $(id)", "{other}"]
)
def test_build_deps_refuses_anything_but_package_names(deps):
    with pytest.raises(StepError) as e:
        software.build_deps(deps, 15)
    assert (
        e.value.host == "input"
        and "--deps" in e.value.message
        and "{major}" in e.value.fix
    )


def test_build_deps_fills_in_the_major():
    assert (
        software.build_deps(software.BUILD_DEPS, 13)
        == "build-essential flex bison postgresql-server-dev-13"
    )


def test_the_subscriber_is_tuned_for_the_copy_and_put_back_after(monkeypatch):
    s = session()
    canned(
        monkeypatch,
        database_exists=True,
        slon_running={"db02": 4242},
        role_database_settings=[],
    )
    on = cluster.copy_tuning(s, "subscribe", on=True)
    assert "maintenance_work_mem 1GB" in on[0].what and len(on) == 3  # + slon restarted
    assert (
        'ALTER ROLE "slony" IN DATABASE "shotserver04" SET synchronous_commit'
        in on[0].op.text
    )
    assert cluster.copy_tuning(s, "subscribe", on=False) == []  # nothing to put back
    canned(monkeypatch, role_database_settings=["maintenance_work_mem=1GB"])
    assert cluster.copy_tuning(s, "subscribe", on=True) == []
    off = cluster.copy_tuning(s, "subscribe", on=False)
    assert "RESET maintenance_work_mem" in off[0].op.text and "put" in off[0].what
