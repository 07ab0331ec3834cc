"""The thin Fabric layer: SSH connections as the operator's OpenSSH configuration says
(`ssh -G`), with checked host keys; commands, psql, files.

The only module that imports Fabric. Secrets and SQL go over stdin, never on a command
line. Queries that return rows go to one psql per host and database for the whole run
(PsqlPipe). Output is captured, never echoed (apart from `follow`, which streams to the
operator's terminal).
"""

from __future__ import annotations

import csv
import getpass
import io
import logging
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from types import SimpleNamespace

import paramiko
from fabric import Config, Connection
from invoke.exceptions import CommandTimedOut

from . import log, settings
from .errors import StepError
from .render import ssh as ssh_render
from .render.parse import RECORD, unaligned
from .render.shell import SAFE_OPTIONS

# paramiko's transport thread logs a failed connection with its traceback; Host.open
# says the same in one StepError line. The NullHandler keeps it from Python's last-resort
# handler (stderr); no propagation keeps it from any handler of the root logger.
_paramiko_log = logging.getLogger("paramiko")
_paramiko_log.addHandler(logging.NullHandler())
_paramiko_log.propagate = False
MAX_HOPS = 8  # ProxyJump hosts behind one another (a loop in an ssh config ends here)


class Chunks(io.StringIO):
    """Stdin for a remote command. Invoke reads a non-tty stream one byte per 10 ms;
    give it 64 KiB."""

    def read(self, size: int | None = -1) -> str:
        return super().read(65536)


def error_line(stderr: str, default: str = "failed") -> str:
    """The line of psql's stderr that says what went wrong (ERROR or FATAL), else its
    last line."""
    err = [l for l in stderr.splitlines() if l.strip()]
    return next(
        (l for l in err if "ERROR" in l or "FATAL" in l), err[-1] if err else default
    ).strip()


def psql_error(stderr: str) -> str:
    """psql's error line without what says nothing to the operator: `psql:<stdin>:N:
    ` before a server's error, `psql: ` before psql's own."""
    msg = error_line(stderr)
    where = re.match(r"psql:<stdin>:\d+: ", msg)
    return (msg[where.end() :] if where else msg.split(":", 2)[-1]).strip()


def guard(
    conn: Connection,
    strict_host_keys: bool,
    known_hosts: Sequence[str],
    global_known_hosts: Sequence[str] = (),
) -> None:
    """Check host keys against the known_hosts files the ssh config names; never
    forward the agent."""
    conn.forward_agent = False
    for path in map(os.path.expanduser, global_known_hosts):
        if os.path.isfile(path):
            conn.client.load_system_host_keys(path)
    for path in map(os.path.expanduser, known_hosts):
        if os.path.isfile(path):
            conn.client.load_host_keys(path)
    if strict_host_keys:
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())


def ssh_g(
    name: str, ssh_config: str = "", user: str = "", port: int | None = None
) -> dict[str, list[str]] | None:
    """OpenSSH's effective settings for `name` (`ssh -G`: it reads the config, Include
    and Match included, and does not connect); None when there is no ssh binary.
    StepError when ssh refuses the config or the name."""
    ssh = shutil.which("ssh")
    if ssh is None:
        return None
    command = [ssh, "-G", *(["-F", ssh_config] if ssh_config else [])]
    command += [*(["-l", user] if user else []), *(["-p", str(port)] if port else [])]
    try:
        done = subprocess.run(
            [*command, "--", name],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=settings.SSH_CONNECT,
        )
    except subprocess.TimeoutExpired:
        done = SimpleNamespace(returncode=-1, stderr="no answer (a Match exec?)")
    if done.returncode:
        said = [
            l
            for l in done.stderr.splitlines()
            if l.strip() and not l.startswith("Pseudo-terminal")
        ]
        raise StepError(
            name,
            f"ssh -G: {said[0] if said else f'exit code {done.returncode}'}",
            "correct the ssh config or the host name",
        )
    return ssh_render.parse_g(done.stdout)


