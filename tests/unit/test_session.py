"""Output, apply and the change builders: what a dry run shows, what applying does,
how progress looks."""

from __future__ import annotations

import io

from fabfile import plan
from fabfile.plan import (
    Action,
    Change,
    Command,
    File,
    Slonik,
    Sql,
    apply,
    file_change,
    preview,
)
from fabfile.render.sql import MASK
from fabfile.session import Output
from tests.unit.fakes import FakeHost, output, session


def changes(log: list[str]) -> list[Change]:
    return [
        Change("db01", "demo", "do one", Action(lambda: log.append("one"), "SQL ONE")),
        Change("db02", "demo", "do two", Action(lambda: log.append("two"))),
    ]


def test_apply_runs_each_change_in_order_and_reports_it():
    s, log = session(), []
    assert apply(s, changes(log)) == 2
    assert log == ["one", "two"]
    assert output(s) == "[db01] demo: do one\n[db02] demo: do two\n"
    assert [c.what for c in s.changes] == ["do one", "do two"]


def test_apply_in_a_dry_run_shows_details_and_runs_nothing():
    s, log = session(dry_run=True), []
    assert apply(s, changes(log)) == 0
    assert log == []
    assert (
        output(s)
        == "[db01] demo: would do one\n    SQL ONE\n[db02] demo: would do two\n"
    )
    assert len(s.changes) == 2


def test_apply_stops_at_the_first_failing_change():
    s, log = session(), []

    def fail():
        raise RuntimeError("boom")

    try:
        apply(s, [Change("db01", "demo", "fail", Action(fail)), *changes(log)])
    except RuntimeError:
        pass
    assert log == []


# --- the executor: each kind of operation is carried out by one function, as the dry
# run shows it ---------


def every_kind(log: list[str]) -> list[Change]:
    return [
        Change(
            "db01",
            "users",
            "create role r",
            Sql(f"CREATE ROLE r PASSWORD '{MASK}'", secret="SCRAM-SHA-256$x"),
        ),
        Change(
            "db02",
            "appdb",
            "create database d",
            Sql("CREATE DATABASE d", "shop", timeout=None),
        ),
        Change(
            "db02",
            "slons",
            "start slon",
            Command("setsid -f watchdog node1", "postgres", stdin="in"),
            lambda: log.append("then"),
        ),
        Change(
            "db02",
            "config",
            "create /etc/x",
            File("/etc/x", "new\n", None, "postgres:postgres", "600"),
        ),
        Change("db02", "init", "init cluster", Slonik("cluster name = c;\n", 60)),
    ]


def test_execute_runs_each_kind_of_operation_on_its_host(monkeypatch):
    s, log, slonik = session(), [], []
    monkeypatch.setattr(
        plan,
        "run_slonik",
        lambda s, script, what, timeout: slonik.append((script, what, timeout)),
    )
    assert apply(s, every_kind(log)) == 5
    assert s.hosts["db01"].commands == [
        "psql postgres: CREATE ROLE r PASSWORD 'SCRAM-SHA-256$x'"
    ]
    assert s.hosts["db02"].commands == [
        "psql shop: CREATE DATABASE d",
        "sudo postgres: setsid -f watchdog node1",
        "write /etc/x postgres:postgres 600",
    ]
    assert s.hosts["db02"].files["/etc/x"] == "new\n" and log == ["then"]
    assert slonik == [("cluster name = c;\n", "init cluster", 60)]


def test_a_dry_run_shows_each_operation_as_it_would_run_with_the_secret_masked(
    monkeypatch,
):
    s, log = session(dry_run=True), []
    monkeypatch.setattr(plan, "run_slonik", lambda *a, **k: log.append("slonik"))
    assert apply(s, every_kind(log)) == 0
    out = output(s)
    assert (
        f"would create role r\n    CREATE ROLE r PASSWORD '{MASK}'\n" in out
        and "SCRAM-SHA-256$x" not in out
    )
    assert "    setsid -f watchdog node1\n" in out and "    cluster name = c;\n" in out
    assert (
        "+new" in out and log == [] and all(h.commands == [] for h in s.hosts.values())
    )


def test_the_secret_replaces_the_mask_only_where_it_stands_as_a_literal():
    op = Sql(f"SET x = 'a'; ALTER ROLE r PASSWORD '{MASK}'; -- {MASK}", secret="v'1")
    assert op.sent() == f"SET x = 'a'; ALTER ROLE r PASSWORD 'v''1'; -- {MASK}"
    assert Sql("SELECT 1").sent() == "SELECT 1"


def test_preview_is_shown_and_counted_but_never_runs():
    s = session(dry_run=True)
    preview(
        s, "db02", "switchover", "lock set 1 on db01, move it to db02", "psql <<SQL"
    )
    assert (
        output(s)
        == "[db02] switchover: would lock set 1 on db01, move it to db02\n    psql"
        " <<SQL\n"
    )
    assert len(s.changes) == 1


def test_file_change_same_text_is_up_to_date():
    s, h = session(), FakeHost("db02", {"/etc/x": "a\n"})
    assert file_change(s, h, "config", "/etc/x", "a\n") == []
    assert output(s) == "[db02] config: /etc/x is up to date\n"


def test_file_change_shows_a_diff_or_only_the_name_of_a_secret():
    s, h = session(dry_run=True), FakeHost("db02", {"/etc/x": "a\n"})
    apply(s, file_change(s, h, "config", "/etc/x", "b\n"))
    apply(
        s,
        file_change(
            s, h, "users", "/etc/secret", "password\n", mode="600", secret=True
        ),
    )
    out = output(s)
    assert "would update /etc/x (mode 644)" in out and "-a" in out and "+b" in out
    assert (
        "would create /etc/secret (mode 600, contents not shown)" in out
        and "password" not in out
    )
    assert h.commands == []


def test_progress_on_a_terminal_redraws_one_line():
    stream = io.StringIO()
    out = Output(stream, tty=True)
    out.progress("db02", "subscribe", "10%")
    out.progress("db02", "subscribe", "20%")
    out.say("db02", "subscribe", "done")
    assert (
        stream.getvalue()
        == "\r\x1b[K[db02] subscribe: 10%\r\x1b[K[db02] subscribe: 20%\n"
        "[db02] subscribe: done\n"
    )


def test_progress_in_a_log_prints_a_line_every_few_seconds(monkeypatch):
    stream, now = io.StringIO(), [1000.0]
    monkeypatch.setattr("fabfile.session.time.monotonic", lambda: now[0])
    out = Output(stream, tty=False)
    for t, text in ((1000, "10%"), (1002, "20%"), (1005, "30%"), (1006, "40%")):
        now[0] = t
        if out.progress_due():
            out.progress("db02", "subscribe", text)
    assert stream.getvalue() == "[db02] subscribe: 10%\n[db02] subscribe: 30%\n"


def test_progress_on_a_terminal_is_worth_computing_once_a_second(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("fabfile.session.time.monotonic", lambda: now[0])
    out = Output(io.StringIO(), tty=True)
    assert out.progress_due()
    out.progress("db02", "subscribe", "10%")
    now[0] = 1000.5
    assert not out.progress_due()
    now[0] = 1001.0
    assert out.progress_due()
