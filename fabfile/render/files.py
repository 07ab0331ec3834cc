"""Pure renderers of files: managed blocks (pg_hba.conf, .pgpass), slon.conf,
slon_tools.conf, watchdog.

No I/O here: every function takes values and returns text, so each is unit-tested to the
letter.
"""

from __future__ import annotations

import re

from .. import settings
from ..model import Cluster, Node, Table
from .slonik import conninfo

BEGIN = "# BEGIN slony-migrate {} (managed block, do not edit)"
END = "# END slony-migrate {}"
BEGINS, ENDS = BEGIN.split("{}")[0], END.split("{}")[0]  # any block's markers


class MarkerError(ValueError):
    """A file holds a managed block's BEGIN marker without its END marker."""


def apply_block(text: str, tag: str, lines: list[str], *, top: bool = False) -> str:
    """Put `lines` between BEGIN/END markers named `tag`; replace an existing block in
    place.

    A new block goes before the first rule (top=True, for first-match files such as
    pg_hba.conf) or at the end. Empty `lines` removes the block. The rest of the text is
    untouched, line endings included. A BEGIN marker without its END raises MarkerError
    rather than guess where the block ends.
    """
    begin, end = BEGIN.format(tag), END.format(tag)
    old = text.splitlines(keepends=True)
    bare = [l.rstrip("\r\n") for l in old]
    eol = "\r\n" if old and old[0].endswith("\r\n") else "\n"
    block = [l + eol for l in (begin, *lines, end)] if lines else []
    if begin in bare:
        i = bare.index(begin)
        if end not in bare[i:]:
            raise MarkerError(
                f"managed block {tag!r} has a BEGIN marker but no END marker"
            )
        j = bare.index(end, i)
        if any(l.startswith(BEGINS) for l in bare[i + 1 : j]):
            # an earlier version put another cluster's block inside this one
            raise MarkerError(
                f"managed block {tag!r} holds another managed block: replacing it would"
                " drop the other's lines"
            )
        return "".join(old[:i] + block + old[j + 1 :])
    if not lines:
        return text
    if old and not old[-1].endswith(("\n", "\r")):
        old[-1] += eol
    if top:
        at = next(
            (
                i
                for i, l in enumerate(bare)
                if l.strip() and not l.lstrip().startswith("#")
            ),
            len(old),
        )
        # never inside another managed block (another cluster's): before its BEGIN
        opened = [i for i, l in enumerate(bare[:at]) if l.startswith(BEGINS)]
        closed = [i for i, l in enumerate(bare[:at]) if l.startswith(ENDS)]
        if opened and (not closed or closed[-1] < opened[-1]):
            at = opened[-1]
        return "".join(old[:at] + block + old[at:])
    return "".join(old + block)


def managed_blocks(text: str) -> dict[str, list[str]]:
    """Every managed block of a file (as apply_block writes them): {tag: its lines}. A
    BEGIN without its END is left out (apply_block refuses to touch it)."""
    begin = re.compile(re.escape(BEGIN).replace(r"\{\}", "(?P<tag>.+)") + "$")
    blocks: dict[str, list[str]] = {}
    open_: list[tuple[str, list[str]]] = []  # nested: an earlier version's mistake
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        m = begin.fullmatch(line)
        if m:
            open_.append((m.group("tag"), []))
        elif open_ and line == END.format(open_[-1][0]):
            tag, lines = open_.pop()
            blocks[tag] = lines
        elif open_:
            open_[-1][1].append(line)
    return blocks


CLUSTER_TAG = (
    "cluster "  # the managed blocks of pg_hba.conf and .pgpass: "cluster <name>"
)


def hba_clusters(text: str) -> dict[str, tuple[str, str]]:
    """{cluster: (database, replication user)} of every cluster whose managed block
    (hba_lines) a pg_hba.conf holds: the clusters of slony-migrate on that server."""
    out = {}
    for tag, lines in managed_blocks(text).items():
        if not tag.startswith(CLUSTER_TAG):
            continue
        rule = next((l.split() for l in lines if l.startswith("host")), None)
        if rule and len(rule) >= 3:
            out[tag[len(CLUSTER_TAG) :]] = (rule[1], rule[2])
    return out


