"""Pure renderers of slonik scripts. No I/O: values in, script text out, unit-tested to the letter."""
from __future__ import annotations

import shlex

from ..model import Cluster, Node, Table


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


def slonik_lock_set(cluster: Cluster, origin: Node) -> str:
    """Switchover, phase 1: lock the set on its origin (writes refused), wait for older transactions."""
    return slonik_preamble(cluster) + f"lock set (id = {cluster.set_id}, origin = {origin.id});\n"


def slonik_move_set(cluster: Cluster, old: Node, new: Node, timeout: int) -> str:
    """Switchover, phase 2 (the set is locked): a last SYNC, wait until the new origin has it, move the set.

    The wait before MOVE SET decides: the move commits only once the new origin has confirmed all data
    up to the lock (a stuck receiver aborts the switchover with the set unlocked at the old origin).
    No WAIT FOR EVENT after it: the tool polls the new origin's catalog for the move instead (every
    0.2 s, where slonik's waits poll once a second), so writes are blocked about a second less."""
    return slonik_preamble(cluster) + "\n".join([
        f"sync (id = {old.id});",
        f"wait for event (origin = {old.id}, confirmed = {new.id}, wait on = {old.id}, timeout = {timeout});",
        f"move set (id = {cluster.set_id}, old origin = {old.id}, new origin = {new.id});",
    ]) + "\n"


def slonik_unlock_set(cluster: Cluster, origin: Node) -> str:
    return slonik_preamble(cluster) + f"unlock set (id = {cluster.set_id}, origin = {origin.id});\n"


def slonik_failover(cluster: Cluster, dead: Node, backup: Node) -> str:
    """Promote the backup node when the origin is dead, then drop the dead node from the cluster."""
    return slonik_preamble(cluster) + (
        f"failover (id = {dead.id}, backup node = {backup.id});\n"
        f"drop node (id = {dead.id}, event node = {backup.id});\n"
    )


def slonik_shell(slonik: str, timeout: float, pidfile: str, lock_timeout: float | None = None,
                 on_failure: str = "", statement_timeout: float | None = None) -> str:
    """The shell command that runs slonik (script on stdin) on the slon host, bounded and stoppable.

    slonik runs under `timeout` (its own process group: the pid file names it, so `kill -- -PID`
    stops slonik for certain, also after the SSH connection that started it is gone).
    lock_timeout, statement_timeout: PostgreSQL's, for slonik's own sessions (not the slons'), in seconds.
    on_failure: a slonik script run on the slon host when this one fails or times out (e.g. UNLOCK SET).
    """
    settings = {"lock_timeout": lock_timeout, "statement_timeout": statement_timeout}
    options = " ".join(f"-c {k}={int(v * 1000)}" for k, v in settings.items() if v)
    options = f"PGOPTIONS='{options}' " if options else ""
    # A background job reads /dev/null unless told otherwise: hand it our stdin (the script) as fd 3.
    cmd = (f"exec 3<&0; {options}timeout -k 3 {timeout:g} {slonik} <&3 3<&- & "
           f"{{ echo $! > {pidfile}; }} 2>/dev/null; wait $!; rc=$?; rm -f {pidfile}")
    if on_failure:
        cmd += f"; [ $rc -eq 0 ] || printf '%s' {shlex.quote(on_failure)} | timeout 60 {slonik}"
    return cmd + "; exit $rc"
