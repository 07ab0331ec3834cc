"""The task layer and both front ends: the flags declared once, every exit code, the
configuration checked, messages naming the command, the log file. No servers: tasks
that would touch one are declared here with a body that does not."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from invoke import Config, Context, Exit

from fabfile import cli, command, config, log, settings
from fabfile.errors import StepError
from fabfile.session import Output, named

COMMON = {"master", "slave", "slon_host", "cluster", "database", "user", "config"}
PAIR = {"master": "db01", "slave": "db02", "database": "shotserver04"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No operator settings from this machine's environment; logs in tmp_path."""
    for name in list(os.environ):
        if name.startswith(config.PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SLONY_MIGRATE_LOG_DIR", str(tmp_path / "logs"))
    # no host is reached from here (tests/unit/test_ssh_config.py tests connecting)
    monkeypatch.setattr("fabfile.remote.Hosts.connect", lambda self, names: None)
    yield
    while cli.TASKS and cli.TASKS[-1].name.startswith("probe"):
        cli.TASKS.pop()  # the tasks the tests declared


def names(t: cli.Task) -> set[str]:
    return {f.name for f in t.flags}


def task(name: str) -> cli.Task:
    return next(t for t in cli.TASKS if t.name == name)


def run(t: cli.Task, **given) -> int:
    return cli.run(t, given, "slony-migrate")


# --- declarations ---------------------------------------------------------------------


def test_every_task_takes_the_common_flags():
    for t in cli.TASKS:
        assert COMMON | {"verbose", "quiet"} <= names(t), t.name


def test_only_tasks_that_change_something_have_dry_run():
    dry = {t.name for t in cli.TASKS if "dry_run" in names(t)}
    assert {"migrate", "switchover", "failover", "finish", "uninstall", "users"} <= dry
    assert "build" in dry
    assert not dry & {"status", "verify", "preflight", "logs", "show-config"}


def test_confirmation_only_where_it_is_asked():
    asked = {t.name for t in cli.TASKS if "yes" in names(t)}
    assert asked == {"uninstall", "failover", "rejoin", "finish"}


def test_one_metavar_per_flag_name_and_no_number_shown_as_text():
    seen: dict[str, str] = {}
    for t in cli.TASKS:
        for f in t.flags:
            if f.kind in (int, float):
                assert f.metavar in ("SECONDS", "N", "ID"), (t.name, f.name)
            if f.kind is not bool:
                assert f.metavar, (t.name, f.name)
                assert seen.setdefault(f.name, f.metavar) == f.metavar, f.name


def test_every_default_is_in_the_help():
    for t in cli.TASKS:
        for f in t.flags:
            if f.default not in (None, "", False, 0) and not f.required:
                shown = f"{f.default:g}" if isinstance(f.default, float) else f.default
                assert f"(default: {shown})" in f.text(), (t.name, f.name)


# --- the installed command's parser ---------------------------------------------------


def help_of(*argv: str, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        command.main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", [t.name for t in cli.TASKS])
def test_each_task_help_shows_types_defaults_and_required_flags(name, capsys):
    text = help_of(name, capsys=capsys)
    assert "STRING" not in text
    t = task(name)
    for f in t.flags:
        assert f.option in text, f.name
    flat = " ".join(text.split())
    for f in t.flags:
        if f.required:
            assert f"{f.option} {f.metavar} {f.text()}" in flat, f.name
    # Invoke's own options do not apply here
    for invoke_only in ("--pty", "--hide", "--echo", "--prompt-for-sudo", "-w,"):
        assert invoke_only not in text
    # only -h is short, the same in every task
    assert set(re.findall(r"(?<![\w-])-[a-zA-Z](?![\w-])", text)) <= {"-h"}


def test_help_of_switchover_names_seconds_and_defaults(capsys):
    text = " ".join(help_of("switchover", capsys=capsys).split())
    assert "--lock-timeout SECONDS" in text and "(default: 5)" in text
    assert "--master HOST, --source HOST" in text and "--timeout SECONDS" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--bogus"],
        ["nosuchtask"],
        [],
        ["build", "--tarball", "x.tar.bz2"],  # --host is required
        ["status", "--watch"],  # a value is missing
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        command.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: slony-migrate" in err and "Traceback" not in err


def test_source_and_target_are_master_and_slave(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "run", lambda t, given, program: seen.update(given) or 0)
    with pytest.raises(SystemExit) as e:
        command.main(["status", "--source", "db01", "--target", "db02"])
    assert e.value.code == 0 and seen["master"] == "db01" and seen["slave"] == "db02"


def test_the_console_command_runs_from_any_directory(tmp_path):
    command_path = Path(sys.executable).parent / "slony-migrate"
    assert command_path.exists(), "pip install -e . gives the slony-migrate command"
    result = subprocess.run(
        [str(command_path), "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0
    for t in cli.TASKS:
        assert f"    {t.name}" in result.stdout, t.name
    assert "testbed" not in result.stdout
    version = subprocess.run(
        [str(command_path), "--version"], cwd=tmp_path, capture_output=True, text=True
    )
    assert version.returncode == 0 and version.stdout.strip()


# --- run: values, exit codes ----------------------------------------------------------


def test_own_flags_keep_their_defaults_and_reach_the_step_as_numbers(monkeypatch):
    seen = {}

    @cli.operation("probe-numbers", dry_run=False, positive=("lines",))
    def probe(s, lines=50, wait=1.5):
        """Look."""
        seen.update(lines=lines, wait=wait)

    assert run(probe, **PAIR, lines="7", wait="0") == 0
    assert seen == {"lines": 7, "wait": 0.0}
    assert run(probe, **PAIR, lines="7") == 0
    assert seen == {"lines": 7, "wait": 1.5}
    moves = []
    monkeypatch.setattr(
        cli.endgame.switchover,
        "switchover",
        lambda s, to, sw: moves.append(sw) or {"moved": True},
    )
    monkeypatch.setattr(cli.endgame.returned, "first_contact", lambda s, **kw: [])
    assert run(task("switchover"), **PAIR, lock_timeout="2.5") == 0
    assert moves == [cli.Switch(lock_timeout=2.5)]
    assert moves[0].max_lag == settings.MAX_LAG


@pytest.mark.parametrize(
    "flag, value, words",
    [
        ("lines", "x", "--lines 'x' is not a positive whole number; fix: give for"),
        ("lines", "0", "--lines '0' is not a positive whole number"),
        ("wait", "-1", "--wait '-1' is not a number (0 or more); fix: give for"),
        ("wait", "nan", "--wait 'nan' is not a number"),
        ("wait", "inf", "--wait 'inf' is not a number"),
        ("wait", "1e999", "--wait '1e999' is not a number"),
    ],
)
def test_a_bad_number_is_one_line_naming_the_flag_and_exit_2(
    capsys, flag, value, words
):
    @cli.operation("probe-bad-number", dry_run=False, positive=("lines",))
    def probe(s, lines=50, wait=1.5):
        """Not reached."""
        raise AssertionError("not reached")

    assert run(probe, **PAIR, **{flag: value}) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: input: {words}") and err.count("\n") == 1, err


def probe_raising(error: Exception):
    @cli.operation("probe-raise", dry_run=False, fence_to="")
    def probe(s):
        """Fail."""
        raise error

    return probe


@pytest.mark.parametrize(
    "host, code", [("db01", 1), ("input", 2), ("config", 2), ("local", 2)]
)
def test_a_step_error_is_one_line_and_its_exit_code(capsys, host, code):
    probe = probe_raising(StepError(host, "database x does not exist", "check it"))
    assert run(probe, **PAIR) == code
    captured = capsys.readouterr()
    assert captured.err == f"error: {host}: database x does not exist; fix: check it\n"
    assert captured.out == ""


def test_with_json_an_error_is_also_a_document_on_stdout(capsys):
    @cli.operation("probe-json", dry_run=False, flags={"as_json": "json"}, fence_to="")
    def probe(s, as_json=False):
        """Fail."""
        raise StepError("db01", "unreachable", "start it")

    assert run(probe, **PAIR, json=True) == 1
    out = capsys.readouterr().out
    assert json.loads(out) == {
        "ok": False,
        "errors": ["db01: unreachable; fix: start it"],
    }


def test_a_returned_code_is_the_exit_code():
    @cli.operation("probe-code", dry_run=False, fence_to="")
    def probe(s):
        """Return 3."""
        return 3

    assert run(probe, **PAIR) == 3


@pytest.mark.parametrize(
    "given, words",
    [
        ({"slave": "db02", "database": "x"}, "--master is required"),
        ({"master": "db01", "database": "x"}, "--slave is required"),
        ({"master": "db01", "slave": "db02"}, "--database is required"),
        ({**PAIR, "cluster": ""}, "--cluster is empty"),
        ({**PAIR, "database": " "}, "--database is empty"),
        ({"master": "db01", "slave": "db01", "database": "x"}, "are both 'db01'"),
    ],
)
def test_missing_or_empty_settings_exit_2_before_any_host(capsys, given, words):
    probe = probe_raising(AssertionError("not reached"))
    assert run(probe, **given) == 2
    assert words in capsys.readouterr().err


def test_an_unconfirmed_question_changes_nothing(monkeypatch, capsys):
    monkeypatch.setattr("builtins.input", lambda q: (_ for _ in ()).throw(EOFError))
    monkeypatch.setattr(
        cli.endgame.finish, "finish", lambda *a, **k: pytest.fail("finish ran")
    )
    assert run(task("finish"), **PAIR) == 1
    assert "finish: not confirmed; nothing changed" in capsys.readouterr().err


def test_a_monitor_gets_unknown_for_any_error(capsys):
    status = task("status")
    for extra in ({}, {"json": True}):
        assert run(status, master="db01", slave="db02", check=True, **extra) == 3
        out = capsys.readouterr().out
        assert out.startswith("SLONY UNKNOWN - input: --database is required")
        assert out.count("\n") == 1


def test_status_refuses_mixed_formats_and_thresholds_out_of_order(capsys, monkeypatch):
    monkeypatch.setattr(cli.endgame.returned, "first_contact", lambda s, **kw: [])
    status = task("status")
    assert run(status, **PAIR, prometheus=True, json=True) == 2
    assert "--json and --prometheus exclude each other" in capsys.readouterr().err
    assert run(status, **PAIR, check=True, watch="5") == 3
    assert "--check prints once" in capsys.readouterr().out
    assert run(status, **PAIR, lag_warning="60", lag_critical="10") == 2
    assert "--lag-critical 10 is below --lag-warning 60" in capsys.readouterr().err


# --- configuration --------------------------------------------------------------------


def seen_settings():
    seen = {}

    @cli.operation("probe-settings", dry_run=False, fence_to="")
    def probe(s):
        """Look."""
        seen.update(
            database=s.cluster.database,
            slave=s.cluster.slave.host,
            port=s.cluster.master.port,
        )

    return probe, seen


def test_flags_win_over_environment_over_file_over_invoke(tmp_path, monkeypatch):
    probe, seen = seen_settings()
    path = tmp_path / "slony.toml"
    path.write_text('[slony]\ndatabase = "fromfile"\nslave = "db09"\nport = 6432\n')
    invoke = {"database": "frominvoke", "master": "db01", "port": 7000}
    assert cli.run(probe, {"config": str(path)}, "inv", invoke) == 0
    assert seen == {"database": "fromfile", "slave": "db09", "port": 6432}
    monkeypatch.setenv("SLONY_MIGRATE_DATABASE", "fromenv")
    assert cli.run(probe, {"config": str(path)}, "inv", invoke) == 0
    assert seen["database"] == "fromenv"
    assert cli.run(probe, {"config": str(path), "database": "fromflag"}, "inv") == 2
    given = {"config": str(path), "database": "fromflag", "master": "db01"}
    assert cli.run(probe, given, "inv") == 0
    assert seen["database"] == "fromflag"


@pytest.mark.parametrize(
    "text, words",
    [
        ('databse = "x"\n', "slony.toml: unknown key 'databse'; fix: use one of"),
        ("port = 'abc'\n", "slony.toml: port = 'abc' is not a whole number"),
        ("port = true\n", "slony.toml: port = True is not a whole number"),
        ("strict_host_keys = 'maybe'\n", "is not true or false"),
        ("database = [1\n", "slony.toml: "),
        ('slony = "x"\n', "[slony] is not a table"),
        ('master = "db01"\n[slony]\nslave = "db02"\n', "master outside [slony]"),
    ],
)
def test_a_bad_configuration_file_is_one_line_naming_key_and_file(
    tmp_path, capsys, text, words
):
    path = tmp_path / "slony.toml"
    path.write_text(text)
    probe = probe_raising(AssertionError("not reached"))
    assert run(probe, **PAIR, config=str(path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config: ") and words in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_a_missing_configuration_file_is_an_error(capsys):
    probe = probe_raising(AssertionError("not reached"))
    assert run(probe, **PAIR, config="/nonexistent/slony.toml") == 2
    assert "--config /nonexistent/slony.toml: no such file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("SLONY_MIGRATE_PORT", "abc", "environment SLONY_MIGRATE_PORT: port = 'abc'"),
        ("INVOKE_SLONY_PORT", "abc", "environment INVOKE_SLONY_PORT: port = 'abc'"),
        ("SLONY_MIGRATE_DATABSE", "x", "SLONY_MIGRATE_DATABSE is not a setting"),
        ("SLONY_MIGRATE_STRICT_HOST_KEYS", "perhaps", "is not true or false"),
    ],
)
def test_a_bad_environment_variable_is_one_line(
    monkeypatch, capsys, name, value, words
):
    monkeypatch.setenv(name, value)
    probe = probe_raising(AssertionError("not reached"))
    assert run(probe, **PAIR) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_environment_values_are_typed():
    conf = config.load(
        environ={"SLONY_MIGRATE_PORT": "6432", "SLONY_MIGRATE_STRICT_HOST_KEYS": "no"}
    )
    assert conf["port"] == 6432 and conf["strict_host_keys"] is False
    assert config.load(environ={"SLONY_MIGRATE_PASSWORD": "x" * 20}) == dict(
        settings.DEFAULTS["slony"]
    )


def test_invokes_own_configuration_is_checked_too(capsys):
    probe = probe_raising(AssertionError("not reached"))
    assert cli.run(probe, dict(PAIR), "inv", {"databse": "x"}) == 2
    assert "Invoke's configuration (slony): unknown key 'databse'" in (
        capsys.readouterr().err
    )


# --- messages and the log -------------------------------------------------------------


def test_messages_name_the_command_the_operator_ran():
    text = "run inv status, then inv switchover --yes; invalid inventory"
    assert named(text, "inv") == text
    assert named(text, "slony-migrate") == (
        "run slony-migrate status, then slony-migrate switchover --yes; invalid"
        " inventory"
    )


def test_no_message_tells_an_installed_user_to_run_inv(capsys):
    probe = probe_raising(StepError("db02", "no set", "run inv migrate first"))
    assert run(probe, **PAIR) == 1
    assert capsys.readouterr().err.endswith("fix: run slony-migrate migrate first\n")


def logged(tmp_path) -> str:
    files = sorted((tmp_path / "logs").rglob("*.log"))
    assert files, "no log file"
    return files[-1]


def test_each_run_writes_a_private_log_with_timestamps(tmp_path, capsys):
    @cli.operation("probe-log", dry_run=False, fence_to="")
    def probe(s):
        """Say things."""
        s.say("db01", "probe", "first line")
        log.trace("db01", "SELECT 'secret-verifier-123'")
        s.out.error("warning: something")

    log.hide("secret-verifier-123")
    assert run(probe, **PAIR) == 0
    path = logged(tmp_path)
    assert path.parent == tmp_path / "logs" / "replication"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    lines = path.read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert all(re.match(stamp + " ", l) for l in lines), lines
    assert any(l.endswith("INFO [db01] probe: first line") for l in lines)
    assert any(l.endswith("WARNING warning: something") for l in lines)
    assert not any("SELECT" in l for l in lines)  # traces only with --verbose
    assert "SELECT" not in capsys.readouterr().err
    assert run(probe, **PAIR, verbose=True) == 0
    text = logged(tmp_path).read_text()
    assert "[db01] > SELECT '********'" in text and "secret-verifier-123" not in text
    err = capsys.readouterr().err
    assert "[db01] > SELECT '********'" in err and "secret-verifier" not in err
    # the tasks a monitor polls keep no log, but --verbose still traces
    status_like = replace(probe, name="probe-nolog", keeps_log=False)
    before = set((tmp_path / "logs").rglob("*.log"))
    assert run(status_like, **PAIR, verbose=True) == 0
    assert set((tmp_path / "logs").rglob("*.log")) == before
    assert "[db01] > SELECT '********'" in capsys.readouterr().err


def test_quiet_shows_only_warnings_and_errors(tmp_path, capsys):
    @cli.operation("probe-quiet", dry_run=False, fence_to="")
    def probe(s):
        """Say things."""
        s.say("db01", "probe", "chatter")
        s.out.warn("[db01] preflight: warn something")
        s.out.error("warning: on stderr")

    assert run(probe, **PAIR, quiet=True) == 0
    captured = capsys.readouterr()
    assert "chatter" not in captured.out
    assert "warn something" in captured.out and "on stderr" in captured.err
    assert "chatter" in logged(tmp_path).read_text()


def test_output_to_another_stream_keeps_the_program_name():
    out = Output(program="slony-migrate", quiet=True).to(sys.stderr)
    assert out.program == "slony-migrate" and out.quiet and not out.tty


# --- Invoke in a checkout -------------------------------------------------------------


def test_the_invoke_tasks_have_the_same_flags_and_no_short_ones():
    ns = cli.namespace()
    assert set(ns.task_names) == {t.name for t in cli.TASKS}
    for t in cli.TASKS:
        args = ns[t.name].get_arguments()
        assert {a.name for a in args} == names(t), t.name
        assert all(len(n) > 1 for a in args for n in a.names), t.name


def test_an_invoke_task_raises_exit_with_the_code(capsys):
    probe = probe_raising(StepError("input", "bad", "fix it"))
    body = cli.as_invoke(probe)
    with pytest.raises(Exit) as e:
        body(Context(Config()), **PAIR)
    assert e.value.code == 2 and "error: input: bad" in capsys.readouterr().err


def test_switchover_json_names_each_cluster_it_moved(monkeypatch, capsys):
    """One document; with --all-databases each item says which cluster it is."""
    from types import SimpleNamespace

    from fabfile import endgame
    from fabfile.model import make_cluster

    def session(name: str, database: str):
        return SimpleNamespace(
            cluster=make_cluster("db01", "db02", name=name, database=database),
            dry_run=False,
            out=Output(),
        )

    monkeypatch.setattr(
        endgame.switchover, "switchover", lambda x, node, sw: {"moved": True}
    )
    monkeypatch.setattr(
        endgame.each,
        "each_cluster",
        lambda s, step, one: [one(session("crm", "crm")), one(session("shop", "shop"))],
    )
    assert cli.switch(session("crm", "crm"), "slave", cli.Switch(), True, True) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and [(c["cluster"], c["database"]) for c in doc["clusters"]] == [
        ("crm", "crm"),
        ("shop", "shop"),
    ]
    cli.switch(session("crm", "crm"), "slave", cli.Switch(), False, True)
    assert json.loads(capsys.readouterr().out)["cluster"] == "crm"
