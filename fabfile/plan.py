"""Changes as data and the one executor that carries them out: the one place that knows
about dry runs.

A step reads facts and returns the Changes it would make. A Change says on which host,
for which step, what it does (one line for the operator) and the operation itself: SQL,
a shell command, a slonik script, a file, or (only where one is not enough) an Action of
several commands. `apply` prints each Change; a dry run shows the operation as it would
run (secrets masked), a real run hands it to `execute`. What a dry run shows is what
runs.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import log, settings
from .remote import Host
from .render.sql import MASK, literal
from .runner import run_slonik
from .session import Session


@dataclass(frozen=True)
class Sql:
    """SQL run by psql as postgres over the local socket on `database`. `secret` (a
    password verifier) stands where the SQL holds MASK as a literal: shown masked,
    sent in full."""

    text: str
    database: str = "postgres"
    timeout: float | None = settings.PSQL
    secret: str = ""

    def sent(self) -> str:
        return (
            self.text.replace(literal(MASK), literal(log.hide(self.secret)), 1)
            if self.secret
            else self.text
        )


@dataclass(frozen=True)
class Command:
    """A shell command run as `user` through non-interactive sudo, `stdin` on its
    standard input; `label` names it in an error (else the Change's line does)."""

    text: str
    user: str = "root"
    stdin: str | None = None
    timeout: float | None = None
    label: str = ""


@dataclass(frozen=True)
class Slonik:
    """A slonik script run on the slon host (runner.run_slonik); `label` names it in
    an error (else the Change's line does)."""

    script: str
    timeout: float = settings.SLONIK
    label: str = ""
    connect_timeout: float | None = None  # libpq's, for each node (render.shell)


@dataclass(frozen=True)
class File:
    """A file written with `text` (remote.Host.write_file); `old` is what it holds
    now (None: no file). `secret`: its contents are never shown."""

    path: str
    text: str
    old: str | None = None
    owner: str = "root:root"
    mode: str = "644"
    writer: str = ""
    secret: bool = False


@dataclass(frozen=True)
class Action:
    """Several commands that belong together (write pg_hba.conf, reload, put it back
    if refused): a function, and what a dry run shows of it."""

    run: Callable[[], object]
    shown: str = ""


Operation = Sql | Command | Slonik | File | Action


@dataclass(frozen=True)
class Change:
    """One change on one host: the line the operator reads, and the operation that
    carries it out. `then` checks the result afterwards (a fact read again); it never
    runs in a dry run.
    """

    host: str
    step: str
    what: str
    op: Operation
    then: Callable[[], object] | None = None


def shown(op: Operation) -> str:
    """What a dry run shows of an operation: the SQL (secrets masked), command,
    script or diff."""
    if isinstance(op, Sql):
        return op.text
    if isinstance(op, Command):
        return op.text
    if isinstance(op, Slonik):
        return op.script
    if isinstance(op, File):
        return "" if op.secret else diff(op.old or "", op.text, op.path)
    return op.shown


def execute(s: Session, c: Change) -> None:
    """Carry out one Change on its host, then its check."""
    op = c.op
    if isinstance(op, Sql):
        s.host(c.host).psql(op.sent(), op.database, timeout=op.timeout)
    elif isinstance(op, Command):
        s.host(c.host).sudo(
            op.text,
            user=op.user,
            stdin=op.stdin,
            timeout=op.timeout,
            what=op.label or c.what,
        )
    elif isinstance(op, Slonik):
        bound = {"connect_timeout": op.connect_timeout} if op.connect_timeout else {}
        run_slonik(s, op.script, op.label or c.what, op.timeout, **bound)
    elif isinstance(op, File):
        s.host(c.host).write_file(
            op.path, op.text, owner=op.owner, mode=op.mode, writer=op.writer
        )
    else:
        op.run()
    if c.then:
        c.then()


def apply(s: Session, changes: Iterable[Change]) -> int:
    """Print each change; carry it out unless this is a dry run. Returns how many
    were carried out."""
    done = 0
    for c in changes:
        s.say(c.host, c.step, ("would " if s.dry_run else "") + c.what)
        s.changes.append(c)
        if s.dry_run:
            text = shown(c.op)
            if text:
                s.out.detail(text)
            continue
        execute(s, c)
        done += 1
    return done


def diff(old: str, new: str, path: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(True), new.splitlines(True), path, path + " (new)"
        )
    )


def file_change(
    s: Session,
    host: Host,
    step: str,
    path: str,
    text: str,
    *,
    owner: str = "root:root",
    mode: str = "644",
    secret: bool = False,
    old: str | None = None,
    read: bool = True,
    writer: str = "",
) -> list[Change]:
    """A Change writing `text` to `path` when it differs (a dry run shows the diff,
    or only the name when it holds a secret). `old`: the file's current text when the
    caller has read it already (read=False: the caller knows there is none)."""
    if old is None and read:
        old = host.read_file(path, user=owner.split(":")[0])
    if old == text:
        s.say(host.name, step, f"{path} is up to date")
        return []
    verb = "update" if old is not None else "create"
    return [
        Change(
            host.name,
            step,
            f"{verb} {path} (mode {mode}{', contents not shown' if secret else ''})",
            File(path, text, old, owner, mode, writer, secret),
        )
    ]


def slonik_change(
    s: Session,
    step: str,
    script: str,
    what: str,
    timeout: float = settings.SLONIK,
    then: Callable[[], object] | None = None,
) -> Change:
    """A Change that runs a slonik script on the slon host; `then` checks the result
    afterwards."""
    return Change(s.cluster.slon_name, step, what, Slonik(script, timeout), then)


def preview(s: Session, host: str, step: str, what: str, text: str) -> None:
    """In a dry run, an operation that is no Change (the switchover's move, which
    measures its phases and returns what it measured), shown and counted as a Change
    would be."""

    def never() -> None:
        raise AssertionError("a preview never runs")

    apply(s, [Change(host, step, what, Action(never, text))])
