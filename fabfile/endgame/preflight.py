"""Preflight: read-only checks before a migration, each ok / warn / fail with host, object and fix.

Each finding prints one line, `[host] preflight: ok|warn|FAIL object: what; fix: how`; FAIL lines go
to stderr, the others to stdout. Never changes anything on either server.
"""
from __future__ import annotations

from .. import facts, settings
from ..errors import StepError
from ..remote import Host
from ..render.parse import pg_dump_safe, size, upstream, version_key
from ..render.slonik import slony_key
from ..render.sql import ROLE_MARK, add_key
from ..session import Output, Session
from ..steps import identity
from ..steps.software import differing, extension_package

OK, WARN, FAIL = "ok", "warn", "FAIL"


def line(host: str, level: str, obj: str, what: str, fix: str = "") -> str:
    """One report line: `[host] preflight: level object: what; fix: how`."""
    return f"[{host}] preflight: {level} {obj}: {what}" + (f"; fix: {fix}" if fix else "")


class Report:
    """Prints the lines and counts the failures."""

    def __init__(self, out: Output | None = None) -> None:
        self.out = out or Output()
        self.failed = 0

    def __call__(self, host: str, level: str, obj: str, what: str, fix: str = "") -> None:
        self.failed += level == FAIL
        (self.out.error if level == FAIL else self.out.line)(line(host, level, obj, what, fix))

    def guard(self, host: str, obj: str, check, *args):
        """Run one check and return its value; a probe that cannot run fails that check, not preflight."""
        try:
            return check(self, *args)
        except StepError as e:
            self(e.host or host, FAIL, obj, e.message, e.fix or "run the check by hand on that host")
            return None


def preflight(s: Session, add_keys: bool = False) -> int:
    """Run every check, print one line each; return how many checks failed.

    add_keys: tables without a key are to get one (migrate --add-keys): a warning, not a failure."""
    report, cl = Report(s.out), s.cluster
    m, sl = cl.master, cl.slave
    report("input", OK, f"cluster {cl.name}", f"name valid; node {m.id} is {m.host} (origin), node {sl.id} is "
           f"{sl.host}, slon on {cl.slon_host}")
    up = {name: access(report, s.host(name)) for name in dict.fromkeys([m.host, sl.host, cl.slon_host])}
    majors = {}
    for name in (m.host, sl.host):
        if up[name]:
            majors[name] = postgres(report, s.host(name))
    if majors.get(m.host) and majors.get(sl.host) and version_key(majors[sl.host]) < version_key(majors[m.host]):
        report(sl.host, WARN, "postgresql", f"PostgreSQL {majors[sl.host]} is older than the master's "
               f"{majors[m.host]}: the schema step's dump may not load",
               "move to the same or a newer PostgreSQL version")
    report.guard(cl.slon_host, "slony", slony, s, up, majors)
    if up[cl.slon_host]:
        report.guard(cl.slon_host, "pg_dump", pg_dump_client, s.slon, majors.get(m.host))
    master = s.master if majors.get(m.host) else None
    slave = s.slave if majors.get(sl.host) else None
    database = False
    if master:
        database = report.guard(m.host, f"database {cl.database}", master_database, s, add_keys)
        report.guard(m.host, "transactions", transactions, master)
    if slave:
        report.guard(sl.host, f"database {cl.database}", slave_database, s, master)
    for name in (m.host, sl.host):
        if majors.get(name):
            report.guard(name, f"role {cl.user}", replication_role, s, s.host(name))
            report.guard(name, "ssl", encryption, s, s.host(name))
    if database and slave:
        report.guard(sl.host, "extensions", extensions, s)
        report.guard(sl.host, "encoding", encoding, s)
        report.guard(sl.host, "disk", disk, s)
        if up[cl.slon_host]:
            report.guard(cl.slon_host, f"login {cl.user}", replication_logins, s)
    return report.failed


