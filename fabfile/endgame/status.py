"""`inv status`: nodes, origin, subscription, slons, lag and copy progress; also what
switchover checks."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from .. import clusters, facts, replication, settings
from ..errors import StepError
from ..model import Node
from ..render import parse
from ..session import Session
from ..wait import wait_until
from . import returned
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
class FailedOver:
    """A node a failover dropped from the cluster (endgame.returned)."""

    host: str
    origin: str  # the node that took over
    at: str | None  # when (None: no failover record)
    since: str | None  # the last SYNC of it the origin applied
    reachable: bool
    stale: bool  # it still holds its old Slony state (believes it is the origin)
    rows: int | None  # writes only it holds (None: not known)
    fenced: bool | None  # no application may connect (None: not known)
    fenced_now: bool = False  # this run fenced it: it was open to the applications


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
    slon_errors: dict[str, str] = field(default_factory=dict)
    # host: code beyond built-in slon would run there as a superuser (checks' rule)
    superuser_code: dict[str, list[str]] = field(default_factory=dict)
    failed_over: FailedOver | None = None  # a node a failover dropped

    def lag_of(self, host: str) -> Lag | None:
        return next((l for l in self.lag or [] if l.node == host), None)

    def unreachable(self) -> NodeStatus | None:
        return next((n for n in self.nodes if not n.reachable), None)


def status(s: Session) -> Status:
    """Everything the operator needs on one screen."""
    cl = s.cluster
    report = Status(cl.name, cl.set_id, cl.database)
    states, errors = replication.states(s)
    r = returned.find(s, states, errors)
    for n in cl.nodes:
        report.nodes.append(
            NodeStatus(n.id, n.host, True, states[n.id].schema)
            if n.id in states
            else NodeStatus(n.id, n.host, False, error=errors[n.id].line())
        )
    origin = replication.origin_in(states)
    report.origins = replication.disagreement(s, states)
    report.locked = [
        cl.node(n).host for n, st in replication.live(states).items() if st.locked
    ]
    if r is not None:
        report.failed_over = failed_over(s, r)
    if origin:
        report.origin = cl.node(origin).host
        subscriber = cl.other(cl.node(origin))
        if r is None or r.node != subscriber:
            sub = next(
                (st.subscribed for st in states.values() if st.subscribed is not None),
                None,
            )
            # sl_subscribe on the subscriber says whether its copy is done.
            active = None
            if subscriber.id in states and states[subscriber.id].schema:
                active = facts.subscription_active(
                    s.node_host(subscriber), cl, subscriber
                )
            report.subscription = Subscription(
                subscriber.host, sub is not None or bool(active), active
            )
            if report.subscription.exists and not active and origin in states:
                report.copy = facts.copy_progress(
                    s.node_host(cl.node(origin)),
                    s.node_host(subscriber),
                    s.slon_host,
                    cl,
                    subscriber,
                )
        if origin in states:
            report.lag = [
                Lag(cl.node(node).host, events, round(seconds, 1))
                for node, events, seconds in facts.lag(s.node_host(cl.node(origin)), cl)
            ]
        for n in cl.nodes:
            if n.id in states and (r is None or n != r.node):
                found = facts.code_run_by_replication(s.node_host(n), cl)
                if found:
                    report.superuser_code[n.host] = found
    try:
        report.slonik = facts.slonik_running(s.slon_host, cl)
        mark = s.slon_host.read_file(paused_marker(s))
        report.paused = ", ".join(mark.splitlines()) if mark else None
        for n in cl.nodes:
            report.slons[cl.instance(n)] = facts.slon_running(s.slon_host, cl, n)
            if r is not None and n == r.node:
                continue  # its slon's last words are from before the failover
            failing = parse.slon_failing(facts.slon_log(s.slon_host, cl, n, lines=500))
            if failing and before_failover(failing[0], r):
                continue  # about the node that was dropped, from before
            if failing:
                report.slon_errors[cl.instance(n)] = f"{failing[0]}: {failing[1]}"
    except StepError as e:
        report.slons_error = e.line()
    return report


def before_failover(logged: str, r: returned.Returned | None) -> bool:
    """Whether a slon log line's time (UTC, the slon host's clock) is from before the
    failover that dropped `r`'s node."""
    at = (r.record or {}).get("at_epoch") if r else None
    return at is not None and parse.epoch(logged) < float(at)