def auth_method(version_num: int) -> str:
    """The password method of pg_hba.conf: SCRAM from PostgreSQL 10, md5 before."""
    return "scram-sha-256" if version_num >= 100000 else "md5"


def hba_lines(
    cluster: Cluster, addresses: list[str], method: str = "scram-sha-256"
) -> list[str]:
    """pg_hba.conf rules admitting the replication user from each slon host address:
    only encrypted (hostssl), one address each (/32 or /128), SCRAM (md5 before 10)."""
    return [
        f"hostssl    {cluster.database}    {cluster.user}   "
        f" {addr}/{128 if ':' in addr else 32}    {method}"
        for addr in sorted(set(addresses))
    ]


def pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def pgpass_lines(cluster: Cluster, password: str) -> list[str]:
    """.pgpass lines for the replication user on every node (the file must be 0600)."""
    return [
        ":".join(
            pgpass_escape(str(v))
            for v in (n.dbhost, n.port, cluster.database, cluster.user, password)
        )
        for n in cluster.nodes
    ]


def slon_conf(cluster: Cluster, node: Node) -> str:
    """slon's own config file for one node (slon -f): conninfo stays out of the
    process list. Its sessions look for a deadlock only after settings.MOVE_DEADLOCK:
    when it applies MOVE SET on the new origin and an autovacuum closes a deadlock with
    it, the autovacuum is cancelled (it retries by itself), not slon's worker (slon
    would restart it only 10 s later, with every write refused meanwhile)."""
    deadlock = round(settings.MOVE_DEADLOCK * 1000)
    return (
        "# slon configuration written by slony-migrate; no password here: libpq reads"
        " ~/.pgpass\n"
        f"cluster_name='{cluster.name}'\n"
        f"conn_info='{conninfo(cluster, node)} options=-cdeadlock_timeout={deadlock}'\n"
        f"pid_file='{cluster.slon_pidfile(node)}'\n"
        "log_level=0\n"
        "log_timestamp=true\n"
        # Measured by make bench (docs/benchmarks.md): with 2000/10000, slon notices new
        # events only every 10 s when idle, and MOVE SET waits for that twice: writes
        # blocked 9.2 s instead of 3.6 s.
        "sync_interval=1000\n"
        "sync_interval_timeout=2000\n"
    )


def slon_timing(text: str, sync_interval: int, sync_interval_timeout: int) -> str:
    """slon.conf with sync_interval and sync_interval_timeout (ms) set, every other
    line unchanged."""
    lines = [
        l
        for l in text.splitlines()
        if not re.match(r"\s*sync_interval(_timeout)?\s*=", l)
    ]
    return (
        "\n".join(
            lines
            + [
                f"sync_interval={int(sync_interval)}",
                f"sync_interval_timeout={int(sync_interval_timeout)}",
            ]
        )
        + "\n"
    )


def slon_tools_conf(cluster: Cluster, tables: list[Table], sequences: list[str]) -> str:
    """/etc/slony1/slon_tools.conf for the altperl tools, valid Perl with no
    hand-editing.

    Lists are Perl array references ([...]) and keyed tables a hash reference, so the
    set is never silently empty (the runbook's @PKEYEDTABLES bug); no password: libpq
    reads ~/.pgpass.
    """
    q = lambda s: "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"  # noqa: E731
    out = [
        (
            "# Written by slony-migrate for the Slony-I altperl tools; do not edit by"
            " hand."
        ),
        f"$CLUSTER_NAME = {q(cluster.name)};",
        f"$LOGDIR = {q(cluster.logdir)};",
        f"$PIDFILE_DIR = {q(cluster.rundir)};",
        f"$MASTERNODE = {cluster.master.id};",
        "",
    ]
    for n in cluster.nodes:
        parent = f", parent => {cluster.master.id}" if n is not cluster.master else ""
        out.append(
            f"add_node(node => {n.id}, host => {q(n.dbhost)}, dbname =>"
            f" {q(cluster.database)}, port => {n.port}, user =>"
            f" {q(cluster.user)}{parent}, config =>"
            f" {q(cluster.slon_conf(n))});"
        )
    pkeyed = [t.name for t in tables if not t.key]
    keyed = [t for t in tables if t.key]
    out += [
        "",
        "$SLONY_SETS = {",
        f"    'set{cluster.set_id}' => {{",
        f"        'set_id' => {cluster.set_id},",
        "        'table_id' => 1,",
        "        'sequence_id' => 1,",
        "        'pkeyedtables' => [",
    ]
    out += [f"            {q(n)}," for n in pkeyed]
    out += ["        ],", "        'keyedtables' => {"]
    out += [f"            {q(t.name)} => {q(t.key)}," for t in keyed]
    out += ["        },", "        'sequences' => ["]
    out += [f"            {q(s)}," for s in sequences]
    out += ["        ],", "    },", "};", "1;", ""]
    return "\n".join(out)


