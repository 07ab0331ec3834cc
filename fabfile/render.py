"""Pure renderers: slonik scripts, Slony config files, pg_hba and .pgpass blocks, SQL, SCRAM.

No I/O here: every function takes values and returns text, so each is unit-tested to the letter.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from .model import Cluster, Node

MASK = "********"
BEGIN = "# BEGIN slony-migrate {} (managed block, do not edit)"
END = "# END slony-migrate {}"


@dataclass(frozen=True)
class Table:
    """A table to replicate: fully qualified name and, without a primary key, the unique index to use."""

    name: str
    key: str | None = None


# --- SQL -------------------------------------------------------------------------------------------

def literal(value: str) -> str:
    """Quote a string as an SQL literal (standard_conforming_strings on)."""
    return "'" + value.replace("'", "''") + "'"


def ident(name: str) -> str:
    """Quote an identifier (always: a role may be named like a keyword, e.g. "user")."""
    return '"' + name.replace('"', '""') + '"'


# --- SCRAM-SHA-256 ----------------------------------------------------------------------------------

def scram_verifier(password: str, salt: bytes | None = None, iterations: int = 4096) -> str:
    """Return the SCRAM-SHA-256 verifier PostgreSQL stores for this password (RFC 5802/7677)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def scram_matches(verifier: str | None, password: str) -> bool:
    """True when a stored verifier was made from this password."""
    m = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+", verifier or "")
    if not m:
        return False
    try:
        salt = base64.b64decode(m.group(2), validate=True)
    except binascii.Error:
        return False
    return hmac.compare_digest(scram_verifier(password, salt, int(m.group(1))), verifier)


# --- managed blocks in text files -------------------------------------------------------------------

def apply_block(text: str, tag: str, lines: list[str], *, top: bool = False) -> str:
    """Put `lines` between BEGIN/END markers named `tag`; replace an existing block in place.

    A new block goes before the first rule (top=True, for first-match files such as pg_hba.conf)
    or at the end. Empty `lines` removes the block. The rest of the text is untouched, line endings
    included. A BEGIN marker without its END raises ValueError rather than guess where the block ends.
    """
    begin, end = BEGIN.format(tag), END.format(tag)
    old = text.splitlines(keepends=True)
    bare = [l.rstrip("\r\n") for l in old]
    eol = "\r\n" if old and old[0].endswith("\r\n") else "\n"
    block = [l + eol for l in (begin, *lines, end)] if lines else []
    if begin in bare:
        i = bare.index(begin)
        if end not in bare[i:]:
            raise ValueError(f"managed block {tag!r} has a BEGIN marker but no END marker")
        j = bare.index(end, i)
        return "".join(old[:i] + block + old[j + 1:])
    if not lines:
        return text
    if old and not old[-1].endswith(("\n", "\r")):
        old[-1] += eol
    if top:
        at = next((i for i, l in enumerate(bare) if l.strip() and not l.lstrip().startswith("#")), len(old))
        return "".join(old[:at] + block + old[at:])
    return "".join(old + block)


def hba_lines(cluster: Cluster, addresses: list[str]) -> list[str]:
    """pg_hba.conf rules admitting the replication user from each slon host address (/32, SCRAM)."""
    return [
        f"host    {cluster.database}    {cluster.user}    {addr}/32    scram-sha-256"
        for addr in sorted(set(addresses))
    ]


def pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def pgpass_lines(cluster: Cluster, password: str) -> list[str]:
    """.pgpass lines for the replication user on every node (the file must be 0600)."""
    return [
        ":".join(pgpass_escape(str(v)) for v in (n.dbhost, n.port, cluster.database, cluster.user, password))
        for n in cluster.nodes
    ]


# --- Slony ---------------------------------------------------------------------------------------

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


def slon_conf(cluster: Cluster, node: Node) -> str:
    """slon's own config file for one node (slon -f): conninfo stays out of the process list."""
    return (
        "# slon configuration written by slony-migrate; no password here: libpq reads ~/.pgpass\n"
        f"cluster_name='{cluster.name}'\n"
        f"conn_info='{conninfo(cluster, node)}'\n"
        f"pid_file='{cluster.rundir}/{node.instance}.pid'\n"
        "log_level=0\n"
        "log_timestamp=true\n"
        # Measured by make bench (docs/benchmarks.md): with 2000/10000, slon notices new events only
        # every 10 s when idle, and MOVE SET waits for that twice: writes blocked 9.2 s instead of 3.6 s.
        "sync_interval=1000\n"
        "sync_interval_timeout=2000\n"
    )


