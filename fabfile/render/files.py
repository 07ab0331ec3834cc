"""Pure renderers of files: managed blocks (pg_hba.conf, .pgpass), slon.conf, slon_tools.conf, watchdog.

No I/O here: every function takes values and returns text, so each is unit-tested to the letter.
"""
from __future__ import annotations

from ..model import Cluster, Node, Table
from .slonik import conninfo

BEGIN = "# BEGIN slony-migrate {} (managed block, do not edit)"
END = "# END slony-migrate {}"


class MarkerError(ValueError):
    """A file holds a managed block's BEGIN marker without its END marker."""


def apply_block(text: str, tag: str, lines: list[str], *, top: bool = False) -> str:
    """Put `lines` between BEGIN/END markers named `tag`; replace an existing block in place.

    A new block goes before the first rule (top=True, for first-match files such as pg_hba.conf)
    or at the end. Empty `lines` removes the block. The rest of the text is untouched, line endings
    included. A BEGIN marker without its END raises MarkerError rather than guess where the block ends.
    """
    begin, end = BEGIN.format(tag), END.format(tag)
    old = text.splitlines(keepends=True)
    bare = [l.rstrip("\r\n") for l in old]
    eol = "\r\n" if old and old[0].endswith("\r\n") else "\n"
    block = [l + eol for l in (begin, *lines, end)] if lines else []
    if begin in bare:
        i = bare.index(begin)
        if end not in bare[i:]:
            raise MarkerError(f"managed block {tag!r} has a BEGIN marker but no END marker")
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


def auth_method(version_num: int) -> str:
    """The password method of pg_hba.conf: SCRAM from PostgreSQL 10, md5 before."""
    return "scram-sha-256" if version_num >= 100000 else "md5"


def hba_lines(cluster: Cluster, addresses: list[str], method: str = "scram-sha-256") -> list[str]:
    """pg_hba.conf rules admitting the replication user from each slon host address: only encrypted
    (hostssl), one address each (/32 or /128), SCRAM (md5 before 10)."""
    return [
        f"hostssl    {cluster.database}    {cluster.user}    {addr}/{128 if ':' in addr else 32}    {method}"
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
