"""slonik (and the switchover's psql) on the slon host: run bounded, found once, stopped
for certain.

Scripts travel on stdin, never in argv. The command lines are rendered by render.shell.
"""

from __future__ import annotations

from . import facts, log, settings
from .errors import StepError
from .render import shell
from .session import Session
from .wait import wait_until


def run_slonik(
    s: Session,
    script: str,
    what: str,
    timeout: float = settings.SLONIK,
    check: bool = True,
    lock_timeout: float | None = None,
    on_failure: str = "",
    statement_timeout: float | None = None,
    deadlock_timeout: float | None = None,
    connect_timeout: float | None = None,
):
    """Run a slonik script on the slon host as postgres, script on stdin (never in
    argv); the result.

    slonik runs under `timeout` on the slon host, in a process group that stop_slonik
    can kill, so it never outlives its time even when this tool dies or loses the
    connection. See render.shell.slonik_shell for on_failure and the PostgreSQL
    timeouts.
    """
    command = slonik_command(
        s,
        timeout,
        lock_timeout=lock_timeout,
        on_failure=on_failure,
        statement_timeout=statement_timeout,
        deadlock_timeout=deadlock_timeout,
        connect_timeout=connect_timeout,
    )
    log.trace(s.cluster.slon_name, f"slonik ({what}):\n{script}")
    try:
        result = s.slon_host.sudo(
            command,
            user="postgres",
            stdin=script,
            timeout=int(timeout) + settings.SSH_GRACE,
            check=check,
            what=f"slonik ({what})",
        )
    except StepError as e:
        if shell.NO_SLONIK in e.message:
            raise missing_slonik(s) from None
        raise
    return found_slonik(s, result)


def run_phases(
    s: Session,
    parts: list[tuple[str, str, float]],
    timeout: float,
    on_failure: str,
    program: str,
):
    """Run a script that comes in parts (remote.Host.staged) on the slon host as
    postgres, read by `program` (render.shell.psql_on), bounded there by `timeout` as
    run_slonik bounds slonik, with on_failure run by slonik there when it fails or
    ends between two parts (the cluster's lock_mark); the result, with `marks` and
    `seen`."""
    command = slonik_command(
        s,
        timeout,
        on_failure=on_failure,
        program=program,
        unfinished=s.cluster.lock_mark,
    )
    return found_slonik(s, s.slon_host.staged(command, parts, user="postgres"))


def slonik_command(s: Session, timeout: float, **options) -> str:
    """The shell command for the slon host that runs slonik (or `program`), see
    render.shell.slonik_shell."""
    return shell.with_slonik(
        shell.slonik_shell('"$slonik"', timeout, s.cluster.slonik_pidfile, **options)
    )


def missing_slonik(s: Session) -> StepError:
    """A command found no slonik on the slon host (render.shell.with_slonik)."""
    return StepError(
        s.slon_host.name, shell.NO_SLONIK, "run the install (or build) step first"
    )


def found_slonik(s: Session, result):
    """The result of a slonik_command, unless it found no slonik: then
    missing_slonik."""
    if result.exited == 127 and shell.NO_SLONIK in result.stderr:
        raise missing_slonik(s)
    return result


def stop_slonik(s: Session) -> int | None:
    """Stop the slonik (or the switchover's psql) this tool started on the slon host,
    if one still runs; its pid, or None."""
    pid = facts.slonik_running(s.slon_host, s.cluster)
    if pid:
        s.slon_host.sudo(shell.kill_group(pid), user="postgres", check=False)
        wait_until(
            lambda: not facts.slonik_running(s.slon_host, s.cluster),
            settings.SLON_STOP,
            s.slon_host.name,
            f"slonik (pid {pid}) still running",
            f"kill it by hand: sudo {shell.kill_group(pid, 'KILL')}",
        )
    return pid