def watchdog_script(cluster: Cluster, slon_bin: str) -> str:
    """A watchdog for one slon instance: restarts slon when it exits; one watchdog
    per instance (flock)."""
    return f"""#!/bin/sh
# slon watchdog written by slony-migrate. Usage: slon-watchdog INSTANCE (e.g. shop-node1).
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
stop() {{
    [ -n "$child" ] && kill "$child" 2>/dev/null && wait "$child"
    rm -f "$run/$instance.watchdog.pid"; exit 0
}}
trap stop TERM INT
while :; do
    echo "$(date '+%Y-%m-%d %H:%M:%S') watchdog: starting slon for $instance" >>"$log"
    {slon_bin} -f "$conf" >>"$log" 2>&1 </dev/null 9>&- &
    child=$!
    wait "$child"
    rc=$?
    echo "$(date '+%Y-%m-%d %H:%M:%S') watchdog: slon for $instance exited ($rc)," \\
         "restarting in 5 s" >>"$log"
    child=
    sleep 5
done
"""


# --- PgBouncer's configuration --------------------------------------------------------


class PoolerConfigError(ValueError):
    """pgbouncer.ini lacks what the switchover needs (the database's entry)."""


def ini_sections(text: str) -> dict[str, dict[str, str]]:
    """pgbouncer.ini as {section: {key: value}} (keys lower-case, ';' and '#'
    comments left out)."""
    sections: dict[str, dict[str, str]] = {}
    current = sections.setdefault("", {})
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip().lower(), {})
        elif "=" in line:
            key, value = line.split("=", 1)
            current[key.strip().lower()] = value.strip()
    return sections


CONNSTR_FIELD = re.compile(r"(?P<key>\w+)\s*=\s*(?P<value>'(?:[^'\\]|\\.|'')*'|\S+)")


def pooler_entry(text: str, database: str) -> dict[str, str] | None:
    """The [databases] entry of `database` in pgbouncer.ini as {key: value} (quotes
    removed), or None."""
    entry = ini_sections(text).get("databases", {}).get(database.lower())
    if entry is None:
        return None
    return {
        m.group("key").lower(): m.group("value").strip("'")
        for m in CONNSTR_FIELD.finditer(entry)
    }


def point_pooler(text: str, database: str, host: str, port: int) -> str:
    """pgbouncer.ini with the [databases] entry of `database` pointed at host:port,
    all else unchanged."""
    out, section, found = [], "", False
    for raw in text.splitlines(keepends=True):
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
        elif (
            section == "databases"
            and "=" in line
            and line[0] not in ";#"
            and line.split("=", 1)[0].strip().lower() == database.lower()
        ):
            name, fields = raw.split("=", 1)
            for key, value in (("host", host), ("port", str(int(port)))):
                if re.search(rf"(^|\s){key}\s*=", fields):
                    fields = re.sub(
                        rf"(^|\s){key}\s*=\s*('(?:[^'\\]|\\.|'')*'|\S+)",
                        rf"\g<1>{key}={value}",
                        fields,
                    )
                else:
                    fields = (
                        fields.rstrip("\r\n")
                        + f" {key}={value}"
                        + fields[len(fields.rstrip("\r\n")) :]
                    )
            raw, found = name + "=" + fields, True
        out.append(raw)
    if not found:
        raise PoolerConfigError(f"no entry for database {database} under [databases]")
    return "".join(out)
