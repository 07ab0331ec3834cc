"""After the runbook: status and copy progress, verify, switchover/switchback, failover, finish.

Status and verify only read. Switchover, failover and finish check first, act through slonik, then
prove the result on the servers (a refused write, a replicated write, sequence values).
"""
from __future__ import annotations

import time

from . import facts, render, steps
from .model import Node, StepError
from .remote import Host
from .render import literal
from .steps import Run

# --- status and copy progress ----------------------------------------------------------------------

def origin_of(run: Run) -> Node | None:
    """The set's origin, read from the first node that answers."""
    cl = run.cluster
    for h in run.node_hosts():
        try:
            state = facts.slony_state(h, cl)
        except StepError:
            continue
        if state.get("origin"):
            return cl.node(state["origin"])
    return None


def status(run: Run) -> dict:
    """Everything the operator needs on one screen, as a dict (also the --json output)."""
    cl = run.cluster
    report: dict = {"cluster": cl.name, "set": cl.set_id, "database": cl.database, "nodes": [], "origin": None,
                    "subscription": None, "slons": {}, "lag": None, "copy": None}
    states = {}
    for n, h in zip(cl.nodes, run.node_hosts()):
        try:
            states[n.id] = facts.slony_state(h, cl)
            report["nodes"].append({"id": n.id, "host": n.host, "reachable": True,
                                    "cluster_schema": states[n.id]["schema"]})
        except StepError as e:
            report["nodes"].append({"id": n.id, "host": n.host, "reachable": False, "error": e.line()})
    origin = next((s["origin"] for s in states.values() if s.get("origin")), None)
    if origin:
        report["origin"] = cl.node(origin).host
        receiver = cl.slave if origin == cl.master.id else cl.master
        sub = next((s["subscribed"] for s in states.values() if s["subscribed"] is not None), None)
        # sl_subscribe on the receiver says whether its copy is done.
        active = None
        if receiver.id in states and states[receiver.id]["schema"]:
            active = run.host(receiver.host).value(
                f"SELECT sub_active FROM {cl.schema}.sl_subscribe WHERE sub_set = {cl.set_id} "
                f"AND sub_receiver = {receiver.id}", cl.database) == "t"
        report["subscription"] = {"receiver": receiver.host, "exists": sub is not None or bool(active),
                                  "active": active}
        if origin in states:
            rows = run.host(cl.node(origin).host).psql(
                f"SELECT st_received, st_lag_num_events, coalesce(extract(epoch FROM st_lag_time), 0) "
                f"FROM {cl.schema}.sl_status", cl.database)
            report["lag"] = [{"node": cl.node(int(r[0])).host, "events": int(r[1]), "seconds": round(float(r[2]), 1)}
                             for r in rows]
        if origin == cl.master.id and report["subscription"]["exists"] and not active:
            report["copy"] = facts.copy_progress(run.master, run.slave, run.slon, cl)
    try:
        for n in cl.nodes:
            report["slons"][n.instance] = facts.slon_running(run.slon, cl, n.instance)
    except StepError as e:
        report["slons"] = {"error": e.line()}
    return report


def format_status(report: dict) -> str:
    lines = [f"cluster {report['cluster']}, set {report['set']}, database {report['database']}"]
    for n in report["nodes"]:
        state = ("unreachable: " + n["error"]) if not n["reachable"] else \
            ("in the cluster" if n["cluster_schema"] else "no Slony schema")
        lines.append(f"  node {n['id']} {n['host']}: {state}")
    lines.append(f"  origin: {report['origin'] or 'no set yet'}")
    sub = report["subscription"]
    if sub:
        what = "copy done, replicating" if sub["active"] else ("initial copy running" if sub["exists"]
                                                                else "not subscribed")
        lines.append(f"  subscription: {sub['receiver']}: {what}")
    for name, pid in report["slons"].items():
        lines.append(f"  slon {name}: " + (f"running (watchdog pid {pid})" if pid else "NOT running"))
    for lag in report["lag"] or []:
        lines.append(f"  lag to {lag['node']}: {lag['events']} events, {lag['seconds']} s")
    if report["copy"]:
        lines.append(f"  copy: {report['copy']['line']}")
    return "\n".join(lines)


