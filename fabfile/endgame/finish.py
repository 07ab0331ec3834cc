"""`inv finish`: after an accepted switchover, Slony out of both nodes, access and
secrets removed.

The old server's database is fenced first (no application may connect: once Slony's
deny-access triggers are gone, nothing else would stop a forgotten client writing
there). Slony is removed from the new origin in attempts bounded by lock_timeout and
statement_timeout, so the application's writes there wait a few seconds at most. The
replication role and its password go too (--keep-role keeps them).
"""

from __future__ import annotations

from .. import clusters, facts, replication, settings
from ..errors import StepError
from ..model import Node
from ..plan import Action, Change, Command, apply
from ..render import slonik, sql
from ..runner import run_slonik
from ..secrets import legacy_password_file, password_file
from ..session import Session
from ..steps import identity
from ..steps.access import hba, pgpass
from ..steps.cluster import start_slon, stop_slons
from ..wait import poll
from .returned import fence


def uninstall_node(s: Session, step: str, node: Node, bounded: bool) -> Change:
    """UNINSTALL NODE on one node; bounded: in attempts that wait for each lock at
    most a moment and give way in a deadlock with the application (the application's
    writes there wait a few seconds at most, and never fail because of it)."""
    cl = s.cluster
    script = slonik.slonik_uninstall(cl, [node.id])
    attempt = [0]

    def gone() -> bool:
        return not facts.cluster_exists(s.node_host(node), cl)

    def once() -> bool:
        """One attempt; whether the schema is gone afterwards."""
        attempt[0] += 1
        if gone():
            return True
        if not bounded:
            run_slonik(s, script, f"uninstall node {node.id}")
            return gone()
        result = run_slonik(
            s,
            script,
            f"uninstall node {node.id}",
            settings.SLONIK,
            check=False,
            lock_timeout=settings.UNINSTALL_LOCK,
            statement_timeout=settings.UNINSTALL_STATEMENT,
            deadlock_timeout=settings.UNINSTALL_DEADLOCK,
        )
        if result.ok:
            return gone()
        s.say(
            node.host,
            step,
            f"attempt {attempt[0]}:"
            f" {uninstall_retry(result.stderr + result.stdout, node)}; trying again",
        )
        return False

    def run() -> None:
        done, _ = poll(once, every=1, tries=settings.UNINSTALL_TRIES)
        if not done and not gone():
            raise StepError(
                node.host,
                f"{cl.schema} still there after {settings.UNINSTALL_TRIES} attempts",
                "find the long transactions there (inv preflight names them), then inv"
                " finish again",
            )

    what = f"uninstall node {node.id}" + (
        f" (each attempt waits for a lock at most {settings.UNINSTALL_LOCK:g} s "
        "and gives way in a deadlock)"
        if bounded
        else ""
    )
    return Change(node.host, step, what, Action(run, script))


def uninstall_retry(output: str, node: Node) -> str:
    """Why a bounded uninstall attempt failed, if trying again can help; else the
    StepError."""
    if "deadlock detected" in output:
        return "a deadlock with the application's transaction: the uninstall gave way"
    if "lock timeout" in output or "statement timeout" in output:
        return "the application's locks held the tables"
    raise StepError(
        node.host,
        f"uninstall node {node.id} failed: {output.strip().splitlines()[-1]}",
        "read slonik's output; run inv finish again",
    )


