"""Facts of the operating system: packages, Slony's files and tools, processes,
addresses, disk."""

from __future__ import annotations

import shlex

from .. import settings
from ..errors import StepError
from ..model import Cluster, Node
from ..remote import Host
from ..render import debian, parse
from ..render.shell import client_args, client_env, find_tool, newest_binary
from .catalog import pg_dir

__all__ = [
    "os_release",
    "slony_modules",
    "newest_client",
    "slony_tool",
    "slonik_version",
    "package_versions",
    "packages_installed",
    "sudo_failure",
    "slon_running",
    "disk_free",
    "has_locale",
    "postgres_writable",
    "postgres_home",
    "file_stat",
    "replication_login",
    "slon_log",
    "legacy_cluster",
    "missing_files",
    "epoch_now",
    "client_version",
    "source_address",
]


def os_release(host: Host) -> dict[str, str]:
    return parse.os_release(
        host.run("cat /etc/os-release", what="reading /etc/os-release").stdout
    )


def slony_modules(host: Host) -> list[str]:
    """Slony versions whose server module (slony1_funcs.VERSION.so) is in this
    server's pkglibdir."""
    libdir = pg_dir(host, "PKGLIBDIR")
    return parse.slony_modules(
        host.run(f"ls {shlex.quote(libdir)}", what=f"listing {libdir}").stdout
    )


def newest_client(host: Host, binary: str) -> str | None:
    """The newest PostgreSQL major's copy of a client binary (pg_dump, pgbench, ...)
    on this host."""
    path = host.run(newest_binary(binary), check=False)
    return path.stdout.strip() or None


def slony_tool(host: Host, tool: str) -> str | None:
    """Path of slon or slonik on this host: on PATH (packages) or in PostgreSQL's
    bindir (source build)."""
    r = host.run(find_tool(tool), check=False)
    path = r.stdout.strip().splitlines()
    return path[-1] if path else None


def slonik_version(host: Host) -> str | None:
    slonik = slony_tool(host, "slonik")
    if not slonik:
        return None
    return parse.slony_version(
        host.run(f"{shlex.quote(slonik)} -v", check=False).stdout
    )


def package_versions(host: Host, packages: list[str]) -> dict[str, tuple[str, str]]:
    """{package: (installed version or '', candidate version or '')} from apt; ('',
    '') for a name that is not a Debian package name (never asked: no such name
    reaches the shell)."""
    asked = [p for p in packages if debian.valid(p)]
    found = (
        parse.apt_policy(
            host.run(
                "LC_ALL=C apt-cache policy " + " ".join(map(shlex.quote, asked)),
                check=False,
            ).stdout,
            asked,
        )
        if asked
        else {}
    )
    return {p: found.get(p, ("", "")) for p in packages}


def packages_installed(host: Host, packages: str) -> bool:
    """Whether every package named (space-separated) is installed."""
    names = packages.split()
    if not all(map(debian.valid, names)):
        return False
    status = host.run(
        f"dpkg-query -W -f '${{db:Status-Status}}\\n' {' '.join(names)}", check=False
    )
    return status.ok and set(status.stdout.split()) == {"installed"}


def sudo_failure(host: Host) -> str:
    """'' when the SSH user has passwordless sudo, else sudo's complaint (connects
    first)."""
    r = host.run("sudo -n true", check=False)
    if r.ok:
        return ""
    err = (r.stderr.strip() or r.stdout.strip()).splitlines()
    return err[-1] if err else f"exit code {r.exited}"


def slon_running(host: Host, cluster: Cluster, node: Node) -> int | None:
    """PID of the watchdog of the node's slon instance on this host when it is alive,
    else None."""
    pidfile = shlex.quote(cluster.watchdog_pidfile(node))
    r = host.run(
        f"p=$(cat {pidfile} 2>/dev/null) && grep -qa slon-watchdog /proc/$p/cmdline &&"
        " echo $p",
        check=False,
    )
    return int(r.stdout.strip()) if r.ok and r.stdout.strip() else None


def disk_free(host: Host, path: str) -> int:
    """Bytes available to PostgreSQL on the filesystem that holds `path`."""
    return parse.parse_df_available(
        host.sudo(f"df --output=avail -B1 {shlex.quote(path)}", what="df").stdout
    )


