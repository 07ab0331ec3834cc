"""The migration's settings and what is known of Slony's state, as typed values. No
I/O but a file check."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .errors import StepError
from .settings import DEFAULTS

IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
CLUSTER_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
# Words a role or database must not be called: pg_hba.conf keywords, and PostgreSQL's
# reserved key words (an unquoted name in SQL). Names starting with pg_ are PostgreSQL's
# own roles.
HBA_KEYWORDS = {
    "all",
    "sameuser",
    "samerole",
    "samegroup",
    "replication",
    "public",
    "none",
}
RESERVED = set(
    """
all analyse analyze and any array as asc asymmetric authorization binary both case
cast check collate collation column concurrently constraint create cross
current_catalog current_date current_role current_schema current_time
current_timestamp current_user default deferrable desc distinct do else end except
false fetch for foreign freeze from full grant group having ilike in initially inner
intersect into is isnull join lateral leading left like limit localtime
localtimestamp natural not notnull null offset on only or order outer overlaps
placing primary references returning right select session_user similar some
symmetric system_user table tablesample then to trailing true union unique user
using variadic verbose when where window with
""".split()
)


@dataclass(frozen=True)
class Node:
    """One database server: Slony node id, SSH name, and the name slon uses to reach
    PostgreSQL."""

    id: int
    host: str
    dbhost: str
    port: int = 5432


@dataclass(frozen=True)
class Cluster:
    """Everything a step needs to know about the replication it works on."""

    master: Node
    slave: Node
    slon_name: str  # SSH name of the host that runs slon and slonik
    name: str = DEFAULTS["slony"]["cluster"]
    database: str = DEFAULTS["slony"]["database"]
    user: str = DEFAULTS["slony"]["user"]
    set_id: int = 1
    logdir: str = "/var/log/slony1"
    confdir: str = "/etc/slony1"
    rundir: str = "/var/run/slony1"
    # local file: the CA that signed the servers' certificates (verify-full)
    ssl_ca: str = ""
    # The files of an earlier slony-migrate, which named them by node only (one cluster
    # per slon host): kept for a cluster it made (clusters.resolve finds them).
    legacy: bool = False

    @property
    def schema(self) -> str:
        return f"_{self.name}"

    # --- the cluster's files on the slon host: every name holds the cluster's, so two
    # clusters on one slon host never share one (legacy: an earlier version's names).
    # Debian's convention for slon instances: /etc/slony1/<instance>/slon.conf,
    # /var/log/slony1/slon-<instance>.log, /var/run/slony1/<instance>.pid.

    def instance(self, node: Node) -> str:
        """Name of the node's slon instance: <cluster>-node<id> (node<id> legacy)."""
        return f"node{node.id}" if self.legacy else f"{self.name}-node{node.id}"

    def slon_conf(self, node: Node) -> str:
        """slon's configuration for the node (slon -f)."""
        return f"{self.confdir}/{self.instance(node)}/slon.conf"

    def parked_slon_conf(self, node: Node) -> str:
        """Where the node's slon.conf waits while a failover keeps the node out of the
        cluster: outside what Debian's slony1 service starts at boot
        (/etc/slony1/*/slon.conf)."""
        return f"{self.slon_conf(node)}.failed-over"

    def slon_log(self, node: Node) -> str:
        return f"{self.logdir}/slon-{self.instance(node)}.log"

    def slon_pidfile(self, node: Node) -> str:
        """Where slon itself writes its pid (slon.conf's pid_file)."""
        return f"{self.rundir}/{self.instance(node)}.pid"

    def watchdog_pidfile(self, node: Node) -> str:
        """Where the node's watchdog writes its pid (render.files.watchdog_script)."""
        return f"{self.rundir}/{self.instance(node)}.watchdog.pid"

    @property
    def tools_conf(self) -> str:
        """The altperl tools' configuration (Debian names a second cluster's
        slon_tools_<cluster>.conf)."""
        return f"{self.confdir}/slon_tools{'' if self.legacy else '_' + self.name}.conf"

    def mark(self, what: str) -> str:
        """A file of this cluster's in the configuration directory:
        <cluster>-<what> (<what> legacy)."""
        return f"{self.confdir}/{what if self.legacy else f'{self.name}-{what}'}"

    @property
    def identity_record(self) -> str:
        """The master's identity columns GENERATED ALWAYS (steps.identity)."""
        return self.mark("identity-always")

    @property
    def pooler_mark(self) -> str:
        """PgBouncer a switchover has (or may have) paused (endgame.pooler)."""
        return self.mark("pooler-paused")

    def ddl_file(self, digest: str) -> str:
        """A DDL file on its way through EXECUTE SCRIPT (steps.ddl)."""
        return f"{self.rundir}/ddl-{self.name}-{digest}.sql"

    @property
    def slonik_pidfile(self) -> str:
        """Where the slon host keeps the pid (and process group) of the slonik this
        tool runs."""
        return f"{self.rundir}/slonik-{self.name}.pid"

    @property
    def lock_mark(self) -> str:
        """Where the switchover's psql on the slon host notes that the set is locked
        and the move not yet begun (render.slonik.lock_set_script)."""
        return f"{self.rundir}/locked-{self.name}"

    @property
    def sslrootcert(self) -> str:
        """Where the slon host keeps the CA certificate (only with ssl_ca)."""
        return self.mark("root.crt") if self.ssl_ca else ""

    @property
    def sslmode(self) -> str:
        """verify-full with a CA (encrypted, the server's name checked); else require
        (encrypted only)."""
        return "verify-full" if self.ssl_ca else "require"

    @property
    def nodes(self) -> tuple[Node, Node]:
        return (self.master, self.slave)

    def node(self, node_id: int) -> Node:
        return {n.id: n for n in self.nodes}[node_id]

    def other(self, node: Node) -> Node:
        """The node that is not `node` (a cluster has two)."""
        return self.slave if node == self.master else self.master


