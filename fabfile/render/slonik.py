"""Pure renderers of slonik scripts, and of the switchover's psql scripts that stand in for slonik's lock set,
sync and move set. No I/O: values in, script text out, unit-tested to the letter."""
from __future__ import annotations

import shlex

from ..model import Cluster, Node, Table
from .sql import ident, literal


def lit(value: str) -> str:
    """A slonik string literal: every value in every slonik script goes through here ('' for ')."""
    return "'" + str(value).replace("'", "''") + "'"


def slony_key(index: str) -> str | None:
    """The form of an index name that Slony's determineIdxnameUnique finds again (it reads the name as
    a `name`, 63 bytes, through slon_quote_input): as it is, unless it has a dot or starts with a double
    quote; then quoted, if that still fits. None when neither works."""
    if "." not in index and not index.startswith('"'):
        return index
    quoted = '"' + index.replace('"', '""') + '"'
    return quoted if len(quoted.encode()) <= 63 else None


def conninfo(cluster: Cluster, node: Node) -> str:
    """libpq conninfo of a node, without a password (libpq reads it from .pgpass), always encrypted."""
    root = f" sslrootcert={cluster.sslrootcert}" if cluster.sslrootcert else ""
    return (f"host={node.dbhost} port={node.port} dbname={cluster.database} user={cluster.user} "
            f"sslmode={cluster.sslmode}{root}")


def client_args(cluster: Cluster, node: Node) -> str:
    """psql's or pg_dump's options reaching a node's database as the replication user from the slon host:
    no prompt (libpq reads .pgpass); encryption comes from ssl_env."""
    return (f"-w -h {shlex.quote(node.dbhost)} -p {int(node.port)} -U {shlex.quote(cluster.user)} "
            f"-d {shlex.quote(cluster.database)}")


def ssl_env(cluster: Cluster) -> str:
    """The same encryption for psql and pg_dump, as environment settings for a shell command."""
    root = f" PGSSLROOTCERT={cluster.sslrootcert}" if cluster.sslrootcert else ""
    return f"PGSSLMODE={cluster.sslmode}{root}"


def slonik_preamble(cluster: Cluster) -> str:
    lines = [f"cluster name = {cluster.name};"]
    lines += [f"node {n.id} admin conninfo = {lit(conninfo(cluster, n))};" for n in cluster.nodes]
    return "\n".join(lines) + "\n"


def slonik_init(cluster: Cluster, *, init: bool, store_slave: bool, paths: list[tuple[int, int]]) -> str:
    """Init cluster on the master, store the slave node, store the missing paths (server, client)."""
    m, s = cluster.master, cluster.slave
    body = []
    if init:
        body.append(f"init cluster (id = {m.id}, comment = {lit(f'master {m.host}')});")
    if store_slave:
        body.append(f"store node (id = {s.id}, comment = {lit(f'slave {s.host}')}, event node = {m.id});")
    for server, client in paths:
        body.append(
            f"store path (server = {server}, client = {client}, "
            f"conninfo = {lit(conninfo(cluster, cluster.node(server)))});"
        )
    return slonik_preamble(cluster) + "\n".join(body) + "\n"


def slonik_create_set(
    cluster: Cluster, tables: list[tuple[int, Table]], sequences: list[tuple[int, str]], *, create: bool
) -> str:
    """Create the set (unless it exists) and add the given (id, table) and (id, sequence) pairs."""
    return slonik_preamble(cluster) + "\n".join(
        set_body(cluster, cluster.set_id, cluster.master, tables, sequences, create=create)) + "\n"


def set_body(cluster: Cluster, sid: int, origin_node: Node, tables: list[tuple[int, Table]],
             sequences: list[tuple[int, str]], *, create: bool) -> list[str]:
    """CREATE SET (when asked) and SET ADD TABLE / SEQUENCE statements for set `sid` on its origin."""
    origin = origin_node.id
    body = []
    if create:
        body.append(f"create set (id = {sid}, origin = {origin}, comment = {lit(f'slony-migrate {cluster.database}')});")
    for tid, t in tables:
        key = f", key = {lit(slony_key(t.key))}" if t.key else ""
        body.append(
            f"set add table (set id = {sid}, origin = {origin}, id = {tid}, "
            f"fully qualified name = {lit(t.name)}{key}, comment = {lit(t.name)});"
        )
    for qid, name in sequences:
        body.append(
            f"set add sequence (set id = {sid}, origin = {origin}, id = {qid}, "
            f"fully qualified name = {lit(name)}, comment = {lit(name)});"
        )
    return body


