"""Unit tests for fabfile.model: input validation and the Cluster it builds. Pure, no
I/O."""

from __future__ import annotations

import dataclasses

import pytest

from fabfile.errors import StepError
from fabfile.model import Cluster, Node, make_cluster


def error_of(*args, **kwargs) -> StepError:
    with pytest.raises(StepError) as info:
        make_cluster(*args, **{"database": "shotserver04", **kwargs})
    return info.value


# --- StepError ------------------------------------------------------------------------


def test_step_error_line_with_fix():
    e = StepError("db01", "database x does not exist", "create it")
    assert e.line() == "db01: database x does not exist; fix: create it"
    assert str(e) == e.line()
    assert (e.host, e.message, e.fix) == (
        "db01",
        "database x does not exist",
        "create it",
    )


def test_step_error_line_without_fix():
    e = StepError("db01", "something broke")
    assert e.line() == "db01: something broke"
    assert "fix" not in e.line()


# --- bad host names -------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["", "db 01", "-db01", ".db01", "user@db01", "db01;rm", "a" * 254]
)
def test_bad_master_host_name(bad):
    e = error_of(bad, "db02")
    assert e.host == "input"
    assert "--master" in e.line()
    assert repr(bad) in e.line()
    assert "; fix: " in e.line() and "host name" in e.fix


@pytest.mark.parametrize("bad", ["", "db 02", "-db02", "db02/x"])
def test_bad_slave_host_name(bad):
    e = error_of("db01", bad)
    assert "--slave" in e.line()
    assert repr(bad) in e.line()
    assert e.fix


@pytest.mark.parametrize("bad", ["db 03", "-db03", "x'y"])
def test_bad_slon_host_name(bad):
    e = error_of("db01", "db02", slon_host=bad)
    assert "--slon-host" in e.line()
    assert repr(bad) in e.line()
    assert e.fix


@pytest.mark.parametrize("bad", ["db01\n", "db01\nevil"])
def test_host_name_with_newline_is_rejected(bad):
    # A value with a newline must not slip through the validation (regex `$` also
    # matches before a trailing newline; the check has to anchor at the very end of the
    # string).
    e = error_of(bad, "db02")
    assert "--master" in e.line()


def test_longest_host_name_is_accepted():
    name = "a" * 253
    assert make_cluster(name, "db02", database="shotserver04").master.host == name


def test_master_equals_slave():
    e = error_of("db01", "db01")
    assert e.host == "input"
    assert "--master" in e.message and "--slave" in e.message
    assert "'db01'" in e.line()
    assert "; fix: " in e.line() and "different" in e.fix


# --- cluster name ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "my-cluster",
        "",
        "Replication",
        "1cluster",
        "_cluster",
        "my cluster",
        "a" * 32,
        "replication\n",
    ],
)
def test_invalid_cluster_name(bad):
    e = error_of("db01", "db02", name=bad)
    assert "cluster name" in e.message
    assert repr(bad) in e.line()
    assert "; fix: " in e.line()
    assert "31" in e.fix and "no -" in e.fix


@pytest.mark.parametrize("good", ["a", "replication", "my_cluster", "c2", "a" * 31])
def test_valid_cluster_name(good):
    cl = make_cluster("db01", "db02", name=good, database="shotserver04")
    assert cl.name == good
    assert cl.schema == "_" + good


# --- database and user names ----------------------------------------------------------


def test_no_database_is_required_not_a_default():
    e = error_of("db01", "db02", database="")
    assert e.host == "input" and "--database is required" in e.message
    assert "--database NAME" in e.fix


@pytest.mark.parametrize(
    "bad", ["Shots", "1db", "my-db", "my db", "db;drop", "a" * 64, "db\n"]
)
def test_invalid_database_name(bad):
    e = error_of("db01", "db02", database=bad)
    assert "database" in e.message
    assert repr(bad) in e.line()
    assert "; fix: " in e.line() and "identifier" in e.fix


@pytest.mark.parametrize(
    "bad", ["", "Slony", "9user", "slony-user", "sl'ony", "a" * 64]
)
def test_invalid_user_name(bad):
    e = error_of("db01", "db02", user=bad)
    assert "replication user" in e.message
    assert repr(bad) in e.line()
    assert "; fix: " in e.line()


@pytest.mark.parametrize("good", ["_x", "shotserver04", "a" * 63])
def test_valid_database_and_user_names(good):
    cl = make_cluster("db01", "db02", database=good, user=good)
    assert (cl.database, cl.user) == (good, good)


# --- port -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 65536, 100000])
def test_port_out_of_range(bad):
    e = error_of("db01", "db02", port=bad)
    assert f"port {bad}" in e.message
    assert "; fix: " in e.line() and "port" in e.fix


@pytest.mark.parametrize("good", [1, 5433, 65535])
def test_port_in_range(good):
    cl = make_cluster("db01", "db02", port=good, database="shotserver04")
    assert cl.master.port == good
    assert cl.slave.port == good


