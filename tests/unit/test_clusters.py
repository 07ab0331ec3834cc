"""Issue 21, part 1: several databases side by side, one cluster each: their files
never meet, an earlier version's cluster keeps its names, the replication role serves
them all with one password, and `--all` operations. Fake hosts, canned facts."""

from __future__ import annotations

import dataclasses
import os

import pytest

from fabfile import clusters, facts, secrets
from fabfile.endgame import each, finish, status
from fabfile.errors import StepError
from fabfile.model import SlonyState, make_cluster
from fabfile.render import files, parse
from fabfile.render.sql import ROLE_MARK, scram_verifier
from fabfile.steps import access, cluster
from tests.unit.fakes import canned, output, session

PASSWORD = "correct-horse-battery"


def hba_text(*names: tuple[str, str]) -> str:
    """A pg_hba.conf with the managed blocks of clusters (name, database), as the hba
    step writes them one after the other."""
    text = "# comment\nlocal all postgres peer\nhost all all 0.0.0.0/0 scram-sha-256\n"
    for name, db in names:
        cl = make_cluster("db01", "db02", name=name, database=db)
        text = files.apply_block(
            text, f"cluster {name}", files.hba_lines(cl, ["10.0.0.2"]), top=True
        )
    return text


# --- files: one cluster's never another's ---------------------------------------------


def test_a_second_clusters_hba_block_never_lands_inside_the_first():
    text = hba_text(("replication", "shotserver04"), ("shop", "shop"))
    assert files.hba_clusters(text) == {
        "replication": ("shotserver04", "slony"),
        "shop": ("shop", "slony"),
    }
    gone = files.apply_block(text, "cluster replication", [], top=True)
    assert files.hba_clusters(gone) == {"shop": ("shop", "slony")}
    assert "local all postgres peer" in gone
    # every block before the first rule: first-match files keep working
    lines = gone.splitlines()
    assert lines.index("local all postgres peer") > max(
        i for i, l in enumerate(lines) if "slony-migrate" in l
    )


def test_a_block_nested_by_an_earlier_version_is_refused_not_cut():
    nested = (
        "# BEGIN slony-migrate cluster a (managed block, do not edit)\n"
        "# BEGIN slony-migrate cluster b (managed block, do not edit)\n"
        "hostssl b slony 10.0.0.2/32 scram-sha-256\n"
        "# END slony-migrate cluster b\n"
        "hostssl a slony 10.0.0.2/32 scram-sha-256\n"
        "# END slony-migrate cluster a\n"
    )
    assert files.hba_clusters(nested) == {"a": ("a", "slony"), "b": ("b", "slony")}
    with pytest.raises(files.MarkerError, match="holds another managed block"):
        files.apply_block(nested, "cluster a", [])
    assert files.hba_clusters(files.apply_block(nested, "cluster b", [])) == {
        "a": ("a", "slony")
    }


def test_the_watchdog_finds_each_clusters_files_from_the_instance_name():
    """One watchdog script for every cluster: it derives each path from the instance
    name as the model names them (Debian's convention)."""
    for cl in (
        make_cluster("db01", "db02", name="shop", database="shotserver04"),
        dataclasses.replace(
            make_cluster("db01", "db02", database="shotserver04"), legacy=True
        ),
    ):
        text = files.watchdog_script(cl, "/usr/bin/slon")
        for n in cl.nodes:
            i = cl.instance(n)
            expand = lambda line, i=i: line.split("=", 1)[1].replace("$instance", i)  # noqa: E731
            conf = next(l for l in text.splitlines() if l.startswith("conf="))
            log = next(l for l in text.splitlines() if l.startswith("log="))
            assert expand(conf) == cl.slon_conf(n)
            assert expand(log) == cl.slon_log(n)
            assert f"{cl.rundir}/{i}.watchdog.pid" == cl.watchdog_pidfile(n)
        conf = files.slon_conf(cl, cl.slave)
        assert f"pid_file='{cl.slon_pidfile(cl.slave)}'" in conf


def test_configured_cluster_reads_only_the_tools_own_files():
    cl = make_cluster("db01", "db02", database="shotserver04")
    assert parse.configured_cluster(files.slon_conf(cl, cl.master)) == "replication"
    assert parse.configured_cluster(files.slon_tools_conf(cl, [], [])) == "replication"
    assert parse.configured_cluster("cluster_name='replication'\n") is None
    assert parse.configured_cluster(None) is None