# --- verify -----------------------------------------------------------------------------------------

CHUNK = 10000
SESSION = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 1;\n"


def table_keys(h: Host, run: Run) -> dict[str, list[tuple[str, str]]]:
    """Each replicated table's key columns (name, type) in index order, from sl_table's index."""
    cl = run.cluster
    rows = h.psql(f"""
SELECT quote_ident(t.tab_nspname) || '.' || quote_ident(t.tab_relname), quote_ident(a.attname),
       format_type(a.atttypid, a.atttypmod)
  FROM {cl.schema}.sl_table t
  JOIN pg_index i ON i.indexrelid = (quote_ident(t.tab_nspname) || '.' || quote_ident(t.tab_idxname))::regclass
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
 WHERE t.tab_set = {cl.set_id}
 ORDER BY 1, array_position(i.indkey::int2[], a.attnum)""", cl.database)
    keys: dict[str, list[tuple[str, str]]] = {}
    for table, col, typ in rows:
        keys.setdefault(table, []).append((col, typ))
    return keys


def checksum_sql(keys: dict[str, list[tuple[str, str]]], cutoffs: dict[str, str]) -> str:
    """One read-only snapshot: per table (per key chunk for integer keys) a row count and an md5."""
    parts = []
    for table, cols in sorted(keys.items()):
        order = ", ".join(c for c, _ in cols)
        rowmd5 = f"md5(coalesce(string_agg(md5(t::text), '' ORDER BY {order}), ''))"
        if len(cols) == 1 and cols[0][1] in ("integer", "bigint", "smallint"):
            k = cols[0][0]
            where = f" WHERE {k} <= {int(cutoffs[table])}" if cutoffs.get(table) not in (None, "") else ""
            parts.append(f"SELECT {literal(table)}, ({k} / {CHUNK})::text, count(*), {rowmd5} "
                         f"FROM {table} t{where} GROUP BY 2")
        else:
            parts.append(f"SELECT {literal(table)}, 'all', count(*), {rowmd5} FROM {table} t")
    return (SESSION + "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
            + ";\n".join(parts) + ";\nCOMMIT;\n")


def checksums(h: Host, run: Run, keys, cutoffs) -> dict[tuple[str, str], tuple[str, str]]:
    rows = h.psql(checksum_sql(keys, cutoffs), run.cluster.database, timeout=3600)
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


SCHEMA_SQL = """
SELECT 'column', c.relnamespace::regnamespace || '.' || c.relname || '.' || a.attname,
       format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relkind IN ('r', 'p') AND c.relnamespace::regnamespace::text NOT IN
       ('pg_catalog', 'information_schema', 'pg_toast', {schema})
UNION ALL
SELECT 'index', schemaname || '.' || indexname, indexdef FROM pg_indexes
 WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', {schema})
ORDER BY 1, 2"""


def schema_of(h: Host, run: Run) -> set[tuple[str, str, str]]:
    cl = run.cluster
    return {tuple(r) for r in h.psql(SCHEMA_SQL.format(schema=literal(cl.schema)), cl.database)}


def schema_diff(run: Run, a: Host, b: Host) -> list[str]:
    sa, sb = schema_of(a, run), schema_of(b, run)
    return [f"{kind} {name} only on {a.name}: {d}" for kind, name, d in sorted(sa - sb)] + \
           [f"{kind} {name} only on {b.name}: {d}" for kind, name, d in sorted(sb - sa)]


