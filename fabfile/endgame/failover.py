"""`inv failover`: the origin is dead; promote its subscriber (FAILOVER, DROP NODE).

Refused while the subscriber's initial copy is not done, when the slon host is the
failed origin, while the origin's PostgreSQL still answers (unless it is fenced: by the
operator, --fenced, or by the tool, --fence), and while it does not answer unless
something keeps the applications off it should it come back: the operator fenced it
(--fenced: powered off, network cut), or the tool sends the application elsewhere
(--pooler: PgBouncer pointed at the new origin first). What may be lost is shown before
the operator is asked. Works in both directions: the failed node is whichever is the
origin.

Fast and exact: the slons of both nodes are stopped before FAILOVER, so the subscriber
applies nothing more while the tool reads which SYNC of the origin it applied last (kept
in the failover record for `inv lost-rows`), and slonik does not wait for the slon
restarts FAILOVER asks for (slon sleeps 20 s before each). Each part is timed.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor

from .. import facts, replication, settings
from ..errors import StepError
from ..model import Node, SlonyState
from ..plan import Action, Change, Command, Slonik, apply, execute, shown
from ..render import slonik, sql
from ..session import Session
from ..steps import identity
from ..steps.cluster import start_slon
from ..wait import wait_until
from . import matviews, pooler
from .returned import fence, first_contact, stop_its_slon
from .switchover import as_origin


def failed_pair(
    s: Session, states: dict[int, SlonyState], errors: dict[int, StepError]
) -> tuple[Node, Node]:
    """(origin, subscriber): the origin as the nodes that answer over SSH know it,
    and the node to promote."""
    cl = s.cluster
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


def probe_logins(s: Session) -> dict[int, Future]:
    """Each node's PostgreSQL tried from the slon host as the replication user
    (facts.replication_login, bounded by settings.FAILOVER_CONNECT), in the background:
    for a dead origin that drops packets this wait runs while SSH waits for it."""
    pool = ThreadPoolExecutor(len(s.cluster.nodes), thread_name_prefix="login")
    futures = {
        n.id: pool.submit(
            facts.replication_login,
            s.slon_host,
            s.cluster,
            n,
            connect_timeout=settings.FAILOVER_CONNECT,
        )
        for n in s.cluster.nodes
    }
    pool.shutdown(wait=False)
    return futures


def alive(
    s: Session,
    origin: Node,
    states: dict[int, SlonyState],
    logins: dict[int, Future] | None = None,
) -> str:
    """'' when the origin's PostgreSQL answers neither over SSH (its state was read
    there just now) nor from the slon host (`logins`, else tried now), else how it
    answered."""
    if origin.id in states:
        return f"psql over SSH on {origin.host}"
    error = (
        logins[origin.id].result()
        if logins
        else facts.replication_login(
            s.slon_host, s.cluster, origin, connect_timeout=settings.FAILOVER_CONNECT
        )
    )
    return "" if error else f"PostgreSQL on {origin.dbhost} from {s.slon_host.name}"


def half_done(s: Session, states: dict[int, SlonyState]) -> tuple[Node, Node] | None:
    """(origin, subscriber) of a failover that promoted the subscriber but was
    interrupted before DROP NODE (its record says so), else None."""
    cl = s.cluster
    for n, st in states.items():
        node = cl.node(n)
        other = cl.other(node)
        if st.has_set and st.origin == n and other.id in st.nodes:
            record = facts.failover_record(s.node_host(node), cl, other)
            if record and not record.get("dropped"):
                return other, node
    return None


def refuse_unfenced(answered: str, origin: Node, subscriber: Node, how: dict) -> None:
    """StepError when nothing keeps the applications off the origin, whether it
    answers or should it come back."""
    if answered and not (how["fenced"] or how["fence"]):
        raise StepError(
            origin.host,
            f"{origin.host} still answers ({answered}): a failover would leave two "
            "writable origins",
            "use inv switchover while it is alive; or fence it (stop it, or run"
            " failover with --fence to take CONNECT from the applications), or say it"
            " is fenced with --fenced",
        )
    if not answered and not (how["fenced"] or how["pooler"]):
        raise StepError(
            origin.host,
            f"{origin.host} does not answer: should it come back, nothing but the"
            " guard on its log tables keeps the applications from writing there while"
            f" {subscriber.host} is the origin",
            f"make sure it stays off (power it off, cut its network) and say so with"
            " --fenced; or give --pooler HOST (the PgBouncer the application goes"
            f" through) so that the tool sends the application to {subscriber.host}"
            " first",
        )


def failover(
    s: Session,
    fenced: bool = False,
    fence_it: bool = False,
    yes: bool = False,
    pooler_host: str = "",
    pooler_config: str = settings.POOLER_CONFIG,
) -> dict:
    """Promote the origin's subscriber when the origin is dead: FAILOVER, DROP NODE."""
    step, cl = "failover", s.cluster
    t0 = s.started
    logins = probe_logins(s)
    # first contact: a node an earlier failover dropped, back and open, fenced first
    s.fenced_now = first_contact(s)
    states, errors = replication.states(s)
    gone = replication.dropped(states)
    if gone:
        node = cl.node(min(gone))
        survivor = cl.other(node)
        s.say(
            survivor.host,
            step,
            f"{node.host} was dropped by a failover already; {survivor.host} is the"
            " origin; nothing to do (inv status; inv rejoin once it is back)",
        )
        if pooler_host:
            apply(s, pooler.repoint(s, step, pooler_host, pooler_config, survivor))
        return {"promoted": False}
    resumed = half_done(s, states)
    if resumed:
        origin, subscriber = resumed
        s.say(
            subscriber.host,
            step,
            f"{subscriber.host} took over set {cl.set_id} in an interrupted failover:"
            f" dropping node {origin.id} ({origin.host}) is left",
        )
        return promote(s, step, origin, subscriber, [], {}, t0, {}, drop_only=True)
    origin, subscriber = failed_pair(s, states, errors)
    subscriber_host = s.node_host(subscriber)
    if not facts.subscription_active(subscriber_host, cl, subscriber):
        raise StepError(
            subscriber.host,
            f"{subscriber.host}'s initial copy of set {cl.set_id} is not done: it "
            "holds no complete copy to promote",
            "wait for the copy (inv status); failover promotes "
            "only a complete subscriber",
        )
    answered = alive(s, origin, states, logins)
    detected = time.monotonic()
    refuse_unfenced(
        answered,
        origin,
        subscriber,
        {"fenced": fenced, "fence": fence_it, "pooler": bool(pooler_host)},
    )
    bouncer = None
    if pooler_host:
        bouncer, entry = pooler.describe(s, pooler_host, pooler_config)
        if entry.get("host") not in (origin.dbhost, subscriber.dbhost):
            raise StepError(
                pooler_host,
                f"PgBouncer sends {bouncer.database} to"
                f" {entry.get('host') or 'a local socket'}, neither {origin.host} nor"
                f" {subscriber.host}: not the application's path to them",
                f"correct [databases] in {pooler_config}, or leave out --pooler",
            )
        pooler.admin(bouncer, "SHOW VERSION")
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
        f"transactions committed on {origin.host} after that are lost here; they stay"
        f" in {cl.schema}.sl_log_1 and sl_log_2 of {cl.database} on {origin.host}'s"
        " disk: inv lost-rows lists them once it is back",
    )
    if answered:
        s.say(
            origin.host,
            step,
            f"{origin.host} answers ({answered}); "
            + ("you said it is fenced" if fenced else "fencing it"),
        )
    elif fenced:
        s.say(
            origin.host, step, f"{origin.host} does not answer; you said it is fenced"
        )
    checked = time.monotonic()
    if (
        not s.dry_run
        and not yes
        and not s.ask(
            f"FAILOVER promotes {subscriber.host}, loses what it has not "
            f"received and drops {origin.host} from the cluster."
        )
    ):
        raise StepError(origin.host, "failover not confirmed; nothing changed")
    asked = time.monotonic() - checked
    # Before anything moves: the old origin's slon stopped (should the node come back,
    # it would take its own DROP NODE and uninstall Slony there, its log with it), the
    # applications kept off it, PgBouncer sent to the new origin.
    changes = stop_its_slon(s, step, origin, "is to be failed over")
    if answered and fence_it:
        changes.append(fence(s, step, origin, subscriber))
    if bouncer is not None:
        changes += pooler.cut(s, step, pooler_host, pooler_config, subscriber)
    timing = {"detect": detected - t0, "checks": checked - detected}
    return promote(s, step, origin, subscriber, changes, got, t0 + asked, timing)