# --- the Cluster built from valid input -----------------------------------------------


def test_valid_input_builds_nodes():
    cl = make_cluster("db01", "db02", database="shotserver04")
    assert isinstance(cl, Cluster)
    assert cl.master == Node(1, "db01", "db01", 5432)
    assert cl.slave == Node(2, "db02", "db02", 5432)
    assert cl.nodes == (cl.master, cl.slave)
    assert cl.node(1) is cl.master
    assert cl.node(2) is cl.slave


def test_every_file_of_a_cluster_is_named_by_it():
    """Two clusters on one slon host never share a file; an earlier version's cluster
    keeps its names (legacy)."""
    a, b = (
        make_cluster("db01", "db02", database="shotserver04"),
        make_cluster("db01", "db02", name="shop", database="shotserver04"),
    )
    assert a.instance(a.master) == "replication-node1"
    assert b.instance(b.slave) == "shop-node2"
    paths = lambda cl: {  # noqa: E731
        cl.tools_conf,
        cl.identity_record,
        cl.pooler_mark,
        cl.slonik_pidfile,
        cl.lock_mark,
        cl.mark("root.crt"),
        cl.ddl_file("abc"),
        *(
            f(n)
            for n in cl.nodes
            for f in (cl.slon_conf, cl.slon_log, cl.slon_pidfile, cl.watchdog_pidfile)
        ),
    }
    assert len(paths(a)) == len(paths(b)) == 15
    assert not paths(a) & paths(b)
    assert b.slon_conf(b.master) == "/etc/slony1/shop-node1/slon.conf"
    assert b.slon_log(b.slave) == "/var/log/slony1/slon-shop-node2.log"
    assert b.slon_pidfile(b.slave) == "/var/run/slony1/shop-node2.pid"
    assert b.tools_conf == "/etc/slony1/slon_tools_shop.conf"
    assert b.identity_record == "/etc/slony1/shop-identity-always"
    old = dataclasses.replace(a, legacy=True)
    assert old.instance(old.master) == "node1"
    assert old.tools_conf == "/etc/slony1/slon_tools.conf"
    assert old.slon_conf(old.slave) == "/etc/slony1/node2/slon.conf"
    assert old.slon_log(old.master) == "/var/log/slony1/slon-node1.log"
    assert old.watchdog_pidfile(old.master) == "/var/run/slony1/node1.watchdog.pid"
    assert old.identity_record == "/etc/slony1/identity-always"
    assert old.pooler_mark == "/etc/slony1/pooler-paused"
    assert old.mark("root.crt") == "/etc/slony1/root.crt"
    assert old.slonik_pidfile == "/var/run/slony1/slonik-replication.pid"
    # and the new names never meet the old ones: a new cluster beside a legacy one
    assert not paths(old) & paths(b)


def test_defaults():
    cl = make_cluster("db01", "db02", database="shotserver04")
    assert cl.slon_name == "db02"
    assert cl.name == "replication"
    assert cl.schema == "_replication"
    assert cl.database == "shotserver04"
    assert cl.user == "slony"
    assert cl.set_id == 1


def test_slon_host_defaults_to_slave_and_can_be_set():
    assert make_cluster("db01", "db02", database="shotserver04").slon_name == "db02"
    assert (
        make_cluster("db01", "db02", slon_host="", database="shotserver04").slon_name
        == "db02"
    )
    assert (
        make_cluster(
            "db01", "db02", slon_host="db03", database="shotserver04"
        ).slon_name
        == "db03"
    )
    assert (
        make_cluster(
            "db01", "db02", slon_host="db01", database="shotserver04"
        ).slon_name
        == "db01"
    )


def test_dbhost_defaults_to_host_and_can_be_set():
    cl = make_cluster(
        "db01",
        "db02",
        master_dbhost="10.0.0.1",
        slave_dbhost="10.0.0.2",
        database="shotserver04",
    )
    assert (cl.master.host, cl.master.dbhost) == ("db01", "10.0.0.1")
    assert (cl.slave.host, cl.slave.dbhost) == ("db02", "10.0.0.2")


def test_all_settings_are_carried():
    cl = make_cluster(
        "db01",
        "db02",
        slon_host="db03",
        name="shots",
        database="appdb",
        user="repl",
        port=5433,
        set_id=7,
    )
    assert (cl.name, cl.database, cl.user, cl.set_id, cl.slon_name) == (
        "shots",
        "appdb",
        "repl",
        7,
        "db03",
    )
    assert cl.master.port == cl.slave.port == 5433


def test_node_lookup_of_unknown_id_fails():
    cl = make_cluster("db01", "db02", database="shotserver04")
    with pytest.raises(KeyError):
        cl.node(3)


def test_cluster_is_frozen():
    cl = make_cluster("db01", "db02", database="shotserver04")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cl.name = "other"  # type: ignore[misc]