def wait_for_sync(run: Run, origin: Host, origin_node: Node, receiver_node: Node, timeout: float = 120) -> None:
    """Wait until the receiver confirms a SYNC that the origin made after this call began."""
    cl = run.cluster
    since = origin.value(f"SELECT coalesce(max(ev_seqno), 0) FROM {cl.schema}.sl_event "
                         f"WHERE ev_origin = {origin_node.id}", cl.database)
    steps.wait_until(
        lambda: origin.value(
            f"SELECT 1 FROM {cl.schema}.sl_confirm WHERE con_origin = {origin_node.id} "
            f"AND con_received = {receiver_node.id} AND con_seqno > {since}", cl.database),
        timeout, receiver_node.host, f"no SYNC from {origin_node.host} confirmed",
        "check that both slons run (inv status), then run again", every=1)


def verify(run: Run, rounds: int = 3) -> list[str]:
    """Compare origin and receiver table by table, sequence by sequence, and their schemas.

    Rows committed after verify starts are left out (integer keys up to the origin's max at the
    start); a difference is reported only if it survives `rounds` SYNCs. Returns the differences.
    """
    step, cl = "verify", run.cluster
    origin_node = origin_of(run)
    if origin_node is None:
        raise StepError(run.master.name, f"set {cl.set_id} does not exist", "run inv migrate first")
    receiver_node = cl.slave if origin_node is cl.master else cl.master
    origin, receiver = run.host(origin_node.host), run.host(receiver_node.host)
    keys = table_keys(origin, run)
    cutoffs = {t: origin.value(f"SELECT max({cols[0][0]}) FROM {t}", cl.database)
               for t, cols in keys.items() if len(cols) == 1}
    seq_sql = (f"SELECT quote_ident(seq_nspname) || '.' || quote_ident(seq_relname), "
               f"(SELECT last_value FROM pg_sequences WHERE schemaname = seq_nspname AND sequencename = seq_relname) "
               f"FROM {cl.schema}.sl_sequence WHERE seq_set = {cl.set_id} ORDER BY 1")
    seq_origin = {r[0]: int(r[1] or 0) for r in origin.psql(seq_sql, cl.database)}
    differences: list[str] = []
    for attempt in range(1, rounds + 1):
        wait_for_sync(run, origin, origin_node, receiver_node)
        a, b = checksums(origin, run, keys, cutoffs), checksums(receiver, run, keys, cutoffs)
        bad_tables = sorted({k[0] for k in set(a) | set(b) if a.get(k) != b.get(k)})
        seq_receiver = {r[0]: int(r[1] or 0) for r in receiver.psql(seq_sql, cl.database)}
        bad_seqs = [s for s, v in seq_origin.items() if seq_receiver.get(s, -1) < v]
        differences = []
        for t in bad_tables:
            rows_a = sum(int(v[0]) for k, v in a.items() if k[0] == t)
            rows_b = sum(int(v[0]) for k, v in b.items() if k[0] == t)
            chunks = sum(1 for k in set(a) | set(b) if k[0] == t and a.get(k) != b.get(k))
            differences.append(f"table {t}: {rows_a} rows on {origin.name}, {rows_b} on {receiver.name}, "
                               f"{chunks} chunk(s) differ")
        differences += [f"sequence {s}: {seq_origin[s]} on {origin.name}, {seq_receiver.get(s)} on "
                        f"{receiver.name}" for s in bad_seqs]
        if not differences:
            break
        run.say(receiver.name, step, f"round {attempt}: {len(differences)} difference(s), waiting for a SYNC")
    differences += schema_diff(run, origin, receiver)
    if not differences:
        total = sum(int(v[0]) for v in a.values())
        run.say(receiver.name, step, f"{len(keys)} tables ({total} rows), {len(seq_origin)} sequences and the "
                f"schema match {origin.name}")
    return differences


# --- switchover, switchback ----------------------------------------------------------------------

LONG_XACTS = """
SELECT pid, datname, state, extract(epoch FROM now() - xact_start)::int
  FROM pg_stat_activity
 WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() AND backend_type = 'client backend'
   AND (now() - xact_start > make_interval(secs => {age}) OR state LIKE 'idle in transaction%')
UNION ALL
SELECT NULL, database, 'prepared ' || gid, extract(epoch FROM now() - prepared)::int FROM pg_prepared_xacts
ORDER BY 4 DESC"""


