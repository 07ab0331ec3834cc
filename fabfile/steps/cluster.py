"""Runbook steps 8 to 14: Slony's configuration, the cluster, the slon daemons, the
set, the subscription."""

from __future__ import annotations

import shlex
import time

from .. import facts, settings
from ..errors import StepError
from ..model import Cluster, Node, SlonyState, Table
from ..plan import Change, Command, Sql, apply, file_change, slonik_change
from ..render import files, slonik, sql
from ..replication import dropped, require_origin, states
from ..session import Session
from ..wait import poll, wait_until

WATCHDOG = "/usr/local/lib/slony-migrate/slon-watchdog"


# --- 8: configuration -----------------------------------------------------------------


def config(s: Session, keyed: frozenset[str] = frozenset()) -> None:
    """Write slon_tools.conf and each node's slon.conf on the slon host (no passwords in
    them).

    keyed: tables that get a primary key in this run before the set is made (migrate
    --add-keys).
    """
    step, cl, h = "config", s.cluster, s.slon_host
    tables, sequences = facts.replicable(s.master_host, cl, keyed)
    if cl.legacy:
        s.say(
            h.name,
            step,
            f"cluster {cl.name} keeps the files an earlier slony-migrate gave it"
            f" ({cl.tools_conf}, {cl.slon_conf(cl.master)}, instances"
            f" {', '.join(cl.instance(n) for n in cl.nodes)})",
        )
    changes = file_change(
        s, h, step, cl.tools_conf, files.slon_tools_conf(cl, tables, sequences)
    )
    for n in cl.nodes:
        old = h.read_file(cl.slon_conf(n))
        if old is None and h.read_file(cl.parked_slon_conf(n)) is not None:
            if n.id in dropped(states(s)[0]):
                s.say(
                    h.name,
                    step,
                    f"{cl.slon_conf(n)} is set aside while a failover keeps {n.host}"
                    " out of the cluster (inv rejoin puts it back)",
                )
                continue
            changes += restore_slon_conf(s, step, n, missing=True)
            continue
        changes += file_change(
            s, h, step, cl.slon_conf(n), files.slon_conf(cl, n), old=old, read=False
        )
    apply(s, changes)


def show_config(s: Session) -> None:
    """Print the configuration as the altperl tools read it
    (slony_show_configuration)."""
    s.out.line(
        s.slon_host.run(
            f"slony_show_configuration --config {shlex.quote(s.cluster.tools_conf)}",
            what="slony_show_configuration",
        ).stdout.rstrip("\n")
    )


# --- 9-11: cluster and daemons --------------------------------------------------------


def init_plan(cl: Cluster, master: SlonyState, slave: SlonyState) -> dict | None:
    """What init must still do, as slonik_init's arguments; None when the cluster is
    complete."""
    if slave.schema and not master.schema:
        raise StepError(
            cl.slave.host,
            f"schema {cl.schema} exists on the slave but not on the master "
            "(left over from an earlier attempt)",
            "run inv uninstall, then run again",
        )
    m, sl = cl.master.id, cl.slave.id
    # A path (server, client) is stored on its client first; slon spreads it to the
    # other node later.
    on_client = {m: master, sl: slave}
    paths = [(a, b) for a, b in ((m, sl), (sl, m)) if (a, b) not in on_client[b].paths]
    store_slave = sl not in master.nodes
    if master.schema and not store_slave and not paths:
        return None
    return {"init": not master.schema, "store_slave": store_slave, "paths": paths}


def init(s: Session) -> None:
    """Init cluster on the master, store the slave node and the paths both ways;
    no-op when done."""
    step, cl = "init", s.cluster
    plan = init_plan(
        cl, facts.slony_state(s.master_host, cl), facts.slony_state(s.slave_host, cl)
    )
    if plan is None:
        s.say(
            s.master_host.name,
            step,
            f"cluster {cl.name} initialised: nodes {cl.master.id}, {cl.slave.id} and "
            "paths both ways",
        )
        apply(s, pin_definers(s, step))
        apply(s, guard(s, step))
        return

    def check():
        if (
            init_plan(
                cl,
                facts.slony_state(s.master_host, cl),
                facts.slony_state(s.slave_host, cl),
            )
            is not None
        ):
            raise StepError(
                s.master_host.name,
                f"init left cluster {cl.name} incomplete",
                "read slonik's output",
            )

    apply(
        s,
        [
            slonik_change(
                s,
                step,
                slonik.slonik_init(cl, **plan),
                f"init cluster {cl.name} (schema {cl.schema}, nodes, paths)",
                then=check,
            )
        ],
    )
    apply(s, pin_definers(s, step))
    apply(s, guard(s, step, made=s.dry_run))