# --- an earlier version's cluster -----------------------------------------------------


def test_an_earlier_versions_cluster_keeps_its_files_a_new_one_gets_named_ones():
    s = session()
    old = make_cluster("db01", "db02", database="shotserver04")
    s.hosts["db02"].files["/etc/slony1/node1/slon.conf"] = files.slon_conf(
        dataclasses.replace(old, legacy=True), old.master
    )
    resolved = clusters.resolve(s)
    assert resolved.legacy and resolved.slon_conf(resolved.master) == (
        "/etc/slony1/node1/slon.conf"
    )
    shop = session(name="shop", database="shop")
    shop.hosts["db02"].files.update(s.hosts["db02"].files)
    assert not clusters.resolve(shop).legacy  # the old files are another cluster's
    fresh = session()
    assert not clusters.resolve(fresh).legacy


def test_config_writes_a_legacy_clusters_own_files_and_says_so(monkeypatch):
    s = session(dry_run=True)
    s.cluster = dataclasses.replace(s.cluster, legacy=True)
    canned(monkeypatch, replicable=([], []))
    cluster.config(s)
    out = output(s)
    assert "keeps the files an earlier slony-migrate gave it" in out
    assert "would create /etc/slony1/slon_tools.conf" in out
    assert "would create /etc/slony1/node2/slon.conf" in out
    shop = session(dry_run=True, name="shop", database="shop")
    cluster.config(shop)
    out = output(shop)
    assert "would create /etc/slony1/slon_tools_shop.conf" in out
    assert "would create /etc/slony1/shop-node1/slon.conf" in out
    assert "earlier" not in out


def test_slons_find_only_their_own_clusters_watchdogs(monkeypatch):
    """The first cluster's slons running must not count as the second's."""
    s = session(dry_run=True, name="shop", database="shop")
    running = {"/var/run/slony1/replication-node1.watchdog.pid": 11}
    monkeypatch.setattr(
        facts,
        "slon_running",
        lambda h, cl, n: running.get(cl.watchdog_pidfile(n)),
    )
    canned(
        monkeypatch,
        slony_tool="/usr/bin/slon",
        postgres_writable=True,
        slony_state=SlonyState(),
    )
    cluster.slons(s)
    out = output(s)
    assert "would start slon for shop-node1" in out
    assert "would start slon for shop-node2" in out
    assert "setsid -f /usr/local/lib/slony-migrate/slon-watchdog shop-node1" in out


# --- the replication role serves every cluster ----------------------------------------


def test_a_role_other_clusters_use_keeps_its_password():
    cl = make_cluster("db01", "db02", name="shop", database="shop")
    role = (True, True, scram_verifier("another-password-1"), ROLE_MARK)
    with pytest.raises(StepError) as e:
        access.role_plan(
            cl,
            "db01",
            role,
            PASSWORD,
            version_num=170000,
            settings=["search_path=pg_catalog"],
            shared=["replication"],
        )
    assert "serves cluster(s) replication with another password" in e.value.message
    assert "SLONY_MIGRATE_PASSWORD" in e.value.fix
    same = (True, True, scram_verifier(PASSWORD), ROLE_MARK)
    assert (
        access.role_plan(
            cl,
            "db01",
            same,
            PASSWORD,
            version_num=170000,
            settings=["search_path=pg_catalog"],
            shared=["replication"],
        )
        is None
    )


def private(path, text: str) -> None:
    path.write_text(text + "\n")
    os.chmod(path, 0o600)