def access(report: Report, h: Host) -> bool:
    """SSH and passwordless sudo on one host."""
    try:
        complaint = facts.sudo_failure(h)
    except StepError as e:
        report(h.name, FAIL, "ssh", e.message, e.fix)
        return False
    user = h.user
    if complaint:
        report(h.name, FAIL, "sudo", f"sudo -n true failed for {user}: {complaint}",
               f"give {user} passwordless sudo on {h.name} (NOPASSWD in /etc/sudoers.d), or use another user")
        return False
    report(h.name, OK, "ssh", f"connected as {user}; sudo works")
    return True


def postgres(report: Report, h: Host) -> str | None:
    """PostgreSQL answers as postgres over the local socket; its version."""
    try:
        version, major = facts.server_version(h), facts.pg_major(h)
    except StepError as e:
        report(h.name, FAIL, "postgresql", f"not reachable: {e.message}",
               f"start PostgreSQL on {h.name} and check that the postgres user can connect with psql")
        return None
    report(h.name, OK, "postgresql", f"PostgreSQL {version}")
    return major


def slony(report: Report, s: Session, up: dict, majors: dict) -> None:
    """The same Slony version for both servers' modules and the slon host's tools, installed or to be."""
    cl = s.cluster
    versions: dict[str, str] = {}
    for name, major in majors.items():
        if not major:
            continue
        h = s.host(name)
        modules = facts.slony_modules(h)
        if modules:
            versions[f"{name} module"] = modules[-1]
            report(name, OK, "slony module", f"slony1_funcs.{modules[-1]}.so present for PostgreSQL {major}"
                   + (f" (also {', '.join(modules[:-1])})" if len(modules) > 1 else ""))
            continue
        package = f"postgresql-{major}-slony1-2"
        wanted = available(report, h, package, "slony module", f"the Slony module for PostgreSQL {major}")
        if wanted:
            versions[f"{name} module"] = wanted
    if not up.get(cl.slon_host):
        return
    h = s.host(cl.slon_host)
    slonik, slon = facts.slonik_version(h), facts.slony_tool(h, "slon")
    if slonik and slon:
        versions[f"{h.name} slonik"] = slonik
        report(h.name, OK, "slony tools", f"slonik {slonik} and slon ({slon}) present")
    elif slonik or slon:
        report(h.name, FAIL, "slony tools", f"{'slon' if slonik else 'slonik'} is missing, "
               f"{'slonik' if slonik else 'slon'} is there", "reinstall slony1-2-bin, or build Slony again")
    else:
        wanted = available(report, h, "slony1-2-bin", "slony tools", "slonik and slon")
        if wanted:
            versions[f"{h.name} slonik"] = wanted
    hosts = ", ".join(dict.fromkeys(k.split()[0] for k in versions))
    listed = differing(versions)
    if listed:
        report(hosts, FAIL, "slony version", f"Slony versions differ (installed or to be installed): {listed}",
               "use one Slony version everywhere: build the matching one with inv build --host H --tarball "
               "slony1-VERSION.tar.bz2, or remove the stray slony1_funcs.*.so")
    elif versions:
        report(hosts, OK, "slony version", f"Slony {next(iter(versions.values()))} everywhere "
               "(installed or to be installed)")


def available(report: Report, h: Host, package: str, obj: str, what: str) -> str:
    """Report what install will do about a missing Slony part; return the version it would install."""
    candidate = facts.package_versions(h, [package])[package][1]
    if candidate:
        report(h.name, WARN, obj, f"{what} not installed yet; install will add {package} {candidate}")
        return upstream(candidate)
    release = facts.os_release(h).get("PRETTY_NAME", "this distribution")
    report(h.name, WARN, obj, f"{what} not installed yet and {package} not in the package lists of {release}",
           "install runs apt-get update first and stops if the package is still missing; then build Slony "
           "with inv build --host H --tarball slony1-VERSION.tar.bz2")
    return ""


