"""Pure renderers of slonik scripts and of the libpq conninfo in them. No I/O: values
in, script text out, unit-tested to the letter. (The shell commands that run slonik:
render.shell; the switchover's psql scripts: render.move.)"""

from __future__ import annotations

from ..model import Cluster, Node, Table


def lit(value: str) -> str:
    """A slonik string literal: every value in every slonik script goes through here
    ('' for ')."""
    return "'" + str(value).replace("'", "''") + "'"


def slony_key(index: str) -> str | None:
    """The form of an index name that Slony's determineIdxnameUnique finds again (it
    reads the name as a `name`, 63 bytes, through slon_quote_input): as it is, unless
    it has a dot or starts with a double quote; then quoted, if that still fits. None
    when neither works."""
    if "." not in index and not index.startswith('"'):
        return index
    quoted = '"' + index.replace('"', '""') + '"'
    return quoted if len(quoted.encode()) <= 63 else None


def conninfo(cluster: Cluster, node: Node) -> str:
    """libpq conninfo of a node, without a password (libpq reads it from .pgpass),
    always encrypted."""
    root = f" sslrootcert={cluster.sslrootcert}" if cluster.sslrootcert else ""
    return (
        f"host={node.dbhost} port={node.port} dbname={cluster.database}"
        f" user={cluster.user} sslmode={cluster.sslmode}{root}"
    )


def slonik_preamble(cluster: Cluster, nodes: list[Node] | None = None) -> str:
    """The cluster's name and the admin conninfo of `nodes` (both, unless only some
    may be reached: slonik tries every node it is told of)."""
    lines = [f"cluster name = {cluster.name};"]
    lines += [
        f"node {n.id} admin conninfo = {lit(conninfo(cluster, n))};"
        for n in (nodes or cluster.nodes)
    ]
    return "\n".join(lines) + "\n"


def slonik_init(
    cluster: Cluster, *, init: bool, store_slave: bool, paths: list[tuple[int, int]]
) -> str:
    """Init cluster on the master, store the slave node, store the missing paths
    (server, client)."""
    m, s = cluster.master, cluster.slave
    body = []
    if init:
        body.append(f"init cluster (id = {m.id}, comment = {lit(f'master {m.host}')});")
    if store_slave:
        body.append(
            f"store node (id = {s.id}, comment = {lit(f'slave {s.host}')}, event node ="
            f" {m.id});"
        )
    for server, client in paths:
        body.append(
            f"store path (server = {server}, client = {client}, "
            f"conninfo = {lit(conninfo(cluster, cluster.node(server)))});"
        )
    return slonik_preamble(cluster) + "\n".join(body) + "\n"


def slonik_create_set(
    cluster: Cluster,
    tables: list[tuple[int, Table]],
    sequences: list[tuple[int, str]],
    *,
    create: bool,
) -> str:
    """Create the set (unless it exists) and add the given (id, table) and (id,
    sequence) pairs."""
    return (
        slonik_preamble(cluster)
        + "\n".join(
            set_body(
                cluster,
                cluster.set_id,
                cluster.master,
                tables,
                sequences,
                create=create,
            )
        )
        + "\n"
    )


def set_body(
    cluster: Cluster,
    sid: int,
    origin_node: Node,
    tables: list[tuple[int, Table]],
    sequences: list[tuple[int, str]],
    *,
    create: bool,
) -> list[str]:
    """CREATE SET (when asked) and SET ADD TABLE / SEQUENCE statements for set `sid`
    on its origin."""
    origin = origin_node.id
    body = []
    if create:
        body.append(
            f"create set (id = {sid}, origin = {origin}, comment ="
            f" {lit(f'slony-migrate {cluster.database}')});"
        )
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