def failed_over(s: Session, r: returned.Returned) -> FailedOver:
    """What status shows of a node a failover dropped."""
    cl = s.cluster
    rows = fenced = None
    if r.reachable:
        h = s.node_host(r.node)
        try:
            if r.stale:
                rows = facts.lost_count(h, cl, r.node, r.snapshot)
            if facts.database_exists(h, cl.database):
                fenced = facts.fenced(h, cl.database)
        except StepError:
            pass
    return FailedOver(
        r.node.host,
        r.origin.host,
        r.at,
        r.since,
        r.reachable,
        r.stale,
        rows,
        fenced,
        r.node.host in s.fenced_now,
    )


def format_status(report: Status) -> str:
    lines = [f"cluster {report.cluster}, set {report.set}, database {report.database}"]
    fo = report.failed_over
    for n in report.nodes:
        if fo and n.host == fo.host:
            lines.append(f"  node {n.id} {n.host}: {failed_over_line(fo, n)}")
            continue
        state = (
            ("unreachable: " + n.error)
            if not n.reachable
            else ("in the cluster" if n.cluster_schema else "no Slony schema")
        )
        lines.append(f"  node {n.id} {n.host}: {state}")
    lines.append(f"  origin: {report.origin or 'no set yet'}")
    if fo:
        lines.append(
            f"  what to do: {fo.origin} is the origin; it has no subscriber."
            + (
                f" inv lost-rows writes what only {fo.host} holds to a file; inv"
                f" rejoin --yes rebuilds {fo.host} as a subscriber of {fo.origin}"
                " (it writes that file first)"
                if fo.reachable
                else f" Once {fo.host} is back: inv lost-rows, then inv rejoin --yes"
            )
            + f". Never switch over to {fo.host} before that: it is stale."
        )
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
    if fo and not sub:
        lines.append(f"  subscription: none ({fo.host} is out of the cluster)")
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
    for name, error in report.slon_errors.items():
        lines.append(f"  slon {name} FAILS: {error} (inv logs)")
    for host, found in report.superuser_code.items():
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


def failed_over_line(fo: FailedOver, n: NodeStatus) -> str:
    """The line of a node a failover dropped: when, what it still holds, whether the
    applications can reach it."""
    when = f" at {fo.at}" if fo.at else ""
    text = f"FAILED OVER{when}, out of the cluster"
    if not fo.reachable:
        return f"{text}, unreachable ({n.error})"
    if fo.stale:
        since = f" after {fo.since}" if fo.since else ""
        rows = "an unknown number of" if fo.rows is None else str(fo.rows)
        text += f", still holds {rows} rows written{since} (only there)"
    else:
        text += ", its old Slony state removed (inv rejoin goes on)"
    if fo.fenced_now:
        return text + "; it was open to the applications: fenced now"
    if fo.fenced:
        return text + "; fenced (no application may connect)"
    if fo.fenced is None:
        return text + "; whether the applications can connect is not known"
    return text + "; NOT FENCED: the applications can connect"


# Monitoring-plugin exit codes (`status --check`).
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
LABELS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


@dataclass(frozen=True)
class Thresholds:
    """Lag (seconds) over which `status` warns, and over which it is critical."""

    warning: float = settings.LAG_WARNING
    critical: float = settings.LAG_CRITICAL


def check(report: Status, limits: Thresholds = Thresholds()) -> tuple[int, str]:
    """Pure: the status as a monitoring plugin says it: (exit code, one line with
    perfdata). The code is the worst of `problems`, OK when there is none; UNKNOWN
    when no node answers."""
    code, text = verdict(report, limits)
    return code, f"SLONY {LABELS[code]} - {text}{perfdata(report, limits)}"


def verdict(report: Status, limits: Thresholds = Thresholds()) -> tuple[int, str]:
    """(code, text): the worst problems, else what is right."""
    if not any(n.reachable for n in report.nodes):
        return UNKNOWN, "no node answers: " + "; ".join(n.error for n in report.nodes)
    found = problems(report, limits)
    if found:
        worst = max(level for level, _ in found)
        return worst, "; ".join(text for level, text in found if level == worst)
    sub = report.subscription
    lag = report.lag_of(sub.receiver) if sub else None
    if sub and not sub.active and report.copy:
        doing = f"initial copy {report.copy['fraction'] * 100:.0f}% done"
    else:
        doing = "replicates" + (
            f" (lag {lag.seconds} s, {lag.events} events)" if lag else ""
        )
    return OK, f"{report.origin} is the origin, {sub.receiver} {doing}"