def guard(
    s: Session, step: str, nodes: list[Node] | None = None, made: bool = False
) -> list[Change]:
    """Changes installing the guard (render.sql.guard) on each node that holds the
    cluster's schema and lacks it; made: the schema is only about to be made (a dry
    run, a node stored again), so every node gets it."""
    cl = s.cluster
    changes = []
    for n in nodes or list(cl.nodes):
        h = s.node_host(n)
        if not made and (
            not facts.cluster_exists(h, cl) or facts.guard_installed(h, cl)
        ):
            continue
        changes.append(
            Change(
                n.host,
                step,
                "guard: should this node come back after a crash with no slon of its"
                " own (dropped by a failover), it refuses the applications' writes",
                Sql(sql.guard(cl.schema, cl.user, h.version_num), cl.database),
            )
        )
    return changes


def pin_definers(s: Session, step: str) -> list[Change]:
    """Slony's SECURITY DEFINER functions (logTrigger, denyAccess, getLocalNodeId, ...)
    run as the replication superuser with their caller's search_path: an application
    writing a row would have its own functions (a better-matching nextval in public)
    run as a superuser. Each node's get search_path pg_catalog, once after init and
    again where it is missing (Slony qualifies its own names)."""
    cl, changes = s.cluster, []
    for node in cl.nodes:
        h = s.node_host(node)
        if not facts.cluster_exists(h, cl):
            continue
        unpinned = facts.unpinned_definers(h, cl)
        if not unpinned:
            s.say(
                node.host,
                step,
                "Slony's SECURITY DEFINER functions resolve names in pg_catalog only",
            )
            continue
        changes.append(
            Change(
                node.host,
                step,
                f"pin search_path pg_catalog on Slony's {len(unpinned)} SECURITY DEFINER "
                "function(s): they run as the replication superuser when the application "
                "writes",
                Sql(sql.pin_search_path(unpinned), cl.database),
            )
        )
    return changes


def slons(s: Session, stop: bool = False) -> None:
    """Start a watchdog and slon per node on the slon host (never two per node); or
    stop them."""
    step, cl, h = "slons", s.cluster, s.slon_host
    if stop:
        apply(s, stop_slons(s, step))
        return
    slon = facts.slony_tool(h, "slon")
    if not slon:
        if not s.dry_run:
            raise StepError(
                h.name, "slon is not installed", "run the install (or build) step first"
            )
        slon = "/usr/bin/slon"  # install only showed what it would add
    changes = file_change(
        s, h, step, WATCHDOG, files.watchdog_script(cl, slon), mode="755"
    )
    for d in (cl.logdir, cl.rundir):
        if not facts.postgres_writable(h, d):
            changes.append(
                Change(
                    h.name,
                    step,
                    f"create {d} (owner postgres)",
                    Command(f"install -d -o postgres -g postgres -m 2775 {d}"),
                )
            )
    gone = dropped(states(s)[0])
    for n in cl.nodes:
        pid = facts.slon_running(h, cl, n)
        if n.id in gone:
            # its slon would take its own DROP NODE and uninstall Slony there, its log
            # (the writes only it has) with it
            s.say(
                h.name,
                step,
                f"slon for {cl.instance(n)} not started: {n.host} was dropped from the"
                " cluster by a failover (inv rejoin rebuilds it)",
            )
        elif pid:
            s.say(
                h.name, step, f"slon for {cl.instance(n)} running (watchdog pid {pid})"
            )
        else:
            if h.read_file(cl.slon_conf(n)) is None:
                changes += restore_slon_conf(s, step, n, missing=True)
            changes.append(start_slon(s, step, n))
    apply(s, changes)


def restore_slon_conf(
    s: Session, step: str, node: Node, missing: bool = False
) -> list[Change]:
    """The node's slon.conf as the config step writes it, where its slon and Debian's
    service find it again; the copy a failover set aside removed (rejoin, or a
    failover that did not go through). missing: the caller found no slon.conf."""
    cl, h = s.cluster, s.slon_host
    changes = file_change(
        s, h, step, cl.slon_conf(node), files.slon_conf(cl, node), read=not missing
    )
    parked = cl.parked_slon_conf(node)
    if h.read_file(parked) is not None:
        changes.append(
            Change(
                h.name,
                step,
                f"remove {parked} (set aside at the failover)",
                Command(f"rm -f {shlex.quote(parked)}"),
            )
        )
    return changes