def master_database(report: Report, s: Session, add_keys: bool = False) -> bool:
    """The database exists on the master, is node 1 if the cluster exists, its tables can be replicated."""
    cl, h = s.cluster, s.master
    if not facts.database_exists(h, cl.database):
        names = facts.database_names(h)
        report(h.name, FAIL, f"database {cl.database}", f"does not exist on {h.name} (there: "
               f"{', '.join(names) or 'no application database'})", "check --database and --master")
        return False
    node = facts.local_node_id(h, cl)
    if node is not None and node != cl.master.id:
        report(h.name, FAIL, f"database {cl.database}", f"is node {node} of cluster {cl.name}, not the origin "
               f"(node {cl.master.id})", "check --master/--slave: are they swapped?")
    report(h.name, OK, f"database {cl.database}", f"exists, {size(facts.database_size(h, cl.database))}")
    tables = facts.app_tables(h, cl)
    for table, name in tables:
        if table is None:
            size_ = size(facts.relation_size(h, cl, name))
            if add_keys:
                report(h.name, WARN, f"table {name}", f"no key ({size_}): --add-keys will add one, rewriting the "
                       f"table under an exclusive lock: {add_key(name).splitlines()[1]}")
            else:
                report(h.name, FAIL, f"table {name}", f"no primary key and no unique index on NOT NULL columns "
                       f"({size_}): Slony cannot replicate it", f"add a primary key to {name} (or a unique index on "
                       f"NOT NULL columns), e.g. {add_key(name).splitlines()[1]} (migrate --add-keys does that)")
        elif table.key and slony_key(table.key) is None:
            report(h.name, FAIL, f"table {name}", f"its key, unique index {table.key}, has a dot in its name and is "
                   "too long to quote: Slony cannot be told to use it", "rename the index (ALTER INDEX ... RENAME "
                   "TO) to a name without a dot, or shorter than 62 characters")
        elif table.key:
            report(h.name, OK, f"table {name}", f"no primary key; unique index {table.key} on NOT NULL columns "
                   "serves as the key")
    if all(t for t, _ in tables) or add_keys:
        report(h.name, OK, "tables", f"all {len(tables)} tables have a key Slony can use")
    for name in facts.app_relations(h, cl, "(c.relname ~ '[[:cntrl:]]' OR n.nspname ~ '[[:cntrl:]]')"):
        report(h.name, FAIL, "name", f"{name} holds a control character (a newline, say): it would reach slonik "
               "scripts, Slony's configuration and logs", "rename it (ALTER ... RENAME TO) before the migration")
    for what in facts.code_run_by_replication(h, cl):
        report(h.name, FAIL, "application code", f"{what}: slon applies replicated rows as a superuser on the new "
               "server, so this code would run with superuser rights there",
               "enable the trigger for the origin only (ALTER TABLE ... ENABLE TRIGGER), or have a superuser "
               "own the function (ALTER FUNCTION ... OWNER TO postgres) after reviewing it")
    objects(report, s, h)
    unlogged = facts.unlogged_tables(h, cl)
    if unlogged:
        report(h.name, WARN, "unlogged tables", f"{', '.join(unlogged)}: not replicated, their rows stay on "
               f"{h.name}", "ALTER TABLE ... SET LOGGED if the slave needs their rows")
    unowned = facts.unowned_sequences(h, cl)
    if unowned:
        report(h.name, OK, "sequences", f"not owned by a column: {', '.join(unowned)} (in the set all the same, "
               "replicated with each SYNC)")
    lobs = facts.large_objects(h, cl.database)
    if lobs:
        report(h.name, WARN, "large objects", f"{lobs} in {cl.database}: Slony does not replicate large objects",
               "move them into bytea columns, or copy them separately at switchover")
    return True


