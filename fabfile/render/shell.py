"""Pure renderers of shell commands for the hosts: PostgreSQL's client programs and how
they reach a node, and how slonik (or the switchover's psql) runs on the slon host,
bounded and stoppable. No I/O.
"""

from __future__ import annotations

import shlex

from ..model import Cluster, Node
from .slonik import conninfo

SAFE_OPTIONS = "-c search_path=pg_catalog"
"""Every session of the replication superuser resolves names in pg_catalog alone (and
names its own schema and the application's objects qualified): no function or operator
the application's owner put in another schema can stand in for a built-in one
(CVE-2018-1058), whatever search_path the database sets. As libpq's PGOPTIONS it
outranks every setting of the database and the role."""


def client_args(cluster: Cluster, node: Node) -> str:
    """psql's or pg_dump's options reaching a node's database as the replication user
    from the slon host: no prompt (libpq reads .pgpass); encryption and search_path come
    from client_env."""
    return (
        f"-w -h {shlex.quote(node.dbhost)} -p {int(node.port)} -U"
        f" {shlex.quote(cluster.user)} -d {shlex.quote(cluster.database)}"
    )


def client_env(cluster: Cluster) -> str:
    """The environment of every psql and pg_dump the slon host runs as the replication
    user: the same encryption, and search_path pg_catalog (SAFE_OPTIONS)."""
    root = f" PGSSLROOTCERT={cluster.sslrootcert}" if cluster.sslrootcert else ""
    return f"PGSSLMODE={cluster.sslmode}{root} PGOPTIONS='{SAFE_OPTIONS}'"


def newest_binary(name: str) -> str:
    """Shell that prints the path of the newest PostgreSQL's `name`
    (/usr/lib/postgresql/N/bin); nothing when there is none."""
    return f"ls /usr/lib/postgresql/*/bin/{name} 2>/dev/null | sort -V | tail -n 1"


PSQL = (
    f'"$({newest_binary("psql")} | grep . || echo psql)" '
    "-X -q -A -t -v ON_ERROR_STOP=1 -v VERBOSITY=terse -o /dev/null"
)
"""psql on the slon host: PostgreSQL's own binary where there is one (Debian's
wrapper takes 40 ms more), quiet, stopping at the first error; \\echo lines go to
stdout."""


def psql_on(cluster: Cluster, node: Node) -> str:
    """PSQL connected to a node's database as the replication user: what runs
    lock_set_script and move_set_script."""
    return f"{PSQL} -d {shlex.quote(conninfo(cluster, node))}"


def find_tool(tool: str) -> str:
    """Shell that prints the path of slon or slonik: on PATH (packages) or the newest
    in PostgreSQL's bindir (source build); nothing when there is none."""
    return f"command -v {tool} || {newest_binary(tool)}"


NO_SLONIK = "slonik is not installed"


def with_slonik(command: str) -> str:
    """`command` with $slonik set to slonik's path (find_tool): the lookup costs no
    SSH command of its own. Exit code 127 and NO_SLONIK on stderr when there is none."""
    return (
        f'slonik=$({find_tool("slonik")}); [ -n "$slonik" ] || {{ echo "{NO_SLONIK}"'
        " >&2; exit 127; }; " + command
    )


def slonik_shell(
    slonik: str,
    timeout: float,
    pidfile: str,
    lock_timeout: float | None = None,
    on_failure: str = "",
    statement_timeout: float | None = None,
    program: str = "",
    deadlock_timeout: float | None = None,
    unfinished: str = "",
    connect_timeout: float | None = None,
) -> str:
    """The shell command that runs slonik (script on stdin) on the slon host, bounded
    and stoppable.

    slonik runs under `timeout` (its own process group: the pid file names it, so
    kill_group stops slonik for certain, also after the SSH connection that started it
    is gone). Its sessions (and on_failure's) have search_path pg_catalog
    (SAFE_OPTIONS). lock_timeout, statement_timeout, deadlock_timeout: PostgreSQL's, for
    slonik's own sessions (not the slons'), in seconds.
    on_failure: a slonik script run on the slon host when this one fails or times out
    (e.g. UNLOCK SET).
    connect_timeout: libpq's, for each of slonik's connections (a node that is dead
    and drops packets costs this, not the system's TCP timeout of minutes).
    program: what reads the script on stdin, if not slonik (psql_on, for lock_set_script
    and move_set_script).
    unfinished: a file that, still there when the program has ended, says it ended
    between the parts of its script (remote.Host.staged: the tool died): a failure (exit
    code 75), on_failure runs. on_failure's output goes nowhere: nobody may be reading
    it (settle checks what it did).
    """
    settings = {
        "lock_timeout": lock_timeout,
        "statement_timeout": statement_timeout,
        "deadlock_timeout": deadlock_timeout,
    }
    options = " ".join(
        [SAFE_OPTIONS]
        + [f"-c {k}={max(1, round(v * 1000))}" for k, v in settings.items() if v]
    )
    options = f"PGOPTIONS='{options}' "
    if connect_timeout:
        options += f"PGCONNECT_TIMEOUT={max(2, round(connect_timeout))} "
    # A background job reads /dev/null unless told otherwise: hand it our stdin (the
    # script) as fd 3.
    cmd = (
        f"exec 3<&0; {options}timeout -k 3 {timeout:g} {program or slonik} <&3 3<&- & "
        f"{{ echo $! > {pidfile}; }} 2>/dev/null; wait $!; rc=$?; rm -f {pidfile}"
    )
    if unfinished:
        mark = shlex.quote(unfinished)
        cmd += f"; if [ -e {mark} ]; then rm -f {mark}; [ $rc -ne 0 ] || rc=75; fi"
    if on_failure:
        cmd += (
            f"; [ $rc -eq 0 ] || printf '%s' {shlex.quote(on_failure)} |"
            f" PGOPTIONS='{SAFE_OPTIONS}' timeout 60 {slonik} >/dev/null 2>&1"
        )
    return cmd + "; exit $rc"


def kill_group(pid: int, signal: str = "TERM") -> str:
    """The shell command that signals slonik_shell's process group (the pid in its
    pid file), or the process alone if it leads none. `kill -s SIG -- -PGID` is the
    form dash's kill (sh on Debian) reads too: it refuses `kill -TERM -- -PGID`."""
    return f"kill -s {signal} -- -{int(pid)} 2>/dev/null || kill -s {signal} {int(pid)}"