def slon_tools_conf(cluster: Cluster, tables: list[Table], sequences: list[str]) -> str:
    """/etc/slony1/slon_tools.conf for the altperl tools, valid Perl with no hand-editing.

    Lists are Perl array references ([...]) and keyed tables a hash reference, so the set is never
    silently empty (the runbook's @PKEYEDTABLES bug); no password: libpq reads ~/.pgpass.
    """
    q = lambda s: "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"  # noqa: E731
    out = [
        "# Written by slony-migrate for the Slony-I altperl tools; do not edit by hand.",
        f"$CLUSTER_NAME = {q(cluster.name)};",
        f"$LOGDIR = {q(cluster.logdir)};",
        f"$PIDFILE_DIR = {q(cluster.rundir)};",
        f"$MASTERNODE = {cluster.master.id};",
        "",
    ]
    for n in cluster.nodes:
        parent = f", parent => {cluster.master.id}" if n is not cluster.master else ""
        out.append(
            f"add_node(node => {n.id}, host => {q(n.dbhost)}, dbname => {q(cluster.database)}, "
            f"port => {n.port}, user => {q(cluster.user)}{parent}, "
            f"config => {q(f'{cluster.confdir}/{n.instance}/slon.conf')});"
        )
    pkeyed = [t.name for t in tables if not t.key]
    keyed = [t for t in tables if t.key]
    out += ["", "$SLONY_SETS = {", f"    'set{cluster.set_id}' => {{",
            f"        'set_id' => {cluster.set_id},", "        'table_id' => 1,", "        'sequence_id' => 1,",
            "        'pkeyedtables' => ["]
    out += [f"            {q(n)}," for n in pkeyed]
    out += ["        ],", "        'keyedtables' => {"]
    out += [f"            {q(t.name)} => {q(t.key)}," for t in keyed]
    out += ["        },", "        'sequences' => ["]
    out += [f"            {q(s)}," for s in sequences]
    out += ["        ],", "    },", "};", "1;", ""]
    return "\n".join(out)


def watchdog_script(cluster: Cluster, slon_bin: str) -> str:
    """A watchdog for one slon instance: restarts slon when it exits; one watchdog per instance (flock)."""
    return f"""#!/bin/sh
# slon watchdog written by slony-migrate. Usage: slon-watchdog INSTANCE (e.g. node1).
# One per instance (flock); restarts slon 5 s after it exits; stops on SIGTERM.
set -u
instance=$1
conf={cluster.confdir}/$instance/slon.conf
log={cluster.logdir}/slon-$instance.log
run={cluster.rundir}
exec 9>>"$run/$instance.lock"
flock -n 9 || {{ echo "a watchdog for $instance is already running" >&2; exit 1; }}
echo $$ > "$run/$instance.watchdog.pid"
child=
stop() {{ [ -n "$child" ] && kill "$child" 2>/dev/null && wait "$child"; rm -f "$run/$instance.watchdog.pid"; exit 0; }}
trap stop TERM INT
while :; do
    echo "$(date '+%Y-%m-%d %H:%M:%S') watchdog: starting slon for $instance" >>"$log"
    {slon_bin} -f "$conf" >>"$log" 2>&1 </dev/null 9>&- &
    child=$!
    wait "$child"
    rc=$?
    echo "$(date '+%Y-%m-%d %H:%M:%S') watchdog: slon for $instance exited ($rc), restarting in 5 s" >>"$log"
    child=
    sleep 5
done
"""


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


# --- initial copy progress ---------------------------------------------------------------------

COPY_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\S* \S+\s+\S+\s+(?:remoteWorkerThread_\d+: )?"
    r"(?:(?P<bytes>\d+) bytes copied for table (?P<table>\S+)"
    r"|Begin COPY of table (?P<begin>\S+)"
    r"|(?P<copyset>copy_set \d+ done in (?P<secs>[\d.]+) seconds))",
    re.M,
)
SET_START = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\S* \S+\s+\S+\s+copy_set (?P<set>\d+) - ", re.M)
RETRY = re.compile(r"data copy for set \d+ failed (\d+) times", re.M)


def plain(name: str) -> str:
    """"public"."t" and public.t both become public.t, for matching log lines with catalog names."""
    return name.replace('"', "")


def parse_copy_log(text: str) -> dict:
    """What the receiver's slon log says of the latest initial copy: start, tables done, current table."""
    starts = list(SET_START.finditer(text))
    if not starts:
        return {"started": None, "done": {}, "current": None, "finished": False, "retries": 0}
    last = starts[-1]
    tail = text[last.start():]
    done, current, finished = {}, None, False
    for m in COPY_LINE.finditer(tail):
        if m.group("table"):
            done[plain(m.group("table"))] = int(m.group("bytes"))
            current = None
        elif m.group("begin"):
            current = plain(m.group("begin"))
        elif m.group("copyset"):
            finished = True
    retries = [int(n) for n in RETRY.findall(text)]
    return {"started": last.group("ts"), "done": done, "current": current, "finished": finished,
            "retries": max(retries) if retries else 0}


def progress_line(sizes: dict[str, int], log: dict, current_bytes: int, elapsed: float) -> str:
    """One line: a bar, percent, MB copied of the origin's size, tables done, ETA, current table."""
    total = sum(sizes.values()) or 1
    done_bytes = sum(sizes.get(t, 0) for t in log["done"])
    copied = min(total, done_bytes + current_bytes)
    frac = copied / total
    bar = "#" * int(frac * 20) + "." * (20 - int(frac * 20))
    eta = f"ETA {elapsed * (1 - frac) / frac:.0f} s" if frac > 0.02 and elapsed > 0 else "ETA --"
    now = f", copying {log['current']}" if log["current"] else ""
    retry = f", {log['retries']} failed attempt(s) before" if log["retries"] else ""
    return (f"[{bar}] {frac * 100:3.0f}% {copied / 1e6:.0f}/{total / 1e6:.0f} MB, "
            f"{len(log['done'])}/{len(sizes)} tables, {eta}{now}{retry}")