def long_transactions(h: Host, age: float) -> list[list[str]]:
    return h.psql(LONG_XACTS.format(age=float(age)))


def probe_write(h: Host, run: Run, table: str, key: str) -> str:
    """Try a row write on `table` in a transaction that is rolled back; return '' or the error."""
    sql = (f"BEGIN; UPDATE {table} SET {key} = {key} WHERE {key} = (SELECT min({key}) FROM {table}); ROLLBACK;")
    result = h.sudo(f"psql -X -q -v ON_ERROR_STOP=1 -d {run.cluster.database} -f -", user="postgres", stdin=sql,
                    check=False)
    return "" if result.ok else (result.stderr.strip().splitlines() or ["failed"])[0]


def owned_sequences(h: Host, run: Run) -> list[tuple[str, str, str]]:
    """(sequence, table, column) for each set sequence owned by a column."""
    cl = run.cluster
    return [tuple(r) for r in h.psql(f"""
SELECT quote_ident(s.seq_nspname) || '.' || quote_ident(s.seq_relname), d.refobjid::regclass::text,
       quote_ident(a.attname)
  FROM {cl.schema}.sl_sequence s
  JOIN pg_depend d ON d.objid = s.seq_reloid AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                  AND d.refclassid = 'pg_class'::regclass
  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
 WHERE s.seq_set = {cl.set_id}""", cl.database)]


def switchover(run: Run, to: Node, *, max_lag: float = 30, wait_lag: float = 60, xact_age: float = 60,
               wait_xacts: float = 30, timeout: int = 120) -> dict:
    """Move the set's origin to `to` (MOVE SET) with writes blocked as briefly as possible; prove it."""
    cl = run.cluster
    step = "switchover" if to is cl.slave else "switchback"
    old = origin_of(run)
    if old is None:
        raise StepError(run.master.name, f"set {cl.set_id} does not exist", "run inv migrate first")
    if old is to:
        run.say(to.host, step, f"{to.host} is already the origin of set {cl.set_id}; nothing to do")
        return {"moved": False}
    old_h, new_h = run.host(old.host), run.host(to.host)
    # Checks, all before anything is locked.
    report = status(run)
    down = next((n for n in report["nodes"] if not n["reachable"]), None)
    if down:
        raise StepError(down["host"], f"unreachable, so no switchover ({down['error']})",
                        "bring it back, or if the origin is dead for good: inv failover")
    if not report["subscription"] or not report["subscription"]["active"]:
        raise StepError(to.host, f"{to.host} is not an active subscriber of set {cl.set_id}",
                        "wait for the initial copy (inv status), then run again")
    dead = [n for n, pid in report["slons"].items() if not pid]
    if dead:
        raise StepError(run.slon.name, f"slon not running for {', '.join(dead)}", "run inv slons, then again")
    # sl_status lags by up to one idle SYNC interval (2 s) even when all is applied: a backlog of
    # events older than --max-lag refuses, after waiting up to --wait-lag for it to shrink. Then a
    # SYNC made from now on must come back confirmed: both slons are working right now.
    deadline = time.monotonic() + wait_lag
    while True:
        lag = next((l for l in report["lag"] or [] if l["node"] == to.host), None)
        if lag and (lag["events"] <= 1 or lag["seconds"] <= max_lag):
            break
        if time.monotonic() > deadline:
            raise StepError(to.host, f"lag {lag['seconds'] if lag else '?'} s ({lag['events'] if lag else '?'} "
                            f"events) is over {max_lag} s", "wait until inv status shows less lag, or raise --max-lag")
        run.say(to.host, step, f"lag {lag['seconds'] if lag else '?'} s is over {max_lag} s, waiting "
                f"({deadline - time.monotonic():.0f} s left)")
        time.sleep(3)
        report = status(run)
    wait_for_sync(run, old_h, old, to, timeout=60)
    run.say(to.host, step, f"lag {lag['seconds']} s ({lag['events']} events), a fresh SYNC confirmed")
    diff = schema_diff(run, old_h, new_h)
    if diff:
        raise StepError(to.host, f"schema differs from {old.host}: {diff[0]}" + (" ..." if len(diff) > 1 else ""),
                        "apply DDL through EXECUTE SCRIPT on both nodes, then run again")
    run.say(to.host, step, "schema identical on both nodes")
    deadline = time.monotonic() + wait_xacts
    while True:
        longs = long_transactions(old_h, xact_age)
        if not longs:
            break
        if time.monotonic() > deadline:
            first = longs[0]
            raise StepError(old.host, f"{len(longs)} long or idle-in-transaction session(s) would block LOCK SET "
                            f"(pid {first[0] or '-'} in {first[1]}, {first[2]}, {first[3]} s)",
                            "end them (pg_terminate_backend) or wait, then run again; nothing was locked")
        run.say(old.host, step, f"waiting for {len(longs)} long transaction(s) to end "
                f"({deadline - time.monotonic():.0f} s left)")
        time.sleep(2)
    run.say(old.host, step, f"no transaction older than {xact_age:.0f} s on {old.host}")
    t0 = time.monotonic()
    result = run.slonik(step, render.slonik_move_set(cl, old, to, timeout),
                        f"lock set {cl.set_id} on {old.host}, move it to {to.host}", timeout + 60, check=False)
    blocked = time.monotonic() - t0
    if result is None:
        return {"moved": False}
    if result.failed:
        unlock = run.slonik(step, render.slonik_unlock_set(cl, old), "unlock set", 120, check=False, quiet=True)
        detail = (result.stderr.strip().splitlines() or ["slonik failed"])[-1]
        raise StepError(old.host, f"move set failed ({detail}); " + (
            "set unlocked, writes go on at the old origin" if unlock.ok else "UNLOCK SET failed too"),
            "read the slon logs (inv logs), fix, then run again")
    run.say(run.slon.name, step, f"set {cl.set_id} moved to {to.host}; writes were blocked for at most "
            f"{blocked:.1f} s")
    proof = prove_origin(run, step, old_h, new_h)
    return {"moved": True, "blocked_seconds": round(blocked, 2), **proof}