def connection(
    name: str,
    ssh_config: str,
    strict_host_keys: bool,
    hop: ssh_render.Hop | None = None,
    gateway: Connection | None = None,
    depth: int = 0,
) -> Connection:
    """A checked Connection to `name` as OpenSSH would make it: hostname, port, user,
    identity files, known_hosts, ConnectTimeout and ProxyJump (each hop resolved the
    same way; the first as its own config says, each next one through the one before,
    as `ssh -J` does) or ProxyCommand. `hop`: a ProxyJump hop's own user and port;
    `gateway`: the hop before it."""
    if depth > MAX_HOPS:
        raise StepError(
            name,
            f"more than {MAX_HOPS} ProxyJump hosts behind one another",
            "look for a loop of ProxyJump in the ssh config",
        )
    ssh_config = os.path.expanduser(ssh_config)
    options = ssh_g(name, ssh_config, hop.user if hop else "", hop and hop.port)
    if options is None:  # no OpenSSH client here: Fabric's reading of the config
        return fabric_connection(name, ssh_config, strict_host_keys)
    t = ssh_render.target(name, options, getpass.getuser(), os.path.expanduser("~"))
    if gateway is None:
        for h in t.jumps:
            gateway = connection(
                h.host, ssh_config, strict_host_keys, h, gateway, depth + 1
            )
    timeout = t.connect_timeout or settings.SSH_CONNECT
    keys = [os.path.expanduser(f) for f in t.identity_files]
    conn = Connection(
        t.hostname,
        user=t.user,
        port=t.port,
        # no ssh config of Fabric's own: ssh -G has read it
        config=Config(ssh_config=paramiko.SSHConfig()),
        gateway=gateway or t.proxy_command or None,
        forward_agent=False,
        connect_timeout=timeout,
        connect_kwargs={
            "key_filename": [k for k in keys if os.path.isfile(k)],
            "look_for_keys": False,  # the files ssh -G named, defaults included
            "allow_agent": not t.identities_only,
            "banner_timeout": timeout,
            "auth_timeout": timeout,
        },
    )
    conn.original_host = name
    guard(conn, strict_host_keys, t.known_hosts, t.global_known_hosts)
    return conn


def fabric_connection(name: str, ssh_config: str, strict_host_keys: bool):
    """A checked Connection from Fabric's own reading of the ssh config (paramiko's:
    no Include, no Match exec): where there is no `ssh` binary to ask."""
    config = (
        Config(runtime_ssh_path=os.path.expanduser(ssh_config))
        if ssh_config
        else Config()
    )
    conn = Connection(
        name, config=config, connect_timeout=settings.SSH_CONNECT, forward_agent=False
    )
    hop = conn
    while isinstance(hop, Connection):
        hop.connect_kwargs.update(
            banner_timeout=settings.SSH_CONNECT, auth_timeout=settings.SSH_CONNECT
        )
        known = hop.ssh_config.get("userknownhostsfile", "~/.ssh/known_hosts")
        guard(hop, strict_host_keys, known.split())
        hop = hop.gateway
    return conn


def hops_of(conn: Connection) -> list[Connection]:
    """A connection and its ProxyJump gateways, the target first."""
    out = []
    while isinstance(conn, Connection):
        out.append(conn)
        conn = conn.gateway
    return out


def failure(e: Exception, conn: Connection, name: str) -> tuple[str, str]:
    """(what, fix) of a failed connection attempt: one form per kind of fault, naming
    the hop it failed at (the first one, from the far end of a ProxyJump, not
    connected)."""
    hops = hops_of(conn)
    hop = next((h for h in reversed(hops) if not h.is_connected), conn)
    where = f"{hop.host}:{hop.port}"
    via = "" if hop is conn else f"ProxyJump host {hop.original_host}: "
    if isinstance(e, paramiko.BadHostKeyException):
        return (
            f"{via}SSH host key differs from known_hosts ({where})",
            "verify the server's key, then correct known_hosts",
        )
    if isinstance(e, paramiko.AuthenticationException):
        return (
            f"{via}SSH authentication refused for user {hop.user}"
            + (" (no answer in time)" if "timeout" in str(e).lower() else ""),
            "check the user and key in your ssh config",
        )
    if isinstance(e, paramiko.ChannelException):  # the gateway could not reach it
        gw = hop.gateway.original_host
        return (
            f"host unreachable ({where} from ProxyJump host {gw}: {e.text})",
            f"check that the server is up and that {gw} may reach it",
        )
    if isinstance(e, paramiko.SSHException) and "not found in known_hosts" in str(e):
        return (
            f"{via}SSH host key unknown ({where})",
            f"verify it and add it to known_hosts (ssh {name} once)",
        )
    # "No existing session": the connect timeout ended before the banner's did
    if isinstance(e, (paramiko.SSHException, EOFError)) and (
        "banner" in str(e) or "No existing session" in str(e)
    ):
        return (
            f"{via}no SSH banner from {where} (not an SSH server?)",
            "check the Port in your ssh config and that sshd answers there",
        )
    if isinstance(e, paramiko.SSHException):
        return f"{via}SSH failed ({where}): {e}", "check the ssh config for this host"
    if isinstance(e, socket.gaierror):
        return (
            f"{via}unknown host name (resolving {hop.host} failed)",
            "check the name or add it to your ssh config",
        )
    causes = list(getattr(e, "errors", {}).values()) or [e]  # NoValidConnectionsError
    if all(isinstance(c, ConnectionRefusedError) for c in causes):
        return (
            f"{via}connection refused ({where})",
            "check that sshd runs there and the Port in your ssh config",
        )
    reason = (
        f"no answer within {hop.connect_timeout} s"
        if isinstance(e, TimeoutError)
        else causes[0].strerror or str(causes[0])
    )
    return (
        f"{via}host unreachable ({where}: {reason})",
        "check that the server is up and the network between",
    )


