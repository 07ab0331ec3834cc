"""After a failover (issue 24): the dropped node told apart from a move in flight, the
check codes, the lost rows read and written out, rejoin's plan, the guard, the failover's
refusals and order, fencing at first contact. Canned facts on fake hosts."""

from __future__ import annotations

import json
import os
import stat

import pytest

from fabfile import facts, replication, settings
from fabfile.endgame import failover as fo
from fabfile.endgame import returned as rt
from fabfile.endgame import status as st
from fabfile.errors import StepError
from fabfile.facts.slony import lost_where
from fabfile.model import SlonyState
from fabfile.render import lost, slonik, sql
from fabfile.secrets import write_private
from fabfile.steps import cluster as steps_cluster
from tests.unit.fakes import canned, output, session

SET = dict(schema=True, has_set=True)
PAIR = {1, 2}
# db01 came back after the failover: it still names itself the origin; db02 took over
# and dropped node 1.
STALE = SlonyState(**SET, origin=1, nodes=PAIR, subscribed=True)
SURVIVOR = SlonyState(**SET, origin=2, nodes={2})
RECORD = {
    "node": 1,
    "host": "db01",
    "at": "2026-12-02 17:35:34+00",
    "at_epoch": 1796232934.0,
    "sync_seqno": 5000000048,
    "sync_snapshot": "2040:2045:2041,2043",
    "sync_at": "2026-12-02 17:35:32+00",
    "dropped": True,
}


# --- who is dropped -------------------------------------------------------------------


def test_a_node_the_origin_no_longer_counts_is_dropped_and_has_no_say():
    states = {1: STALE, 2: SURVIVOR}
    assert replication.dropped(states) == {1}
    assert replication.origin_in(states) == 2
    assert replication.origin_in({2: SURVIVOR}) == 2  # db01 still away
    assert replication.dropped({2: SURVIVOR}) == {1}
    s = session()
    assert replication.disagreement(s, states) == {}


def test_a_healthy_pair_and_a_move_in_flight_drop_nobody():
    pair = {
        1: SlonyState(**SET, origin=1, nodes=PAIR),
        2: SlonyState(**SET, origin=1, nodes=PAIR),
    }
    assert replication.dropped(pair) == set()
    moving = {
        1: SlonyState(**SET, origin=2, nodes=PAIR),
        2: SlonyState(**SET, origin=1, nodes=PAIR),
    }
    assert replication.dropped(moving) == set()
    assert replication.disagreement(session(), moving) == {
        "db01": "db02",
        "db02": "db01",
    }
    # a node stored again by rejoin is in the cluster again
    stored = {1: SlonyState(**SET, origin=2, nodes=PAIR), 2: SURVIVOR}
    stored[2] = SlonyState(**SET, origin=2, nodes=PAIR)
    assert replication.dropped(stored) == set()


# --- status ---------------------------------------------------------------------------


def returned_bed(monkeypatch, *, fenced=False, reachable=True, rows=3):
    s = session()
    canned(
        monkeypatch,
        slony_state={"db01": STALE, "db02": SURVIVOR},
        failover_record={"db02": RECORD},
        lost_count=rows,
        database_exists=True,
        fenced=fenced,
        subscription_active=False,
        lag=[],
        slonik_running=None,
        slon_running={"db02": None},
        slon_log="",
    )
    if not reachable:
        real = replication.states

        def states(s):
            found, errors = real(s)
            found.pop(1)
            errors[1] = StepError("db01", "host unreachable (127.0.0.1:2271)")
            return found, errors

        monkeypatch.setattr(replication, "states", states)
    return s


def test_status_shows_a_returned_node_as_failed_over_never_as_a_move(monkeypatch):
    s = returned_bed(monkeypatch)
    report = st.status(s)
    text = st.format_status(report)
    assert report.origin == "db02" and report.origins == {} and report.locked == []
    assert (
        "node 1 db01: FAILED OVER at 2026-12-02 17:35:34+00, out of the cluster, still"
        " holds 3 rows written after 2026-12-02 17:35:32+00 (only there); NOT FENCED"
        in text
    )
    assert (
        "MOVE IN FLIGHT" not in text
        and "switchover (or switchback) finishes" not in (text)
    )
    assert "Never switch over to db01" in text and "inv rejoin --yes" in text
    assert "subscription: none (db01 is out of the cluster)" in text
    code, line = st.check(report)
    assert code == st.CRITICAL and line.startswith("SLONY CRITICAL - db01, failed over")
    assert "NOT fenced" in line and "3 write(s) only there" in line