def check_names(name: str, database: str, user: str) -> None:
    """StepError naming a cluster, database or replication role name the tool cannot
    use ("" for the database: none named, the task works on every one)."""
    if not CLUSTER_NAME.fullmatch(name):
        raise StepError(
            "input",
            f"cluster name {name!r} is invalid",
            "use at most 31 lower-case letters, digits or _, starting with a letter"
            " (no -)",
        )
    for what, value in (("database", database), ("replication user", user)):
        if what == "database" and not value:
            continue
        if not IDENT.fullmatch(value):
            raise StepError(
                "input",
                f"{what} name {value!r} is invalid",
                "use a lower-case SQL identifier",
            )
        if value in HBA_KEYWORDS | RESERVED or value.startswith("pg_"):
            raise StepError(
                "input",
                f"{what} name {value!r} is reserved (a pg_hba.conf keyword, an SQL key"
                " word or PostgreSQL's own)",
                f"choose another {what} name",
            )


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
    ssl_ca: str = "",
    any_database: bool = False,
) -> Cluster:
    """Validate the operator's input and build a Cluster; raise StepError naming the
    bad value. any_database: no database needed (a task over every database or
    cluster of the pair: the Cluster is their template)."""
    for what, host in (
        ("--master", master),
        ("--slave", slave),
        ("--slon-host", slon_host or slave),
    ):
        if not host or not HOST_NAME.fullmatch(host):
            raise StepError(
                "input",
                f"{what} {host!r} is not a host name",
                "give an SSH host name such as db01",
            )
    if master == slave:
        raise StepError(
            "input",
            f"--master and --slave are both {master!r}",
            "give two different servers",
        )
    if not database and not any_database:
        raise StepError(
            "input",
            "--database is required: no flag and no configuration names the database"
            " to move",
            "give --database NAME (or database in the configuration file)",
        )
    check_names(name, database, user)
    if not 0 < port < 65536:
        raise StepError(
            "input", f"port {port} is out of range", "give a TCP port such as 5432"
        )
    if ssl_ca and not os.path.isfile(os.path.expanduser(ssl_ca)):
        raise StepError(
            "input",
            f"ssl_ca {ssl_ca} does not exist",
            "give the CA certificate file that signed the servers' certificates"
            " (ssl_ca in the configuration file or SLONY_MIGRATE_SSL_CA), or leave it"
            " empty",
        )
    return Cluster(
        master=Node(1, master, master_dbhost or master, port),
        slave=Node(2, slave, slave_dbhost or slave, port),
        slon_name=slon_host or slave,
        name=name,
        database=database,
        user=user,
        set_id=set_id,
        ssl_ca=os.path.expanduser(ssl_ca) if ssl_ca else "",
    )