def start_slon(s: Session, step: str, n: Node) -> Change:
    """A Change starting the watchdog (and so the slon) of one node on the slon host."""
    cl, h = s.cluster, s.slon_host
    return Change(
        h.name,
        step,
        f"start slon for {cl.instance(n)} with watchdog (log"
        f" {cl.slon_log(n)}, configuration {cl.slon_conf(n)})",
        Command(
            f"setsid -f {WATCHDOG} {cl.instance(n)} </dev/null >/dev/null 2>&1",
            "postgres",
        ),
        lambda: wait_until(
            lambda: facts.slon_running(h, cl, n),
            settings.SLON_START,
            h.name,
            f"slon watchdog for {cl.instance(n)} did not start",
            f"read {cl.slon_log(n)}",
        ),
    )


def stop_slons(s: Session, step: str, nodes: list[Node] | None = None) -> list[Change]:
    """Changes stopping each running slon watchdog (and its slon) on the slon host (of
    `nodes`, else both)."""
    cl, h = s.cluster, s.slon_host
    changes = []
    for n in nodes or cl.nodes:
        pid = facts.slon_running(h, cl, n)
        if pid is None:
            s.say(h.name, step, f"slon for {cl.instance(n)} is not running")
            continue
        changes.append(
            Change(
                h.name,
                step,
                f"stop slon for {cl.instance(n)} (watchdog {pid})",
                Command(f"kill -TERM {pid}"),
                lambda n=n, pid=pid: wait_until(
                    lambda: facts.slon_running(h, cl, n) is None,
                    settings.SLON_STOP,
                    h.name,
                    f"slon watchdog {pid} still running",
                    f"kill it by hand: sudo kill {pid}",
                ),
            )
        )
    return changes


def uninstall(s: Session) -> None:
    """Remove the cluster from both nodes (stop slons, UNINSTALL NODE); tables and
    data stay."""
    step, cl = "uninstall", s.cluster
    slons(s, stop=True)
    present = [
        n.id for n, h in zip(cl.nodes, s.node_hosts()) if facts.cluster_exists(h, cl)
    ]
    if not present:
        s.say(
            s.master_host.name,
            step,
            f"no {cl.schema} schema on either node; nothing to remove",
        )
        return

    def check():
        left = [h.name for h in s.node_hosts() if facts.cluster_exists(h, cl)]
        if left:
            raise StepError(
                ", ".join(left),
                f"schema {cl.schema} still present after uninstall",
                "read slonik's output",
            )

    apply(
        s,
        [
            slonik_change(
                s,
                step,
                slonik.slonik_uninstall(cl, present),
                f"uninstall node {', '.join(map(str, present))}",
                then=check,
            )
        ],
    )


# --- 12-14: set, subscription, logs ---------------------------------------------------


def allocate(wanted: list[int], used: set[int]) -> list[int]:
    """Keep each wanted id unless taken; give taken ones fresh ids above every used
    one."""
    out, taken = [], set(used)
    for i in wanted:
        if i in taken:
            i = max(taken | set(wanted)) + 1
        taken.add(i)
        out.append(i)
    return out


def set_plan(
    cl: Cluster, tables: list[Table], sequences: list[str], state: SlonyState
) -> tuple[list[tuple[int, Table]], list[tuple[int, str]]] | None:
    """The (id, table) and (id, sequence) pairs the set still lacks; None when it
    holds them all."""
    missing_t = [t for t in tables if t.name not in state.tables]
    missing_s = [q for q in sequences if q not in state.sequences]
    if state.has_set and not missing_t and not missing_s:
        return None
    t_ids = allocate(
        [tables.index(t) + 1 for t in missing_t], set(state.tables.values())
    )
    s_ids = allocate(
        [sequences.index(q) + 1 for q in missing_s], set(state.sequences.values())
    )
    return list(zip(t_ids, missing_t)), list(zip(s_ids, missing_s))


def create_set(s: Session, keyed: frozenset[str] = frozenset()) -> None:
    """Create the set with every table and sequence of the application's schemas
    (keyless: refuse).

    keyed: tables that get a primary key in this run before the set is made (migrate
    --add-keys).
    """
    step, cl = "create-set", s.cluster
    tables, sequences = facts.replicable(s.master_host, cl, keyed)
    state = facts.slony_state(s.master_host, cl)
    if (
        not state.schema and not s.dry_run
    ):  # in a dry run, init only showed what it would do
        raise StepError(
            s.master_host.name,
            f"cluster {cl.name} is not initialised",
            "run the init step first",
        )
    if (
        state.subscribed is not None
    ):  # subscribed already: what it lacks goes through a second set
        extend(s, step, require_origin(s))
        return
    plan = set_plan(cl, tables, sequences, state)
    if plan is None:
        s.say(
            s.master_host.name,
            step,
            f"set {cl.set_id} holds all {len(tables)} tables and "
            f"{len(sequences)} sequences",
        )
        return
    add_t, add_s = plan
    apply(
        s,
        [
            slonik_change(
                s,
                step,
                slonik.slonik_create_set(cl, add_t, add_s, create=not state.has_set),
                f"create set {cl.set_id}: add {len(add_t)} tables, {len(add_s)}"
                " sequences",
            )
        ],
    )