def slonik_extend(cluster: Cluster, origin: Node, receiver: Node, add_id: int, tables: list[tuple[int, Table]],
                  sequences: list[tuple[int, str]], timeout: int) -> str:
    """Tables and sequences for a set that is subscribed already: a new set with them, subscribed the same
    way, then MERGE SET into the first (slonik waits for the new set's copy before merging)."""
    sid = cluster.set_id
    return slonik_preamble(cluster) + "\n".join([
        *set_body(cluster, add_id, origin, tables, sequences, create=True),
        f"subscribe set (id = {add_id}, provider = {origin.id}, receiver = {receiver.id}, forward = yes);",
        f"wait for event (origin = {origin.id}, confirmed = all, wait on = {origin.id}, timeout = {timeout});",
        f"merge set (id = {sid}, add id = {add_id}, origin = {origin.id});",
        f"wait for event (origin = {origin.id}, confirmed = all, wait on = {origin.id}, timeout = {timeout});",
    ]) + "\n"


def slonik_execute_script(cluster: Cluster, origin: Node, path: str, timeout: int) -> str:
    """DDL through Slony: run a SQL file on the origin, then on the subscriber in its place among the data."""
    return slonik_preamble(cluster) + (
        f"execute script (filename = {lit(path)}, event node = {origin.id});\n"
        # 2.2 logs the script in sl_log_script: the next SYNC carries it to the subscriber.
        f"sync (id = {origin.id});\n"
        f"wait for event (origin = {origin.id}, confirmed = all, wait on = {origin.id}, timeout = {timeout});\n")


def slonik_subscribe(cluster: Cluster) -> str:
    m, s = cluster.master, cluster.slave
    return slonik_preamble(cluster) + (
        f"subscribe set (id = {cluster.set_id}, provider = {m.id}, receiver = {s.id}, forward = yes);\n"
    )


def slonik_uninstall(cluster: Cluster, node_ids: list[int]) -> str:
    return slonik_preamble(cluster) + "".join(f"uninstall node (id = {i});\n" for i in node_ids)