def pg_dump_client(report: Report, h: Host, master_major: str | None) -> None:
    """The schema step's pg_dump on the slon host: new enough for the master, and not one whose output a
    hostile object name can turn into psql commands (the dump is piped into psql as superuser)."""
    path = facts.newest_client(h, "pg_dump")
    version = facts.client_version(h, path) if path else None
    if not version:
        report(h.name, WARN, "pg_dump", "no PostgreSQL client programs yet", "install postgresql-client-NN "
               "(the newest major) on the slon host; install brings it with slony1-2-bin")
        return
    shown = f"pg_dump {version[0]}.{version[1]} ({path})"
    if not pg_dump_safe(version):
        report(h.name, FAIL, "pg_dump", f"{shown} predates the fix of August 2025 that stops object names from "
               "injecting psql commands into a dump (CVE-2025-8714); the schema step pipes that dump into psql "
               "as superuser", "upgrade postgresql-client to 13.22, 14.19, 15.14, 16.10, 17.6 or newer")
    elif master_major and version[0] < version_key(master_major)[0]:
        report(h.name, FAIL, "pg_dump", f"{shown} is older than the master's PostgreSQL {master_major}",
               f"install postgresql-client-{master_major} or newer on {h.name}")
    else:
        report(h.name, OK, "pg_dump", shown)


def encryption(report: Report, s: Session, h: Host) -> None:
    """The server takes SSL: pg_hba admits the replication user only encrypted (hostssl)."""
    cl = s.cluster
    if not facts.ssl_on(h):
        report(h.name, FAIL, "ssl", "PostgreSQL has ssl = off: slon, slonik and the schema copy would travel in "
               "clear, and the hostssl lines the hba step writes would lock them out",
               "give the server a certificate and set ssl = on (Debian's package sets it up with a snakeoil "
               "certificate), reload, then run again")
    elif cl.ssl_ca:
        report(h.name, OK, "ssl", f"on; connections use sslmode=verify-full against {cl.ssl_ca}")
    else:
        report(h.name, WARN, "ssl", "on; connections are encrypted (sslmode=require) but the server's identity is "
               "not verified", "set ssl_ca (INVOKE_SLONY_SSL_CA) to the CA that signed the servers' certificates "
               "for sslmode=verify-full")


def replication_role(report: Report, s: Session, h: Host) -> None:
    """The replication role is absent, or the tool's own: never the application's."""
    cl = s.cluster
    role = facts.role(h, cl.user)
    if role is None:
        report(h.name, OK, f"role {cl.user}", "not there yet; users will create it (superuser, SCRAM password)")
    elif role[3] == ROLE_MARK:
        report(h.name, OK, f"role {cl.user}", "created by slony-migrate")
    elif role[0]:
        report(h.name, WARN, f"role {cl.user}", "a superuser that slony-migrate did not mark as its own",
               "users takes it over only if its password is the replication password; else choose another --user")
    else:
        report(h.name, FAIL, f"role {cl.user}", "exists and was not created by slony-migrate (it may be the "
               "application's: users would make it a superuser with a new password)",
               "choose another --user, or drop that role if it is a leftover")


def objects(report: Report, s: Session, h: Host) -> None:
    """What happens to each kind of object beyond the tables with a key: handled, schema only, refused."""
    cl = s.cluster
    for column in facts.generated_columns(h, cl):
        report(h.name, FAIL, f"column {column}", "a stored generated column: Slony copies and logs its values, "
               "which the new server refuses (COPY and every later change to the table would fail)",
               "make it a plain column kept by a trigger (ALTER TABLE ... ALTER COLUMN ... DROP EXPRESSION, then "
               "CREATE TRIGGER) before the migration")
    always = [f"{t}.{c}" for t, c in identity.always_columns(h, cl)]
    if always:
        report(h.name, OK, "identity columns", f"GENERATED ALWAYS: {', '.join(always)}: BY DEFAULT on the new "
               "server while it subscribes (slon writes the origin's values), ALWAYS again where a node becomes "
               "the origin and at finish")
    for name, owner, _ in facts.materialized_views(h, cl):
        took = facts.matview_query_seconds(h, cl, name, owner, settings.MATVIEW_PROBE)
        cost = f"its query takes {took:.1f} s on {h.name}" if took is not None else \
            f"its query takes longer than {settings.MATVIEW_PROBE:g} s on {h.name}"
        report(h.name, OK, f"materialized view {name}", f"rows not replicated: refreshed (as {owner}) on the new "
               f"origin at switchover and failover, before success is reported; {cost}")
    counts = facts.object_counts(h, cl)
    foreign = counts.pop("foreign table", 0)
    if counts:
        report(h.name, OK, "schema only", "definitions copied by the schema step, nothing to replicate: "
               + ", ".join(f"{n} {kind}(s)" for kind, n in counts.items())
               + ("; leaf partitions are replicated as tables" if "partitioned table" in counts else ""))
    if foreign:
        report(h.name, WARN, "foreign tables", f"{foreign}: their data is elsewhere; the new server needs the same "
               "foreign servers and user mappings", "check CREATE SERVER and CREATE USER MAPPING on the new server")