def slonik_extend(
    cluster: Cluster,
    origin: Node,
    subscriber: Node,
    add_id: int,
    tables: list[tuple[int, Table]],
    sequences: list[tuple[int, str]],
    timeout: int,
) -> str:
    """Tables and sequences for a set that is subscribed already: a new set with them,
    subscribed the same way, then MERGE SET into the first (slonik waits for the new
    set's copy before merging).
    """
    sid = cluster.set_id
    return (
        slonik_preamble(cluster)
        + "\n".join(
            [
                *set_body(cluster, add_id, origin, tables, sequences, create=True),
                (
                    f"subscribe set (id = {add_id}, provider = {origin.id}, receiver ="
                    f" {subscriber.id}, forward = yes);"
                ),
                (
                    f"wait for event (origin = {origin.id}, confirmed = all, wait on ="
                    f" {origin.id}, timeout = {timeout});"
                ),
                f"merge set (id = {sid}, add id = {add_id}, origin = {origin.id});",
                (
                    f"wait for event (origin = {origin.id}, confirmed = all, wait on ="
                    f" {origin.id}, timeout = {timeout});"
                ),
            ]
        )
        + "\n"
    )


def slonik_execute_script(
    cluster: Cluster, origin: Node, path: str, timeout: int
) -> str:
    """DDL through Slony: run a SQL file on the origin, then on the subscriber in its
    place among the data."""
    return slonik_preamble(cluster) + (
        f"execute script (filename = {lit(path)}, event node = {origin.id});\n"
        # 2.2 logs the script in sl_log_script: the next SYNC carries it to the
        # subscriber.
        f"sync (id = {origin.id});\nwait for event (origin = {origin.id}, confirmed ="
        f" all, wait on = {origin.id}, timeout = {timeout});\n"
    )


def slonik_subscribe(
    cluster: Cluster, provider: Node | None = None, receiver: Node | None = None
) -> str:
    """Subscribe `receiver` (the slave) to the set from `provider` (the master)."""
    m, s = provider or cluster.master, receiver or cluster.slave
    return (
        slonik_preamble(cluster)
        + f"subscribe set (id = {cluster.set_id}, provider = {m.id}, receiver = {s.id},"
        " forward = yes);\n"
    )


def slonik_store_node(cluster: Cluster, node: Node, event_node: Node) -> str:
    """Store `node` (a database without the cluster's schema) as a node again, its
    configuration from `event_node`, and the paths both ways: a node dropped by a
    failover rejoins under its old id."""
    role = "master" if node == cluster.master else "slave"
    return (
        slonik_preamble(cluster)
        + f"store node (id = {node.id}, comment = {lit(f'{role} {node.host}')},"
        f" event node = {event_node.id});\n"
        + "".join(
            f"store path (server = {server.id}, client = {client.id}, conninfo ="
            f" {lit(conninfo(cluster, server))});\n"
            for server, client in ((node, event_node), (event_node, node))
        )
    )


def slonik_uninstall(cluster: Cluster, node_ids: list[int]) -> str:
    return slonik_preamble(cluster) + "".join(
        f"uninstall node (id = {i});\n" for i in node_ids
    )


def slonik_unlock_set(cluster: Cluster, origin: Node) -> str:
    return (
        slonik_preamble(cluster)
        + f"unlock set (id = {cluster.set_id}, origin = {origin.id});\n"
    )


def slonik_failover(cluster: Cluster, origin: Node, subscriber: Node) -> str:
    """Promote the subscriber (Slony's backup node) when the origin is dead. slonik is
    told of the subscriber only: it would try to reach the dead origin too (minutes
    when its packets are dropped)."""
    return (
        slonik_preamble(cluster, [subscriber])
        + f"failover (id = {origin.id}, backup node = {subscriber.id});\n"
    )


def slonik_drop_node(cluster: Cluster, node: Node, event_node: Node) -> str:
    """Drop a failed node from the cluster (after FAILOVER), told of the event node
    only."""
    return (
        slonik_preamble(cluster, [event_node])
        + f"drop node (id = {node.id}, event node = {event_node.id});\n"
    )
