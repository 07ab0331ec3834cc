"""Changes and how they are applied: the one place that knows about dry runs.

A step reads facts and returns the Changes it would make; `apply` prints each one and, unless
this is a dry run, carries it out. Also the helpers every step uses to build Changes (a file that
differs, a slonik script) and to wait for a change to take effect.
"""
from __future__ import annotations

import difflib
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from . import facts, settings
from .render import slonik as render_slonik
from .errors import StepError
from .remote import Host
from .session import Session


@dataclass(frozen=True)
class Change:
    """One change on one host: what the operator reads, what a dry run shows, what applying does."""

    host: str
    step: str
    message: str                       # "create role slony (superuser, SCRAM password)"
    action: Callable[[], object]       # carries it out (and checks it, where it can)
    detail: str = ""                   # script, SQL (passwords masked) or diff, shown in a dry run


def apply(s: Session, changes: Iterable[Change]) -> int:
    """Print each change; carry it out unless this is a dry run. Returns how many were carried out."""
    done = 0
    for c in changes:
        s.say(c.host, c.step, ("would " if s.dry_run else "") + c.message)
        s.changes.append(c)
        if s.dry_run:
            if c.detail:
                s.out.detail(c.detail)
            continue
        c.action()
        done += 1
    return done


def diff(old: str, new: str, path: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), path, path + " (new)"))


def file_change(s: Session, host: Host, step: str, path: str, text: str, *, owner: str = "root:root",
                mode: str = "644", secret: bool = False, old: str | None = None) -> list[Change]:
    """A Change writing `text` to `path` when it differs (a diff, or only the name when it holds a secret).

    `old` is the file's current text when the caller has read it already.
    """
    old = host.read_file(path, user=owner.split(":")[0]) if old is None else old
    if old == text:
        s.say(host.name, step, f"{path} is up to date")
        return []
    verb = "update" if old is not None else "create"
    return [Change(host.name, step, f"{verb} {path} (mode {mode}{', contents not shown' if secret else ''})",
                   lambda: host.write_file(path, text, owner=owner, mode=mode),
                   "" if secret else diff(old or "", text, path))]


def run_slonik(s: Session, script: str, what: str, timeout: float = settings.SLONIK, check: bool = True,
               lock_timeout: float | None = None, on_failure: str = "", statement_timeout: float | None = None,
               deadlock_timeout: float | None = None):
    """Run a slonik script on the slon host as postgres, script on stdin (never in argv); the result.

    slonik runs under `timeout` on the slon host, in a process group that stop_slonik can kill, so
    it never outlives its time even when this tool dies or loses the connection. See
    render.slonik.slonik_shell for on_failure and the PostgreSQL timeouts.
    """
    command = slonik_command(s, timeout, lock_timeout=lock_timeout, on_failure=on_failure,
                             statement_timeout=statement_timeout, deadlock_timeout=deadlock_timeout)
    try:
        result = s.slon.sudo(command, user="postgres", stdin=script, timeout=int(timeout) + settings.SSH_GRACE,
                             check=check, what=f"slonik ({what})")
    except StepError as e:
        if render_slonik.NO_SLONIK in e.message:
            raise missing_slonik(s) from None
        raise
    return found_slonik(s, result)


def run_phases(s: Session, parts: list[tuple[str, str, float]], timeout: float, on_failure: str, program: str):
    """Run a script that comes in parts (remote.Host.staged) on the slon host as postgres, read by
    `program` (render.slonik.psql_on), bounded there by `timeout` as run_slonik bounds slonik, with
    on_failure run by slonik there when it fails or ends between two parts (the cluster's lock_mark);
    the result, with `marks`."""
    command = slonik_command(s, timeout, on_failure=on_failure, program=program, unfinished=s.cluster.lock_mark)
    return found_slonik(s, s.slon.staged(command, parts, user="postgres"))


def slonik_command(s: Session, timeout: float, **options) -> str:
    """The shell command for the slon host that runs slonik (or `program`), see render.slonik.slonik_shell."""
    return render_slonik.with_slonik(render_slonik.slonik_shell('"$slonik"', timeout, s.cluster.slonik_pidfile,
                                                                **options))


def missing_slonik(s: Session) -> StepError:
    """A command found no slonik on the slon host (render.slonik.with_slonik)."""
    return StepError(s.slon.name, render_slonik.NO_SLONIK, "run the install (or build) step first")


def found_slonik(s: Session, result):
    """The result of a slonik_command, unless it found no slonik: then missing_slonik."""
    if result.exited == 127 and render_slonik.NO_SLONIK in result.stderr:
        raise missing_slonik(s)
    return result


def stop_slonik(s: Session) -> int | None:
    """Stop the slonik (or the switchover's psql) this tool started on the slon host, if one still runs;
    its pid, or None."""
    pid = facts.slonik_running(s.slon, s.cluster)
    if pid:
        s.slon.sudo(render_slonik.kill_group(pid), user="postgres", check=False)
        wait_until(lambda: not facts.slonik_running(s.slon, s.cluster), settings.SLON_STOP, s.slon.name,
                   f"slonik (pid {pid}) still running",
                   f"kill it by hand: sudo {render_slonik.kill_group(pid, 'KILL')}")
    return pid


def slonik_change(s: Session, step: str, script: str, what: str, timeout: int = settings.SLONIK,
                  then: Callable[[], None] | None = None) -> Change:
    """A Change that runs a slonik script on the slon host; `then` checks the result afterwards."""
    def action():
        run_slonik(s, script, what, timeout)
        if then:
            then()
    return Change(s.cluster.slon_host, step, what, action, script)


def wait_until(predicate, timeout: float, host: str, message: str, fix: str, every: float = 0.5):
    """Poll `predicate` until it returns something true (returned); StepError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StepError(host, f"{message} after {timeout:.0f} s", fix)
        time.sleep(every)
