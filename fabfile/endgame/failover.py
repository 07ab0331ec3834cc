"""`inv failover`: the origin is dead; promote its subscriber (FAILOVER, DROP NODE).

Refused while the origin's PostgreSQL still answers (unless it is fenced), while the
subscriber's initial copy is not done, and when the slon host is the failed origin. What
may be lost is shown before the operator is asked. Works in both directions: the failed
node is whichever is the origin.
"""

from __future__ import annotations

from .. import facts, replication, settings
from ..errors import StepError
from ..model import Node
from ..plan import Action, Change, apply, slonik_change
from ..render import slonik, sql
from ..render.shell import client_args, client_env
from ..session import Session
from ..steps import identity
from ..steps.cluster import start_slon
from ..wait import wait_until
from . import matviews
from .switchover import as_origin


def failed_pair(s: Session) -> tuple[Node, Node]:
    """(origin, subscriber): the origin as the nodes that answer over SSH know it,
    and the node to promote."""
    cl = s.cluster
    states, errors = replication.states(s)
    origins = {st.origin for st in states.values() if st.has_set}
    if not origins:
        raise StepError(
            ", ".join(n.host for n in cl.nodes),
            f"no node that answers knows set {cl.set_id}",
            "inv status; failover needs the surviving node reachable over SSH",
        )
    if len(origins) > 1:
        raise StepError(
            cl.slon_name,
            f"the nodes disagree about the origin of set {cl.set_id}",
            "inv status; run inv switchover (or switchback) again to finish the move",
        )
    origin = cl.node(origins.pop())
    subscriber = cl.other(origin)
    if subscriber.id in errors:
        raise StepError(
            subscriber.host,
            f"cannot promote {subscriber.host}: {errors[subscriber.id].message}",
            f"bring {subscriber.host} back first",
        )
    if cl.slon_name == origin.host:
        raise StepError(
            origin.host,
            f"the slon host is {origin.host}, the node that is to be failed over",
            f"run failover with --slon-host {subscriber.host} after inv"
            " install/users/hba/config with that slon host",
        )
    return origin, subscriber


def alive(s: Session, origin: Node) -> str:
    """'' when the origin's PostgreSQL answers neither over SSH nor from the slon
    host, else how it answered."""
    try:
        s.node_host(origin).psql("SELECT 1")
        return f"psql over SSH on {origin.host}"
    except StepError:
        pass
    if not facts.replication_login(s.slon_host, s.cluster, origin):
        return f"PostgreSQL on {origin.dbhost} from {s.slon_host.name}"
    return ""


def fence(s: Session, step: str, node: Node) -> Change:
    """A Change that takes CONNECT from the applications on `node`, from wherever it
    is reached: over SSH as postgres, else as the replication superuser from the slon
    host."""
    cl = s.cluster
    statement = sql.fence_database(cl.database)

    def run() -> None:
        try:
            s.node_host(node).psql(statement)
        except StepError:  # no SSH: as the replication superuser, from the slon host
            s.slon_host.sudo(
                f"{client_env(cl)} psql -X -q {client_args(cl, node)} -v ON_ERROR_STOP=1"
                " -f -",
                user="postgres",
                stdin=statement,
                what="fencing",
            )

    return Change(
        node.host,
        step,
        f"fence {cl.database}: no application may connect (undo: "
        f"{sql.unfence_database(cl.database)})",
        Action(run, statement),
    )


def failover(
    s: Session, fenced: bool = False, fence_it: bool = False, yes: bool = False
) -> dict:
    """Promote the origin's subscriber when the origin is dead: FAILOVER, DROP NODE."""
    step, cl = "failover", s.cluster
    origin, subscriber = failed_pair(s)
    subscriber_host = s.node_host(subscriber)
    if not facts.subscription_active(subscriber_host, cl, subscriber):
        raise StepError(
            subscriber.host,
            f"{subscriber.host}'s initial copy of set {cl.set_id} is not done: it "
            "holds no complete copy to promote",
            "wait for the copy (inv status); failover promotes "
            "only a complete subscriber",
        )
    answered = alive(s, origin)
    if answered and not (fenced or fence_it):
        raise StepError(
            origin.host,
            f"{origin.host} still answers ({answered}): a failover would leave two "
            "writable origins",
            "use inv switchover while it is alive; or fence it (stop it, or run"
            " failover with --fence to take CONNECT from the applications), or say it"
            " is fenced with --fenced",
        )
    got = facts.received_from(subscriber_host, cl, origin)
    s.say(
        subscriber.host,
        step,
        f"last event from {origin.host} received at {got['event_at'] or 'never'}"
        f" ({got['event_age']} s ago); last SYNC applied at {got['sync_at'] or 'never'}"
        f" ({got['sync_age']} s ago); {got['pending']} event(s) received but not"
        " applied",
    )
    s.say(
        subscriber.host,
        step,
        f"transactions committed on {origin.host} after that are lost here; they may"
        f" still be on {origin.host}'s disk, in {cl.schema}.sl_log_1 and sl_log_2 of"
        f" {cl.database}",
    )
    if answered:
        s.say(
            origin.host,
            step,
            f"{origin.host} answers ({answered}); "
            + ("you said it is fenced" if fenced else "fencing it"),
        )
    if (
        not s.dry_run
        and not yes
        and not s.ask(
            f"FAILOVER promotes {subscriber.host}, loses what it has not "
            f"received and drops {origin.host} from the cluster."
        )
    ):
        raise StepError(origin.host, "failover not confirmed; nothing changed")
    changes = [fence(s, step, origin)] if answered and fence_it else []
    if not facts.slon_running(s.slon_host, cl, subscriber.instance):
        changes.append(start_slon(s, step, subscriber))
    changes.append(
        slonik_change(
            s,
            step,
            slonik.slonik_failover(cl, origin, subscriber),
            f"fail over set {cl.set_id} to {subscriber.host}, drop node {origin.id}",
        )
    )
    if apply(s, changes) < len(changes):
        return {"promoted": False}  # a dry run
    pid = facts.slon_running(s.slon_host, cl, origin.instance)
    if pid:
        s.slon_host.sudo(f"kill -TERM {pid}")
        s.say(
            s.slon_host.name, step, f"stopped slon for {origin.instance} (node dropped)"
        )
    wait_until(
        lambda: as_origin(s, subscriber_host, subscriber),
        settings.FAILOVER_WRITABLE,
        subscriber.host,
        f"{subscriber.host} does not take writes yet (its tables are not configured as"
        " an origin's)",
        "inv logs",
    )
    apply(
        s,
        identity.conform(s, step, subscriber, always=True),
    )
    matviews.refresh_all(s, step, subscriber)
    s.say(
        subscriber.host,
        step,
        f"{subscriber.host} is the origin and accepts writes; rebuild {origin.host} to "
        "rejoin",
    )
    return {"promoted": True, **got}