def prove_origin(run: Run, step: str, old_h: Host, new_h: Host) -> dict:
    """After MOVE SET: a write on the old origin is refused, one on the new origin replicates back,
    and every sequence on the new origin is past the values used on the old one."""
    cl = run.cluster
    keys = table_keys(new_h, run)
    table = next(t for t, cols in sorted(keys.items()) if len(cols) == 1)
    key = keys[table][0][0]
    deadline = time.monotonic() + 60
    while not (refused := probe_write(old_h, run, table, key)) and time.monotonic() < deadline:
        time.sleep(1)
    if not refused:
        raise StepError(old_h.name, f"a write on {table} is still accepted after the move", "inv status; inv logs")
    run.say(old_h.name, step, f"write on {table} refused: {refused.split('ERROR:')[-1].strip()[:90]}")
    steps.wait_until(lambda: not probe_write(new_h, run, table, key), 60, new_h.name,
                     f"a write on {table} is still refused", "inv status; inv logs", every=1)
    run.say(new_h.name, step, f"write on {table} accepted")
    seqs = owned_sequences(new_h, run)
    if seqs:
        seq = seqs[0][0]
        value = int(new_h.value(f"SELECT nextval({literal(seq)})", cl.database))
        steps.wait_until(lambda: int(old_h.value(f"SELECT last_value FROM {seq}", cl.database)) >= value, 60,
                         old_h.name, f"{seq} = {value} did not replicate back from {new_h.name}",
                         "inv status; inv logs", every=1)
        run.say(old_h.name, step, f"{seq} = {value} from {new_h.name} replicated back")
    behind = []
    for seq, table_name, col in seqs:
        row = new_h.psql(f"SELECT (SELECT last_value FROM {seq}), (SELECT coalesce(max({col}), 0) FROM {table_name})",
                         cl.database)[0]
        if int(row[0]) < int(row[1] or 0):
            behind.append(f"{seq} = {row[0]} < max({table_name}.{col}) = {row[1]}")
    if behind:
        raise StepError(new_h.name, f"sequences behind their columns: {'; '.join(behind)}",
                        "setval them past the column maximum before writing")
    run.say(new_h.name, step, f"{len(seqs)} sequences past every value used on their columns")
    return {"write_refused_on_old": True, "write_replicated_back": bool(seqs), "sequences_ok": True}


