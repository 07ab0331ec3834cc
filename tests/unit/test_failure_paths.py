"""Failure paths of the end-game with canned facts: what is stopped, unlocked,
refused, and what is said."""

from __future__ import annotations

import stat
import subprocess
import time
from types import SimpleNamespace

import pytest

from fabfile import facts, plan, wait
from fabfile.endgame import failover as fo
from fabfile.endgame import finish as fin
from fabfile.endgame import status as st
from fabfile.endgame import switchover as so
from fabfile.endgame.status import Lag
from fabfile.errors import StepError
from fabfile.model import SlonyState
from fabfile.render.move import Move, Switch
from fabfile.render.shell import NO_SLONIK, kill_group, slonik_shell, with_slonik
from tests.unit.fakes import canned, output, session

SET = dict(schema=True, has_set=True)


# --- the slonik wrapper on the slon host ----------------------------------------------


@pytest.fixture
def fake_slonik(tmp_path):
    """A stand-in for slonik: records its script; 'fail' exits 3, 'hang' sleeps 30 s."""
    path = tmp_path / "slonik"
    path.write_text(
        f'#!/bin/sh\nscript=$(cat)\necho "$script" >> {tmp_path}/ran\n'
        'case "$script" in *fail*) exit 3;; *hang*) sleep 30;; esac\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def run_shell(command: str, script: str) -> tuple[int, float]:
    t0 = time.monotonic()
    rc = subprocess.run(
        ["sh", "-c", command], input=script, text=True, capture_output=True
    ).returncode
    return rc, time.monotonic() - t0


def test_slonik_shell_runs_the_script_from_stdin_and_keeps_no_pid_file(
    fake_slonik, tmp_path
):
    pidfile = tmp_path / "slonik.pid"
    rc, _ = run_shell(
        slonik_shell(str(fake_slonik), 10, str(pidfile)),
        "lock set (id = 1, origin = 1);",
    )
    assert (
        rc == 0 and (tmp_path / "ran").read_text() == "lock set (id = 1, origin = 1);\n"
    )
    assert not pidfile.exists()


def test_slonik_shell_bounds_slonik_and_runs_the_fallback(fake_slonik, tmp_path):
    rc, took = run_shell(
        slonik_shell(str(fake_slonik), 1, str(tmp_path / "p"), on_failure="unlock set"),
        "hang",
    )
    assert rc == 124 and took < 5
    assert (tmp_path / "ran").read_text() == "hang\nunlock set\n"


def test_slonik_shell_fallback_after_a_failure_keeps_the_exit_code(
    fake_slonik, tmp_path
):
    rc, _ = run_shell(
        slonik_shell(
            str(fake_slonik), 10, str(tmp_path / "p"), on_failure="unlock set"
        ),
        "fail",
    )
    assert rc == 3 and (tmp_path / "ran").read_text().endswith("unlock set\n")


def test_slonik_shell_runs_another_program_and_unlocks_with_slonik(
    fake_slonik, tmp_path
):
    program = tmp_path / "psql"
    program.write_text(f"#!/bin/sh\ncat > {tmp_path}/psql-read\nexit 2\n")
    program.chmod(0o755)
    rc, _ = run_shell(
        slonik_shell(
            str(fake_slonik),
            10,
            str(tmp_path / "p"),
            on_failure="unlock set",
            program=str(program),
        ),
        "\\echo step: LOCK SET on db01",
    )
    assert (
        rc == 2
        and (tmp_path / "psql-read").read_text() == "\\echo step: LOCK SET on db01"
    )
    assert (tmp_path / "ran").read_text() == "unlock set\n"


def test_phase_error_names_the_part_that_failed():
    failed = SimpleNamespace(
        exited=3,
        stdout=(
            "step: SYNC on db01\nstep: db02 to confirm SYNC (1,7) within 5 s\n"
            "slonik's unlock said this\n"
        ),
        stderr="psql:<stdin>:9: ERROR:  canceling statement due to statement timeout\n",
    )
    assert (
        so.phase_error(failed)
        == "db02 to confirm SYNC (1,7) within 5 s: ERROR:  canceling statement due to "
        "statement timeout"
    )
    assert (
        so.phase_error(
            SimpleNamespace(exited=124, stdout="step: LOCK SET on db01\n", stderr="")
        )
        == "LOCK SET on db01: timed out"
    )
    assert (
        so.phase_error(SimpleNamespace(exited=137, stdout="", stderr=""))
        == "exit code 137"
    )


def test_kill_group_stops_the_whole_group_under_sh(fake_slonik, tmp_path):
    """sh as on the slon host (dash on Debian): slonik and the `timeout` around it
    end."""
    pidfile = tmp_path / "p"
    proc = subprocess.Popen(
        ["sh", "-c", slonik_shell(str(fake_slonik), 60, str(pidfile))],
        stdin=subprocess.PIPE,
        text=True,
    )
    proc.stdin.write("hang")
    proc.stdin.close()
    deadline = time.monotonic() + 5
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    group = int(pidfile.read_text())
    assert (
        subprocess.run(
            ["sh", "-c", kill_group(group, "KILL").split(" || ")[0]]
        ).returncode
        == 0
    )
    assert proc.wait(timeout=5) != 0
    time.sleep(0.2)
    pids = subprocess.run(
        ["pgrep", "-g", str(group)], capture_output=True, text=True
    ).stdout.split()
    states = [
        subprocess.run(
            ["ps", "-o", "stat=", "-p", pid], capture_output=True, text=True
        ).stdout.strip()
        for pid in pids
    ]
    assert all(st.startswith("Z") for st in states), (
        states
    )  # gone, or dead and not yet reaped


def test_with_slonik_finds_slonik_in_the_same_shell(fake_slonik, tmp_path):
    """The slonik lookup is part of the command (no SSH command of its own); without
    slonik, exit code 127 and the message run_slonik turns into its error."""
    command = with_slonik(slonik_shell('"$slonik"', 10, str(tmp_path / "p")))
    env = {"PATH": f"{fake_slonik.parent}:/usr/bin:/bin"}
    done = subprocess.run(
        ["sh", "-c", command],
        input="create set;",
        text=True,
        capture_output=True,
        env=env,
    )
    assert done.returncode == 0 and (tmp_path / "ran").read_text() == "create set;\n"
    fake_slonik.unlink()
    done = subprocess.run(
        ["sh", "-c", command],
        input="create set;",
        text=True,
        capture_output=True,
        env=env,
    )
    assert (done.returncode, done.stderr.strip()) == (127, NO_SLONIK)


def test_a_program_that_ended_between_the_parts_of_its_script_fails_and_unlocks(
    fake_slonik, tmp_path
):
    """The switchover's psql after the lock phase, when the move phase never came (the
    tool died): its mark is still there, so the slon host counts it as failed and runs
    UNLOCK SET itself.
    """
    mark = tmp_path / "locked"
    program = tmp_path / "psql"
    program.write_text(
        f"#!/bin/sh\ncat > /dev/null\n: > {mark}\n"
    )  # reads to EOF, leaves the mark
    program.chmod(0o755)
    command = slonik_shell(
        str(fake_slonik),
        10,
        str(tmp_path / "p"),
        on_failure="unlock set",
        program=str(program),
        unfinished=str(mark),
    )
    rc, _ = run_shell(command, "lock set")
    assert (
        rc == 75
        and (tmp_path / "ran").read_text() == "unlock set\n"
        and not mark.exists()
    )
    program.write_text(
        "#!/bin/sh\ncat > /dev/null\n"
    )  # the move phase came and removed the mark
    (tmp_path / "ran").unlink()
    rc, _ = run_shell(command, "lock set")
    assert rc == 0 and not (tmp_path / "ran").exists()


def test_slonik_shell_sets_pgoptions_only_for_slonik():
    command = slonik_shell(
        "/usr/bin/slonik", 5, "/run/p", lock_timeout=2.5, statement_timeout=5
    )
    assert (
        "PGOPTIONS='-c search_path=pg_catalog -c lock_timeout=2500 -c statement_timeout=5000' timeout -k 3 5"
        " /usr/bin/slonik" in command
    )
    command = slonik_shell(
        "/usr/bin/slonik", 5, "/run/p", lock_timeout=0.5, deadlock_timeout=0.02
    )
    assert (
        "PGOPTIONS='-c search_path=pg_catalog -c lock_timeout=500 -c deadlock_timeout=20' timeout"
        in command
    )


# --- switchover: settle after a phase ended early -------------------------------------


def fake_slonik_runs(monkeypatch, results=()):
    """Record run_slonik calls (what, script); answer with `results` in turn
    (default: success)."""
    calls, answers = [], list(results)

    def run(s, script, what, timeout=0, check=True, **kw):
        calls.append((what, script))
        r = (
            answers.pop(0)
            if answers
            else SimpleNamespace(ok=True, failed=False, exited=0, stdout="", stderr="")
        )
        if check and r.failed:
            raise StepError("db02", f"slonik ({what}) failed")
        return r

    monkeypatch.setattr(so, "run_slonik", run)
    monkeypatch.setattr(plan, "run_slonik", run)
    monkeypatch.setattr(so, "stop_slonik", lambda s: None)
    return calls


def move(s, lock_timeout: float = 3, timeout: float = 120) -> Move:
    """The move from db01 to db02, as the switchover builds it from its flags."""
    return Move(
        s.cluster,
        s.cluster.master,
        s.cluster.slave,
        Switch(timeout=timeout, lock_timeout=lock_timeout),
    )


def window(monkeypatch, s, m: Move):
    """The switchover's window without what comes before the lock (the slons' timing,
    a fresh SYNC)."""
    monkeypatch.setattr(so.slontiming, "quicken", lambda s, step: None)
    monkeypatch.setattr(so.slontiming, "restore", lambda s, step: None)
    monkeypatch.setattr(
        so, "wait_for_sync", lambda s, origin, subscriber, timeout=0: None
    )
    return so.window(s, "switchover", m, None, Lag("db02", 1, 0.5))


def states(monkeypatch, *sequence):
    """facts.slony_state answers db01's states in turn (the last one stays), db02 as
    given first."""
    seq = list(sequence)

    def slony_state(host, cl):
        return seq.pop(0) if len(seq) > 1 else seq[0]

    monkeypatch.setattr(facts, "slony_state", slony_state)


def test_settle_when_the_move_committed_is_not_a_failure(monkeypatch):
    s, calls = session(), fake_slonik_runs(monkeypatch)
    states(monkeypatch, SlonyState(**SET, origin=2))
    assert so.settle(s, "switchover", move(s)) is True
    assert calls == [] and "the move of set 1 to db02 committed on db01" in output(s)


def test_settle_waits_for_the_slon_hosts_own_unlock(monkeypatch):
    s, calls = session(), fake_slonik_runs(monkeypatch)
    states(
        monkeypatch,
        SlonyState(**SET, origin=1, locked=True),
        SlonyState(**SET, origin=1),
    )
    assert so.settle(s, "switchover", move(s)) is False
    assert calls == [] and "set 1 unlocked: writes go on at db01" in output(s)


def test_settle_unlocks_when_the_slon_host_did_not(monkeypatch):
    s, calls = session(), fake_slonik_runs(monkeypatch)
    monkeypatch.setattr(so.settings, "SETTLE", 0)
    states(
        monkeypatch,
        SlonyState(**SET, origin=1, locked=True),
        SlonyState(**SET, origin=1),
    )
    assert so.settle(s, "switchover", move(s)) is False
    assert [what for what, _ in calls] == ["unlock set"]


def test_settle_that_cannot_unlock_says_writes_are_refused(monkeypatch):
    s, calls = session(), fake_slonik_runs(monkeypatch)
    monkeypatch.setattr(so.settings, "SETTLE", 0)
    states(monkeypatch, SlonyState(**SET, origin=1, locked=True))
    with pytest.raises(StepError) as e:
        so.settle(s, "switchover", move(s))
    assert (
        "still locked: application writes are refused" in e.value.message
        and "again" in e.value.fix
    )
    assert [what for what, _ in calls] == ["unlock set"]


def fake_phases(monkeypatch, result=None, error=None):
    """lock_and_move's one psql on the slon host: record the parts it is given;
    answer with `result` (default: both phases done) or raise `error`."""
    calls = []

    def run(s, parts, timeout, on_failure, program):
        calls.append(
            dict(parts=parts, timeout=timeout, on_failure=on_failure, program=program)
        )
        if error is not None:
            raise error
        return result or SimpleNamespace(
            ok=True,
            failed=False,
            exited=0,
            stdout="",
            stderr="",
            marks=[time.monotonic()],
            seen=[],
        )

    monkeypatch.setattr(so, "run_phases", run)
    return calls


def outcome(exited: int, locked: bool, stdout: str = "", stderr: str = "", seen=()):
    return SimpleNamespace(
        ok=exited == 0,
        failed=exited != 0,
        exited=exited,
        stdout=stdout,
        stderr=stderr,
        marks=[time.monotonic()] if locked else [],
        seen=list(seen),
    )


def test_lock_and_move_sends_the_move_only_after_the_lock_said_it_is_done(monkeypatch):
    s, unlocks = session(), fake_slonik_runs(monkeypatch)
    phases = fake_phases(monkeypatch)
    canned(monkeypatch, server_now="2026-11-26 10:00:00+00", epoch_now=1795600000.0)
    states(monkeypatch, SlonyState(**SET, origin=2))
    result = so.lock_and_move(s, "switchover", move(s))
    assert result.blocked >= 0 and result.lock >= 0 and result.takeover >= 0
    (lock, marker, lock_wait), (moving, end, move_wait) = phases[0]["parts"]
    assert (
        marker == "locked: the move may start"
        and lock.endswith(f"\\echo {marker}\n")
        and lock_wait == 3 + so.settings.LOCK_GRACE
    )
    assert (
        "moveSet(1, 2)" in moving
        and end == ""
        and move_wait == 120 + so.settings.SSH_GRACE
    )
    assert (
        phases[0]["timeout"] == 123
        and "unlock set (id = 1, origin = 1);" in phases[0]["on_failure"]
    )
    assert (
        unlocks == []
        and "set 1 locked in 0.0 s: writes refused until it moved" in output(s)
    )


def test_a_takeover_the_slon_host_saw_is_not_polled_for_again(monkeypatch):
    s = session()
    fake_slonik_runs(monkeypatch)
    t = time.monotonic()
    seen = [(t + 0.03, "step: MOVE SET committed"), (t + 0.08, "step: taken over")]
    fake_phases(monkeypatch, outcome(0, locked=True, seen=seen))
    canned(monkeypatch, server_now="2026-11-26 10:00:00+00", epoch_now=1795600000.0)
    looks = []
    monkeypatch.setattr(
        facts,
        "slony_state",
        lambda h, cl: looks.append(h) or SlonyState(**SET, origin=1),
    )
    result = so.lock_and_move(s, "switchover", move(s))
    assert looks == [] and abs(result.takeover - 0.05) < 1e-6
    assert "waiting for its slon" not in output(s)


def test_a_takeover_the_slon_host_did_not_see_is_polled_from_the_commit(monkeypatch):
    s = session()
    fake_slonik_runs(monkeypatch)
    t = time.monotonic()
    seen = [(t, "step: MOVE SET committed")]
    fake_phases(monkeypatch, outcome(0, locked=True, seen=seen))
    canned(monkeypatch, server_now="2026-11-26 10:00:00+00", epoch_now=1795600000.0)
    stalls = []
    real = so.wait_taken_over
    monkeypatch.setattr(
        so,
        "wait_taken_over",
        lambda *a, **k: stalls.append(k.get("since")) or real(*a, **k),
    )
    states(monkeypatch, SlonyState(**SET, origin=2))
    so.lock_and_move(s, "switchover", move(s))
    assert stalls == [t]
    assert (
        "[db02] switchover: not the set's origin yet 0.5 s after the move: waiting for"
        " its slon" in output(s)
    )


def test_lock_timeout_unlocks_and_names_the_blocking_sessions(monkeypatch):
    s, calls = session(), fake_slonik_runs(monkeypatch)
    fake_phases(monkeypatch, outcome(124, locked=False))
    canned(
        monkeypatch,
        server_now="2026-11-26 10:00:00+00",
        epoch_now=1795600000.0,
        transactions_before=[("4242", "johann", "billing-cron", 95, "09:58:25")],
    )
    states(monkeypatch, SlonyState(**SET, origin=1))
    with pytest.raises(StepError) as e:
        window(monkeypatch, s, move(s))
    msg = e.value.message
    assert (
        "LOCK SET did not succeed within 3 s (timed out); set 1 unlocked, nothing"
        " changed" in msg
    )
    assert (
        "pid 4242 user johann application billing-cron transaction open 95 s, query"
        " since 09:58:25" in msg
    )
    assert calls == [] and "locked in" not in output(s)


def test_move_failure_after_the_lock_unlocks_and_fails(monkeypatch):
    s = session()
    fake_slonik_runs(monkeypatch)
    fake_phases(
        monkeypatch,
        outcome(137, locked=True, stdout="step: SYNC on db01\n", stderr="killed"),
    )
    canned(monkeypatch, server_now="2026-11-26 10:00:00+00", epoch_now=1795600000.0)
    states(monkeypatch, SlonyState(**SET, origin=1))
    with pytest.raises(
        StepError,
        match=(
            "move set failed \\(SYNC on db01: killed\\); set 1 unlocked, writes go "
            "on at db01"
        ),
    ):
        window(monkeypatch, s, move(s))


def test_move_that_committed_although_the_psql_failed_goes_on(monkeypatch):
    s = session()
    fake_slonik_runs(monkeypatch)
    fake_phases(monkeypatch, outcome(124, locked=True))
    canned(monkeypatch, server_now="2026-11-26 10:00:00+00", epoch_now=1795600000.0)
    states(monkeypatch, SlonyState(**SET, origin=2))
    assert window(monkeypatch, s, move(s)).blocked >= 0
    assert "committed on db01" in output(s)


def test_ctrl_c_during_the_move_unlocks_then_stops(monkeypatch):
    s = session()
    fake_slonik_runs(monkeypatch)
    fake_phases(monkeypatch, error=KeyboardInterrupt())
    canned(monkeypatch, server_now="2026-11-26 10:00:00+00", epoch_now=1795600000.0)
    states(monkeypatch, SlonyState(**SET, origin=1))
    with pytest.raises(KeyboardInterrupt):
        window(monkeypatch, s, move(s))
    assert "set 1 unlocked: writes go on at db01" in output(s)


def test_ssh_lost_during_the_move_says_the_set_is_unlocked(monkeypatch):
    s = session()
    fake_slonik_runs(monkeypatch)
    fake_phases(
        monkeypatch,
        error=StepError(
            "db02", "SSH failed: Socket is closed", "check that the host answers"
        ),
    )
    canned(monkeypatch, server_now="2026-11-26 10:00:00+00", epoch_now=1795600000.0)
    states(monkeypatch, SlonyState(**SET, origin=1))
    with pytest.raises(StepError) as e:
        window(monkeypatch, s, move(s))
    assert (
        e.value.line()
        == "db02: switchover failed (SSH failed: Socket is closed); set 1 unlocked,"
        " writes go on at db01; fix: check that the host answers"
    )


# --- a second switchover finishes or undoes a half-finished one -----------------------


def test_recover_stops_a_leftover_slonik_and_unlocks_a_locked_set(monkeypatch):
    s, calls = session(), fake_slonik_runs(monkeypatch)
    canned(monkeypatch, slonik_running=4711)
    states(
        monkeypatch,
        SlonyState(**SET, origin=1, locked=True),
        SlonyState(**SET, origin=1, locked=True),
        SlonyState(**SET, origin=1),
    )
    so.recover(s, "switchover")
    out = output(s)
    assert (
        "[db02] switchover: stop slonik (pid 4711), left running by an interrupted"
        " switchover" in out
    )
    assert "unlock set 1 on db01, left locked by an interrupted switchover" in out
    assert [what for what, _ in calls] == ["unlock set"]


def test_recover_waits_until_both_nodes_know_the_new_origin(monkeypatch):
    s, calls = session(), fake_slonik_runs(monkeypatch)
    canned(monkeypatch, slonik_running=None)
    answers = {"db01": [2, 2, 2, 2], "db02": [1, 1, 2, 2]}

    def slony_state(host, cl):
        seq = answers[host.name]
        return SlonyState(**SET, origin=seq.pop(0) if len(seq) > 1 else seq[0])

    monkeypatch.setattr(facts, "slony_state", slony_state)
    so.recover(s, "switchover")
    assert (
        "db01 says db02, db02 says db01): a MOVE SET is being applied; waiting for it"
        in output(s)
    )
    assert calls == []


def test_recover_on_a_clean_pair_does_nothing(monkeypatch):
    s, calls = session(), fake_slonik_runs(monkeypatch)
    canned(monkeypatch, slonik_running=None, slony_state=SlonyState(**SET, origin=1))
    so.recover(s, "switchover")
    assert output(s) == "" and calls == []


def test_status_names_a_pgbouncer_left_paused(monkeypatch):
    """The pause mark an interrupted `switchover --pooler` leaves on the slon host is
    on the status screen."""
    s = session()
    canned(
        monkeypatch,
        slony_state=SlonyState(**SET, origin=1, subscribed=True),
        subscription_active=True,
        lag=[(2, 0, 0.5)],
        slonik_running=None,
        slon_running=42,
        slon_log="",
    )
    assert "PAUSED" not in st.format_status(st.status(s))
    s.slon_host.files["/etc/slony1/replication-pooler-paused"] = (
        "app\n/etc/pgbouncer/pgbouncer.ini\n"
    )
    report = st.status(s)
    assert report.paused == "app, /etc/pgbouncer/pgbouncer.ini"
    assert (
        "PGBOUNCER MAY BE PAUSED (app, /etc/pgbouncer/pgbouncer.ini) by an interrupted"
        " switchover: the application's queries wait there; inv switchover (or"
        " switchback) resumes it first" in st.format_status(report)
    )


# --- failover -------------------------------------------------------------------------


def test_failover_refuses_while_the_copy_is_not_done(monkeypatch):
    s = session()
    canned(
        monkeypatch,
        slony_state=SlonyState(**SET, origin=1, subscribed=False),
        subscription_active=False,
    )
    with pytest.raises(StepError) as e:
        fo.failover(s, yes=True)
    assert (
        e.value.host == "db02"
        and "initial copy of set 1 is not done" in e.value.message
    )


def test_failover_refuses_while_the_origin_answers_from_the_slon_host(monkeypatch):
    s = session()
    canned(
        monkeypatch,
        slony_state=SlonyState(**SET, origin=1, subscribed=True),
        subscription_active=True,
        replication_login="",
    )
    monkeypatch.setattr(
        fo, "alive", lambda s, n, st, logins=None: "PostgreSQL on db01 from db02"
    )
    with pytest.raises(StepError) as e:
        fo.failover(s, yes=True)
    assert (
        e.value.host == "db01"
        and "still answers (PostgreSQL on db01 from db02)" in e.value.message
    )
    assert "--fence" in e.value.fix and "--fenced" in e.value.fix


def test_failover_after_a_switchover_promotes_the_master(monkeypatch):
    s = session(slon_host="db01")
    canned(
        monkeypatch,
        slony_state={"db01": SlonyState(**SET, origin=2, subscribed=True)},
        subscription_active=True,
        slon_running=1,
    )
    states, errors = (
        {1: SlonyState(**SET, origin=2, nodes={1, 2})},
        {2: StepError("db02", "host unreachable")},
    )
    assert fo.failed_pair(s, states, errors) == (s.cluster.slave, s.cluster.master)


def test_failover_refuses_when_the_slon_host_is_the_dead_node(monkeypatch):
    s = session()
    states, errors = (
        {1: SlonyState(**SET, origin=2, nodes={1, 2})},
        {2: StepError("db02", "host unreachable")},
    )
    with pytest.raises(StepError, match="the slon host is db02"):
        fo.failed_pair(s, states, errors)


def test_failover_shows_what_may_be_lost_before_asking(monkeypatch):
    s = session()
    asked = []
    s.ask = lambda q: asked.append((q, output(s))) or False
    canned(
        monkeypatch,
        slony_state=SlonyState(**SET, origin=1, subscribed=True),
        subscription_active=True,
        received_from={
            "event_at": "2026-11-26 10:00:00",
            "event_age": 12,
            "sync_at": "2026-11-26 09:59:58",
            "sync_age": 14,
            "pending": 0,
        },
    )
    monkeypatch.setattr(fo, "alive", lambda s, n, st, logins=None: "")
    with pytest.raises(StepError, match="not confirmed; nothing changed"):
        fo.failover(s, fenced=True)
    question, shown = asked[0]
    assert "last event from db01 received at 2026-11-26 10:00:00 (12 s ago)" in shown
    assert (
        "_replication.sl_log_1 and sl_log_2" in shown
        and "FAILOVER promotes db02" in question
    )


# --- finish ---------------------------------------------------------------------------


def test_finish_dry_run_fences_the_old_server_first_and_drops_the_role(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("SLONY_MIGRATE_HOME", str(tmp_path))
    (tmp_path / "replication.password").write_text("x" * 20)
    s = session(dry_run=True)
    canned(
        monkeypatch,
        slony_state=SlonyState(**SET, origin=2),
        fenced=False,
        slon_running=None,
        cluster_exists=True,
        role=(True, True, "", "slony-migrate replication role"),
        hba_file="/etc/pg_hba.conf",
        postgres_home="/var/lib/postgresql",
        file_stat=None,
        source_address="10.0.0.2",
        hba_unloaded=False,
    )
    fin.finish(s)
    out = output(s)
    lines = [l for l in out.splitlines() if "would" in l]
    assert lines[0].startswith(
        "[db01] finish: would fence shotserver04: no application may connect"
    )
    assert 'GRANT CONNECT ON DATABASE "shotserver04" TO PUBLIC' in lines[0]
    assert "[db01] finish: would uninstall node 1" in out
    assert (
        "[db02] finish: would uninstall node 2 (each attempt waits for a lock at most"
        " 0.5 s and gives way in a deadlock)" in out
    )
    # The new origin first: if the application's locks make it give up, nothing else
    # is removed yet and replication is put back.
    assert out.index("uninstall node 2") < out.index("uninstall node 1")
    assert (
        "would drop role slony" in out
        and "would remove the replication password file" in out
    )
    assert (tmp_path / "replication.password").exists()


def test_finish_gives_way_in_a_deadlock_and_tries_again(monkeypatch):
    """The bounded uninstall: slonik's sessions look for a deadlock after 20 ms (so
    in a cycle with the application's transaction they are the ones PostgreSQL
    cancels), wait 0.5 s per lock, and try again after a deadlock or a timeout; any
    other failure is the error."""
    s = session()
    runs, answers = (
        [],
        [
            SimpleNamespace(
                ok=False, stdout="", stderr="ERROR:  deadlock detected\nDETAIL: ..."
            ),
            SimpleNamespace(
                ok=False,
                stdout="",
                stderr="ERROR:  canceling statement due to lock timeout",
            ),
            SimpleNamespace(ok=True, stdout="", stderr=""),
        ],
    )
    left = [True, True, True, False]
    monkeypatch.setattr(facts, "cluster_exists", lambda host, cl: left.pop(0))
    monkeypatch.setattr(
        fin,
        "run_slonik",
        lambda s, script, what, timeout=0, check=True, **kw: (
            runs.append(kw) or answers.pop(0)
        ),
    )
    monkeypatch.setattr(wait.time, "sleep", lambda seconds: None)
    node = s.cluster.slave
    fin.uninstall_node(s, "finish", node, bounded=True).op.run()
    assert (
        runs
        == [dict(lock_timeout=0.5, statement_timeout=4.0, deadlock_timeout=0.02)] * 3
    )
    out = output(s)
    assert (
        "[db02] finish: attempt 1: a deadlock with the application's transaction: the"
        " uninstall gave way; trying again" in out
    )
    assert (
        "[db02] finish: attempt 2: the application's locks held the tables; trying"
        " again" in out
    )
    with pytest.raises(
        StepError, match="uninstall node 2 failed: ERROR:  permission denied"
    ):
        fin.uninstall_retry("slonik: ...\nERROR:  permission denied", node)


def test_finish_that_gives_up_puts_replication_back_and_removes_nothing_else(
    monkeypatch,
):
    s = session()
    canned(
        monkeypatch,
        slony_state=SlonyState(**SET, origin=2),
        fenced=True,
        cluster_exists=True,
        slon_running={"db02": 4242},
    )
    started = []

    def give_up(s, step, node, bounded):
        def run():
            raise StepError("db02", "_replication still there after 20 attempts")

        return fin.Change("db02", step, f"uninstall node {node.id}", fin.Action(run))

    monkeypatch.setattr(fin, "uninstall_node", give_up)
    monkeypatch.setattr(
        fin,
        "start_slon",
        lambda s, step, n: (
            started.append(s.cluster.instance(n))
            or fin.Change(
                "db02", step, f"start {s.cluster.instance(n)}", fin.Action(lambda: None)
            )
        ),
    )
    monkeypatch.setattr(
        fin,
        "stop_slons",
        lambda s, step: [fin.Change("db02", step, "stop", fin.Action(lambda: None))],
    )
    with pytest.raises(StepError) as e:
        fin.finish(s)
    assert (
        "finish gave up: _replication still there after 20 attempts" in e.value.message
    )
    assert "replication runs as before (slons restarted)" in e.value.message
    assert "db01 stays fenced (undo there: GRANT CONNECT" in e.value.message
    assert started == ["replication-node1", "replication-node2"]
    assert "uninstall node 1" not in output(s)  # the old origin is left as it was


def test_finish_refuses_while_the_master_is_the_origin(monkeypatch):
    canned(monkeypatch, slony_state=SlonyState(**SET, origin=1))
    with pytest.raises(StepError, match="db01 is still the origin"):
        fin.finish(session())


# --- a slon worker lost during the move: woken, not waited for --------------------------

RESTART_LOG = """\
2026-11-26 10:00:01 UTC CONFIG remoteWorkerThread_1: SYNC 5000000116 done in 0.003 seconds
2026-11-26 10:00:05 UTC ERROR  remoteWorkerThread_1: "lock table ..." PGRES_FATAL_ERROR \
ERROR:  deadlock detected
2026-11-26 10:00:05 UTC CONFIG slon: child terminated signal: 9; pid: 4242, current worker pid: 4242
2026-11-26 10:00:05 UTC CONFIG slon: restart of worker in 10 seconds
"""


def test_worker_restart_is_read_from_the_log_since_the_move_began():
    from fabfile.render.parse import epoch, worker_restart

    began = epoch("2026-11-26 10:00:04")
    assert worker_restart(RESTART_LOG, began) == "deadlock detected"
    assert worker_restart(RESTART_LOG, epoch("2026-11-26 10:00:06")) == ""
    assert worker_restart("", began) == ""


def test_the_takeover_wait_wakes_a_slon_that_lost_its_worker(monkeypatch):
    from fabfile.render.parse import epoch

    s = session()
    answers = iter([1] * 30 + [2])
    monkeypatch.setattr(
        facts, "slony_state", lambda h, cl: SlonyState(**SET, origin=next(answers))
    )
    canned(monkeypatch, slon_log=RESTART_LOG)
    monkeypatch.setattr(so.settings, "WORKER_STALL", 0)
    monkeypatch.setattr(so.settings, "TAKEOVER_POLL", 0)
    so.wait_taken_over(
        s,
        s.cluster.slave,
        5,
        "not taken over",
        wake=("switchover", epoch("2026-11-26 10:00:04")),
    )
    assert any(
        "kill -s USR1 $(cat /var/run/slony1/replication-node2.pid)" in c
        for c in s.hosts["db02"].commands
    )
    assert "slon for replication-node2 lost its worker (deadlock detected)" in output(s)


def test_the_takeover_wait_leaves_a_working_slon_alone(monkeypatch):
    from fabfile.render.parse import epoch

    s = session()
    answers = iter([1] * 5 + [2])
    monkeypatch.setattr(
        facts, "slony_state", lambda h, cl: SlonyState(**SET, origin=next(answers))
    )
    canned(monkeypatch, slon_log=RESTART_LOG)
    monkeypatch.setattr(so.settings, "WORKER_STALL", 0)
    monkeypatch.setattr(so.settings, "TAKEOVER_POLL", 0)
    so.wait_taken_over(
        s,
        s.cluster.slave,
        5,
        "not taken over",
        wake=("switchover", epoch("2026-11-26 10:00:06")),
    )
    assert not any("USR1" in c for c in s.hosts["db02"].commands)