def promote(
    s: Session,
    step: str,
    origin: Node,
    subscriber: Node,
    before: list[Change],
    got: dict,
    t0: float,
    timing: dict,
    drop_only: bool = False,
) -> dict:
    """The failover proper: `before`, the subscriber's slon stopped, the failover
    recorded on it (the last SYNC it applied), FAILOVER, DROP NODE, its slon started,
    and a wait until it takes writes; what each part took."""
    cl = s.cluster
    subscriber_host = s.node_host(subscriber)
    began = time.monotonic()
    changes = list(before)
    slon = facts.slon_running(s.slon_host, cl, subscriber)
    if slon:
        changes.append(
            Change(
                s.slon_host.name,
                step,
                f"stop slon for {cl.instance(subscriber)} (watchdog {slon}) for the"
                " failover"
                " (no slon restart to wait for; nothing more applied meanwhile)",
                Command(f"kill -TERM {slon}"),
                lambda: wait_until(
                    lambda: facts.slon_running(s.slon_host, cl, subscriber) is None,
                    settings.SLON_STOP,
                    s.slon_host.name,
                    f"slon watchdog {slon} still running",
                    f"kill it by hand: sudo kill {slon}",
                    every=0.1,
                ),
            )
        )
    if not drop_only:
        changes.append(record_change(s, step, origin, subscriber))
    spent: dict[str, float] = {}

    def timed(name: str, change: Change) -> Change:
        """`change`, timed under `name`."""

        def run() -> None:
            t = time.monotonic()
            spent.setdefault("prepare", t - began)  # slons stopped, fenced, recorded
            execute(s, change)
            spent[name] = time.monotonic() - t

        return Change(
            change.host, change.step, change.what, Action(run, shown(change.op))
        )

    if not drop_only:
        changes.append(
            timed(
                "FAILOVER",
                Change(
                    cl.slon_name,
                    step,
                    f"fail over set {cl.set_id} to {subscriber.host}",
                    Slonik(
                        slonik.slonik_failover(cl, origin, subscriber),
                        settings.SLONIK,
                        "failover",
                        settings.FAILOVER_CONNECT,
                    ),
                ),
            )
        )
    changes.append(
        timed(
            "DROP NODE",
            Change(
                cl.slon_name,
                step,
                f"drop node {origin.id} ({origin.host}) from the cluster",
                Slonik(
                    slonik.slonik_drop_node(cl, origin, subscriber),
                    settings.SLONIK,
                    "drop node",
                    settings.FAILOVER_CONNECT,
                ),
                lambda: mark_dropped(s, origin, subscriber),
            ),
        )
    )
    if apply(s, changes) < len(changes):
        return {"promoted": False}  # a dry run
    t = time.monotonic()
    if not facts.slon_running(s.slon_host, cl, subscriber):
        apply(s, [start_slon(s, step, subscriber)])
    wait_until(
        lambda: as_origin(s, subscriber_host, subscriber),
        settings.FAILOVER_WRITABLE,
        subscriber.host,
        f"{subscriber.host} does not take writes yet (its tables are not configured as"
        " an origin's)",
        "inv logs",
        every=settings.TAKEOVER_POLL,
    )
    spent["takeover"] = time.monotonic() - t
    writable = time.monotonic() - t0
    apply(
        s,
        identity.conform(s, step, subscriber, always=True),
    )
    matviews.refresh_all(s, step, subscriber)
    parts = {**timing, **spent}
    s.say(
        subscriber.host,
        step,
        f"{subscriber.host} is the origin and accepts writes, {writable:.1f} s after the"
        " failover began ("
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in parts.items())
        + f"); {origin.host} is out of the cluster: once it is back, inv lost-rows"
        " lists what only it has, inv rejoin rebuilds it as a subscriber",
    )
    return {
        "promoted": True,
        "writable_seconds": round(writable, 2),
        "parts": {k: round(v, 2) for k, v in parts.items()},
        **got,
    }