def problems(
    report: Status, limits: Thresholds = Thresholds()
) -> list[tuple[int, str]]:
    """Pure: everything wrong, each (WARNING or CRITICAL, what, and what to do).
    Critical: a node unreachable, the set locked, replication stopped (a slon not
    running or failing), PgBouncer left paused, lag over the critical threshold, a node
    a failover dropped back and open to the applications. The rest warns."""
    out: list[tuple[int, str]] = []
    fo = report.failed_over
    if fo:
        when = f" at {fo.at}" if fo.at else ""
        only = f", {fo.rows} write(s) only there" if fo.rows else ""
        todo = "inv lost-rows, then inv rejoin --yes"
        if fo.reachable and (fo.fenced_now or fo.fenced is False):
            how = "fenced now" if fo.fenced_now else "NOT fenced"
            return [
                (
                    CRITICAL,
                    f"{fo.host}, failed over{when}, is back and was open to the"
                    f" applications ({how}){only}; {fo.origin} is the origin: {todo}",
                )
            ]
        where = "fenced" if fo.reachable else "unreachable"
        return [
            (
                WARNING,
                f"{fo.origin} is the origin without a subscriber: {fo.host} failed"
                f" over{when}, out of the cluster ({where}){only}: {todo}",
            )
        ]
    for n in report.nodes:
        if not n.reachable and n.host == report.origin:
            out.append(
                (
                    CRITICAL,
                    f"the origin {n.host} is unreachable ({n.error}): once it is known"
                    " dead, inv failover",
                )
            )
        elif not n.reachable:
            out.append(
                (CRITICAL, f"{n.host} is unreachable ({n.error}): replication stopped")
            )
    if report.locked:
        out.append(
            (
                CRITICAL,
                f"set {report.set} locked on {', '.join(report.locked)}: application"
                " writes refused; inv switchover (or switchback) unlocks it",
            )
        )
    if report.paused:
        out.append(
            (
                CRITICAL,
                f"PgBouncer may be paused ({report.paused}): inv switchover (or"
                " switchback) resumes it",
            )
        )
    if report.origin is None:
        if all(n.reachable for n in report.nodes):
            out.append((WARNING, f"set {report.set} does not exist (inv migrate)"))
        return out
    if report.origins:
        out.append((WARNING, "a move is in flight (the nodes name different origins)"))
    if report.slonik:
        out.append((WARNING, "an interrupted switchover's slonik still runs"))
    sub = report.subscription
    if sub and not sub.exists:
        out.append((WARNING, f"{sub.receiver} is not subscribed (inv subscribe)"))
    if report.slons_error:
        out.append((WARNING, report.slons_error))
    stopped = [n for n, pid in report.slons.items() if not pid]
    if stopped:
        out.append(
            (
                CRITICAL,
                f"slon not running for {', '.join(stopped)}: replication stopped"
                " (inv slons)",
            )
        )
    out += [
        (CRITICAL, f"slon {n} fails: {e} (inv logs)")
        for n, e in report.slon_errors.items()
    ]
    lag = report.lag_of(sub.receiver) if sub and sub.active else None
    if lag and lag.seconds > limits.warning:
        level = CRITICAL if lag.seconds > limits.critical else WARNING
        limit = limits.critical if level == CRITICAL else limits.warning
        out.append(
            (
                level,
                f"lag to {lag.node} {lag.seconds} s ({lag.events} events), over"
                f" {limit:g} s",
            )
        )
    out += [
        (WARNING, f"superuser code on {host}: {len(found)} object(s) (inv preflight)")
        for host, found in report.superuser_code.items()
    ]
    return out


def perfdata(report: Status, limits: Thresholds = Thresholds()) -> str:
    """The figures after `|` (monitoring-plugin format): lag seconds and events to
    the subscriber, the initial copy's progress in percent."""
    sub = report.subscription
    lag = report.lag_of(sub.receiver) if sub else None
    data = []
    if lag:
        data.append(f"lag={lag.seconds}s;{limits.warning:g};{limits.critical:g};0")
        data.append(f"lag_events={lag.events};;;0")
    if sub and sub.exists:
        done = 100.0 if sub.active else (report.copy or {}).get("fraction", 0) * 100
        data.append(f"copy={done:.1f}%;;;0;100")
    return (" | " + " ".join(data)) if data else ""