def extensions(report: Report, s: Session) -> None:
    """Every extension of the master's database can be created on the slave (its package is there or
    install will add it)."""
    cl = s.cluster
    have = facts.extensions(s.master, cl.database)
    if not have:
        return
    available = facts.available_extensions(s.slave)
    major = facts.pg_major(s.slave)
    missing = [name for name in have if name not in available]
    for name in missing:
        package = extension_package(major, name)
        candidate = facts.package_versions(s.slave, [package])[package][1]
        if candidate:
            report(s.slave.name, WARN, f"extension {name}", f"not available yet; install will add {package} "
                   f"{candidate}")
        else:
            report(s.slave.name, FAIL, f"extension {name}", f"version {have[name]} on {s.master.name}, not available "
                   f"on {s.slave.name} (no package {package} either): the schema step would fail",
                   f"install the extension's package for PostgreSQL {major} on {s.slave.name}")
    newer = [f"{n} {v}" for n, v in have.items() if n in available and v not in available[n]]
    if newer:
        report(s.slave.name, WARN, "extensions", f"versions not available as such on {s.slave.name}: "
               f"{', '.join(newer)}; CREATE EXTENSION takes the default version there",
               "compare the extensions' versions after the schema step (ALTER EXTENSION ... UPDATE)")
    fine = [n for n in have if n not in missing]
    if fine:
        report(s.slave.name, OK, "extensions", f"available on {s.slave.name}: {', '.join(fine)}")


def transactions(report: Report, h: Host) -> None:
    """Long or idle-in-transaction sessions and prepared transactions on the master's server, any database."""
    long, prepared = facts.long_transactions(h, settings.LONG_TRANSACTION), facts.prepared_transactions(h)
    for pid, db, user, state, age in long:
        report(h.name, WARN, f"session pid {pid}", f"database {db}, user {user}, {state}, transaction open "
               f"{age} s: the initial copy retries and LOCK SET waits until it ends",
               f"commit it in the application, or SELECT pg_terminate_backend({pid})")
    for gid, db, age in prepared:
        report(h.name, WARN, f"prepared transaction {gid}", f"database {db}, prepared {age} s ago: it holds "
               "back the copy and LOCK SET like an open transaction", f"COMMIT PREPARED or ROLLBACK PREPARED "
               f"'{gid}' in {db}")
    if not long and not prepared:
        report(h.name, OK, "transactions", f"none open longer than {settings.LONG_TRANSACTION} s, none idle in "
               "transaction, none prepared")


def slave_database(report: Report, s: Session, master: Host | None) -> None:
    """The slave's database is absent, empty, or subscribed already: never subscribe into rows."""
    cl, h = s.cluster, s.slave
    obj = f"database {cl.database}"
    if not facts.database_exists(h, cl.database):
        report(h.name, OK, obj, "not there yet; appdb will create it like the master's")
        return
    node = facts.local_node_id(h, cl)
    if node is not None and node != cl.slave.id:
        report(h.name, FAIL, obj, f"is node {node} of cluster {cl.name}, not the subscriber (node {cl.slave.id})",
               "check --master/--slave: are they swapped?")
        return
    if subscribed(s, master):
        report(h.name, OK, obj, f"subscribed to set {cl.set_id} already; its rows come from replication")
        return
    tables = [name for _, name in facts.app_tables(h, cl)]
    full = facts.tables_with_rows(h, cl.database, tables)
    if full:
        report(h.name, FAIL, obj, f"{len(full)} table(s) hold rows ({', '.join(full[:5])}"
               f"{' ...' if len(full) > 5 else ''}): subscribing would empty them",
               "check --master/--slave (swapped?); if the rows are disposable, drop the database on "
               f"{h.name} and run again")
        return
    report(h.name, OK, obj, f"exists, {len(tables)} tables, no rows")


