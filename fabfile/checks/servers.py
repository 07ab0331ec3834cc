"""Checks of the servers themselves: SSH and sudo, PostgreSQL, Slony's parts, pg_dump,
SSL, the replication role and its logins. Each yields Findings (checks.findings) and
never changes anything.
"""

from __future__ import annotations

from .. import facts
from ..errors import StepError
from ..remote import Host
from ..render import debian
from ..render.parse import pg_dump_safe, upstream, version_key
from ..render.sql import ROLE_MARK
from ..session import Session
from ..steps.software import differing
from .findings import FAIL, OK, WARN, Finding, Findings


def access(h: Host) -> Findings:
    """SSH and passwordless sudo on one host."""
    try:
        complaint = facts.sudo_failure(h)
    except StepError as e:
        yield Finding(h.name, FAIL, "ssh", e.message, e.fix)
        return False
    user = h.user
    if complaint:
        yield Finding(
            h.name,
            FAIL,
            "sudo",
            f"sudo -n true failed for {user}: {complaint}",
            f"give {user} passwordless sudo on {h.name} (NOPASSWD in /etc/sudoers.d),"
            " or use another user",
        )
        return False
    yield Finding(h.name, OK, "ssh", f"connected as {user}; sudo works")
    return True


def postgres(h: Host) -> Findings:
    """PostgreSQL answers as postgres over the local socket; its version."""
    try:
        version, major = facts.server_version(h), facts.pg_major(h)
    except StepError as e:
        yield Finding(
            h.name,
            FAIL,
            "postgresql",
            f"not reachable: {e.message}",
            f"start PostgreSQL on {h.name} and check that the postgres user can connect"
            " with psql",
        )
        return None
    yield Finding(h.name, OK, "postgresql", f"PostgreSQL {version}")
    return major


def slony(s: Session, up: dict, majors: dict) -> Findings:
    """The same Slony version for both servers' modules and the slon host's tools,
    installed or to be."""
    cl = s.cluster
    versions: dict[str, str] = {}
    for name, major in majors.items():
        if not major:
            continue
        h = s.host(name)
        modules = facts.slony_modules(h)
        if modules:
            versions[f"{name} module"] = modules[-1]
            yield Finding(
                name,
                OK,
                "slony module",
                f"slony1_funcs.{modules[-1]}.so present for PostgreSQL {major}"
                + (f" (also {', '.join(modules[:-1])})" if len(modules) > 1 else ""),
            )
            continue
        package = debian.slony_module(major)
        wanted = yield from available(
            h, package, "slony module", f"the Slony module for PostgreSQL {major}"
        )
        if wanted:
            versions[f"{name} module"] = wanted
    if not up.get(cl.slon_name):
        return
    h = s.host(cl.slon_name)
    slonik, slon = facts.slonik_version(h), facts.slony_tool(h, "slon")
    if slonik and slon:
        versions[f"{h.name} slonik"] = slonik
        yield Finding(
            h.name, OK, "slony tools", f"slonik {slonik} and slon ({slon}) present"
        )
    elif slonik or slon:
        yield Finding(
            h.name,
            FAIL,
            "slony tools",
            f"{'slon' if slonik else 'slonik'} is missing, "
            f"{'slonik' if slonik else 'slon'} is there",
            "reinstall slony1-2-bin, or build Slony again",
        )
    else:
        wanted = yield from available(
            h, debian.SLONY_TOOLS[0], "slony tools", "slonik and slon"
        )
        if wanted:
            versions[f"{h.name} slonik"] = wanted
    hosts = ", ".join(dict.fromkeys(k.split()[0] for k in versions))
    listed = differing(versions)
    if listed:
        yield Finding(
            hosts,
            FAIL,
            "slony version",
            f"Slony versions differ (installed or to be installed): {listed}",
            "use one Slony version everywhere: build the matching one with inv build"
            " --host H --tarball slony1-VERSION.tar.bz2, or remove the stray"
            " slony1_funcs.*.so",
        )
    elif versions:
        yield Finding(
            hosts,
            OK,
            "slony version",
            f"Slony {next(iter(versions.values()))} everywhere "
            "(installed or to be installed)",
        )


