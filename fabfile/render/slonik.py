"""Pure renderers of slonik scripts. No I/O: values in, script text out, unit-tested to the letter."""
from __future__ import annotations

from ..model import Cluster, Node, Table


def conninfo(cluster: Cluster, node: Node) -> str:
    """libpq conninfo of a node, without a password: libpq reads it from .pgpass."""
    return f"host={node.dbhost} port={node.port} dbname={cluster.database} user={cluster.user}"


def slonik_preamble(cluster: Cluster) -> str:
    lines = [f"cluster name = {cluster.name};"]
    lines += [f"node {n.id} admin conninfo = '{conninfo(cluster, n)}';" for n in cluster.nodes]
    return "\n".join(lines) + "\n"


def slonik_init(cluster: Cluster, *, init: bool, store_slave: bool, paths: list[tuple[int, int]]) -> str:
    """Init cluster on the master, store the slave node, store the missing paths (server, client)."""
    m, s = cluster.master, cluster.slave
    body = []
    if init:
        body.append(f"init cluster (id = {m.id}, comment = 'master {m.host}');")
    if store_slave:
        body.append(f"store node (id = {s.id}, comment = 'slave {s.host}', event node = {m.id});")
    for server, client in paths:
        body.append(
            f"store path (server = {server}, client = {client}, "
            f"conninfo = '{conninfo(cluster, cluster.node(server))}');"
        )
    return slonik_preamble(cluster) + "\n".join(body) + "\n"


def slonik_create_set(
    cluster: Cluster, tables: list[tuple[int, Table]], sequences: list[tuple[int, str]], *, create: bool
) -> str:
    """Create the set (unless it exists) and add the given (id, table) and (id, sequence) pairs."""
    origin, sid = cluster.master.id, cluster.set_id
    body = []
    if create:
        body.append(f"create set (id = {sid}, origin = {origin}, comment = 'slony-migrate {cluster.database}');")
    for tid, t in tables:
        key = f", key = '{t.key}'" if t.key else ""
        body.append(
            f"set add table (set id = {sid}, origin = {origin}, id = {tid}, "
            f"fully qualified name = '{t.name}'{key}, comment = '{t.name}');"
        )
    for qid, name in sequences:
        body.append(
            f"set add sequence (set id = {sid}, origin = {origin}, id = {qid}, "
            f"fully qualified name = '{name}', comment = '{name}');"
        )
    return slonik_preamble(cluster) + "\n".join(body) + "\n"


def slonik_subscribe(cluster: Cluster) -> str:
    m, s = cluster.master, cluster.slave
    return slonik_preamble(cluster) + (
        f"subscribe set (id = {cluster.set_id}, provider = {m.id}, receiver = {s.id}, forward = yes);\n"
    )


def slonik_uninstall(cluster: Cluster, node_ids: list[int]) -> str:
    return slonik_preamble(cluster) + "".join(f"uninstall node (id = {i});\n" for i in node_ids)


def slonik_move_set(cluster: Cluster, old: Node, new: Node, timeout: int) -> str:
    """Switchover: lock the set on its origin, wait until the new origin has every event, move it."""
    sid = cluster.set_id
    wait = f"wait for event (origin = {old.id}, confirmed = {new.id}, wait on = {old.id}, timeout = {timeout});"
    return slonik_preamble(cluster) + "\n".join([
        f"lock set (id = {sid}, origin = {old.id});",
        f"sync (id = {old.id});",
        wait,
        f"move set (id = {sid}, old origin = {old.id}, new origin = {new.id});",
        wait,
    ]) + "\n"


def slonik_unlock_set(cluster: Cluster, origin: Node) -> str:
    return slonik_preamble(cluster) + f"unlock set (id = {cluster.set_id}, origin = {origin.id});\n"


def slonik_failover(cluster: Cluster, dead: Node, backup: Node) -> str:
    """Promote the backup node when the origin is dead, then drop the dead node from the cluster."""
    return slonik_preamble(cluster) + (
        f"failover (id = {dead.id}, backup node = {backup.id});\n"
        f"drop node (id = {dead.id}, event node = {backup.id});\n"
    )