def test_the_password_file_is_the_roles_and_an_earlier_one_is_adopted(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("SLONY_MIGRATE_HOME", str(tmp_path))
    monkeypatch.delenv(secrets.ENV, raising=False)
    private(tmp_path / "replication.password", PASSWORD)
    # read as it is (a dry run moves nothing)
    assert secrets.replication_password("slony", "replication", dry_run=True) == (
        PASSWORD
    )
    said = secrets.adopt("slony", "shop", lambda p: p == PASSWORD, dry_run=True)
    assert (
        said.startswith("would move") and (tmp_path / "replication.password").exists()
    )
    # a new cluster beside it: the earlier file whose password the role has
    assert secrets.adopt("slony", "shop", lambda p: False) == ""
    said = secrets.adopt("slony", "shop", lambda p: p == PASSWORD)
    assert "role-slony.password" in said
    assert not (tmp_path / "replication.password").exists()
    assert secrets.replication_password("slony", "shop") == PASSWORD
    assert secrets.replication_password("slony", "replication") == PASSWORD
    assert secrets.adopt("slony", "replication") == ""  # the role has its file


def test_a_new_cluster_with_a_new_role_gets_its_own_password(monkeypatch, tmp_path):
    monkeypatch.setenv("SLONY_MIGRATE_HOME", str(tmp_path))
    monkeypatch.delenv(secrets.ENV, raising=False)
    a = secrets.replication_password("slony", "replication")
    assert secrets.replication_password("slony", "shop") == a
    b = secrets.replication_password("other", "shop")
    assert a != b and (tmp_path / "role-other.password").exists()


def finish_facts(monkeypatch, hba: dict) -> None:
    canned(
        monkeypatch,
        slony_state=SlonyState(schema=True, nodes={1, 2}, has_set=True, origin=2),
        fenced=False,
        slon_running=None,
        cluster_exists=True,
        role=(True, True, "", ROLE_MARK),
        hba_file="/etc/pg_hba.conf",
        postgres_home="/var/lib/postgresql",
        file_stat=None,
        source_address="10.0.0.2",
        hba_unloaded=False,
        hba_clusters=hba,
    )


def test_finish_of_one_cluster_keeps_the_role_another_uses(monkeypatch, tmp_path):
    monkeypatch.setenv("SLONY_MIGRATE_HOME", str(tmp_path))
    private(tmp_path / "role-slony.password", PASSWORD)
    s = session(dry_run=True, name="shop", database="shop")
    finish_facts(
        monkeypatch,
        {"replication": ("shotserver04", "slony"), "shop": ("shop", "slony")},
    )
    finish.finish(s)
    out = output(s)
    assert (
        "[db01] finish: role slony stays: cluster(s) replication log in as it there"
        in out
    )
    assert "drop role" not in out and "password file" not in out
    # the last cluster's finish drops it
    last = session(dry_run=True)
    finish_facts(monkeypatch, {"replication": ("shotserver04", "slony")})
    finish.finish(last)
    out = output(last)
    assert "would drop role slony" in out
    assert f"would remove the replication password file {tmp_path}" in out


# --- every cluster at once ------------------------------------------------------------


def test_migrate_all_names_each_cluster_after_its_database_or_keeps_the_existing(
    monkeypatch,
):
    s = session()
    canned(
        monkeypatch,
        database_names=["shop", "shotserver04", "wiki"],
        hba_clusters={"replication": ("shotserver04", "slony")},
    )
    found = clusters.for_databases(s)
    assert [(c.name, c.database) for c in found] == [
        ("shop", "shop"),
        ("replication", "shotserver04"),
        ("wiki", "wiki"),
    ]
    canned(monkeypatch, database_names=["a" * 40], hba_clusters={})
    with pytest.raises(StepError) as e:
        clusters.for_databases(s)
    assert "cannot be moved as cluster" in e.value.message
    assert f"migrate --database {'a' * 40} --cluster NAME" in e.value.fix


def healthy(name: str, db: str, **kw) -> status.Status:
    report = status.Status(
        name,
        1,
        db,
        nodes=[
            status.NodeStatus(1, "db01", True, True),
            status.NodeStatus(2, "db02", True, True),
        ],
        origin="db01",
        subscription=status.Subscription("db02", True, True),
        slons={f"{name}-node1": 10, f"{name}-node2": 11},
        lag=[status.Lag("db02", 1, 0.4)],
    )
    return dataclasses.replace(report, **kw)


def test_status_all_is_one_table_and_the_worst_verdict():
    reports = [
        healthy("replication", "shotserver04"),
        healthy(
            "shop",
            "shop",
            subscription=status.Subscription("db02", False, False),
            slons={"shop-node1": 10, "shop-node2": None},
            lag=None,
        ),
    ]
    text = status.format_all("db01", "db02", reports)
    lines = text.splitlines()
    assert lines[0] == "clusters on db01 and db02:"
    assert lines[1].split() == [
        "cluster",
        "database",
        "origin",
        "subscriber",
        "state",
        "lag",
        "slons",
    ]
    assert lines[2].split() == [
        "replication",
        "shotserver04",
        "db01",
        "db02",
        "replicating",
        "0.4",
        "s",
        "2/2",
        "OK",
    ]
    assert "1/2" in lines[3] and "CRITICAL" in lines[3]
    assert lines[4].startswith("  shop: slon not running for shop-node2")
    code, line = status.check_all(reports)
    assert code == status.CRITICAL and line.startswith(
        "SLONY CRITICAL - replication OK"
    )
    unsubscribed = healthy(
        "shop", "shop", subscription=status.Subscription("db02", False, False)
    )
    code, line = status.check_all(reports[:1] + [unsubscribed])
    assert code == status.WARNING and "shop WARNING: db02 is not subscribed" in line
    locked = healthy("wiki", "wiki", locked=["db01"])
    assert status.check_all(reports + [locked])[0] == status.CRITICAL
    assert status.check_all([])[0] == status.UNKNOWN
    assert "no cluster of slony-migrate on db01 or db02" in status.format_all(
        "db01", "db02", []
    )


def test_each_cluster_stops_at_the_first_failure_naming_done_and_left(monkeypatch):
    s = session()
    canned(
        monkeypatch,
        hba_clusters={
            "a": ("a", "slony"),
            "b": ("b", "slony"),
            "c": ("c", "slony"),
        },
    )
    monkeypatch.setattr(each, "first_contact", lambda x: [])
    seen = []

    def operation(x):
        seen.append((x.cluster.name, x.cluster.database))
        if x.cluster.name == "b":
            raise StepError("db01", "set 1 is locked", "inv switchover")
        return x.cluster.name

    with pytest.raises(StepError) as e:
        each.each_cluster(s, "switchover", operation)
    assert seen == [("a", "a"), ("b", "b")]
    assert e.value.message == (
        "cluster b: set 1 is locked (switchover done for: a; not begun for: c)"
    )
    canned(monkeypatch, hba_clusters={})
    with pytest.raises(StepError, match="no cluster of slony-migrate"):
        each.each_cluster(s, "finish", operation)


def test_migrate_all_checks_every_database_before_changing_any(monkeypatch):
    from fabfile import runbook
    from fabfile.checks.findings import FAIL, OK, Finding

    s = session()
    canned(
        monkeypatch,
        database_names=["shop", "shotserver04"],
        hba_clusters={},
    )
    monkeypatch.setattr(runbook, "first_contact", lambda x: [])
    monkeypatch.setattr(runbook, "refuse_dropped", lambda x: None)
    calls = []

    def preflight(x, add_keys, update_roles):
        calls.append(("preflight", x.cluster.name))
        level = FAIL if x.cluster.database == "shop" else OK
        yield Finding("db01", level, f"database {x.cluster.database}", "checked")

    monkeypatch.setattr(runbook, "preflight", preflight)
    monkeypatch.setattr(
        runbook,
        "migrate",
        lambda x, *a, **kw: calls.append(("migrate", x.cluster.name, kw)),
    )
    with pytest.raises(StepError, match="nothing was changed in any database"):
        runbook.migrate_all(s)
    assert calls == [("preflight", "shop"), ("preflight", "shotserver04")]
    calls.clear()
    monkeypatch.setattr(
        runbook,
        "preflight",
        lambda x, a, u: iter([Finding("db01", OK, "x", "fine")]),
    )
    runbook.migrate_all(s, update_roles=True)
    assert [c[:2] for c in calls] == [("migrate", "shop"), ("migrate", "shotserver04")]
    assert all(c[2] == {"checked": True, "update_roles": True} for c in calls)
    assert "each as its own cluster: shop (shop), shotserver04 (shotserver04)" in (
        output(s)
    )


def test_preflight_keeps_one_cluster_to_one_database(monkeypatch):
    from fabfile.checks import servers
    from fabfile.checks.findings import FAIL, OK

    canned(
        monkeypatch,
        hba_clusters={
            "replication": ("shotserver04", "slony"),
            "shop": ("shop", "slony"),
        },
    )
    found = lambda s: [(f.level, f.object, f.fix) for f in servers.clusters_beside(s)]  # noqa: E731
    assert found(session(name="wiki", database="shotserver04"))[0] == (
        FAIL,
        "database shotserver04",
        "use --cluster replication",
    )
    assert found(session(name="shop", database="wiki"))[0][:2] == (
        FAIL,
        "cluster shop",
    )
    assert found(session(name="shop", database="shop")) == [(OK, "role slony", "")]
    legacy = session()
    legacy.cluster = dataclasses.replace(legacy.cluster, legacy=True)
    assert found(legacy)[-1][:2] == (OK, "cluster replication")