# --- failover, finish --------------------------------------------------------------------------------

def failover(run: Run) -> dict:
    """Promote the slave when the master is dead: FAILOVER, DROP NODE; says what may be lost."""
    step, cl = "failover", run.cluster
    dead, backup = cl.master, cl.slave
    try:
        run.master.psql("SELECT 1")
        alive = True
    except StepError:
        alive = False
    if alive:
        raise StepError(dead.host, f"{dead.host} answers: failover would split the cluster",
                        "use inv switchover while the master is alive")
    state = facts.slony_state(run.slave, cl)
    if state.get("origin") == backup.id:
        run.say(backup.host, step, f"{backup.host} is already the origin; nothing to do")
        return {"promoted": False}
    last = run.slave.psql(f"SELECT max(ev_timestamp), extract(epoch FROM now() - max(ev_timestamp))::int "
                          f"FROM {cl.schema}.sl_event WHERE ev_origin = {dead.id}", cl.database)[0]
    run.say(backup.host, step, f"last event from {dead.host} at {last[0]} ({last[1]} s ago): transactions "
            f"committed on {dead.host} after that are lost")
    if run.slonik(step, render.slonik_failover(cl, dead, backup),
                  f"fail over set {cl.set_id} to {backup.host}, drop node {dead.id}") is None:
        return {"promoted": False}
    pid = facts.slon_running(run.slon, cl, dead.instance)
    if pid:
        run.slon.sudo(f"kill -TERM {pid}")
        run.say(run.slon.name, step, f"stopped slon for {dead.instance} (node dropped)")
    keys = table_keys(run.slave, run)
    table = next(t for t, cols in sorted(keys.items()) if len(cols) == 1)
    steps.wait_until(lambda: not probe_write(run.slave, run, table, keys[table][0][0]), 120, backup.host,
                     f"{backup.host} still refuses writes", "inv logs")
    run.say(backup.host, step, f"{backup.host} is the origin and accepts writes; rebuild {dead.host} to rejoin")
    return {"promoted": True, "last_event": last[0], "seconds_since": last[1]}


def finish(run: Run, drop_role: bool = False, force: bool = False) -> None:
    """After an accepted switchover: Slony out of both nodes, slons stopped, access and secrets removed."""
    step, cl = "finish", run.cluster
    origin = origin_of(run)
    if origin is cl.master and not force:
        raise StepError(cl.master.host, f"{cl.master.host} is still the origin", "run inv switchover first "
                        "(or --force to remove replication without moving)")
    steps.slons(run, stop=True)
    steps.uninstall(run)
    steps.hba(run, remove=True)
    steps.pgpass(run, step, remove=True)
    if drop_role:
        for h in run.node_hosts():
            if h.psql(f"SELECT 1 FROM pg_roles WHERE rolname = {literal(cl.user)}"):
                if run.change(h.name, step, f"drop role {cl.user}", f"DROP ROLE {cl.user}"):
                    h.psql(f"DROP ROLE {cl.user}")
    run.say(cl.slave.host if origin is not cl.master else cl.master.host, step,
            "replication removed; tables, data and sequences stay. Reconnect the application's pools "
            "(cached plans refer to the removed triggers).")