def test_the_check_is_critical_for_the_run_that_fenced_it_then_a_warning(monkeypatch):
    s = returned_bed(monkeypatch, fenced=True)
    s.fenced_now = ["db01"]
    report = st.status(s)
    assert "it was open to the applications: fenced now" in st.format_status(report)
    assert st.check(report)[0] == st.CRITICAL
    s.fenced_now = []
    report = st.status(s)
    assert "fenced (no application may connect)" in st.format_status(report)
    code, line = st.check(report)
    assert code == st.WARNING
    assert line == (
        "SLONY WARNING - db02 is the origin without a subscriber: db01 failed over at"
        " 2026-12-02 17:35:34+00, out of the cluster (fenced), 3 write(s) only there:"
        " inv lost-rows, then inv rejoin --yes"
    )


def test_a_dropped_node_still_away_is_a_warning(monkeypatch):
    s = returned_bed(monkeypatch, reachable=False)
    report = st.status(s)
    assert "FAILED OVER at 2026-12-02 17:35:34+00, out of the cluster, unreachable" in (
        st.format_status(report)
    )
    assert st.check(report)[0] == st.WARNING


# --- lost rows ------------------------------------------------------------------------


def log_row(seq, cmd, n, args, keys=("id",), by=""):
    return [
        str(seq),
        "2046",
        "public.auth_message",
        cmd,
        str(n),
        json.dumps(args),
        json.dumps(list(keys)),
        by,
    ]


def test_lost_rows_are_read_from_slonys_log_and_written_as_statements():
    rows = [
        lost.parse_row(
            log_row(
                7,
                "I",
                0,
                ["id", "5", "user_id", "1", "message", "o'brien", "note", None],
                by="2026-12-02 17:35:30+00",
            )
        ),
        lost.parse_row(log_row(8, "U", 1, ["message", "new", "id", "5"])),
        lost.parse_row(log_row(9, "D", 0, ["id", "4"])),
        lost.parse_row(log_row(10, "T", 0, [], keys=())),
    ]
    ins, upd, dele, trunc = rows
    assert ins.op == "INSERT" and ins.key == (("id", "5"),) and ins.seq == 7
    assert lost.statement(ins) == (
        'INSERT INTO public.auth_message ("id", "user_id", "message", "note") VALUES'
        " ('5', '1', 'o''brien', NULL);"
    )
    assert lost.statement(upd) == (
        "UPDATE public.auth_message SET \"message\" = 'new' WHERE \"id\" = '5';"
    )
    assert lost.statement(dele) == "DELETE FROM public.auth_message WHERE \"id\" = '4';"
    assert lost.statement(trunc) == "TRUNCATE public.auth_message;"
    assert (
        lost.summary(ins, "x")
        == "public.auth_message id=5 INSERT, committed before 2026-12-02 17:35:30+00"
    )
    assert lost.summary(upd, "2026-12-02 17:35:32+00") == (
        "public.auth_message id=5 UPDATE, committed after 2026-12-02 17:35:32+00"
    )
    text = lost.render_file(
        rows,
        host="db01",
        database="shotserver04",
        origin="db02",
        since="2026-12-02 17:35:32+00",
        last_event="2026-12-02 17:35:32+00",
        exact=True,
        written="now",
    )
    assert text.startswith(
        "-- slony-migrate lost-rows: 4 write(s) committed on db01 after the last SYNC"
        " db02 applied (2026-12-02 17:35:32+00)."
    )
    lines = text.splitlines()
    assert lines[lines.index("BEGIN;") + 1].startswith(
        "-- public.auth_message key id=5: INSERT, committed before"
    )
    assert lines[-1] == "ROLLBACK;" and "Nothing was applied" in text
    inexact = lost.render_file(
        rows[:1],
        host="db01",
        database="d",
        origin="db02",
        since="unknown",
        last_event="",
        exact=False,
        written="now",
    )
    assert "some of these may be on db02 already" in inexact