def drop_role(s: Session, step: str) -> list[Change]:
    """The replication role out of both nodes (NOLOGIN without password where it
    cannot be dropped), and its password file; on a node where another cluster logs
    in as it (clusters.sharing_role), it stays, and so does the file."""
    cl = s.cluster
    changes, kept = [], False
    for h in s.node_hosts():
        role = facts.role(h, cl.user)
        if role is None:
            continue
        others = clusters.sharing_role(s, h.name)
        if others and role[3] == sql.ROLE_MARK:
            kept = True
            s.say(
                h.name,
                step,
                f"role {cl.user} stays: cluster(s) {', '.join(others)} log in as it"
                " there (their pg_hba.conf blocks and .pgpass lines stay too); the last"
                " cluster's finish drops it",
            )
            continue
        if role[3] != sql.ROLE_MARK:
            s.say(
                h.name,
                step,
                f"role {cl.user} was not created by slony-migrate: left alone",
            )
            continue

        role_ = sql.ident(cl.user)
        # What it created (an extension the schema step created on the new server) goes
        # to the superuser running this; then the role can go.
        statements = (
            f"REASSIGN OWNED BY {role_} TO CURRENT_USER; DROP OWNED BY {role_};",
            f"DROP ROLE {role_}",
        )

        def run(h=h, statements=statements, role_=role_):
            if facts.database_exists(h, cl.database):
                h.psql(statements[0], cl.database)
            if h.try_psql(statements[1]):
                h.psql(f"ALTER ROLE {role_} NOLOGIN PASSWORD NULL")

        changes.append(
            Change(
                h.name,
                step,
                f"drop role {cl.user} (what it owns goes to postgres; NOLOGIN without "
                "a password where it cannot be dropped)",
                Action(run, "\n".join(statements)),
            )
        )
    for path in (password_file(cl.user), legacy_password_file(cl.name)):
        if path.exists() and not kept:
            changes.append(
                Change(
                    "local",
                    step,
                    f"remove the replication password file {path}",
                    Action(path.unlink),
                )
            )
    return changes


def finish(s: Session, keep_role: bool = False, force: bool = False) -> None:
    """After an accepted switchover: fence the old server, Slony out of both nodes,
    access and secrets removed."""
    step, cl = "finish", s.cluster
    origin = replication.origin(s) or cl.master
    if origin == cl.master and not force:
        raise StepError(
            cl.master.host,
            f"{cl.master.host} is still the origin",
            "run inv switchover first "
            "(or --force to remove replication without moving)",
        )
    old = cl.other(origin)
    old_host, origin_host = s.node_host(old), s.node_host(origin)
    changes = [] if facts.fenced(old_host, cl.database) else [fence(s, step, old)]
    slons = stop_slons(s, step)
    apply(s, changes + slons)
    # The new origin first: only there can the application's locks hold the uninstall
    # up. If it gives up, replication is put back as it was, nothing is half done.
    if facts.cluster_exists(origin_host, cl):
        try:
            apply(s, [uninstall_node(s, step, origin, bounded=True)])
        except StepError as e:
            if slons and not s.dry_run:
                apply(s, [start_slon(s, step, n) for n in cl.nodes])
            raise StepError(
                e.host,
                f"finish gave up: {e.message}. Nothing else was removed: replication"
                f" runs as before (slons {'restarted' if slons else 'as they were'}),"
                f" {old.host} stays fenced (undo there: "
                f"{sql.unfence_database(cl.database)})",
                e.fix or "end what holds the tables there, then inv finish again",
            ) from None
    changes = (
        [uninstall_node(s, step, old, bounded=False)]
        if facts.cluster_exists(old_host, cl)
        else []
    )
    changes += identity.conform(s, step, origin, always=True) + identity.conform(
        s, step, old, always=True
    )
    apply(s, changes)
    path = identity.record_path(s)
    if s.slon_host.read_file(path) is not None:
        apply(
            s,
            [
                Change(
                    s.slon_host.name, step, f"remove {path}", Command(f"rm -f {path}")
                )
            ],
        )
    hba(s, remove=True)
    pgpass(s, step, remove=True)
    if not keep_role:
        apply(s, drop_role(s, step))
    s.say(
        origin.host,
        step,
        f"replication removed; {cl.database} on {origin.host} is the application's,"
        " with all tables, data and sequences. Reconnect the application's pools"
        f" (cached plans refer to the removed triggers). {old.host} refuses the"
        f" applications (undo there: {sql.unfence_database(cl.database)}).",
    )
    s.say(
        cl.slon_name,
        step,
        "left in place: the Slony packages, the slon logs"
        f" ({', '.join(cl.slon_log(n) for n in cl.nodes)}) and the configuration"
        f" ({cl.tools_conf}, {', '.join(cl.slon_conf(n) for n in cl.nodes)}; no"
        " secrets); remove them when no longer needed"
        + (
            "; the replication role and its password stay (--keep-role)"
            if keep_role
            else ""
        ),
    )