def extend(s: Session, step: str, origin: Node) -> None:
    """Add the application's tables and sequences that the set lacks (both nodes have
    them) through a new set, subscribed and then merged; no-op when the set holds
    them all."""
    cl = s.cluster
    subscriber = cl.other(origin)
    origin_host, subscriber_host = s.node_host(origin), s.node_host(subscriber)
    tables, sequences = facts.replicable(origin_host, cl)
    state = facts.slony_state(origin_host, cl)
    new_t = [t for t in tables if t.name not in state.tables]
    new_s = [q for q in sequences if q not in state.sequences]
    if not new_t and not new_s:
        s.say(
            origin.host,
            step,
            f"set {cl.set_id} holds all {len(tables)} tables and {len(sequences)}"
            " sequences",
        )
        return
    there = {name for _, name in facts.app_tables(subscriber_host, cl)} | set(
        facts.app_sequences(subscriber_host, cl)
    )
    missing = [name for name in [t.name for t in new_t] + new_s if name not in there]
    if missing:
        raise StepError(
            subscriber.host,
            f"{', '.join(missing)} exist on {origin.host} only: a set can only take "
            "what both nodes have",
            "create them on both through inv ddl --file, then run again",
        )
    sets, used_t, used_s = facts.slony_ids(origin_host, cl)
    add_id = max(sets) + 1
    t_ids = allocate([1] * len(new_t), used_t) if new_t else []
    s_ids = allocate([1] * len(new_s), used_s) if new_s else []
    script = slonik.slonik_extend(
        cl,
        origin,
        subscriber,
        add_id,
        list(zip(t_ids, new_t)),
        list(zip(s_ids, new_s)),
        settings.COPY_WAIT,
    )
    apply(
        s,
        [
            slonik_change(
                s,
                step,
                script,
                f"add {', '.join([t.name for t in new_t] + new_s)} to the replication:"
                f" set {add_id}, subscribed by {subscriber.host}, merged into set"
                f" {cl.set_id}",
                timeout=2 * settings.COPY_WAIT,
            )
        ],
    )


def subscribe(
    s: Session,
    wait: bool = True,
    timeout: int = settings.COPY_WAIT,
    copy_retries: int = settings.COPY_RETRIES,
) -> None:
    """Subscribe the slave to the set (forward = yes); refuse a receiver whose tables
    hold rows."""
    step, cl = "subscribe", s.cluster
    state = facts.slony_state(s.master_host, cl)
    if (
        not state.has_set and not s.dry_run
    ):  # in a dry run, create-set only showed what it would do
        raise StepError(
            s.master_host.name,
            f"set {cl.set_id} does not exist",
            "run the create-set step first",
        )
    if state.subscribed is None:
        full = facts.tables_with_rows(s.slave_host, cl.database, list(state.tables))
        if full:
            raise StepError(
                s.slave_host.name,
                f"receiver tables hold rows: {', '.join(full[:5])}"
                + (" ..." if len(full) > 5 else ""),
                "subscribing would empty them; check --master/--slave, or empty them on"
                " purpose",
            )
        for n in cl.nodes:
            if not facts.slon_running(s.slon_host, cl, n) and not s.dry_run:
                raise StepError(
                    s.slon_host.name,
                    f"slon for {cl.instance(n)} is not running",
                    "run the slons step first",
                )
        apply(s, copy_tuning(s, step, on=True))
        apply(
            s,
            [
                slonik_change(
                    s,
                    step,
                    slonik.slonik_subscribe(cl),
                    f"subscribe {s.slave_host.name} to set {cl.set_id}",
                )
            ],
        )
    if wait and not s.dry_run:
        wait_copied(s, timeout, copy_retries)
    if s.dry_run or facts.subscription_active(s.slave_host, cl):
        apply(s, copy_tuning(s, step, on=False))
    elif state.subscribed is not None:
        copied = facts.subscription_active(s.slave_host, cl)
        s.say(
            s.slave_host.name,
            step,
            f"subscribed to set {cl.set_id} "
            f"({'copy done' if copied else 'initial copy running'})",
        )