@dataclass(frozen=True)
class Table:
    """A table to replicate: fully qualified name and, without a primary key, the
    unique index to use."""

    name: str
    key: str | None = None


@dataclass
class SlonyState:
    """What of the cluster one node's database holds (its `_<cluster>` schema), as
    read by facts.slony_state."""

    schema: bool = False  # the _<cluster> schema exists
    nodes: set[int] = field(default_factory=set)
    paths: set[tuple[int, int]] = field(default_factory=set)  # (server, client)
    has_set: bool = False
    origin: int | None = None  # the set's origin, as this node knows it
    locked: bool = False  # LOCK SET holds the set (writes refused)
    tables: dict[str, int] = field(default_factory=dict)  # quoted name: table id
    sequences: dict[str, int] = field(default_factory=dict)  # quoted name: sequence id
    # None: no subscription; False: copying; True: active
    subscribed: bool | None = None


@dataclass(frozen=True)
class Role:
    """A role as pg_authid has it (facts.roles): what appdb copies, and the attributes
    it refuses to give (superuser, replication)."""

    name: str
    login: bool = False
    superuser: bool = False
    createdb: bool = False
    createrole: bool = False
    inherit: bool = True
    replication: bool = False
    bypassrls: bool = False
    connlimit: int = -1
    # '' none, 'infinity', or 'YYYY-MM-DD HH:MM:SS+00'; none and infinity are alike
    # (SQL cannot set none on a role that has one)
    valid_until: str = ""
    verifier: str = ""  # the stored password ('' none): a secret
    comment: str = ""

    def same(self, other: Role) -> bool:
        """Whether `other` is this role as appdb makes it: the same attributes and the
        same stored password (a password set by hand is stored with another salt)."""
        return self.differences(other) == []

    def differences(self, other: Role) -> list[str]:
        """What `other` (the role on the new server) has otherwise, in words; the
        password is never shown."""
        out = []
        for attr, word in (
            ("login", "LOGIN"),
            ("superuser", "SUPERUSER"),
            ("createdb", "CREATEDB"),
            ("createrole", "CREATEROLE"),
            ("inherit", "INHERIT"),
            ("replication", "REPLICATION"),
            ("bypassrls", "BYPASSRLS"),
        ):
            if getattr(self, attr) != getattr(other, attr):
                out.append(word if getattr(other, attr) else f"NO{word}")
        if self.connlimit != other.connlimit:
            out.append(f"CONNECTION LIMIT {other.connlimit} (master: {self.connlimit})")
        if (self.valid_until or "infinity") != (other.valid_until or "infinity"):
            out.append(
                f"VALID UNTIL {other.valid_until or 'none'}"
                f" (master: {self.valid_until or 'none'})"
            )
        if self.verifier != other.verifier:
            out.append(
                "no password"
                if not other.verifier
                else "another stored password (or the same password stored anew)"
            )
        return out


@dataclass(frozen=True)
class Membership:
    """`member` is a member of `group` (pg_auth_members). inherit and set: the grant's
    own options from PostgreSQL 16; None before (the member's INHERIT decides)."""

    group: str
    member: str
    admin: bool = False
    inherit: bool | None = None
    set: bool | None = None
