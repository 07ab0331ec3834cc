"""The migration's settings and what is known of Slony's state, as typed values. Pure: no I/O."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import StepError
from .settings import DEFAULTS

IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
CLUSTER_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")


@dataclass(frozen=True)
class Node:
    """One database server: Slony node id, SSH name, and the name slon uses to reach PostgreSQL."""

    id: int
    host: str
    dbhost: str
    port: int = 5432

    @property
    def instance(self) -> str:
        """Name of this node's slon instance (Debian's convention: /etc/slony1/<instance>/)."""
        return f"node{self.id}"


@dataclass(frozen=True)
class Cluster:
    """Everything a step needs to know about the replication it works on."""

    master: Node
    slave: Node
    slon_host: str
    name: str = DEFAULTS["slony"]["cluster"]
    database: str = DEFAULTS["slony"]["database"]
    user: str = DEFAULTS["slony"]["user"]
    set_id: int = 1
    logdir: str = "/var/log/slony1"
    confdir: str = "/etc/slony1"
    rundir: str = "/var/run/slony1"

    @property
    def schema(self) -> str:
        return f"_{self.name}"

    @property
    def nodes(self) -> tuple[Node, Node]:
        return (self.master, self.slave)

    def node(self, node_id: int) -> Node:
        return {n.id: n for n in self.nodes}[node_id]


def make_cluster(
    master: str,
    slave: str,
    *,
    slon_host: str = "",
    name: str = DEFAULTS["slony"]["cluster"],
    database: str = DEFAULTS["slony"]["database"],
    user: str = DEFAULTS["slony"]["user"],
    port: int = DEFAULTS["slony"]["port"],
    master_dbhost: str = "",
    slave_dbhost: str = "",
    set_id: int = 1,
) -> Cluster:
    """Validate the operator's input and build a Cluster; raise StepError naming the bad value."""
    for what, host in (("--master", master), ("--slave", slave), ("--slon-host", slon_host or slave)):
        if not host or not HOST_NAME.fullmatch(host):
            raise StepError("input", f"{what} {host!r} is not a host name", "give an SSH host name such as db01")
    if master == slave:
        raise StepError("input", f"--master and --slave are both {master!r}", "give two different servers")
    if not CLUSTER_NAME.fullmatch(name):
        raise StepError(
            "input",
            f"cluster name {name!r} is invalid",
            "use at most 31 lower-case letters, digits or _, starting with a letter (no -)",
        )
    for what, value in (("database", database), ("replication user", user)):
        if not IDENT.fullmatch(value):
            raise StepError("input", f"{what} name {value!r} is invalid", "use a lower-case SQL identifier")
    if not 0 < port < 65536:
        raise StepError("input", f"port {port} is out of range", "give a TCP port such as 5432")
    return Cluster(
        master=Node(1, master, master_dbhost or master, port),
        slave=Node(2, slave, slave_dbhost or slave, port),
        slon_host=slon_host or slave,
        name=name,
        database=database,
        user=user,
        set_id=set_id,
    )


@dataclass(frozen=True)
class Table:
    """A table to replicate: fully qualified name and, without a primary key, the unique index to use."""

    name: str
    key: str | None = None


@dataclass
class SlonyState:
    """What of the cluster one node's database holds (its `_<cluster>` schema), as read by facts.slony_state."""

    schema: bool = False                                     # the _<cluster> schema exists
    nodes: set[int] = field(default_factory=set)
    paths: set[tuple[int, int]] = field(default_factory=set)  # (server, client)
    has_set: bool = False
    origin: int | None = None                                # the set's origin, as this node knows it
    tables: dict[str, int] = field(default_factory=dict)     # quoted name: table id
    sequences: dict[str, int] = field(default_factory=dict)  # quoted name: sequence id
    subscribed: bool | None = None                           # None: no subscription; False: copying; True: active