def available(h: Host, package: str, obj: str, what: str) -> Findings:
    """Report what install will do about a missing Slony part; return the version it
    would install."""
    candidate = facts.package_versions(h, [package])[package][1]
    if candidate:
        yield Finding(
            h.name,
            WARN,
            obj,
            f"{what} not installed yet; install will add {package} {candidate}",
        )
        return upstream(candidate)
    release = facts.os_release(h).get("PRETTY_NAME", "this distribution")
    yield Finding(
        h.name,
        WARN,
        obj,
        f"{what} not installed yet and {package} not in the package lists of {release}",
        "install runs apt-get update first and stops if the package is still missing;"
        " then build Slony with inv build --host H --tarball slony1-VERSION.tar.bz2",
    )
    return ""


def pg_dump_client(h: Host, master_major: str | None) -> Findings:
    """The schema step's pg_dump on the slon host: new enough for the master, and not
    one whose output a hostile object name can turn into psql commands (the dump is
    piped into psql as superuser).
    """
    path = facts.newest_client(h, "pg_dump")
    version = facts.client_version(h, path) if path else None
    if not version:
        yield Finding(
            h.name,
            WARN,
            "pg_dump",
            "no PostgreSQL client programs yet",
            "install postgresql-client-NN "
            "(the newest major) on the slon host; install brings it with slony1-2-bin",
        )
        return
    shown = f"pg_dump {version[0]}.{version[1]} ({path})"
    if not pg_dump_safe(version):
        yield Finding(
            h.name,
            FAIL,
            "pg_dump",
            f"{shown} predates the fix of August 2025 that stops object names from"
            " injecting psql commands into a dump (CVE-2025-8714); the schema step"
            " pipes that dump into psql as superuser",
            "upgrade postgresql-client to 13.22, 14.19, 15.14, 16.10, 17.6 or newer",
        )
    elif master_major and version[0] < version_key(master_major)[0]:
        yield Finding(
            h.name,
            FAIL,
            "pg_dump",
            f"{shown} is older than the master's PostgreSQL {master_major}",
            f"install postgresql-client-{master_major} or newer on {h.name}",
        )
    else:
        yield Finding(h.name, OK, "pg_dump", shown)


def encryption(s: Session, h: Host) -> Findings:
    """The server takes SSL: pg_hba admits the replication user only encrypted
    (hostssl)."""
    cl = s.cluster
    if not facts.ssl_on(h):
        yield Finding(
            h.name,
            FAIL,
            "ssl",
            "PostgreSQL has ssl = off: slon, slonik and the schema copy would travel in"
            " clear, and the hostssl lines the hba step writes would lock them out",
            "give the server a certificate and set ssl = on (Debian's package sets it"
            " up with a snakeoil certificate), reload, then run again",
        )
    elif cl.ssl_ca:
        yield Finding(
            h.name,
            OK,
            "ssl",
            f"on; connections use sslmode=verify-full against {cl.ssl_ca}",
        )
    else:
        yield Finding(
            h.name,
            WARN,
            "ssl",
            "on; connections are encrypted (sslmode=require) but the server's identity"
            " is not verified",
            "set ssl_ca (SLONY_MIGRATE_SSL_CA) to the CA that signed the servers'"
            " certificates for sslmode=verify-full",
        )