def label(value: object) -> str:
    """A Prometheus label value, quoted."""
    text = str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return f'"{text}"'


def prometheus(reports: list[Status], limits: Thresholds = Thresholds()) -> str:
    """Pure: the status of one cluster or several in Prometheus' text format
    (node_exporter's textfile collector): one gauge per figure, labelled by cluster
    (and node or slon)."""
    gauges: dict[str, tuple[str, list[tuple[str, object]]]] = {
        "status": ("0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (as status --check)", []),
        "node_up": ("the node answers", []),
        "origin": ("the node is the set's origin", []),
        "set_locked": ("the set is locked there (application writes refused)", []),
        "slon_running": ("the slon (its watchdog) runs", []),
        "lag_seconds": ("age of the oldest event the node has not confirmed", []),
        "lag_events": ("events the node has not confirmed", []),
        "copy_ratio": ("how much of the initial copy is done, 0 to 1", []),
    }
    for report in reports:
        c = f"cluster={label(report.cluster)}"
        gauges["status"][1].append((c, check(report, limits)[0]))
        for n in report.nodes:
            node = f"{c},node={label(n.host)}"
            gauges["node_up"][1].append((node, int(n.reachable)))
            gauges["origin"][1].append((node, int(n.host == report.origin)))
            gauges["set_locked"][1].append((node, int(n.host in report.locked)))
        for k, v in report.slons.items():
            gauges["slon_running"][1].append((f"{c},slon={label(k)}", int(bool(v))))
        for l in report.lag or []:
            gauges["lag_seconds"][1].append((f"{c},node={label(l.node)}", l.seconds))
            gauges["lag_events"][1].append((f"{c},node={label(l.node)}", l.events))
        sub = report.subscription
        if sub and sub.exists:
            done = 1.0 if sub.active else (report.copy or {}).get("fraction", 0.0)
            gauges["copy_ratio"][1].append((f"{c},node={label(sub.receiver)}", done))
    lines = []
    for name, (what, samples) in gauges.items():
        if not samples:
            continue
        lines += [
            f"# HELP slony_migrate_{name} {what}",
            f"# TYPE slony_migrate_{name} gauge",
        ]
        lines += [f"slony_migrate_{name}{{{labels}}} {v}" for labels, v in samples]
    return "\n".join(lines)


def as_document(report: Status, limits: Thresholds = Thresholds()) -> dict:
    """The status as `--json` prints it (docs/json.md): ok, code, summary and errors
    first, then every field of Status."""
    code, line = check(report, limits)
    return {
        "ok": code == OK,
        "code": code,
        "summary": line,
        "errors": [text for _, text in problems(report, limits)]
        if code != UNKNOWN
        else [n.error for n in report.nodes],
        **asdict(report),
    }


FORMATS = ("text", "json", "check", "prometheus")


def shown(report: Status, form: str, limits: Thresholds) -> str:
    """The status in one of FORMATS: the operator's screen, one JSON object on one
    line, a monitoring plugin's line, Prometheus' text format."""
    if form == "json":
        return json.dumps(as_document(report, limits))
    if form == "check":
        return check(report, limits)[1]
    if form == "prometheus":
        return prometheus([report], limits)
    return format_status(report)


def show_status(
    s: Session,
    watch: float = 0,
    form: str = "text",
    limits: Thresholds = Thresholds(),
) -> int:
    """Print the status once, or every `watch` seconds until interrupted (Ctrl-C;
    --json: one object per line). The exit code: the monitoring plugin's with --check,
    0 for Prometheus (its figures say it), else 0 when all is well and 1 when
    `problems` names something (or no node answers)."""
    while True:
        report = status(s)
        code = check(report, limits)[0]
        s.out.result(shown(report, form, limits))
        if not watch:
            if form == "prometheus":  # the figures were printed: the state is in them
                return 0
            return code if form == "check" else int(code != OK)
        try:
            time.sleep(watch)
        except KeyboardInterrupt:  # how a watch ends: the last status's code
            return int(code != OK)
        if form == "text":
            s.out.result("")
        s.hosts.retry()  # each round is a new look: a host down before may be back
        # a node a failover dropped may have come back meanwhile
        s.fenced_now = returned.first_contact(s, to_stderr=True)