def has_locale(host: Host, name: str) -> bool:
    """Whether the OS of this host has the locale (C and POSIX always exist)."""
    if name in ("C", "POSIX"):
        return True
    have = host.run("locale -a", check=False).stdout.split()
    return parse.normal_locale(name) in {parse.normal_locale(l) for l in have}


def postgres_writable(host: Host, path: str) -> bool:
    """Whether the postgres user can write in the directory `path` (False when it
    does not exist)."""
    return host.sudo(
        f"test -d {shlex.quote(path)} && test -w {shlex.quote(path)}",
        user="postgres",
        check=False,
    ).ok


def postgres_home(host: Host) -> str:
    return host.run("getent passwd postgres").stdout.split(":")[5]


def file_stat(host: Host, path: str) -> tuple[str, str] | None:
    """(owner:group, octal mode) of a file, or None when it does not exist."""
    r = host.sudo(f"stat -c '%U:%G %a' {shlex.quote(path)}", check=False)
    return tuple(r.stdout.split()) if r.ok else None


def replication_login(
    host: Host, cluster: Cluster, node: Node, connect_timeout: int = 0
) -> str:
    """'' when the postgres user of this host logs in to the node's database as the
    replication user over TCP with its .pgpass (no prompt), else psql's error.
    connect_timeout: seconds libpq waits for the server at most (0: its default)."""
    bound = f"PGCONNECT_TIMEOUT={int(connect_timeout)} " if connect_timeout else ""
    cmd = (
        f"{bound}{client_env(cluster)} psql -X -q {client_args(cluster, node)} -c"
        " 'SELECT 1'"
    )
    r = host.sudo(cmd, user="postgres", check=False, timeout=settings.LOGIN)
    if r.ok:
        return ""
    err = [l.strip() for l in r.stderr.splitlines() if l.strip()]
    line = next(
        (l for l in err if "FATAL" in l), err[0] if err else f"exit code {r.exited}"
    )
    return line.split("failed: ", 1)[-1]


def slon_log(host: Host, cluster: Cluster, node: Node, lines: int = 5000) -> str:
    """The last lines of a node's slon log on the slon host ('' when there is none)."""
    return host.sudo(
        f"tail -n {int(lines)} {shlex.quote(cluster.slon_log(node))}", check=False
    ).stdout


def legacy_cluster(host: Host, confdir: str) -> str | None:
    """The cluster whose files an earlier slony-migrate (one cluster per slon host, its
    files named by node only) wrote on this host: <confdir>/node1/slon.conf names it;
    None when there is none."""
    for node in (1, 2):
        name = parse.configured_cluster(
            host.read_file(f"{confdir}/node{node}/slon.conf")
        )
        if name:
            return name
    return None


def missing_files(host: Host, paths: list[str]) -> list[str]:
    """Those of `paths` that are no file on this host."""
    if not paths:
        return []
    r = host.run(
        "for f in "
        + " ".join(shlex.quote(p) for p in paths)
        + '; do [ -f "$f" ] || echo "$f"; done',
        check=False,
    )
    return r.stdout.split("\n")[:-1] if r.stdout else []


def epoch_now(host: Host) -> float:
    """This host's clock, in seconds since the epoch (UTC): slon's log times are this
    host's."""
    now = host.run("date -u '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    return parse.epoch(now)


def client_version(host: Host, binary: str) -> tuple[int, int] | None:
    """(major, minor) of a PostgreSQL client program on this host."""
    return parse.pg_version(
        host.run(f"{shlex.quote(binary)} --version", check=False).stdout
    )


def source_address(host: Host, target: str) -> str:
    """The address this host sends from when it connects to `target` (what the
    target's PostgreSQL sees)."""
    out = host.run(f"getent ahosts {shlex.quote(target)}", check=False).stdout.split()
    if not out:
        raise StepError(
            host.name,
            f"cannot resolve {target}",
            f"make {target} resolvable on {host.name} (DNS or /etc/hosts)",
        )
    route = host.run(f"ip -o route get {shlex.quote(out[0])}", check=False)
    source = parse.route_source(route.stdout)
    if not source:
        raise StepError(
            host.name,
            f"no route to {target} ({out[0]}):"
            f" {route.stderr.strip() or route.stdout.strip()}",
            f"check the network between {host.name} and {target}",
        )
    return source
