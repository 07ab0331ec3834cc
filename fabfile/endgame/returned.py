"""A node dropped by a failover that comes back: fenced at first contact, what it still
holds that the new origin never got (`inv lost-rows`), and the way back to a safe pair
(`inv rejoin`).

Such a node still holds Slony's schema and believes it is the origin; Slony's triggers
would let the applications write there. Three things stop them: the guard on its log
tables (render.sql.guard, installed while the pair was healthy) refuses their writes as
soon as it is back, since no slon of its own runs any more; the first command of this
tool that reaches it takes CONNECT from them (`first_contact`), printing the undo; and
`rejoin` rebuilds it as a subscriber, which Slony's own triggers guard.

What the failover recorded (when, which SYNC of the old origin the new one applied last,
later how the node was fenced) is kept in sl_registry on the new origin (facts.
failover_record), under render.sql.registry_key: it lives as long as the cluster does,
whichever host runs slon.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import facts, replication, settings
from ..errors import StepError
from ..model import Node, SlonyState
from ..plan import Action, Change, Command, Sql, apply, slonik_change
from ..render import lost, slonik, sql
from ..render.shell import client_args, client_env
from ..secrets import home, write_private
from ..session import Session
from ..steps import identity
from ..steps.cluster import guard, restore_slon_conf, start_slon, wait_copied
from ..wait import wait_until


@dataclass
class Returned:
    """A node dropped from the cluster by a failover, as the node that took over and
    the node itself (when it answers) tell."""

    node: Node
    origin: Node  # the node that took over
    record: dict | None  # what the failover recorded (facts.failover_record)
    reachable: bool
    state: SlonyState | None  # its own Slony state, when it answers
    error: str = ""  # why it cannot be read

    @property
    def stale(self) -> bool:
        """It still holds its Slony state from before the failover (its log with the
        writes the new origin never got)."""
        return bool(self.state and self.state.schema and self.state.has_set)

    @property
    def at(self) -> str | None:
        return (self.record or {}).get("at")

    @property
    def since(self) -> str | None:
        """The time of the last SYNC of the node that the new origin applied."""
        return (self.record or {}).get("sync_at")

    @property
    def snapshot(self) -> str | None:
        return (self.record or {}).get("sync_snapshot")


def find(
    s: Session, states: dict[int, SlonyState], errors: dict[int, StepError]
) -> Returned | None:
    """The node a failover dropped (replication.dropped), or None."""
    cl = s.cluster
    gone = replication.dropped(states)
    if not gone:
        return None
    node = cl.node(min(gone))
    origin = cl.other(node)
    record = facts.failover_record(s.node_host(origin), cl, node)
    return Returned(
        node,
        origin,
        record,
        node.id in states,
        states.get(node.id),
        errors[node.id].line() if node.id in errors else "",
    )


def concerned(r: Returned) -> bool:
    """Whether the node is one this tool put into the cluster and a failover dropped:
    it still holds the cluster's schema, or the failover left a record."""
    return bool(r.record or (r.state and r.state.schema))


# --- fencing --------------------------------------------------------------------------


def fence(s: Session, step: str, node: Node, origin: Node | None = None) -> Change:
    """A Change that takes CONNECT from the applications on `node`, from wherever it
    is reached: over SSH as postgres, else as the replication superuser from the slon
    host. The undo names who could connect before (facts.connect_grantees, PUBLIC when
    that cannot be read); with `origin` (the node that took over in a failover) it is
    also kept in the failover record there, for rejoin to give it back."""
    cl = s.cluster
    statement = sql.fence_database(cl.database)
    try:
        grantees = facts.connect_grantees(s.node_host(node), cl.database)
    except StepError:
        grantees = []
    undo = sql.unfence_database(cl.database, grantees)

    def run() -> None:
        if origin is not None:
            remember(s, node, origin, {"undo": undo})
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
        f"fence {cl.database}: no application may connect (undo: {undo})",
        Action(run, statement),
    )


def remember(s: Session, node: Node, origin: Node, fields: dict) -> None:
    """Add `fields` to the failover record of `node` on `origin` (made if missing)."""
    cl = s.cluster
    h = s.node_host(origin)
    record = facts.failover_record(h, cl, node) or {
        "node": node.id,
        "host": node.host,
    }
    record.update(fields)
    h.psql(
        sql.registry_set(cl.schema, sql.registry_key(node.id), json.dumps(record)),
        cl.database,
    )


