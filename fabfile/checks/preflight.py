"""Preflight: every check before a migration, in order, as one stream of Findings.
Never changes anything."""

from __future__ import annotations

from ..render.parse import version_key
from ..session import Session
from . import database, servers
from .findings import OK, WARN, Finding, Findings, guarded


def preflight(
    s: Session, add_keys: bool = False, update_roles: bool = False
) -> Findings:
    """Every check, its findings as they come (checks.findings.report prints them).

    add_keys: tables without a key are to get one (migrate --add-keys): a warning, not a
    failure. update_roles: appdb is to make roles that differ as on the master.
    """
    cl = s.cluster
    m, sl = cl.master, cl.slave
    yield Finding(
        "input",
        OK,
        f"cluster {cl.name}",
        f"name valid; node {m.id} is {m.host} (origin), node {sl.id} "
        f"is {sl.host}, slon on {cl.slon_name}",
    )
    up = {}
    for name in dict.fromkeys([m.host, sl.host, cl.slon_name]):
        up[name] = yield from servers.access(s.host(name))
    majors = {}
    for name in (m.host, sl.host):
        if up[name]:
            majors[name] = yield from servers.postgres(s.host(name))
    if (
        majors.get(m.host)
        and majors.get(sl.host)
        and version_key(majors[sl.host]) < version_key(majors[m.host])
    ):
        yield Finding(
            sl.host,
            WARN,
            "postgresql",
            f"PostgreSQL {majors[sl.host]} is older than the master's "
            f"{majors[m.host]}: the schema step's dump may not load",
            "move to the same or a newer PostgreSQL version",
        )
    yield from guarded(cl.slon_name, "slony", servers.slony, s, up, majors)
    if up[cl.slon_name]:
        yield from guarded(
            cl.slon_name,
            "pg_dump",
            servers.pg_dump_client,
            s.slon_host,
            majors.get(m.host),
        )
    master_host = s.master_host if majors.get(m.host) else None
    slave_host = s.slave_host if majors.get(sl.host) else None
    found = False
    if master_host:
        yield from guarded(m.host, "clusters", servers.clusters_beside, s)
        found = yield from guarded(
            m.host, f"database {cl.database}", database.master_database, s, add_keys
        )
        yield from guarded(m.host, "transactions", database.transactions, master_host)
    if slave_host:
        yield from guarded(
            sl.host, f"database {cl.database}", database.slave_database, s, master_host
        )
    for name in (m.host, sl.host):
        if majors.get(name):
            yield from guarded(
                name, f"role {cl.user}", servers.replication_role, s, s.host(name)
            )
            yield from guarded(name, "ssl", servers.encryption, s, s.host(name))
    if found and slave_host:
        yield from guarded(sl.host, "roles", database.roles, s, update_roles)
        yield from guarded(sl.host, "schema", database.restorable, s)
        yield from guarded(sl.host, "extensions", database.extensions, s)
        yield from guarded(sl.host, "encoding", database.encoding, s)
        yield from guarded(sl.host, "disk", database.disk, s)
        if up[cl.slon_name]:
            yield from guarded(
                cl.slon_name, f"login {cl.user}", servers.replication_logins, s
            )
