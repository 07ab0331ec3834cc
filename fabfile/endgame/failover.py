"""`inv failover`: the origin is dead; promote the other node (FAILOVER, DROP NODE).

Refused while the origin's PostgreSQL still answers (unless it is fenced), while the other node's
initial copy is not done, and when the slon host is the dead node. What may be lost is shown before
the operator is asked. Works in both directions: the dead node is whichever is the origin.
"""
from __future__ import annotations

from .. import facts, settings
from ..errors import StepError
from ..model import Node
from ..plan import Change, apply, slonik_change, wait_until
from ..render import slonik, sql
from ..render.slonik import client_args, ssl_env
from ..session import Session
from ..steps import identity
from ..steps.cluster import start_slon
from . import matviews
from .status import node_states
from .switchover import as_origin


def roles(s: Session) -> tuple[Node, Node]:
    """(dead origin, backup): the origin as the nodes that answer over SSH know it, and the other node."""
    cl = s.cluster
    states, errors = node_states(s)
    origins = {st.origin for st in states.values() if st.has_set}
    if not origins:
        raise StepError(", ".join(n.host for n in cl.nodes), f"no node that answers knows set {cl.set_id}",
                        "inv status; failover needs the surviving node reachable over SSH")
    if len(origins) > 1:
        raise StepError(cl.slon_host, f"the nodes disagree about the origin of set {cl.set_id}",
                        "inv status; run inv switchover (or switchback) again to finish the move")
    dead = cl.node(origins.pop())
    backup = cl.slave if dead is cl.master else cl.master
    if backup.id in errors:
        raise StepError(backup.host, f"cannot promote {backup.host}: {errors[backup.id].message}",
                        f"bring {backup.host} back first")
    if cl.slon_host == dead.host:
        raise StepError(dead.host, f"the slon host is {dead.host}, the node that is to be failed over",
                        f"run failover with --slon-host {backup.host} after inv install/users/hba/config with "
                        "that slon host")
    return dead, backup


def alive(s: Session, dead: Node) -> str:
    """'' when the origin's PostgreSQL answers neither over SSH nor from the slon host, else how it answered."""
    try:
        s.node_host(dead).psql("SELECT 1")
        return f"psql over SSH on {dead.host}"
    except StepError:
        pass
    if not facts.replication_login(s.slon, s.cluster, dead):
        return f"PostgreSQL on {dead.dbhost} from {s.slon.name}"
    return ""


def fence(s: Session, step: str, dead: Node) -> Change:
    """A Change that takes CONNECT from the applications on the old origin, from wherever it is reached."""
    cl = s.cluster
    statement = sql.fence_database(cl.database)

    def action():
        try:
            s.node_host(dead).psql(statement)
        except StepError:  # no SSH: as the replication superuser, from the slon host
            s.slon.sudo(f"{ssl_env(cl)} psql -X -q {client_args(cl, dead)} -v ON_ERROR_STOP=1 -f -",
                        user="postgres", stdin=statement, what="fencing")
    return Change(dead.host, step, f"fence {cl.database}: no application may connect (undo: "
                  f"{sql.unfence_database(cl.database)})", action, statement)


def failover(s: Session, fenced: bool = False, fence_it: bool = False, yes: bool = False) -> dict:
    """Promote the node that is not the origin when the origin is dead: FAILOVER, DROP NODE."""
    step, cl = "failover", s.cluster
    dead, backup = roles(s)
    backup_h = s.node_host(backup)
    if not facts.subscription_active(backup_h, cl, backup):
        raise StepError(backup.host, f"{backup.host}'s initial copy of set {cl.set_id} is not done: it holds "
                        "no complete copy to promote", "wait for the copy (inv status); failover promotes only a "
                        "complete subscriber")
    answered = alive(s, dead)
    if answered and not (fenced or fence_it):
        raise StepError(dead.host, f"{dead.host} still answers ({answered}): a failover would leave two "
                        "writable origins", "use inv switchover while it is alive; or fence it (stop it, or "
                        "run failover with --fence to take CONNECT from the applications), or say it is fenced "
                        "with --fenced")
    got = facts.received_from(backup_h, cl, dead)
    s.say(backup.host, step, f"last event from {dead.host} received at {got['event_at'] or 'never'} "
          f"({got['event_age']} s ago); last SYNC applied at {got['sync_at'] or 'never'} ({got['sync_age']} s ago)"
          f"; {got['pending']} event(s) received but not applied")
    s.say(backup.host, step, f"transactions committed on {dead.host} after that are lost here; they may still "
          f"be on {dead.host}'s disk, in {cl.schema}.sl_log_1 and sl_log_2 of {cl.database}")
    if answered:
        s.say(dead.host, step, f"{dead.host} answers ({answered}); "
              + ("you said it is fenced" if fenced else "fencing it"))
    if not s.dry_run and not yes and not s.ask(f"FAILOVER promotes {backup.host}, loses what it has not "
                                               f"received and drops {dead.host} from the cluster."):
        raise StepError(dead.host, "failover not confirmed; nothing changed")
    changes = [fence(s, step, dead)] if answered and fence_it else []
    if not facts.slon_running(s.slon, cl, backup.instance):
        changes.append(start_slon(s, step, backup))
    changes.append(slonik_change(s, step, slonik.slonik_failover(cl, dead, backup),
                                 f"fail over set {cl.set_id} to {backup.host}, drop node {dead.id}"))
    if apply(s, changes) < len(changes):
        return {"promoted": False}  # a dry run
    pid = facts.slon_running(s.slon, cl, dead.instance)
    if pid:
        s.slon.sudo(f"kill -TERM {pid}")
        s.say(s.slon.name, step, f"stopped slon for {dead.instance} (node dropped)")
    wait_until(lambda: as_origin(s, backup_h, backup), settings.FAILOVER_WRITABLE, backup.host,
               f"{backup.host} does not take writes yet (its tables are not configured as an origin's)", "inv logs")
    apply(s, identity.conform(s, step, backup, always=True) + matviews.refresh(s, step, backup))
    s.say(backup.host, step, f"{backup.host} is the origin and accepts writes; rebuild {dead.host} to rejoin")
    return {"promoted": True, **got}