def psql_arg(value: str) -> str:
    """An argument of a psql meta-command (\\connect), single-quoted as psql reads it."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def newest_binary(name: str) -> str:
    """Shell that prints the path of the newest PostgreSQL's `name` (/usr/lib/postgresql/N/bin); nothing
    when there is none."""
    return f"ls /usr/lib/postgresql/*/bin/{name} 2>/dev/null | sort -V | tail -n 1"


PSQL = (f"\"$({newest_binary('psql')} | grep . || echo psql)\" "
        "-X -q -A -t -v ON_ERROR_STOP=1 -v VERBOSITY=terse -o /dev/null")
"""psql on the slon host: PostgreSQL's own binary where there is one (Debian's wrapper takes 40 ms more),
quiet, stopping at the first error; \\echo lines go to stdout."""


def psql_on(cluster: Cluster, node: Node) -> str:
    """PSQL connected to a node's database as the replication user: what runs lock_set_script and
    move_set_script."""
    return f"{PSQL} -d {shlex.quote(conninfo(cluster, node))}"


LOCKED = "locked: the move may start"
"""The line lock_set_script ends with: the tool sends move_set_script only once it has seen it."""


def lock_set_script(cluster: Cluster, origin: Node, lock_timeout: float) -> str:
    """Switchover, phase 1, for the slon host's psql (psql_on the origin): LOCK SET on the origin (from
    now on its tables refuse writes), then a wait until every transaction older than the lock has ended;
    then it prints LOCKED.

    The statements slonik sends for `lock set` (slonik.c: slonik_lock_set), with its wait for older
    transactions done every 20 ms instead of every second; lock_timeout and statement_timeout bound
    each of them. Before LOCKED it writes the cluster's lock_mark, which move_set_script removes: a psql
    that ends with the mark still there ended between the two (the tool died), and the slon host then
    unlocks the set itself (slonik_shell's `unfinished`)."""
    schema, limit = ident(cluster.schema), max(1, round(lock_timeout * 1000))
    return "\n".join([
        f"\\echo step: LOCK SET on {origin.host}",
        f"SET lock_timeout = {limit};",
        f"SET statement_timeout = {limit};",
        "BEGIN;",
        f"LOCK TABLE {schema}.sl_config_lock;",
        f"SELECT {schema}.lockSet({cluster.set_id});",
        "SELECT pg_catalog.txid_snapshot_xmax(pg_catalog.txid_current_snapshot()) AS xmax \\gset",
        "COMMIT;",
        f"\\echo step: transactions older than the lock on {origin.host} to end",
        "SELECT format('DO $w$BEGIN WHILE pg_catalog.txid_snapshot_xmin(pg_catalog.txid_current_snapshot()) < %s "
        "LOOP PERFORM pg_sleep(0.02); END LOOP; END$w$', :'xmax') \\gexec",
        f"\\! : > {shlex.quote(cluster.lock_mark)}",
        f"\\echo {LOCKED}",
    ]) + "\n"


def move_set_script(cluster: Cluster, old: Node, new: Node, timeout: int) -> str:
    """Switchover, phase 2 (the set is locked), for the same psql after lock_set_script: a last SYNC on
    the old origin, a wait until the new origin has applied it, MOVE SET on the old origin. Before each
    part it echoes what it starts (`step: ...`). Without the lock's timeouts: only the wait has one.

    The wait decides: the move commits only once the new origin has confirmed all data up to the lock
    (a stuck receiver aborts the switchover with the set unlocked at the old origin). This is slonik's
    `sync; wait for event; move set` in one process, about 0.4 s quicker per move:
    - SYNC and MOVE SET are the statements slonik sends for them (slonik.c: slonik_sync,
      slonik_move_set), each in a transaction of its own; slon's own SYNCs are made the same way.
    - The wait asks the new origin itself, whose slon writes the confirmation as it applies the SYNC,
      every 20 ms; slonik's WAIT FOR EVENT asks the old origin, which learns of it only from its slon's
      next poll, once a second. The loop runs in the new origin's server, bounded by statement_timeout,
      and from PostgreSQL 14 on also ends when psql is gone (client_connection_check_interval).
    - slonik connects to every node as it starts (about 0.1 s for each script); this psql is connected
      to the old origin already, and started with the lock (no SSH command of its own).
    No wait after MOVE SET: the tool polls the new origin's catalog for the move instead."""
    schema = ident(cluster.schema)
    confirmed = (f"SELECT FROM {schema}.sl_confirm WHERE con_origin = {old.id} AND con_received = {new.id} "
                 "AND con_seqno >= %s")
    return "\n".join([
        f"\\! rm -f {shlex.quote(cluster.lock_mark)}",
        f"\\echo step: SYNC on {old.host}",
        "RESET lock_timeout;",
        "RESET statement_timeout;",
        "BEGIN;",
        f"LOCK TABLE {schema}.sl_event_lock;",
        f"SELECT {schema}.createEvent({literal(cluster.schema)}, 'SYNC') AS ev \\gset",
        "COMMIT;",
        f"\\echo step: {new.host} to confirm SYNC ({old.id},:ev) within {int(timeout)} s",
        f"\\connect {psql_arg(conninfo(cluster, new))}",
        f"SET statement_timeout = {int(timeout) * 1000};",
        "SELECT set_config(name, '1000', false) FROM pg_settings WHERE name = 'client_connection_check_interval';",
        f"SELECT format('DO $w$BEGIN WHILE NOT EXISTS ({confirmed}) LOOP PERFORM pg_sleep(0.02); END LOOP; "
        "END$w$', :'ev') \\gexec",
        f"\\echo step: MOVE SET on {old.host}",
        f"\\connect {psql_arg(conninfo(cluster, old))}",
        "BEGIN;",
        f"LOCK TABLE {schema}.sl_event_lock, {schema}.sl_config_lock;",
        f"SELECT {schema}.moveSet({cluster.set_id}, {new.id});",
        "COMMIT;",
    ]) + "\n"


def slonik_unlock_set(cluster: Cluster, origin: Node) -> str:
    return slonik_preamble(cluster) + f"unlock set (id = {cluster.set_id}, origin = {origin.id});\n"


def slonik_failover(cluster: Cluster, dead: Node, backup: Node) -> str:
    """Promote the backup node when the origin is dead, then drop the dead node from the cluster."""
    return slonik_preamble(cluster) + (
        f"failover (id = {dead.id}, backup node = {backup.id});\n"
        f"drop node (id = {dead.id}, event node = {backup.id});\n"
    )


def find_tool(tool: str) -> str:
    """Shell that prints the path of slon or slonik: on PATH (packages) or the newest in PostgreSQL's
    bindir (source build); nothing when there is none."""
    return f"command -v {tool} || {newest_binary(tool)}"


NO_SLONIK = "slonik is not installed"


def with_slonik(command: str) -> str:
    """`command` with $slonik set to slonik's path (find_tool): the lookup costs no SSH command of its own.
    Exit code 127 and NO_SLONIK on stderr when there is none."""
    return (f'slonik=$({find_tool("slonik")}); [ -n "$slonik" ] || {{ echo "{NO_SLONIK}" >&2; exit 127; }}; '
            + command)


def slonik_shell(slonik: str, timeout: float, pidfile: str, lock_timeout: float | None = None,
                 on_failure: str = "", statement_timeout: float | None = None, program: str = "",
                 deadlock_timeout: float | None = None, unfinished: str = "") -> str:
    """The shell command that runs slonik (script on stdin) on the slon host, bounded and stoppable.

    slonik runs under `timeout` (its own process group: the pid file names it, so kill_group stops
    slonik for certain, also after the SSH connection that started it is gone).
    lock_timeout, statement_timeout, deadlock_timeout: PostgreSQL's, for slonik's own sessions (not the
    slons'), in seconds.
    on_failure: a slonik script run on the slon host when this one fails or times out (e.g. UNLOCK SET).
    program: what reads the script on stdin, if not slonik (psql_on, for lock_set_script and move_set_script).
    unfinished: a file that, still there when the program has ended, says it ended between the parts of
    its script (remote.Host.staged: the tool died): a failure (exit code 75), on_failure runs.
    on_failure's output goes nowhere: nobody may be reading it (settle checks what it did).
    """
    settings = {"lock_timeout": lock_timeout, "statement_timeout": statement_timeout,
                "deadlock_timeout": deadlock_timeout}
    options = " ".join(f"-c {k}={max(1, round(v * 1000))}" for k, v in settings.items() if v)
    options = f"PGOPTIONS='{options}' " if options else ""
    # A background job reads /dev/null unless told otherwise: hand it our stdin (the script) as fd 3.
    cmd = (f"exec 3<&0; {options}timeout -k 3 {timeout:g} {program or slonik} <&3 3<&- & "
           f"{{ echo $! > {pidfile}; }} 2>/dev/null; wait $!; rc=$?; rm -f {pidfile}")
    if unfinished:
        mark = shlex.quote(unfinished)
        cmd += f"; if [ -e {mark} ]; then rm -f {mark}; [ $rc -ne 0 ] || rc=75; fi"
    if on_failure:
        cmd += f"; [ $rc -eq 0 ] || printf '%s' {shlex.quote(on_failure)} | timeout 60 {slonik} >/dev/null 2>&1"
    return cmd + "; exit $rc"


def kill_group(pid: int, signal: str = "TERM") -> str:
    """The shell command that signals slonik_shell's process group (the pid in its pid file), or the
    process alone if it leads none. `kill -s SIG -- -PGID` is the form dash's kill (sh on Debian) reads
    too: it refuses `kill -TERM -- -PGID`."""
    return f"kill -s {signal} -- -{int(pid)} 2>/dev/null || kill -s {signal} {int(pid)}"