def subscribed(s: Session, master: Host | None) -> bool:
    """Whether the slave is node 2 of the cluster and subscribed to the set (a re-run on a migrated pair)."""
    cl, h = s.cluster, s.slave
    if facts.local_node_id(h, cl) != cl.slave.id:
        return False
    return any(facts.slony_state(x, cl).subscribed is not None for x in (h, master) if x)


def encoding(report: Report, s: Session) -> None:
    """The slave's database has (or can get) the master's encoding and collation."""
    cl = s.cluster
    want = facts.database_info(s.master, cl.database)
    if not want:
        return
    have = facts.database_info(s.slave, cl.database)
    describe = lambda i: f"{i['encoding']}, collate {i['collate']}, ctype {i['ctype']}"  # noqa: E731
    if have:
        if [have[k] for k in ("encoding", "collate", "ctype")] != [want[k] for k in ("encoding", "collate", "ctype")]:
            report(s.slave.name, FAIL, "encoding", f"{cl.database} is {describe(have)} on {s.slave.name}, "
                   f"{describe(want)} on {s.master.name}", f"drop {cl.database} on {s.slave.name} if it holds "
                   "nothing, and let the appdb step create it like the master's")
        else:
            report(s.slave.name, OK, "encoding", f"{describe(want)} on both")
        return
    missing = [loc for loc in dict.fromkeys([want["collate"], want["ctype"]]) if not facts.has_locale(s.slave, loc)]
    if missing:
        report(s.slave.name, FAIL, "encoding", f"locale {', '.join(missing)} of the master's {cl.database} "
               f"is not available on {s.slave.name}", f"generate it on {s.slave.name} (locale-gen), then "
               "restart PostgreSQL there")
    else:
        report(s.slave.name, OK, "encoding", f"appdb will create {cl.database} with {describe(want)} "
               f"(locale available on {s.slave.name})")


def disk(report: Report, s: Session) -> None:
    """Free space in the slave's data directory against the database's size on the master."""
    cl, h = s.cluster, s.slave
    path = facts.data_directory(h)
    free, need = facts.disk_free(h, path), facts.database_size(s.master, cl.database)
    what = f"{size(free)} free in {path}, {cl.database} is {size(need)} on {s.master.name}"
    if subscribed(s, s.master):
        report(h.name, OK, "disk", what + " (copied already)")
    elif free < need:
        report(h.name, FAIL, "disk", what, f"free space or grow the filesystem of {path}")
    elif free < 2 * need:
        report(h.name, WARN, "disk", what + ": little room for sl_log and growth",
               f"free space in {path} before the copy")
    else:
        report(h.name, OK, "disk", what)


def replication_logins(report: Report, s: Session) -> None:
    """The replication user logs in from the slon host to both databases (pg_hba and .pgpass work)."""
    cl, h = s.cluster, s.slon
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
            report(h.name, WARN, obj, f"not set up yet: {'; '.join(missing)}; migrate will set it up")
            continue
        error = facts.replication_login(h, cl, node)
        if error:
            report(h.name, FAIL, obj, f"psql from {h.name} as {cl.user} failed: {error}",
                   f"run inv users and inv hba again (role password, .pgpass on {h.name}, pg_hba.conf on {n.name})")
        else:
            report(h.name, OK, obj, f"psql from {h.name} as {cl.user} works (pg_hba and .pgpass)")