def as_user(user: str, command: str) -> str:
    """A shell command run as another user through non-interactive sudo (no password
    prompt)."""
    return f"sudo -n -H -u {user} -- sh -c {shlex.quote(command)}"


def no_delay(conn: Connection) -> None:
    """TCP_NODELAY on the SSH connection (and a ProxyJump gateway's), as OpenSSH sets
    it: without it each command waits about 40 ms for a delayed ACK (Nagle's algorithm),
    about 50 ms per command instead of 13.
    """
    hop = conn
    while isinstance(hop, Connection):
        sock = hop.client.get_transport().sock if hop.is_connected else None
        if isinstance(sock, socket.socket) and sock.family in (
            socket.AF_INET,
            socket.AF_INET6,
        ):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hop = hop.gateway


class LostPipe(Exception):
    """SSH failed while a query ran on a PsqlPipe: whether it took effect is not
    known."""


class PsqlPipe:
    """One psql for a whole run on one host and database, fed one query at a time over
    its stdin.

    A command over SSH costs about 50 ms and psql's start and login as much again; a
    query on a psql that is already connected costs about a millisecond. Each query
    starts from a clean session (DISCARD ALL: no role, setting or temporary object of
    the one before), a transaction it leaves open is rolled back at once, and psql stops
    at its first error, as a psql of its own would (ON_ERROR_STOP); such a psql is
    replaced by the next query. `query` returns None when the query never started (psql
    could not connect, or the connection was lost while idle): then nothing ran and the
    caller may run it another way.

    console: psql's options for PgBouncer's admin console instead of `database` on the
    local PostgreSQL (as CSV); the console knows neither DISCARD ALL nor ROLLBACK.
    """

    def __init__(self, conn: Connection, database: str, env: str, console: str = ""):
        self.mark = f"--slony-migrate {secrets.token_hex(8)} "
        self.console = console
        target = console or f"--csv -d {shlex.quote(database)}"
        psql = f"{env}exec psql -X -q -t -v ON_ERROR_STOP=1 {target} -f -"
        self.channel = conn.client.get_transport().open_session()
        self.channel.exec_command(as_user("postgres", psql))
        self.out = self.channel.makefile("rb")

    def alive(self) -> bool:
        return not self.channel.closed and not self.channel.exit_status_ready()

    def close(self) -> None:
        self.channel.close()

    def query(self, sql: str, timeout: float | None):
        """(ok, stdout, stderr) like a command's result, or None when the query never
        started. TimeoutError after `timeout` s; LostPipe when SSH fails after the query
        started.
        """
        self.started = False
        try:
            return self._query(sql, timeout)
        except TimeoutError:
            raise
        except (paramiko.SSHException, OSError, EOFError) as e:
            if not self.started:
                return None
            raise LostPipe(str(e) or type(e).__name__) from None

    def _query(self, sql: str, timeout: float | None):
        self.channel.settimeout(timeout)
        # ROLLBACK: what psql's exit did to a transaction the query left open (a warning
        # when none is)
        clean, end = ("", "") if self.console else ("DISCARD ALL;\n", ";\nROLLBACK;\n")
        self.channel.sendall(
            f"{clean}\\echo '{self.mark}started'\n{sql}\n{end}"
            f"\\echo '{self.mark}done'\n".encode()
        )
        lines: list[str] = []
        while True:
            line = self.out.readline().decode()
            if not line:  # psql ended: an error (ON_ERROR_STOP) or a lost connection
                if not self.started:
                    return None
                status = self.channel.recv_exit_status()
                err = b"".join(
                    iter(lambda: self.channel.recv_stderr(65536), b"")
                ).decode(errors="replace")
                return SimpleNamespace(
                    ok=False,
                    failed=True,
                    exited=status,
                    stdout="".join(lines),
                    stderr=err,
                )
            if line.startswith(self.mark):
                if line.strip().endswith("done"):
                    while (
                        self.channel.recv_stderr_ready()
                    ):  # notices: not kept, not left to fill the window
                        self.channel.recv_stderr(65536)
                    return SimpleNamespace(
                        ok=True,
                        failed=False,
                        exited=0,
                        stdout="".join(lines),
                        stderr="",
                    )
                self.started = True
            elif self.started:
                lines.append(line)