def test_an_unknown_log_command_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="unknown Slony log command type 'X'"):
        lost.parse_row(log_row(1, "X", 0, []))


def test_lost_rows_filter_on_the_last_applied_snapshot():
    cl = session().cluster
    where = lost_where(cl, cl.master, "2040:2045:2041,2043")
    assert where == (
        "l.log_origin = 1 AND NOT txid_visible_in_snapshot(l.log_txid,"
        " '2040:2045:2041,2043'::txid_snapshot)"
    )
    assert lost_where(cl, cl.master, None) == "l.log_origin = 1"


def test_the_lost_rows_file_is_private(tmp_path):
    path = tmp_path / "home" / "lost-rows.sql"
    write_private(path, "INSERT ...\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    write_private(path, "again\n")
    assert path.read_text() == "again\n" and os.listdir(path.parent) == [
        "lost-rows.sql"
    ]


def test_lost_rows_task_writes_what_only_the_returned_node_holds(monkeypatch, tmp_path):
    monkeypatch.setenv("SLONY_MIGRATE_HOME", str(tmp_path))
    s = returned_bed(monkeypatch, fenced=True)
    seen = []

    def rows(host, cluster, node, snapshot):
        seen.append((host.name, node.id, snapshot))
        return [log_row(7, "I", 0, ["id", "5", "message", "w 1"])]

    monkeypatch.setattr(facts, "lost_rows", rows)
    canned(monkeypatch, last_event_at="2026-12-02 17:35:32+00")
    path = rt.lost_rows(s)
    assert seen == [("db01", 1, "2040:2045:2041,2043")]
    assert path == tmp_path / "lost-rows-replication-db01-20261202173534.sql"
    assert "('5', 'w 1')" in path.read_text()
    out = output(s)
    assert "[db01] lost-rows: public.auth_message id=5 INSERT, committed after" in out
    assert "1 write(s) committed after the last SYNC db02 applied" in out


# --- rejoin ---------------------------------------------------------------------------


def plan(origin_state, node_state, rows=True, active=False, record=True):
    s = session()
    return rt.rejoin_plan(
        s.cluster.master,
        s.cluster.slave,
        origin_state,
        node_state,
        rows,
        active,
        record,
    )


def test_rejoin_plans_every_stage_for_a_node_back_with_its_old_state():
    p = plan(SURVIVOR, STALE)
    assert (p.write_lost, p.uninstall, p.empty, p.store) == (True, True, True, True)
    assert (p.subscribe, p.wait, p.finish) == (True, True, True)


def test_rejoin_after_an_interruption_goes_on_where_it_stopped():
    # old state removed, tables emptied: store and what follows
    p = plan(SURVIVOR, SlonyState(), rows=False)
    assert (p.write_lost, p.uninstall, p.empty, p.store) == (False, False, False, True)
    # a half-made schema (STORE NODE interrupted) goes again
    p = plan(SURVIVOR, SlonyState(schema=True, nodes={1}), rows=False)
    assert (p.write_lost, p.uninstall, p.store) == (False, True, True)
    # stored again, not subscribed
    stored = SlonyState(**SET, origin=2, nodes=PAIR)
    p = plan(stored, SlonyState(**SET, origin=2, nodes=PAIR))
    assert (p.store, p.empty, p.subscribe, p.wait) == (False, False, True, True)
    # subscribed, copying
    copying = SlonyState(**SET, origin=2, nodes=PAIR, subscribed=False)
    p = plan(copying, copying)
    assert (p.subscribe, p.wait, p.finish) == (False, True, True)
    # copied, the record still there: only the fence and the record
    active = SlonyState(**SET, origin=2, nodes=PAIR, subscribed=True)
    p = plan(active, active, active=True)
    assert (p.store, p.subscribe, p.wait, p.finish) == (False, False, False, True)
    assert plan(active, active, active=True, record=False) is None


def test_rejoin_asks_naming_the_database_the_host_and_the_rows(monkeypatch, tmp_path):
    monkeypatch.setenv("SLONY_MIGRATE_HOME", str(tmp_path))
    s = returned_bed(monkeypatch, fenced=True)
    canned(
        monkeypatch,
        lost_rows=[],
        last_event_at="",
        row_count=1234,
    )
    asked = []
    s.ask = lambda q: asked.append(q) or False
    with pytest.raises(StepError, match="rejoin not confirmed; nothing changed"):
        rt.rejoin(s)
    assert asked == [
        "REJOIN rebuilds db01 as a subscriber of db02: database shotserver04 on db01"
        " loses its Slony state and 1234 row(s) in 0 table(s), then copies every row"
        " from db02."
    ]
    # the lost rows were written before asking; nothing changed on the servers
    assert list(tmp_path.glob("lost-rows-*.sql"))
    assert not [c for h in s.hosts.values() for c in h.commands if "TRUNCATE" in c]


def test_rejoin_dry_run_shows_each_stage_in_order(monkeypatch, tmp_path):
    monkeypatch.setenv("SLONY_MIGRATE_HOME", str(tmp_path))
    s = returned_bed(monkeypatch, fenced=True)
    s.dry_run = True
    canned(monkeypatch, lost_rows=[], last_event_at="", row_count=10)
    rt.rejoin(s)
    out = output(s)
    order = [
        "would write 0 lost row(s)",
        "would remove the Slony state db01 kept from before the failover",
        "would empty 0 application table(s)",
        "would store db01 as node 1 again (event node 2)",
        "would guard",
        "would start slon for replication-node1, subscribe db01 to set 1 from db02",
    ]
    at = [out.index(o) for o in order]
    assert at == sorted(at), out


def test_slonik_for_rejoin_stores_the_node_and_subscribes_it_to_the_new_origin():
    cl = session().cluster
    text = slonik.slonik_store_node(cl, cl.master, cl.slave)
    assert "store node (id = 1, comment = 'master db01', event node = 2);" in text
    assert "store path (server = 1, client = 2, conninfo = 'host=db01" in text
    assert "store path (server = 2, client = 1, conninfo = 'host=db02" in text
    assert (
        "subscribe set (id = 1, provider = 2, receiver = 1, forward = yes);"
        in slonik.slonik_subscribe(cl, cl.slave, cl.master)
    )
    drop = slonik.slonik_drop_node(cl, cl.master, cl.slave)
    assert drop.endswith("drop node (id = 1, event node = 2);\n")
    failover = slonik.slonik_failover(cl, cl.master, cl.slave)
    for script in (drop, failover):  # never told of the dead node: no wait for it
        assert "node 1 admin conninfo" not in script
        assert "node 2 admin conninfo = 'host=db02" in script
    assert "failover (id = 1, backup node = 2);" in failover


# --- the guard ------------------------------------------------------------------------


def test_the_guard_refuses_writes_until_a_slon_of_the_node_ran_since_start():
    text = sql.guard("_replication", "slony", 150000)
    assert "SECURITY DEFINER SET search_path = pg_catalog" in text
    assert "usename = 'slony'" in text and "application_name LIKE 'slon.local%'" in text
    assert "ev_timestamp >= pg_postmaster_start_time()" in text
    for table in ("sl_log_1", "sl_log_2"):
        assert (
            f"DROP TRIGGER IF EXISTS slony_migrate_guard ON _replication.{table};\n"
            f"CREATE TRIGGER slony_migrate_guard BEFORE INSERT ON _replication.{table}"
            " FOR EACH ROW EXECUTE PROCEDURE _replication.slony_migrate_guard();"
        ) in text
    # fires in the origin role only: never enabled for slon's replica sessions
    assert "REPLICA" not in text and "ALWAYS" not in text
    assert "current_setting('slony_migrate.guard', true)" in text
    old = sql.guard("_replication", "slony", 90500)
    assert "current_setting" not in old and "set_config" not in old


def test_init_installs_the_guard_where_it_is_missing(monkeypatch):
    s = session()
    canned(
        monkeypatch,
        slony_state=SlonyState(**SET, origin=1, nodes=PAIR, paths={(1, 2), (2, 1)}),
        cluster_exists=True,
        guard_installed={"db01": True, "db02": False},
    )
    steps_cluster.init(s)
    out = output(s)
    assert "[db02] init: guard:" in out and "[db01] init: guard:" not in out
    assert any(
        "CREATE TRIGGER slony_migrate_guard" in c for c in s.hosts["db02"].commands
    )


def test_slons_never_starts_the_slon_of_a_dropped_node(monkeypatch):
    s = session(dry_run=True)
    canned(
        monkeypatch,
        slony_state={"db01": STALE, "db02": SURVIVOR},
        slony_tool="/usr/bin/slon",
        postgres_writable=True,
        slon_running=None,
    )
    s.slon_host.files[steps_cluster.WATCHDOG] = steps_cluster.files.watchdog_script(
        s.cluster, "/usr/bin/slon"
    )
    steps_cluster.slons(s)
    out = output(s)
    assert (
        "slon for replication-node1 not started: db01 was dropped from the cluster"
        in out
    )
    assert (
        "start slon for replication-node2" in out
        and "start slon for replication-node1" not in out
    )


# --- failover -------------------------------------------------------------------------


def failover_bed(monkeypatch):
    s = session(dry_run=True)
    canned(
        monkeypatch,
        slony_state={"db02": SlonyState(**SET, origin=1, nodes=PAIR, subscribed=True)},
        subscription_active=True,
        received_from={
            "event_at": "t",
            "event_age": 2,
            "sync_at": "t",
            "sync_age": 2,
            "pending": 0,
        },
        replication_login="could not translate host name",
        slon_running={"db02": 42},
        failover_record=None,
    )
    real = replication.states

    def states(s):
        found, errors = real(s)
        found.pop(1, None)
        errors[1] = StepError("db01", "host unreachable")
        return found, errors

    monkeypatch.setattr(replication, "states", states)
    return s


def test_failover_of_an_unreachable_origin_needs_fenced_or_pooler(monkeypatch):
    s = failover_bed(monkeypatch)
    with pytest.raises(StepError) as e:
        fo.failover(s, yes=True)
    assert e.value.host == "db01" and "db01 does not answer" in e.value.message
    assert "--fenced" in e.value.fix and "--pooler HOST" in e.value.fix
    assert s.changes == []


def test_failover_stops_both_slons_records_then_fails_over_and_drops(monkeypatch):
    s = failover_bed(monkeypatch)
    fo.failover(s, fenced=True, yes=True)
    whats = [c.what for c in s.changes]
    assert [w.split(" (")[0].split(":")[0] for w in whats] == [
        "stop slon for replication-node1",
        "stop slon for replication-node2",
        "record the failover in _replication.sl_registry",
        "fail over set 1 to db02",
        "drop node 1",
    ]
    assert "db01 does not answer; you said it is fenced" in output(s)


def test_alive_reads_the_origins_answer_from_the_states_and_bounds_the_login(
    monkeypatch,
):
    s = session()
    seen = []
    monkeypatch.setattr(
        facts,
        "replication_login",
        lambda h, cl, n, connect_timeout=0: seen.append(connect_timeout) or "refused",
    )
    assert fo.alive(s, s.cluster.master, {1: STALE}) == "psql over SSH on db01"
    assert fo.alive(s, s.cluster.master, {}) == "" and seen == [
        settings.FAILOVER_CONNECT
    ]


def test_failover_after_it_was_interrupted_only_drops(monkeypatch):
    s = session(dry_run=True)
    promoted = SlonyState(**SET, origin=2, nodes=PAIR)
    canned(
        monkeypatch,
        slony_state={"db02": promoted, "db01": STALE},
        failover_record={"db02": {**RECORD, "dropped": False}, "db01": None},
        slon_running=None,
    )
    fo.failover(s, fenced=True, yes=True)
    assert [c.what for c in s.changes] == ["drop node 1 (db01) from the cluster"]


# --- first contact --------------------------------------------------------------------


def test_first_contact_fences_a_returned_open_node_and_keeps_the_undo(monkeypatch):
    s = returned_bed(monkeypatch, fenced=False)
    canned(
        monkeypatch,
        connect_grantees=["PUBLIC", "johann"],
        slon_running={"db02": 77},
    )
    monkeypatch.setattr(rt, "wait_stopped", lambda s, node, pid: None)
    assert rt.first_contact(s) == ["db01"]
    out = output(s)
    assert "[db01] fence: db01 was dropped from the cluster by a failover at" in out
    assert "stop slon for replication-node1 (watchdog 77)" in out
    assert (
        'undo: GRANT CONNECT ON DATABASE "shotserver04" TO PUBLIC; GRANT CONNECT ON'
        ' DATABASE "shotserver04" TO "johann"'
    ) in out
    assert any("REVOKE CONNECT" in c for c in s.hosts["db01"].commands)
    kept = [c for c in s.hosts["db02"].commands if "sl_registry" in c]
    assert kept and "GRANT CONNECT" in kept[-1]


def test_first_contact_leaves_a_fenced_node_and_a_healthy_pair_alone(monkeypatch):
    s = returned_bed(monkeypatch, fenced=True)
    assert rt.first_contact(s) == [] and output(s) == ""
    s = session()
    canned(monkeypatch, slony_state=SlonyState(**SET, origin=1, nodes=PAIR))
    assert rt.first_contact(s) == []


def test_unfence_gives_back_connect_to_whom_had_it():
    assert sql.unfence_database("shop", ["PUBLIC", "app"]) == (
        'GRANT CONNECT ON DATABASE "shop" TO PUBLIC; GRANT CONNECT ON DATABASE "shop"'
        ' TO "app"'
    )
    assert sql.unfence_database("shop") == 'GRANT CONNECT ON DATABASE "shop" TO PUBLIC'


def test_no_switchover_and_no_verify_while_a_dropped_node_is_stale(monkeypatch):
    from fabfile.endgame import switchover as so
    from fabfile.endgame import verify as vf

    s = returned_bed(monkeypatch, fenced=True)
    with pytest.raises(StepError) as e:
        so.switchover(s, s.cluster.master)
    assert e.value.host == "db01" and "dropped from the cluster by a failover" in (
        e.value.message
    )
    assert "inv rejoin --yes" in e.value.fix
    with pytest.raises(StepError, match="no subscriber to compare the origin with"):
        vf.verify(s)


def test_migrate_points_to_rejoin_while_a_node_is_dropped(monkeypatch):
    from fabfile import runbook

    s = returned_bed(monkeypatch, fenced=True)
    with pytest.raises(StepError) as e:
        runbook.migrate(s)
    assert e.value.host == "db01" and "inv rejoin --yes" in e.value.fix
    assert "== preflight" not in output(s)


def test_failover_sets_the_dropped_nodes_slon_conf_aside(monkeypatch):
    """Nothing may start the old origin's slon again, not even Debian's slony1
    service at the slon host's next boot (it starts every /etc/slony1/*/slon.conf)."""
    s = failover_bed(monkeypatch)
    cl = s.cluster
    for n in cl.nodes:
        s.slon_host.files[cl.slon_conf(n)] = "conf"
    fo.failover(s, fenced=True, yes=True)
    whats = [c.what for c in s.changes]
    assert whats[1].startswith(
        "set /etc/slony1/replication-node1/slon.conf aside as"
        " /etc/slony1/replication-node1/slon.conf.failed-over"
    )
    assert not [w for w in whats if "replication-node2/slon.conf" in w]
    assert "/etc/slony1/replication-node1/slon.conf.failed-over" not in (
        "".join(cl.slon_conf(n) for n in cl.nodes)
    )


@pytest.mark.parametrize("gone", [True, False])
def test_config_keeps_a_slon_conf_set_aside_only_while_its_node_is_dropped(
    monkeypatch, gone
):
    s = session(dry_run=True)
    cl = s.cluster
    canned(
        monkeypatch,
        slony_state={"db01": STALE, "db02": SURVIVOR}
        if gone
        else SlonyState(**SET, origin=1, nodes=PAIR, subscribed=True),
        replicable=([], []),
    )
    s.slon_host.files[cl.parked_slon_conf(cl.master)] = "old"
    steps_cluster.config(s)
    out = output(s)
    node1 = "/etc/slony1/replication-node1/slon.conf"
    if gone:
        assert f"{node1} is set aside while a failover keeps db01 out" in out
        assert f"create {node1}" not in out
    else:
        assert f"create {node1}" in out and f"remove {node1}.failed-over" in out
    assert "create /etc/slony1/replication-node2/slon.conf" in out