def stop_its_slon(
    s: Session, step: str, node: Node, why: str = "was dropped by a failover"
) -> list[Change]:
    """The Changes that stop the slon of a node a failover drops (it would take its
    own DROP NODE from the new origin and uninstall Slony there, its log with it) and
    keep it stopped: its slon.conf set aside, so that nothing starts it, not even
    Debian's slony1 service at the slon host's next boot (it starts a slon for every
    /etc/slony1/*/slon.conf); rejoin puts it back. None when done already."""
    cl, h = s.cluster, s.slon_host
    pid = facts.slon_running(h, cl, node)
    changes = []
    if pid is not None:
        changes.append(
            Change(
                h.name,
                step,
                f"stop slon for {cl.instance(node)} (watchdog {pid}): {node.host} {why}",
                Command(f"kill -TERM {pid}"),
                lambda: wait_stopped(s, node, pid),
            )
        )
    conf, parked = cl.slon_conf(node), cl.parked_slon_conf(node)
    if h.read_file(conf) is not None:
        changes.append(
            Change(
                h.name,
                step,
                f"set {conf} aside as {parked} (no slon for {cl.instance(node)} until"
                " rejoin, not even from Debian's slony1 service at boot)",
                Command(f"mv -f {shlex.quote(conf)} {shlex.quote(parked)}"),
            )
        )
    return changes


def wait_stopped(s: Session, node: Node, pid: int) -> None:
    wait_until(
        lambda: facts.slon_running(s.slon_host, s.cluster, node) is None,
        settings.SLON_STOP,
        s.slon_host.name,
        f"slon watchdog {pid} still running",
        f"kill it by hand: sudo kill {pid}",
        every=0.1,
    )


def fence_returned(s: Session, step: str, r: Returned) -> list[Change]:
    """What keeps the applications off a node a failover dropped that answers again:
    its slon stopped, CONNECT taken from them (none when done already)."""
    if not r.reachable or not concerned(r):
        return []
    cl = s.cluster
    h = s.node_host(r.node)
    changes = stop_its_slon(s, step, r.node)
    if facts.database_exists(h, cl.database) and not facts.fenced(h, cl.database):
        changes.append(fence(s, step, r.node, r.origin))
    return changes


def first_contact(s: Session, to_stderr: bool = False) -> list[str]:
    """Before any task: a node a failover dropped that is back and open to the
    applications is fenced first (its slon stopped, CONNECT taken, the undo
    printed; on stderr where stdout is for scripts). The hosts fenced now. Never an
    error: the task itself says what it cannot reach."""
    if s.cluster is None:
        return []
    if to_stderr:
        out = s.out
        s.out = out.to(sys.stderr)
        try:
            return first_contact(s)
        finally:
            s.out = out
    try:
        states, errors = replication.states(s)
        r = find(s, states, errors)
        if r is None:
            return []
        changes = fence_returned(s, "fence", r)
        if not changes:
            return []
        when = f" at {r.at}" if r.at else ""
        s.say(
            r.node.host,
            "fence",
            f"{r.node.host} was dropped from the cluster by a failover{when} and is"
            f" back: keeping the applications off it ({r.origin.host} is the origin)",
        )
        apply(s, changes)
        return [r.node.host] if not s.dry_run else []
    except StepError as e:
        s.out.error(f"warning: {e.line()}")
        return []


# --- lost rows ------------------------------------------------------------------------


def lost_rows_path(s: Session, r: Returned) -> Path:
    """Where the lost rows of this failover go on the operator's machine (0600)."""
    stamp = re.sub(r"[^0-9]", "", (r.at or "")[:19]) or "unknown-time"
    return home() / f"lost-rows-{s.cluster.name}-{r.node.host}-{stamp}.sql"


def returned_node(s: Session, step: str) -> Returned:
    """The dropped node, answering; StepError when there is none or it does not
    answer."""
    cl = s.cluster
    states, errors = replication.states(s)
    r = find(s, states, errors)
    if r is None:
        raise StepError(
            ", ".join(n.host for n in cl.nodes),
            "no node was dropped from the cluster by a failover",
            "inv status",
        )
    if not r.reachable:
        raise StepError(
            r.node.host,
            f"dropped by a failover and not reachable ({r.error})",
            f"bring {r.node.host} back (it refuses the applications' writes by itself),"
            f" then inv {step} again",
        )
    return r


def read_lost(s: Session, r: Returned) -> tuple[list[lost.LostRow], str]:
    """The writes the dropped node holds that the new origin never got, and its last
    event's time."""
    h = s.node_host(r.node)
    rows = [
        lost.parse_row(row) for row in facts.lost_rows(h, s.cluster, r.node, r.snapshot)
    ]
    return rows, facts.last_event_at(h, s.cluster, r.node)


