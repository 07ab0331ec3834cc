"""Issue 14: PgBouncer around a switchover. pgbouncer.ini rendering, and the pooler's
decisions on a fake host (its admin console answers from a table; nothing runs)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from fabfile import settings
from fabfile.endgame import pooler
from fabfile.errors import StepError
from fabfile.remote import Host
from fabfile.render.files import (
    PoolerConfigError,
    ini_sections,
    point_pooler,
    pooler_entry,
)

from .fakes import FakeHost, output, session

INI = """;; PgBouncer
[databases]
shotserver04 = host=db01 port=5432 dbname=shotserver04
other = host='db 9' dbname=o pool_mode=session

[pgbouncer]
listen_port = 6433
unix_socket_dir = /run/pgb
pool_mode = transaction
"""
CONFIG = "/etc/pgbouncer/pgbouncer.ini"


@pytest.fixture(autouse=True)
def debian_layout(monkeypatch):
    """pgbouncer.ini postgres' (640) in root's /etc/pgbouncer, as Debian installs it."""
    from fabfile import facts

    monkeypatch.setattr(
        facts,
        "file_stat",
        lambda host, path: (
            ("root:root", "755")
            if path == "/etc/pgbouncer"
            else ("postgres:postgres", "640")
        ),
    )


def test_ini_sections_and_entries():
    assert ini_sections(INI)["pgbouncer"] == {
        "listen_port": "6433",
        "unix_socket_dir": "/run/pgb",
        "pool_mode": "transaction",
    }
    assert pooler_entry(INI, "shotserver04") == {
        "host": "db01",
        "port": "5432",
        "dbname": "shotserver04",
    }
    assert pooler_entry(INI, "other")["host"] == "db 9"
    assert pooler_entry(INI, "missing") is None


def test_point_pooler_changes_only_that_entry():
    new = point_pooler(INI, "shotserver04", "db02", 5432)
    assert "shotserver04 = host=db02 port=5432 dbname=shotserver04\n" in new
    assert new.replace("host=db02", "host=db01") == INI
    assert (
        point_pooler(
            "[databases]\nshotserver04 = dbname=s\n", "shotserver04", "db02", 5433
        )
        == "[databases]\nshotserver04 = dbname=s host=db02 port=5433\n"
    )
    with pytest.raises(PoolerConfigError):
        point_pooler(INI, "missing", "db02", 5432)


class Bouncer(FakeHost):
    """pgbouncer.ini in its files; admin commands recorded, failing as `fail` says
    (command -> exit code)."""

    def __init__(
        self, fail: dict[str, int] | None = None, ini: str = INI, pipe: bool = True
    ):
        super().__init__("app", {CONFIG: ini})
        self.fail, self.pipe = fail or {}, pipe

    def write_file(
        self,
        path: str,
        text: str,
        *,
        owner: str = "root:root",
        mode: str = "644",
        writer: str = "",
    ) -> None:
        self.commands.append(
            f"write {path} {owner} {mode} as {writer or owner.split(':')[0]}"
        )
        self.files[path] = text

    def sudo(self, command: str, **kw):
        self.commands.append(command)
        code = next((c for k, c in self.fail.items() if k in command), 0)
        return SimpleNamespace(
            ok=not code,
            failed=bool(code),
            exited=code,
            stdout="PgBouncer 1.24.1\n",
            stderr="" if not code else "ERROR: something",
        )

    console = Host.console

    def _piped(self, sql: str, key: str, timeout: float, env: str, console: str = ""):
        """PgBouncer's console on the run's psql for it; None (never started) when
        `pipe` is False."""
        if not self.pipe:
            return None
        return self.sudo(f"console {key.split()[1]} {' '.join(sql.splitlines())}")


def bouncer_session(host: Bouncer):
    s = session()
    s.hosts["app"] = host
    return s


def test_open_checks_mode_target_and_console():
    s = bouncer_session(Bouncer())
    p = pooler.open_pooler(s, "app", CONFIG, s.cluster.master)
    assert (p.port, p.socket_dir, p.database) == (6433, "/run/pgb", "shotserver04")
    assert s.hosts["app"].commands[-1] == "console /run/pgb:6433 SHOW VERSION;"
    assert (
        "[app] pooler: PgBouncer 1.24.1: shotserver04 pools by transaction, points at"
        " db01" in output(s)
    )


def test_the_console_on_a_psql_of_its_own_when_the_run_s_psql_cannot_start():
    s = bouncer_session(Bouncer(pipe=False))
    pooler.open_pooler(s, "app", CONFIG, s.cluster.master)
    assert (
        "-h /run/pgb -p 6433 -U postgres -d pgbouncer -c 'SHOW VERSION'"
        in s.hosts["app"].commands[-1]
    )


@pytest.mark.parametrize(
    "ini, words",
    [
        (
            INI.replace("pool_mode = transaction", "pool_mode = session"),
            "pools shotserver04 by session",
        ),
        (
            INI.replace("host=db01", "host=db02"),
            "sends shotserver04 to db02, not to the origin db01",
        ),
        (
            INI.replace("shotserver04 = ", "elsewhere = "),
            "has no entry for database shotserver04",
        ),
    ],
)
def test_open_refuses_a_pooler_it_cannot_use(ini, words):
    s = bouncer_session(Bouncer(ini=ini))
    with pytest.raises(StepError) as e:
        pooler.open_pooler(s, "app", CONFIG, s.cluster.master)
    assert words in e.value.message and e.value.host == "app"


def test_a_pause_that_times_out_resumes_and_fails():
    host = Bouncer(fail={"PAUSE": 124})
    s = bouncer_session(host)
    p = pooler.open_pooler(s, "app", CONFIG, s.cluster.master)
    with pytest.raises(StepError) as e:
        pooler.pause(s, "switchover", p, 2)
    assert "PAUSE shotserver04 did not complete within 2 s" in e.value.message
    assert host.commands[-2:] == [
        "console /run/pgb:6433 PAUSE shotserver04;",
        "console /run/pgb:6433 RESUME shotserver04;",
    ]


def test_release_points_reloads_and_resumes_in_one_call():
    host = Bouncer()
    s = bouncer_session(host)
    p = pooler.open_pooler(s, "app", CONFIG, s.cluster.master)
    before = len(host.commands)
    pooler.release(s, "switchover", p, s.cluster.slave)
    assert "shotserver04 = host=db02 port=5432" in host.files[CONFIG]
    assert host.commands[before] == f"write {CONFIG} postgres:postgres 640 as root"
    assert (
        host.commands[before + 1]
        == "console /run/pgb:6433 RELOAD; RESUME shotserver04;"
    )
    assert len(host.commands) == before + 2


def test_staged_during_the_move_release_has_only_reload_and_resume_left():
    host = Bouncer()
    s = bouncer_session(host)
    p = pooler.open_pooler(s, "app", CONFIG, s.cluster.master)
    staged = pooler.stage(p, s.cluster.slave)
    staged.join()
    assert "shotserver04 = host=db02 port=5432" in host.files[CONFIG]
    before = len(host.commands)
    pooler.release(s, "switchover", p, s.cluster.slave, staged)
    assert host.commands[before:] == [
        "console /run/pgb:6433 RELOAD; RESUME shotserver04;"
    ]


def test_staged_but_the_move_failed_release_puts_the_old_origin_back():
    host = Bouncer()
    s = bouncer_session(host)
    p = pooler.open_pooler(s, "app", CONFIG, s.cluster.master)
    pooler.release(
        s, "switchover", p, s.cluster.master, pooler.stage(p, s.cluster.slave)
    )
    assert host.files[CONFIG] == INI  # as PgBouncer runs it: nothing to reload
    assert host.commands[-3:] == [
        f"write {CONFIG} postgres:postgres 640 as root"
    ] * 2 + ["console /run/pgb:6433 RESUME shotserver04;"]


def test_release_resumes_even_when_reload_fails():
    host = Bouncer(fail={"RELOAD": 1})
    s = bouncer_session(host)
    p = pooler.open_pooler(s, "app", CONFIG, s.cluster.master)
    with pytest.raises(StepError) as e:
        pooler.release(s, "switchover", p, s.cluster.slave)
    assert "RESUME shotserver04" in host.commands[-1]
    assert "point [databases] shotserver04 at db02" in e.value.fix


def test_release_at_the_same_origin_only_resumes():
    host = Bouncer()
    s = bouncer_session(host)
    p = pooler.open_pooler(s, "app", CONFIG, s.cluster.master)
    pooler.release(s, "switchover", p, s.cluster.master)
    assert (
        host.files[CONFIG] == INI
        and "RESUME" in host.commands[-1]
        and "RELOAD" not in " ".join(host.commands)
    )


# --- both slons' timing, tightened for the switchover ---------------------------------

CONF = "# slon\ncluster_name='replication'\nsync_interval=1000\nsync_interval_timeout=2000\n"


def test_slon_timing_sets_both_values_and_keeps_the_rest():
    from fabfile.render.files import slon_timing

    assert (
        slon_timing(CONF, 100, 500)
        == "# slon\ncluster_name='replication'\nsync_interval=100\n"
        "sync_interval_timeout=500\n"
    )
    assert slon_timing("cluster_name='x'\n", 100, 500).endswith(
        "sync_interval=100\nsync_interval_timeout=500\n"
    )


def timing_session(monkeypatch):
    from fabfile.endgame import slontiming

    s = session()
    for n in (1, 2):
        s.hosts["db02"].files[f"/etc/slony1/replication-node{n}/slon.conf"] = CONF
    restarts = []
    monkeypatch.setattr(
        slontiming, "restart_slons", lambda s, step: restarts.append(step)
    )
    return s, slontiming, restarts


def test_quicken_tightens_and_restore_puts_the_configured_file_back(monkeypatch):
    s, slontiming, restarts = timing_session(monkeypatch)
    files = s.hosts["db02"].files
    slontiming.quicken(s, "switchover")
    interval, timeout = settings.QUICK_SYNC
    node1 = files["/etc/slony1/replication-node1/slon.conf"]
    assert f"sync_interval={interval}\n" in node1
    assert f"sync_interval_timeout={timeout}\n" in node1
    assert files["/etc/slony1/replication-node2/slon.conf.configured"] == CONF
    slontiming.restore(s, "switchover")
    assert (
        files["/etc/slony1/replication-node1/slon.conf"]
        == files["/etc/slony1/replication-node2/slon.conf"]
        == CONF
    )
    assert any(
        "rm -f /etc/slony1/replication-node2/slon.conf.configured" in c
        for c in s.hosts["db02"].commands
    )
    assert restarts == ["switchover", "switchover"]


def test_a_window_that_fails_puts_the_configured_file_back(monkeypatch):
    from fabfile.endgame import switchover as so
    from fabfile.endgame.status import Lag
    from fabfile.render.move import Move

    s, slontiming, restarts = timing_session(monkeypatch)

    def no_sync(s, origin, subscriber, timeout=0):
        raise StepError("db02", "no SYNC from db01 confirmed")

    monkeypatch.setattr(so, "wait_for_sync", no_sync)
    with pytest.raises(StepError, match="no SYNC"):
        so.window(
            s,
            "switchover",
            Move(s.cluster, s.cluster.master, s.cluster.slave),
            None,
            Lag("db02", 1, 0.5),
        )
    assert (
        s.hosts["db02"].files["/etc/slony1/replication-node1/slon.conf"] == CONF
        and len(restarts) == 2
    )


def test_restore_after_a_killed_run_and_never_saves_quick_timing_as_configured(
    monkeypatch,
):
    s, slontiming, restarts = timing_session(monkeypatch)
    files = s.hosts["db02"].files
    slontiming.quicken(s, "switchover")  # ... and the tool was killed here
    slontiming.quicken(
        s, "switchover"
    )  # a second run must not save the quick file as configured
    assert files["/etc/slony1/replication-node1/slon.conf.configured"] == CONF
    slontiming.restore(s, "switchover")  # what recover does first
    assert files["/etc/slony1/replication-node1/slon.conf"] == CONF
    for n in (1, 2):  # the fake host only records the rm
        del files[f"/etc/slony1/replication-node{n}/slon.conf.configured"]
    slontiming.restore(
        s, "switchover"
    )  # nothing saved any more: nothing to do, no restart
    assert restarts == ["switchover"] * 3


def test_nothing_to_move_repoints_a_pooler_left_at_the_old_origin():
    """A RELOAD that failed after a move left PgBouncer at the old origin: the next
    switchover, with nothing to move, points it at the origin and RELOADs (no PAUSE,
    no RESUME)."""
    host = Bouncer()  # sends shotserver04 to db01; the set is at db02
    s = bouncer_session(host)
    changes = pooler.repoint(s, "switchover", "app", CONFIG, s.cluster.slave)
    assert [c.what for c in changes] == [
        "point PgBouncer's shotserver04 at the origin db02 (db02), then "
        "RELOAD: it sends it to db01"
    ]
    assert host.files[CONFIG] == INI  # planned, not done
    changes[0].op.run()
    assert "shotserver04 = host=db02 port=5432" in host.files[CONFIG]
    assert host.commands[-1] == "console /run/pgb:6433 RELOAD;"
    assert pooler.repoint(s, "switchover", "app", CONFIG, s.cluster.slave) == []
    assert (
        "[app] switchover: PgBouncer sends shotserver04 to the origin db02" in output(s)
    )


# --- a run killed while PgBouncer was paused ------------------------------------------

MARK = "/etc/slony1/replication-pooler-paused"


def test_a_pooled_move_marks_the_pause_on_the_slon_host_until_resume(monkeypatch):
    from fabfile.endgame import switchover as so
    from fabfile.endgame.status import Lag
    from fabfile.render.move import Move, MoveResult

    host = Bouncer()
    s = bouncer_session(host)
    p = pooler.open_pooler(s, "app", CONFIG, s.cluster.master)
    seen = []
    monkeypatch.setattr(so.slontiming, "quicken", lambda s, step: None)
    monkeypatch.setattr(so.slontiming, "restore", lambda s, step: None)
    monkeypatch.setattr(
        so, "wait_for_sync", lambda s, origin, subscriber, timeout=0: None
    )
    monkeypatch.setattr(
        so,
        "lock_and_move",
        lambda *a: (
            seen.append(s.hosts["db02"].files.get(MARK))
            or MoveResult(0.2, 0.05, 0.05, 0.05, 0.05)
        ),
    )
    result = so.window(
        s,
        "switchover",
        Move(s.cluster, s.cluster.master, s.cluster.slave),
        p,
        Lag("db02", 1, 0.5),
    )
    assert seen == [f"app\n{CONFIG}\n"]  # while the set moved, the mark was there
    assert s.hosts["db02"].commands[-1] == f"sudo root: rm -f {MARK}"
    assert (
        result.pause is not None and result.resume is not None and result.lock == 0.05
    )
    assert "the application's queries waited in PgBouncer for at most" in output(s)


def test_the_next_run_resumes_pgbouncer_left_paused_at_the_origin():
    host = Bouncer()  # pgbouncer.ini sends shotserver04 to db01
    s = bouncer_session(host)
    s.hosts["db02"].files[MARK] = f"app\n{CONFIG}\n"
    changes = pooler.resume_left(
        s, "switchover", s.cluster.slave
    )  # the killed run had moved the set
    assert [c.what for c in changes] == [
        f"RESUME shotserver04 on PgBouncer ({CONFIG}), left paused by an "
        "interrupted switchover, pointed at the origin db02"
    ]
    changes[0].op.run()
    assert "shotserver04 = host=db02 port=5432" in host.files[CONFIG]
    assert host.commands[-1] == "console /run/pgb:6433 RELOAD; RESUME shotserver04;"
    assert s.hosts["db02"].commands[-1] == f"sudo root: rm -f {MARK}"
    del s.hosts["db02"].files[MARK]  # the fake records the rm only
    assert pooler.resume_left(s, "switchover", s.cluster.slave) == []


def test_resume_left_reloads_a_file_the_killed_run_wrote_but_never_loaded():
    """Killed after stage wrote pgbouncer.ini for db02 and the move committed, before
    RELOAD: the file already points at the origin, PgBouncer still at db01. RELOAD,
    not only RESUME."""
    host = Bouncer(ini=point_pooler(INI, "shotserver04", "db02", 5432))
    s = bouncer_session(host)
    s.hosts["db02"].files[MARK] = f"app\n{CONFIG}\n"
    pooler.resume_left(s, "switchover", s.cluster.slave)[0].op.run()
    assert host.commands[-1] == "console /run/pgb:6433 RELOAD; RESUME shotserver04;"


def test_a_failover_points_pgbouncer_at_the_new_origin_and_drops_its_connections():
    """A server connection to an origin that died hangs for minutes, its client with
    it: the failover KILLs the database's connections after RELOAD, then RESUMEs."""
    host = Bouncer()  # sends shotserver04 to db01, which died
    s = bouncer_session(host)
    changes = pooler.cut(s, "failover", "app", CONFIG, s.cluster.slave)
    assert [c.what for c in changes] == [
        "point PgBouncer's shotserver04 at db02 (db02), RELOAD, drop its connections"
        " (KILL shotserver04, RESUME): the application reconnects to db02"
    ]
    assert host.files[CONFIG] == INI  # planned, not done
    changes[0].op.run()
    assert "shotserver04 = host=db02 port=5432" in host.files[CONFIG]
    assert host.commands[-2:] == [
        "console /run/pgb:6433 RELOAD; KILL shotserver04;",
        "console /run/pgb:6433 RESUME shotserver04;",
    ]