def record_change(s: Session, step: str, origin: Node, subscriber: Node) -> Change:
    """A Change recording the failover on the subscriber (its sl_registry), once its
    slon is stopped: when, and the last SYNC of the origin it applied (so that the
    writes the origin made after it can be found in its log: inv lost-rows)."""
    cl = s.cluster
    h = s.node_host(subscriber)

    def run() -> None:
        synced = facts.setsync(h, cl) or {}
        at, at_epoch = facts.server_time(h)
        record = {
            "node": origin.id,
            "host": origin.host,
            "at": at,
            "at_epoch": at_epoch,
            "sync_seqno": synced.get("seqno"),
            "sync_snapshot": synced.get("snapshot"),
            "sync_at": synced.get("at"),
        }
        old = facts.failover_record(h, cl, origin) or {}
        if "undo" in old:
            record["undo"] = old["undo"]
        h.psql(
            sql.registry_set(
                cl.schema, sql.registry_key(origin.id), json.dumps(record)
            ),
            cl.database,
        )

    return Change(
        subscriber.host,
        step,
        f"record the failover in {cl.schema}.sl_registry: when, and the last SYNC of"
        f" {origin.host} applied here",
        Action(run),
    )


def mark_dropped(s: Session, origin: Node, subscriber: Node) -> None:
    cl, h = s.cluster, s.node_host(subscriber)
    record = facts.failover_record(h, cl, origin) or {
        "node": origin.id,
        "host": origin.host,
    }
    record["dropped"] = True
    h.psql(
        sql.registry_set(cl.schema, sql.registry_key(origin.id), json.dumps(record)),
        cl.database,
    )