def write_lost(s: Session, step: str, r: Returned) -> Path | None:
    """Write the lost rows of a node that still holds its old log to the operator's
    file (0600) and list them; the path, or None when the node holds no log any more
    (then an earlier run wrote the file)."""
    cl, path = s.cluster, lost_rows_path(s, r)
    if not r.stale:
        s.say(
            r.node.host,
            step,
            f"{r.node.host} holds no Slony log any more"
            + (
                f"; its lost rows were written to {path} before"
                if path.exists()
                else ""
            ),
        )
        return path if path.exists() else None
    rows, last_event = read_lost(s, r)
    exact = r.snapshot is not None
    text = lost.render_file(
        rows,
        host=r.node.host,
        database=cl.database,
        origin=r.origin.host,
        since=r.since or "unknown",
        last_event=last_event,
        exact=exact,
        written=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
    scope = (
        f"committed after the last SYNC {r.origin.host} applied ({r.since})"
        if exact
        else f"in its log (no failover record on {r.origin.host}: some may be there"
        " already)"
    )
    for row in rows[: lost.SHOWN]:
        s.say(r.node.host, step, lost.summary(row, last_event))
    if len(rows) > lost.SHOWN:
        s.say(r.node.host, step, f"... and {len(rows) - lost.SHOWN} more")
    if s.dry_run:
        s.say(r.node.host, step, f"would write {len(rows)} lost row(s) to {path}")
        return path
    write_private(path, text)
    s.say(
        r.node.host,
        step,
        f"{len(rows)} write(s) {scope} are only on {r.node.host}: written to {path}"
        f" (mode 0600) as SQL to review and apply on {r.origin.host} by hand; nothing"
        " was applied",
    )
    return path


def lost_rows(s: Session) -> Path | None:
    """`inv lost-rows`: list what a node dropped by a failover holds that the new
    origin never got, and write it to a file."""
    return write_lost(s, "lost-rows", returned_node(s, "lost-rows"))


# --- rejoin ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RejoinPlan:
    """What rejoin still has to do, read from both nodes (each stage is skipped once
    done, so a run after an interruption goes on where it stopped)."""

    node: Node  # the node that rejoins
    origin: Node  # the origin it subscribes to
    write_lost: bool  # it holds its old log: write the lost rows first
    uninstall: bool  # its old (or a half made) Slony schema goes
    empty: bool  # its application tables are emptied
    store: bool  # STORE NODE and paths
    subscribe: bool  # SUBSCRIBE SET
    wait: bool  # the initial copy is running or about to
    finish: bool  # the fence lifted, the failover record removed


def rejoin_plan(
    node: Node,
    origin: Node,
    origin_state: SlonyState,
    node_state: SlonyState,
    has_rows: bool,
    active: bool,
    record: bool,
) -> RejoinPlan | None:
    """Pure: what rejoin must still do for `node` to be an active subscriber of
    `origin` again; None when nothing (it is one, and no failover record is left).

    origin_state, node_state: the nodes' Slony states; has_rows: its application
    tables hold rows; active: its copy is done (its sl_subscribe); record: the
    failover record is still on the origin."""
    stored = node.id in origin_state.nodes
    subscribed = origin_state.subscribed is not None
    if stored and subscribed and active:
        if not record:
            return None
        return RejoinPlan(node, origin, False, False, False, False, False, False, True)
    if stored:
        # a node stored again: only what comes after is left
        return RejoinPlan(
            node,
            origin,
            False,
            False,
            False,
            False,
            not subscribed,
            True,
            True,
        )
    return RejoinPlan(
        node,
        origin,
        write_lost=node_state.schema and node_state.has_set,
        uninstall=node_state.schema,
        empty=has_rows,
        store=True,
        subscribe=True,
        wait=True,
        finish=True,
    )


def rejoin(
    s: Session,
    yes: bool = False,
    timeout: float = settings.COPY_WAIT,
    copy_retries: int = settings.COPY_RETRIES,
) -> dict:
    """`inv rejoin`: rebuild a node dropped by a failover as a subscriber of the new
    origin: fenced, its lost rows written to a file, its old Slony state removed, its
    application tables emptied (asked first), stored as a node again, subscribed, the
    copy waited for; then the fence is lifted (Slony's triggers refuse writes on a
    subscriber) and switchback is possible again."""
    step, cl = "rejoin", s.cluster
    states, errors = replication.states(s)
    r = find(s, states, errors)
    if r is not None:
        if not r.reachable:
            raise StepError(
                r.node.host,
                f"dropped by a failover and not reachable ({r.error})",
                f"bring {r.node.host} back (it refuses the applications' writes by"
                " itself), then inv rejoin again",
            )
        node, origin = r.node, r.origin
    else:
        origin_id = replication.origin_in(states)
        if origin_id is None or errors:
            down = next(iter(errors.values()), None)
            raise StepError(
                down.host if down else cl.master.host,
                down.message if down else f"set {cl.set_id} does not exist",
                "inv status" if down else "nothing to rejoin: run inv migrate",
            )
        origin = cl.node(origin_id)
        node = cl.other(origin)
    origin_host, node_host = s.node_host(origin), s.node_host(node)
    record = facts.failover_record(origin_host, cl, node)
    origin_state = states[origin.id]
    node_state = states.get(node.id) or SlonyState()
    tables = sorted(origin_state.tables)
    rows = (
        facts.row_count(node_host, cl.database, tables)
        if node.id not in origin_state.nodes
        else 0
    )
    plan = rejoin_plan(
        node,
        origin,
        origin_state,
        node_state,
        rows > 0,
        facts.subscription_active(node_host, cl, node)
        if node_state.schema and node.id in origin_state.nodes
        else False,
        record is not None,
    )
    if plan is None:
        s.say(
            node.host,
            step,
            f"{node.host} is an active subscriber of {origin.host}; nothing to do",
        )
        return {"rejoined": False}
    if r is not None:
        apply(s, fence_returned(s, step, r))
        if plan.write_lost:
            write_lost(s, step, r)
    if plan.empty or plan.uninstall:
        question = (
            f"REJOIN rebuilds {node.host} as a subscriber of {origin.host}: database"
            f" {cl.database} on {node.host} loses its Slony state"
            + (
                f" and {rows} row(s) in {len(tables)} table(s), then copies every row"
                f" from {origin.host}."
                if plan.empty
                else "."
            )
        )
        s.say(node.host, step, question)
        if not s.dry_run and not yes and not s.ask(question):
            raise StepError(node.host, "rejoin not confirmed; nothing changed")
    changes: list[Change] = []
    if r is not None:
        changes += stop_its_slon(s, step, node)
    if plan.uninstall:
        changes.append(
            slonik_change(
                s,
                step,
                slonik.slonik_uninstall(cl, [node.id]),
                f"remove the Slony state {node.host} kept from before the failover"
                f" (uninstall node {node.id}: schema {cl.schema}, its log and triggers)",
            )
        )
    if plan.empty:
        changes.append(
            Change(
                node.host,
                step,
                f"empty {len(tables)} application table(s) of {cl.database} ({rows}"
                " rows)",
                Sql(
                    "SET lock_timeout = '5s';\nTRUNCATE " + ", ".join(tables) + ";\n",
                    cl.database,
                ),
            )
        )
    if plan.store:
        changes.append(
            slonik_change(
                s,
                step,
                slonik.slonik_store_node(cl, node, origin),
                f"store {node.host} as node {node.id} again (event node"
                f" {origin.id}) and the paths both ways",
            )
        )
        changes += guard(s, step, [node], made=True)
    apply(s, changes)
    if s.dry_run:
        s.say(
            node.host,
            step,
            f"would start slon for {cl.instance(node)}, subscribe {node.host} to set"
            f" {cl.set_id} from {origin.host} and wait for the copy",
        )
        return {"rejoined": False}
    later: list[Change] = [] if plan.store else guard(s, step, [node])
    if not facts.slon_running(s.slon_host, cl, node):
        later += restore_slon_conf(s, step, node)
        later.append(start_slon(s, step, node))
    if not facts.slon_running(s.slon_host, cl, origin):
        later.append(start_slon(s, step, origin))
    if plan.subscribe:
        later += identity.conform(s, step, node, always=False)
        later.append(
            slonik_change(
                s,
                step,
                slonik.slonik_subscribe(cl, origin, node),
                f"subscribe {node.host} to set {cl.set_id} from {origin.host}",
            )
        )
    apply(s, later)
    if plan.wait:
        wait_copied(s, timeout, copy_retries, step, origin, node)
    if plan.finish:
        done: list[Change] = []
        if facts.fenced(node_host, cl.database):
            undo = (record or {}).get("undo") or sql.unfence_database(cl.database)
            done.append(
                Change(
                    node.host,
                    step,
                    f"lift the fence: {undo} (Slony refuses the applications' writes"
                    " on a subscriber)",
                    Sql(undo, cl.database),
                )
            )
        if record is not None:
            done.append(
                Change(
                    origin.host,
                    step,
                    f"remove the failover record of node {node.id}",
                    Sql(
                        sql.registry_delete(cl.schema, sql.registry_key(node.id)),
                        cl.database,
                    ),
                )
            )
        apply(s, done)
    s.say(
        node.host,
        step,
        f"{node.host} is a subscriber of {origin.host} again: inv verify compares"
        " them; inv switchover (or switchback) moves the origin",
    )
    return {"rejoined": True}
