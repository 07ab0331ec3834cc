"""`inv status`: nodes, origin, subscription, slons, lag and copy progress; also what
switchover checks."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from .. import facts, replication, settings
from ..errors import StepError
from ..model import Node
from ..render import parse
from ..session import Session
from ..wait import wait_until
from .pooler import paused_marker


@dataclass
class NodeStatus:
    id: int
    host: str
    reachable: bool
    cluster_schema: bool = False
    error: str = ""


@dataclass
class Subscription:
    receiver: str
    exists: bool
    active: bool | None  # the receiver's copy is done (None: the receiver cannot tell)


@dataclass
class Lag:
    node: str
    events: int
    seconds: float


@dataclass
class Status:
    cluster: str
    set: int
    database: str
    nodes: list[NodeStatus] = field(default_factory=list)
    origin: str | None = None
    subscription: Subscription | None = None
    slons: dict[str, int | None] = field(default_factory=dict)  # instance: watchdog pid
    slons_error: str = ""
    lag: list[Lag] | None = None
    copy: dict | None = None
    # hosts where the set is locked (writes refused)
    locked: list[str] = field(default_factory=list)
    # host: origin it names, when the nodes disagree
    origins: dict[str, str] = field(default_factory=dict)
    slonik: int | None = None  # a slonik this tool started, still running
    # PgBouncer (host, pgbouncer.ini) an interrupted switchover may have left paused
    paused: str | None = None
    # slon instance: its last error, when nothing was applied since (replication
    # stopped)
    errors: dict[str, str] = field(default_factory=dict)
    # host: code beyond built-in slon would run there as a superuser (checks' rule)
    code: dict[str, list[str]] = field(default_factory=dict)

    def lag_of(self, host: str) -> Lag | None:
        return next((l for l in self.lag or [] if l.node == host), None)

    def unreachable(self) -> NodeStatus | None:
        return next((n for n in self.nodes if not n.reachable), None)


def status(s: Session) -> Status:
    """Everything the operator needs on one screen."""
    cl = s.cluster
    report = Status(cl.name, cl.set_id, cl.database)
    states, errors = replication.states(s)
    for n in cl.nodes:
        report.nodes.append(
            NodeStatus(n.id, n.host, True, states[n.id].schema)
            if n.id in states
            else NodeStatus(n.id, n.host, False, error=errors[n.id].line())
        )
    origin = replication.origin_in(states)
    report.origins = replication.disagreement(s, states)
    report.locked = [cl.node(n).host for n, st in states.items() if st.locked]
    if origin:
        report.origin = cl.node(origin).host
        subscriber = cl.other(cl.node(origin))
        sub = next(
            (st.subscribed for st in states.values() if st.subscribed is not None), None
        )
        # sl_subscribe on the subscriber says whether its copy is done.
        active = None
        if subscriber.id in states and states[subscriber.id].schema:
            active = facts.subscription_active(s.node_host(subscriber), cl, subscriber)
        report.subscription = Subscription(
            subscriber.host, sub is not None or bool(active), active
        )
        if origin in states:
            report.lag = [
                Lag(cl.node(node).host, events, round(seconds, 1))
                for node, events, seconds in facts.lag(s.node_host(cl.node(origin)), cl)
            ]
        for n in cl.nodes:
            found = (
                facts.code_run_by_replication(s.node_host(n), cl)
                if n.id in states
                else []
            )
            if found:
                report.code[n.host] = found
        if origin == cl.master.id and report.subscription.exists and not active:
            report.copy = facts.copy_progress(
                s.master_host, s.slave_host, s.slon_host, cl
            )
    try:
        report.slonik = facts.slonik_running(s.slon_host, cl)
        mark = s.slon_host.read_file(paused_marker(s))
        report.paused = ", ".join(mark.splitlines()) if mark else None
        for n in cl.nodes:
            report.slons[n.instance] = facts.slon_running(s.slon_host, cl, n.instance)
            failing = parse.slon_failing(facts.slon_log(s.slon_host, cl, n, lines=500))
            if failing:
                report.errors[n.instance] = f"{failing[0]}: {failing[1]}"
    except StepError as e:
        report.slons_error = e.line()
    return report


def format_status(report: Status) -> str:
    lines = [f"cluster {report.cluster}, set {report.set}, database {report.database}"]
    for n in report.nodes:
        state = (
            ("unreachable: " + n.error)
            if not n.reachable
            else ("in the cluster" if n.cluster_schema else "no Slony schema")
        )
        lines.append(f"  node {n.id} {n.host}: {state}")
    lines.append(f"  origin: {report.origin or 'no set yet'}")
    if report.origins:
        lines.append(
            "  MOVE IN FLIGHT: "
            + ", ".join(
                f"{h} says the origin is {o}" for h, o in report.origins.items()
            )
            + "; inv switchover (or switchback) finishes it if it does not settle by"
            " itself"
        )
    for host in report.locked:
        lines.append(
            f"  SET LOCKED on {host}: application writes are refused (an interrupted"
            " switchover); inv switchover (or switchback) unlocks it first"
        )
    if report.slonik:
        lines.append(
            f"  slonik still running on the slon host (pid {report.slonik}), from an"
            " interrupted switchover: it stops by itself; inv switchover stops it at"
            " once"
        )
    if report.paused:
        lines.append(
            f"  PGBOUNCER MAY BE PAUSED ({report.paused}) by an interrupted switchover:"
            " the application's queries wait there; inv switchover (or switchback)"
            " resumes it first"
        )
    sub = report.subscription
    if sub:
        what = (
            "copy done, replicating"
            if sub.active
            else ("initial copy running" if sub.exists else "not subscribed")
        )
        lines.append(f"  subscription: {sub.receiver}: {what}")
    for name, pid in report.slons.items():
        lines.append(
            f"  slon {name}: "
            + (f"running (watchdog pid {pid})" if pid else "NOT running")
        )
    if report.slons_error:
        lines.append(f"  slons: {report.slons_error}")
    for name, error in report.errors.items():
        lines.append(f"  slon {name} FAILS: {error} (inv logs)")
    for host, found in report.code.items():
        lines += [
            f"  SUPERUSER CODE on {host}: {what}: slon would run it with superuser rights"
            " (inv preflight names the fix; switchover refuses)"
            for what in found
        ]
    for lag in report.lag or []:
        lines.append(f"  lag to {lag.node}: {lag.events} events, {lag.seconds} s")
    if report.copy:
        lines.append(f"  copy: {report.copy['line']}")
    return "\n".join(lines)


def show_status(s: Session, watch: int = 0, as_json: bool = False) -> None:
    """Print the status once, or every `watch` seconds until interrupted."""
    while True:
        report = status(s)
        s.out.line(
            json.dumps(asdict(report), indent=2) if as_json else format_status(report)
        )
        if not watch:
            return
        time.sleep(int(watch))
        s.out.line("")


def wait_for_sync(
    s: Session, origin: Node, subscriber: Node, timeout: float = settings.SYNC_CONFIRM
) -> None:
    """Wait until the subscriber confirms a SYNC that the origin made after this call
    began."""
    cl, origin_host = s.cluster, s.node_host(origin)
    since = facts.max_event(origin_host, cl, origin)
    try:
        wait_until(
            lambda: facts.confirmed_since(origin_host, cl, origin, subscriber, since),
            timeout,
            subscriber.host,
            f"no SYNC from {origin.host} confirmed",
            "check that both slons run (inv status), then run again",
            every=settings.POLL,
        )
    except StepError as e:
        failing = parse.slon_failing(
            facts.slon_log(s.slon_host, cl, subscriber, lines=500)
        )
        if not failing:
            raise
        raise StepError(
            subscriber.host,
            f"{e.message}: replication fails there since {failing[0]}: {failing[1]}",
            f"fix what slon says (inv logs --node {subscriber.id}); it retries "
            "by itself",
        ) from None