class Host:
    """One server reached over SSH, by the name the operator's ssh config knows it
    by."""

    def __init__(self, name: str, ssh_config: str = "", strict_host_keys: bool = True):
        self.name = name
        if ssh_config and not os.path.isfile(os.path.expanduser(ssh_config)):
            raise StepError(
                "config",
                f"ssh config {ssh_config} does not exist",
                "correct ssh_config (in the configuration file or SLONY_MIGRATE_SSH_CONFIG),"
                " or leave it empty for ~/.ssh/config",
            )
        self.conn = connection(name, ssh_config, strict_host_keys)
        # psql prints CSV (12 and newer); False after an older psql refused --csv
        self.csv = True
        self._version_num: int | None = None
        # the error of a connection attempt that failed (open): not tried again
        self._down: StepError | None = None
        self._connecting = threading.Lock()
        # database: its psql for this run (PsqlPipe)
        self._pipes: dict[str, PsqlPipe] = {}
        # one query at a time on a pipe, whichever thread asks
        self._pipe_lock = threading.Lock()

    @property
    def user(self) -> str:
        """The SSH user this host is reached as."""
        return self.conn.user

    def open(self) -> None:
        """Connect; StepError naming what failed. A host that failed to connect is not
        tried again in this run (until `retry`): its error comes back at once."""
        with self._connecting:  # one connection, whichever thread asks first
            if self.conn.is_connected:
                return
            if self._down:
                raise self._down
            try:
                self.conn.open()
                no_delay(self.conn)
            except (paramiko.SSHException, OSError, EOFError) as e:
                what, fix = failure(e, self.conn, self.name)
                for hop in hops_of(self.conn):  # no transport thread left behind
                    hop.client.close()
                self._down = StepError(self.name, what, fix)
                raise self._down from None

    def retry(self) -> None:
        """Let a host that failed to connect be tried again."""
        self._down = None

    def close(self) -> None:
        """Close the connection (a later command connects again, even after a
        failure)."""
        for pipe in self._pipes.values():
            pipe.close()
        self._pipes.clear()
        self.conn.close()
        self._down = None

    def run(
        self,
        command: str,
        *,
        stdin: str | None = None,
        check: bool = True,
        timeout: int | None = None,
        what: str = "",
    ):
        """Run a shell command; raise StepError with its stderr when it fails and
        check is set."""
        log.trace(self.name, "$ " + command)
        if not self.conn.is_connected:
            self.open()
        try:
            result = self.conn.run(
                command,
                hide=True,
                warn=True,
                timeout=timeout,
                in_stream=Chunks(stdin) if stdin is not None else False,
            )
        except CommandTimedOut:
            raise StepError(
                self.name,
                f"{what or command.split()[0]} timed out after {timeout} s",
                "look at the host's load and logs, then run again",
            ) from None
        if check and result.failed:
            detail = error_line(
                result.stderr.strip() or result.stdout.strip(),
                f"exit code {result.exited}",
            )
            if (
                "ERROR" in detail
            ):  # slonik and psql: what PostgreSQL said, without the echoed statement
                detail = "ERROR" + detail.split("ERROR", 1)[1]
            fix = (
                f"give {self.user} passwordless sudo on {self.name}"
                if "sudo: a password is required" in detail
                or "not in the sudoers" in detail
                else ""
            )
            raise StepError(
                self.name, f"{what or shlex.split(command)[0]} failed: {detail}", fix
            )
        return result

    def sudo(self, command: str, *, user: str = "root", **kw):
        """Run a command as another user through non-interactive sudo (no password
        prompt)."""
        return self.run(as_user(user, command), **kw)

    def staged(
        self,
        command: str,
        parts: Sequence[tuple[str, str, float]],
        *,
        user: str = "root",
    ):
        """Run a command (as `user`, as sudo does) whose stdin comes in parts: (text,
        marker, seconds). Each part is sent once the command's stdout has shown the one
        before's marker line, which must come within that part's seconds; stdin ends
        after the last part (its marker: ""). Should this tool die between parts, the
        command reads the end of its stdin (the SSH channel closes) and never gets the
        next part.

        The result as a command's (ok, failed, exited, stdout, stderr), `marks`: when
        each marker was seen (time.monotonic()), and `seen`: (when, line) of every
        line of stdout. A marker that does not come in time: exit code 124, as
        `timeout` says it, and the command is left to the caller to stop. StepError
        when SSH fails."""
        log.trace(
            self.name, f"{user}$ {command}\n" + "".join(text for text, _, _ in parts)
        )
        if not self.conn.is_connected:
            self.open()
        lines: list[str] = []
        marks: list[float] = []
        seen: list[tuple[float, str]] = []
        channel = None
        try:
            channel = self.conn.client.get_transport().open_session()
            channel.exec_command(as_user(user, command))
            out = channel.makefile("rb")
            for text, marker, seconds in parts:
                channel.sendall(text.encode())
                if not marker:
                    channel.shutdown_write()
                deadline = time.monotonic() + seconds
                while True:
                    channel.settimeout(max(0.001, deadline - time.monotonic()))
                    try:
                        line = out.readline().decode(errors="replace")
                    except TimeoutError:
                        return SimpleNamespace(
                            ok=False,
                            failed=True,
                            exited=124,
                            stdout="".join(lines),
                            stderr="",
                            marks=marks,
                            seen=seen,
                        )
                    if not line:
                        break
                    lines.append(line)
                    seen.append((time.monotonic(), line.rstrip("\n")))
                    if marker and line.rstrip("\n") == marker:
                        marks.append(time.monotonic())
                        break
                if (
                    not line
                ):  # the command ended (its last part, or an error before its marker)
                    break
            channel.settimeout(settings.SSH_GRACE)
            status = channel.recv_exit_status()
            err = b"".join(iter(lambda: channel.recv_stderr(65536), b"")).decode(
                errors="replace"
            )
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise StepError(
                self.name,
                f"SSH failed: {str(e) or type(e).__name__}",
                "check that the host answers",
            ) from None
        finally:
            if channel is not None:
                channel.close()
        return SimpleNamespace(
            ok=status == 0,
            failed=status != 0,
            exited=status,
            stdout="".join(lines),
            stderr=err,
            marks=marks,
            seen=seen,
        )

    @property
    def version_num(self) -> int:
        """server_version_num of this host's PostgreSQL (asked once): SQL that
        differs by version asks this."""
        if self._version_num is None:
            self._version_num = int(self.value("SHOW server_version_num"))
        return self._version_num

    def _psql(
        self,
        sql: str,
        database: str,
        timeout: int | None,
        csv_rows: bool,
        variables: dict | None,
        app: bool = False,
    ):
        if csv_rows:
            options = "-t --csv " if self.csv else f"-t -A -z -R {shlex.quote(RECORD)} "
        else:
            options = "-o /dev/null "
        options += "".join(
            f"-v {k}={shlex.quote(str(v))} " for k, v in (variables or {}).items()
        )
        # The tool's own sessions see only pg_catalog unqualified: a function or
        # operator that the application's owner put in public can never stand in for a
        # built-in one (CVE-2018-1058). `app`: the testbed's application-style SQL.
        safe = "" if app else f"PGOPTIONS='{SAFE_OPTIONS}' "
        log.trace(self.name, f"psql {database}: {sql}")
        if csv_rows and self.csv and not variables:
            result = self._piped(sql, database, timeout, safe)
            if result is not None:
                return result
        cmd = (
            f"{safe}psql -X -q {options}-v ON_ERROR_STOP=1 -d {shlex.quote(database)}"
            " -f -"
        )
        return self.sudo(cmd, user="postgres", stdin=sql, check=False, timeout=timeout)

    def _piped(
        self,
        sql: str,
        database: str,
        timeout: float | None,
        env: str,
        console: str = "",
    ):
        """The query's result from this run's psql for `database` (PsqlPipe), opened
        when there is none or the last one has ended; None when it could not start
        the query (then a psql of its own runs it, which also says why the pipe could
        not: no such database, PostgreSQL down)."""
        with self._pipe_lock:
            for _ in range(2):  # a pipe that ended while idle is replaced once
                pipe = self._pipes.get(database)
                if pipe is None or not pipe.alive():
                    if not self.conn.is_connected:
                        self.open()
                    try:
                        pipe = self._pipes[database] = PsqlPipe(
                            self.conn, database, env, console
                        )
                    except (paramiko.SSHException, OSError, EOFError):
                        # the SSH connection is gone: a command of its own reconnects,
                        # or says why
                        return None
                try:
                    result = pipe.query(sql, timeout)
                except TimeoutError:
                    pipe.close()
                    if console:  # as `timeout` says it: the caller decides
                        return SimpleNamespace(
                            ok=False,
                            failed=True,
                            exited=124,
                            stdout="",
                            stderr="timed out",
                        )
                    raise StepError(
                        self.name,
                        f"psql timed out after {timeout} s",
                        "look at the host's load and logs, then run again",
                    ) from None
                except LostPipe as e:
                    pipe.close()
                    raise StepError(
                        self.name,
                        f"SSH connection lost while psql ran on database {database} "
                        f"({e}); whether that statement took effect is not known",
                        "check the host and the network, then run the step again",
                    ) from None
                if result is not None:
                    if result.failed:
                        pipe.close()
                    return result
                pipe.close()
            return None

    def console(
        self, commands: Sequence[str], socket_dir: str, port: int, timeout: float
    ):
        """Commands on PgBouncer's admin console as postgres: on this run's psql for it
        (PsqlPipe: a few ms, where a psql of their own takes about 0.1 s), else, when
        that cannot start them, on a psql of their own; bounded by `timeout` either way.
        The result; a timeout is exit code 124, as `timeout` says it.
        """
        target = (
            f"-A -h {shlex.quote(socket_dir)} -p {int(port)} -U postgres -d pgbouncer"
        )
        result = self._piped(
            "\n".join(f"{c};" for c in commands),
            f"pgbouncer {socket_dir}:{port}",
            timeout,
            "",
            target,
        )
        if result is None:
            cmd = f"timeout -k 1 {timeout:g} psql -X -q -t {target} " + " ".join(
                f"-c {shlex.quote(c)}" for c in commands
            )
            result = self.sudo(
                cmd,
                user="postgres",
                check=False,
                timeout=int(timeout) + settings.SSH_GRACE,
            )
        return result

    def psql(
        self,
        sql: str,
        database: str = "postgres",
        *,
        timeout: int | None = settings.PSQL,
    ) -> list[list[str]]:
        """Run SQL as the postgres superuser over the local socket; return the rows as
        lists of text.

        One statement returns rows (SET, BEGIN and COMMIT around it are fine).
        search_path is pg_catalog alone: name the application's objects
        schema-qualified."""
        result = self._psql(sql, database, timeout, True, None)
        if (
            result.failed and self.csv and "--csv" in result.stderr
        ):  # psql before 12: unaligned instead
            self.csv = False
            result = self._psql(sql, database, timeout, True, None)
        if result.failed:
            raise StepError(
                self.name, f"psql on database {database}: {psql_error(result.stderr)}"
            )
        if self.csv:
            return list(csv.reader(io.StringIO(result.stdout)))
        rows = unaligned(result.stdout)
        if rows is None:
            raise StepError(
                self.name,
                f"psql on database {database}: a value holds the record separator "
                "0x1e, which psql before 12 cannot print unambiguously",
                "install a PostgreSQL client of version 12 or newer on this host",
            )
        return rows

    def try_psql(
        self,
        sql: str,
        database: str = "postgres",
        *,
        timeout: int | None = settings.PSQL,
        variables: dict | None = None,
        app: bool = False,
    ) -> str:
        """Run SQL as postgres, output discarded; '' when it worked, else psql's error
        line. app: with the database's search_path (the testbed's seed and writer:
        application-style SQL); else pg_catalog alone, as every session of the tool."""
        result = self._psql(sql, database, timeout, False, variables, app)
        return "" if result.ok else error_line(result.stderr)

    def value(self, sql: str, database: str = "postgres") -> str | None:
        """The first column of the first row, or None."""
        rows = self.psql(sql, database)
        return rows[0][0] if rows and rows[0] else None

    def read_file(self, path: str, *, user: str = "root") -> str | None:
        """A file's text, read as `user` (the owner of its directory), or None when it
        does not exist.

        A symlink is refused: in a directory another user controls it could point
        anywhere.
        """
        result = self.sudo(
            f'p={shlex.quote(path)}; if [ -L "$p" ]; then echo "is a symlink" >&2; exit'
            ' 3; fi; cat "$p"',
            user=user,
            check=False,
        )
        if result.failed:
            if "No such file" in result.stderr:
                return None
            raise StepError(
                self.name,
                f"cannot read {path}: {result.stderr.strip()}",
                (
                    "replace the symlink by a regular file"
                    if "symlink" in result.stderr
                    else ""
                ),
            )
        return result.stdout

    def write_file(
        self,
        path: str,
        text: str,
        *,
        owner: str = "root:root",
        mode: str = "644",
        writer: str = "",
    ) -> None:
        """Replace a file atomically through a private temp file in its directory
        (content via stdin).

        Written as the owner itself (no chown) unless that is root, so that a symlink or
        a hard link in a directory another user controls never makes root write or chown
        elsewhere; a symlink at `path` is refused; the temp file goes when anything
        fails. `writer`: who writes instead, the directory's owner (root for a
        root-owned directory, which then chowns the new file).
        """
        user = writer or owner.split(":")[0]
        chown = 'chown "$2" "$t"; ' if user == "root" else ""
        script = (
            'set -e; if [ -L "$1" ]; then echo "$1 is a symlink" >&2; exit 3; fi;'
            ' d=$(dirname "$1"); mkdir -p "$d"; t=$(mktemp "$1.XXXXXX"); trap \'rm -f'
            f' "$t"\' EXIT; cat > "$t"; {chown}chmod "$3" "$t"; mv -f "$t" "$1"; trap -'
            " EXIT"
        )
        self.sudo(
            f"sh -c {shlex.quote(script)} sh {shlex.quote(path)} {owner} {mode}",
            user=user,
            stdin=text,
            what=f"writing {path}",
        )

    def put(self, local: str, remote: str) -> None:
        """Copy a local file to a path the SSH user may write (e.g. a private temp
        directory)."""
        if not self.conn.is_connected:
            self.open()
        self.conn.put(local, remote)

    def follow(self, command: str) -> None:
        """Run a command as root with a terminal, its output streamed to ours until
        it ends or Ctrl-C."""
        if not self.conn.is_connected:
            self.open()
        self.conn.run(f"sudo -n -- {command}", pty=True, in_stream=False, warn=True)


class Hosts:
    """One SSH connection per host name for a whole run; closed at the end."""

    def __init__(self, ssh_config: str = "", strict_host_keys: bool = True):
        self.ssh_config, self.strict = ssh_config, strict_host_keys
        self._hosts: dict[str, Host] = {}

    def __getitem__(self, name: str) -> Host:
        if name not in self._hosts:
            self._hosts[name] = Host(name, self.ssh_config, self.strict)
        return self._hosts[name]

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self, names: Sequence[str]) -> None:
        """Connect to these hosts at the same time (a run waits for the slowest, not
        for their sum); a host that fails keeps its error for when it is used."""

        def attempt(host: Host) -> None:
            try:
                host.open()
            except StepError:
                pass

        threads = [
            threading.Thread(target=attempt, args=(self[n],), daemon=True)
            for n in dict.fromkeys(names)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def retry(self) -> None:
        """Let the hosts that failed to connect in this run be tried again."""
        for host in self._hosts.values():
            host.retry()

    def close(self) -> None:
        for host in self._hosts.values():
            host.close()
