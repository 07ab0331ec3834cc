"""The task layer: one declaration of the common flags, defaults in one place, errors
as one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Config, Context, Exit

from fabfile import cli, settings
from fabfile.errors import StepError

COMMON = {"master", "slave", "slon_host", "cluster", "database", "user"}


def flags(t) -> set[str]:
    return {a.name for a in t.get_arguments()}


def test_every_task_takes_the_common_flags():
    for t in cli.TASKS:
        assert COMMON <= flags(t), t.name


def test_only_tasks_that_change_something_have_dry_run():
    dry = {t.name for t in cli.TASKS if "dry_run" in flags(t)}
    assert {
        "migrate",
        "switchover",
        "failover",
        "finish",
        "uninstall",
        "users",
        "build",
    } <= dry
    assert not dry & {"status", "verify", "preflight", "logs", "show-config"}


def test_confirmation_only_where_it_is_asked():
    assert {t.name for t in cli.TASKS if "yes" in flags(t)} == {
        "uninstall",
        "failover",
        "rejoin",
        "finish",
    }


def test_own_flags_keep_their_defaults_and_reach_the_step_as_numbers(monkeypatch):
    args = {a.name: a for a in cli.switchover.get_arguments()}
    assert (
        args["max_lag"].default is None and args["lock_timeout"].default is None
    )  # not given: the step's own
    assert ("json", "j") in {a.names for a in cli.status.get_arguments()}
    seen = {}

    @cli.operation(dry_run=False, positive=("lines",))
    def probe(s, lines=50, wait=1.5):
        """Look."""
        seen.update(lines=lines, wait=wait)

    probe(context(), master="db01", slave="db02", lines="7", wait="0")
    assert seen == {"lines": 7, "wait": 0.0}
    probe(context(), master="db01", slave="db02", lines="7")
    assert seen == {"lines": 7, "wait": 1.5}
    moves = []
    monkeypatch.setattr(
        cli.endgame.switchover, "switchover", lambda s, to, switch: moves.append(switch)
    )
    cli.switchover(context(), master="db01", slave="db02", lock_timeout="2.5")
    assert (
        moves == [cli.Switch(lock_timeout=2.5)] and moves[0].max_lag == settings.MAX_LAG
    )


@pytest.mark.parametrize(
    "flag, value, words",
    [
        (
            "lines",
            "x",
            (
                "--lines 'x' is not a positive whole number; fix: give for example"
                " --lines 1"
            ),
        ),
        ("lines", "0", "--lines '0' is not a positive whole number"),
        (
            "wait",
            "-1",
            "--wait '-1' is not a number (0 or more); fix: give for example --wait 0.0",
        ),
        ("wait", "nan", "--wait 'nan' is not a number"),
        ("wait", "inf", "--wait 'inf' is not a number"),
    ],
)
def test_a_bad_number_is_one_line_naming_the_flag(capsys, flag, value, words):
    @cli.operation(dry_run=False, positive=("lines",))
    def probe(s, lines=50, wait=1.5):
        """Not reached."""
        raise AssertionError("not reached")

    with pytest.raises(Exit):
        probe(context(), master="db01", slave="db02", **{flag: value})
    err = capsys.readouterr().err
    assert err.startswith(f"error: input: {words}") and err.count("\n") == 1, err


def test_the_namespace_is_configured_with_the_one_set_of_defaults():
    ns = cli.namespace()
    assert ns.configuration()["slony"] == settings.DEFAULTS["slony"]
    assert set(ns.task_names) == {t.name for t in cli.TASKS}
    assert not any(name.startswith("testbed") for name in ns.task_names)


def context() -> Context:
    return Context(Config(defaults=settings.DEFAULTS))


def test_a_step_error_is_one_line_on_stderr_and_exit_1(capsys):
    @cli.operation(dry_run=False)
    def broken(s):
        """Fail."""
        raise StepError("db01", "database x does not exist", "check --database")

    with pytest.raises(Exit) as e:
        broken(context(), master="db01", slave="db02")
    assert e.value.code == 1
    assert (
        capsys.readouterr().err
        == "error: db01: database x does not exist; fix: check --database\n"
    )


def test_bad_input_is_refused_before_any_host_is_touched(capsys):
    @cli.operation(dry_run=False)
    def never(s):
        """Not reached."""
        raise AssertionError("not reached")

    with pytest.raises(Exit):
        never(context(), master="db01", slave="db01")
    assert "--master and --slave are both 'db01'" in capsys.readouterr().err


def test_flags_win_over_the_configuration():
    seen = {}

    @cli.operation(dry_run=False)
    def probe(s):
        """Look."""
        seen.update(
            database=s.cluster.database, slave=s.cluster.slave.host, dry_run=s.dry_run
        )

    c = Context(
        Config(
            defaults=settings.DEFAULTS,
            overrides={"slony": {"database": "fromconfig", "slave": "db09"}},
        )
    )
    probe(c, master="db01", database="fromflag")
    assert seen == {"database": "fromflag", "slave": "db09", "dry_run": False}


def test_an_unconfirmed_question_changes_nothing(monkeypatch):
    monkeypatch.setattr(
        "builtins.input", lambda prompt: (_ for _ in ()).throw(EOFError)
    )
    with pytest.raises(Exit) as e:
        cli.uninstall(context(), master="db01", slave="db02")
    assert e.value.code == 1 and "not confirmed; nothing changed" in str(
        e.value.message
    )


def test_the_console_command_lists_the_same_tasks_from_any_directory(tmp_path):
    command = Path(sys.executable).parent / "slony-migrate"
    assert command.exists(), (
        "install the package (pip install -e .) to get the slony-migrate command"
    )
    out = subprocess.run(
        [str(command), "--list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for t in cli.TASKS:
        assert f"  {t.name} " in out or out.rstrip().endswith(t.name), t.name
    assert "testbed" not in out
    help_ = subprocess.run(
        [str(command), "--help", "switchover"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--max-lag" in help_ and "--dry-run" in help_ and "--master" in help_