def replication_role(s: Session, h: Host) -> Findings:
    """The replication role is absent, or the tool's own: never the application's."""
    cl = s.cluster
    role = facts.role(h, cl.user)
    if role is None:
        yield Finding(
            h.name,
            OK,
            f"role {cl.user}",
            "not there yet; users will create it (superuser, SCRAM password)",
        )
    elif role[3] == ROLE_MARK:
        yield Finding(h.name, OK, f"role {cl.user}", "created by slony-migrate")
    elif role[0]:
        yield Finding(
            h.name,
            WARN,
            f"role {cl.user}",
            "a superuser that slony-migrate did not mark as its own",
            "users takes it over only if its password is the replication password; else"
            " choose another --user",
        )
    else:
        yield Finding(
            h.name,
            FAIL,
            f"role {cl.user}",
            "exists and was not created by slony-migrate (it may be the "
            "application's: users would make it a superuser with a new password)",
            "choose another --user, or drop that role if it is a leftover",
        )


def replication_logins(s: Session) -> Findings:
    """The replication user logs in from the slon host to both databases (pg_hba and
    .pgpass work)."""
    cl, h = s.cluster, s.slon_host
    tag = f"cluster {cl.name}"
    pgpass = facts.has_managed_block(h, f"{facts.postgres_home(h)}/.pgpass", tag)
    for node in cl.nodes:
        n = s.host(node.host)
        obj = f"login {cl.user}@{node.dbhost}/{cl.database}"
        missing = []
        if not facts.role_exists(n, cl.user):
            missing.append(f"role {cl.user} on {n.name} (users step)")
        if not facts.has_managed_block(n, facts.hba_file(n), tag):
            missing.append(f"pg_hba.conf block on {n.name} (hba step)")
        if not pgpass:
            missing.append(f".pgpass of postgres on {h.name} (users step)")
        if not facts.database_exists(n, cl.database):
            missing.append(f"database {cl.database} on {n.name} (appdb step)")
        if missing:
            yield Finding(
                h.name,
                WARN,
                obj,
                f"not set up yet: {'; '.join(missing)}; migrate will set it up",
            )
            continue
        error = facts.replication_login(h, cl, node)
        if error:
            yield Finding(
                h.name,
                FAIL,
                obj,
                f"psql from {h.name} as {cl.user} failed: {error}",
                f"run inv users and inv hba again (role password, .pgpass on {h.name},"
                f" pg_hba.conf on {n.name})",
            )
        else:
            yield Finding(
                h.name,
                OK,
                obj,
                f"psql from {h.name} as {cl.user} works (pg_hba and .pgpass)",
            )


def clusters_beside(s: Session) -> Findings:
    """The other clusters of slony-migrate on the pair: none may replicate this
    database already; those logging in as the same role share it (its password stays
    theirs); an earlier version's cluster keeps its files."""
    cl, m = s.cluster, s.master_host
    found = facts.hba_clusters(m)
    for name, (database, _) in sorted(found.items()):
        if name == cl.name and database != cl.database:
            yield Finding(
                m.name,
                FAIL,
                f"cluster {cl.name}",
                f"replicates database {database} already (its pg_hba.conf block on"
                f" {m.name}): one cluster, one database",
                f"give {cl.database} a cluster of its own: --cluster <another name>",
            )
        if database == cl.database and name != cl.name:
            yield Finding(
                m.name,
                FAIL,
                f"database {cl.database}",
                f"cluster {name} replicates it already (its pg_hba.conf block on"
                f" {m.name}): a second cluster would put its triggers on the same"
                " tables",
                f"use --cluster {name}",
            )
    sharing = sorted(
        name for name, (_, user) in found.items() if user == cl.user and name != cl.name
    )
    if sharing:
        yield Finding(
            m.name,
            OK,
            f"role {cl.user}",
            f"cluster(s) {', '.join(sharing)} log in as it too: this cluster uses it"
            " with its password, and finish leaves it to the last of them",
        )
    if cl.legacy:
        yield Finding(
            cl.slon_name,
            OK,
            f"cluster {cl.name}",
            f"made by an earlier slony-migrate: keeps its files ({cl.tools_conf},"
            f" {cl.slon_conf(cl.master)}, instances"
            f" {', '.join(cl.instance(n) for n in cl.nodes)})",
        )