# --- every cluster on the pair (status --all) ----------------------------------------

SEVERITY = [OK, WARNING, UNKNOWN, CRITICAL]  # worst last


def state_of(report: Status) -> str:
    """One word or two for a cluster's state in the table of status --all."""
    sub = report.subscription
    if report.failed_over:
        return f"FAILED OVER ({report.failed_over.host} dropped)"
    if report.locked:
        return "SET LOCKED"
    if report.origins:
        return "MOVE IN FLIGHT"
    if not any(n.cluster_schema for n in report.nodes if n.reachable):
        return "not set up" if report.unreachable() is None else "unreachable"
    if report.origin is None:
        return "no set yet"
    if sub and sub.active:
        return "replicating"
    if sub and sub.exists:
        return "initial copy"
    return "not subscribed"


def format_all(
    master: str, slave: str, reports: list[Status], limits: Thresholds = Thresholds()
) -> str:
    """Pure: every cluster on the pair in one table, then what each that is not OK
    needs."""
    if not reports:
        return f"no cluster of slony-migrate on {master} or {slave}"
    head = ("cluster", "database", "origin", "subscriber", "state", "lag", "slons", "")
    rows = []
    notes = []
    for r in reports:
        code, text = verdict(r, limits)
        sub = r.subscription
        lag = r.lag_of(sub.receiver) if sub else None
        running = sum(1 for pid in r.slons.values() if pid)
        rows.append(
            (
                r.cluster,
                r.database,
                r.origin or "-",
                sub.receiver if sub else "-",
                state_of(r),
                f"{lag.seconds} s" if lag else "-",
                f"{running}/{len(r.slons)}" if r.slons else "?",
                LABELS[code],
            )
        )
        if code != OK:
            notes.append(f"  {r.cluster}: {text}")
    widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(len(head))]
    lines = [f"clusters on {master} and {slave}:"] + [
        "  " + "  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip()
        for row in [head, *rows]
    ]
    return "\n".join(lines + notes)


def check_all(
    reports: list[Status], limits: Thresholds = Thresholds()
) -> tuple[int, str]:
    """Pure: every cluster's verdict as one monitoring line, its code the worst one."""
    if not reports:
        return UNKNOWN, f"SLONY {LABELS[UNKNOWN]} - no cluster of slony-migrate found"
    found = [(r.cluster, *verdict(r, limits)) for r in reports]
    code = max((c for _, c, _ in found), key=SEVERITY.index)
    return code, f"SLONY {LABELS[code]} - " + "; ".join(
        f"{name} {LABELS[c]}: {text}" for name, c, text in found
    )


def shown_all(
    master: str, slave: str, reports: list[Status], form: str, limits: Thresholds
) -> str:
    """Every cluster on the pair in one of FORMATS (--json: one object, its clusters
    each as `as_document`)."""
    if form == "json":
        code, line = check_all(reports, limits)
        docs = [as_document(r, limits) for r in reports]
        return json.dumps(
            {
                "ok": code == OK,
                "code": code,
                "summary": line,
                "errors": [f"{d['cluster']}: {e}" for d in docs for e in d["errors"]],
                "clusters": docs,
            }
        )
    if form == "check":
        return check_all(reports, limits)[1]
    if form == "prometheus":
        return prometheus(reports, limits)
    return format_all(master, slave, reports, limits)


def show_all(
    s: Session,
    watch: float = 0,
    form: str = "text",
    limits: Thresholds = Thresholds(),
) -> int:
    """status --all: every cluster of slony-migrate on the master and the slave
    (clusters.on_hosts) at once, as show_status shows one; the worst cluster's code."""
    cl = s.cluster
    while True:
        reports = []
        for found in clusters.on_hosts(s):
            x = clusters.session_for(s, found)
            x.fenced_now = returned.first_contact(x, to_stderr=True)
            reports.append(status(x))
        code = check_all(reports, limits)[0]
        s.out.result(shown_all(cl.master.host, cl.slave.host, reports, form, limits))
        if not watch:
            if form == "prometheus":
                return 0
            return code if form == "check" else int(code != OK)
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return int(code != OK)
        if form == "text":
            s.out.result("")
        s.hosts.retry()


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