def copy_tuning(s: Session, step: str, on: bool) -> list[Change]:
    """The subscriber tuned for the initial copy (on: more memory and parallel workers
    for the index rebuilds, no wait for the WAL flush at each commit: a crash there
    only makes slon copy again), or put back once it is done; its slon restarted to
    take it. No change when it is already so."""
    cl, h = s.cluster, s.slave_host
    tuning = settings.COPY_TUNING
    have = set(
        facts.role_database_settings(h, cl.user, cl.database)
        if facts.database_exists(h, cl.database)
        else []
    )
    tuned = any(f"{k}={v}" in have for k, v in tuning.items())
    if on == tuned:
        return []
    what = ", ".join(f"{k} {v}" for k, v in tuning.items())
    change = Change(
        h.name,
        step,
        (
            f"tune {cl.user}'s sessions in {cl.database} for the initial copy: {what}"
            if on
            else f"put {cl.user}'s settings in {cl.database} back after the copy"
        ),
        Sql(sql.copy_tuning(cl.user, cl.database, tuning, on)),
    )
    if not facts.slon_running(s.slon_host, cl, cl.slave):
        return [change]
    return [change, *stop_slons(s, step, [cl.slave]), start_slon(s, step, cl.slave)]


def wait_copied(
    s: Session,
    timeout: float,
    copy_retries: int = settings.COPY_RETRIES,
    step: str = "subscribe",
    origin: Node | None = None,
    receiver: Node | None = None,
) -> None:
    """Wait for the initial copy to finish on the subscriber (`receiver`, the slave
    unless a node rejoins, from `origin`, the master's), showing its progress; a copy
    that fails is shown with slon's error, and after `copy_retries` failed attempts it
    is an error, not a wait.
    """
    cl = s.cluster
    origin, receiver = origin or cl.master, receiver or cl.slave
    origin_host, receiver_host = s.node_host(origin), s.node_host(receiver)
    start, shown = time.monotonic(), [0]

    def progress(active: bool, left: float) -> None:
        if not s.out.progress_due():
            return
        found = facts.copy_progress(
            origin_host, receiver_host, s.slon_host, cl, receiver
        )
        failed, error = found["retries"], found["error"] or "no error in the slon log"
        if failed > shown[0]:
            s.say(
                receiver.host,
                step,
                f"initial copy failed (attempt {failed}): {error}",
            )
            shown[0] = failed
        if failed >= copy_retries:
            raise StepError(
                receiver.host,
                f"the initial copy of set {cl.set_id} failed {failed} times: {error}",
                f"fix what slon says (inv logs --node {receiver.id}), then inv"
                f" {'rejoin' if step == 'rejoin' else 'subscribe --wait'}; slon keeps"
                " retrying meanwhile",
            )
        s.out.progress(receiver.host, step, f"initial copy: {found['line']}")

    done, _ = poll(
        lambda: facts.subscription_active(receiver_host, cl),
        every=settings.COPY_POLL,
        timeout=timeout,
        waiting=progress,
    )
    if not done:
        raise StepError(
            receiver.host,
            f"initial copy of set {cl.set_id} not finished after {timeout:g} s",
            f"inv status / inv logs --node {receiver.id}; run"
            f" {'rejoin' if step == 'rejoin' else 'subscribe --wait'} again",
        )
    s.say(
        receiver.host,
        step,
        f"initial copy of set {cl.set_id} done ({time.monotonic() - start:.0f} s "
        f"of waiting); {receiver.host} replicates",
    )


def logs(s: Session, node: int = 0, lines: int = 50, follow: bool = False) -> None:
    """Show (or follow) the slon logs on the slon host."""
    cl = s.cluster
    if node and node not in {n.id for n in cl.nodes}:
        raise StepError(
            "input",
            f"--node {node} is not a node of cluster {cl.name} ("
            + ", ".join(f"{n.id}: {n.host}" for n in cl.nodes)
            + ")",
            "give one of those ids, or leave --node out for both",
        )
    nodes = [cl.node(node)] if node else list(cl.nodes)
    paths = " ".join(shlex.quote(cl.slon_log(n)) for n in nodes)
    if follow:
        s.slon_host.follow(f"tail -n {lines} -F {paths}")
    else:
        s.out.line(
            s.slon_host.sudo(f"tail -n {lines} {paths}", what="tail").stdout.rstrip(
                "\n"
            )
        )
