"""Read-only probes: one query or command each, parsed into plain values. Never changes anything."""
from __future__ import annotations

import re
import shlex
import time

from .model import Cluster, StepError
from .remote import Host
from . import render
from .render import Table, literal

SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"


def pg_major(host: Host) -> int:
    """Major version of the server's PostgreSQL (15, 17, ...)."""
    rows = host.psql("SHOW server_version_num")
    return int(rows[0][0]) // 10000


def os_release(host: Host) -> dict[str, str]:
    text = host.run("cat /etc/os-release", what="reading /etc/os-release").stdout
    return dict((k, v.strip('"')) for k, _, v in (l.partition("=") for l in text.splitlines()) if k)


def pg_dir(host: Host, name: str) -> str:
    """A directory from pg_config: BINDIR, PKGLIBDIR, SHAREDIR."""
    return host.value(f"SELECT setting FROM pg_config WHERE name = {literal(name)}")


def slony_modules(host: Host) -> list[str]:
    """Slony versions whose server module (slony1_funcs.VERSION.so) is in this server's pkglibdir."""
    libdir = pg_dir(host, "PKGLIBDIR")
    out = host.run(f"ls {shlex.quote(libdir)}", what=f"listing {libdir}").stdout
    found = set(re.findall(r"^slony1_funcs\.(\d+(?:\.\d+)*)\.so$", out, re.M))
    return sorted(found, key=lambda v: tuple(map(int, v.split("."))))


def newest_client(host: Host, binary: str) -> str | None:
    """The newest PostgreSQL major's copy of a client binary (pg_dump, pgbench, ...) on this host."""
    path = host.run(f"ls /usr/lib/postgresql/*/bin/{binary} 2>/dev/null | sort -V | tail -n 1", check=False)
    return path.stdout.strip() or None


def slony_tool(host: Host, tool: str) -> str | None:
    """Path of slon or slonik on this host: on PATH (packages) or in PostgreSQL's bindir (source build)."""
    r = host.run(f"command -v {tool} || ls /usr/lib/postgresql/*/bin/{tool} 2>/dev/null | sort -V | tail -n 1",
                 check=False)
    path = r.stdout.strip().splitlines()
    return path[-1] if path else None


def slonik_version(host: Host) -> str | None:
    slonik = slony_tool(host, "slonik")
    if not slonik:
        return None
    out = host.run(f"{slonik} -v", check=False).stdout
    m = re.search(r"([0-9]+\.[0-9]+\.[0-9]+)", out)
    return m.group(1) if m else None


def package_versions(host: Host, packages: list[str]) -> dict[str, tuple[str, str]]:
    """{package: (installed version or '', candidate version or '')} from apt."""
    out = host.run("LC_ALL=C apt-cache policy " + " ".join(packages), check=False).stdout
    found: dict[str, tuple[str, str]] = {}
    for block in re.split(r"^(?=\S)", out, flags=re.M):
        m = re.match(r"^(\S+):\n", block)
        if not m:
            continue
        inst = re.search(r"Installed: (\S+)", block)
        cand = re.search(r"Candidate: (\S+)", block)
        clean = lambda v: "" if not v or v.group(1) == "(none)" else v.group(1)  # noqa: E731
        found[m.group(1)] = (clean(inst), clean(cand))
    return {p: found.get(p, ("", "")) for p in packages}


def upstream(version: str) -> str:
    """Upstream part of a Debian version: 2.2.11-6 -> 2.2.11."""
    return re.sub(r"^\d+:", "", version).rsplit("-", 1)[0]


def database_exists(host: Host, database: str) -> bool:
    return bool(host.psql(f"SELECT 1 FROM pg_database WHERE datname = {literal(database)}"))


def database_info(host: Host, database: str) -> dict[str, str] | None:
    rows = host.psql(
        "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype "
        f"FROM pg_database WHERE datname = {literal(database)}"
    )
    if not rows:
        return None
    return dict(zip(("owner", "encoding", "collate", "ctype"), rows[0]))


def require_database(host: Host, database: str) -> None:
    if not database_exists(host, database):
        raise StepError(host.name, f"database {database} does not exist",
                        "check --database, or run the appdb step for the slave")


def schema_exists(host: Host, database: str, schema: str) -> bool:
    if not database_exists(host, database):
        return False
    return bool(host.psql(f"SELECT 1 FROM pg_namespace WHERE nspname = {literal(schema)}", database))


def app_tables(host: Host, cluster: Cluster) -> list[tuple[Table | None, str]]:
    """Every ordinary table of the application's schemas, sorted, with the key Slony would use.

    Returns (Table, name) pairs; Table is None for a table with neither a primary key nor a unique
    index on NOT NULL columns.
    """
    rows = host.psql(f"""
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
       (SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
         WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
           AND i.indexprs IS NULL
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                             AND a.attnum = ANY (i.indkey) AND NOT a.attnotnull)
         ORDER BY ic.relname LIMIT 1)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND c.relpersistence = 'p'
   AND n.nspname NOT IN {SYSTEM_SCHEMAS} AND n.nspname <> {literal(cluster.schema)}
   AND n.nspname NOT LIKE 'pg\\_%'
 ORDER BY 1""", cluster.database)
    out = []
    for name, has_pk, index in rows:
        if has_pk == "t":
            out.append((Table(name), name))
        elif index:
            out.append((Table(name, index), name))
        else:
            out.append((None, name))
    return out


def app_relations(host: Host, cluster: Cluster, where: str) -> list[str]:
    """Quoted names of the application's relations (pg_class c) that match `where`, sorted."""
    rows = host.psql(f"""
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {where} AND n.nspname NOT IN {SYSTEM_SCHEMAS}
   AND n.nspname <> {literal(cluster.schema)} AND n.nspname NOT LIKE 'pg\\_%'
 ORDER BY 1""", cluster.database)
    return [r[0] for r in rows]


def app_sequences(host: Host, cluster: Cluster) -> list[str]:
    return app_relations(host, cluster, "c.relkind = 'S'")


def replicable(host: Host, cluster: Cluster) -> tuple[list[Table], list[str]]:
    """Tables and sequences for the set; StepError naming every table without a usable key."""
    tables = app_tables(host, cluster)
    keyless = [name for t, name in tables if t is None]
    if keyless:
        raise StepError(
            host.name,
            f"table(s) without a primary key or a unique index on NOT NULL columns: {', '.join(keyless)}",
            "add a primary key (or a unique index on NOT NULL columns) to each, then run again",
        )
    return [t for t, _ in tables], app_sequences(host, cluster)


def tables_with_rows(host: Host, database: str, tables: list[str]) -> list[str]:
    """The tables among `tables` (quoted qualified names) that hold at least one row; missing ones are skipped."""
    if not tables:
        return []
    names = ", ".join(literal(t) for t in tables)
    existing = [r[0] for r in host.psql(
        f"SELECT t FROM unnest(ARRAY[{names}]::text[]) t WHERE to_regclass(t) IS NOT NULL", database)]
    if not existing:
        return []
    checks = " UNION ALL ".join(f"SELECT {literal(t)} WHERE EXISTS (SELECT 1 FROM {t})" for t in existing)
    return [r[0] for r in host.psql(checks, database)]


def address_of(host: Host, name: str) -> str:
    """The IPv4 address `name` resolves to on this host (what PostgreSQL there sees it connect from)."""
    out = host.run(f"getent ahostsv4 {shlex.quote(name)}", check=False).stdout.split()
    if not out:
        raise StepError(host.name, f"cannot resolve {name}", f"make {name} resolvable on {host.name} (DNS or /etc/hosts)")
    return out[0]


def slony_state(host: Host, cluster: Cluster) -> dict:
    """What of the cluster exists in this node's database: schema, nodes, paths, set, tables, subscription."""
    state = {"schema": False, "nodes": set(), "paths": set(), "set": False, "tables": {}, "sequences": {},
             "subscribed": None}
    if not schema_exists(host, cluster.database, cluster.schema):
        return state
    s, sid = cluster.schema, cluster.set_id
    state["schema"] = True
    rows = host.psql(f"""
SELECT 'node', no_id::text, '' FROM {s}.sl_node
UNION ALL SELECT 'path', pa_server::text, pa_client::text FROM {s}.sl_path
UNION ALL SELECT 'set', set_id::text, set_origin::text FROM {s}.sl_set WHERE set_id = {sid}
UNION ALL SELECT 'table', tab_id::text, quote_ident(tab_nspname) || '.' || quote_ident(tab_relname)
            FROM {s}.sl_table WHERE tab_set = {sid}
UNION ALL SELECT 'sequence', seq_id::text, quote_ident(seq_nspname) || '.' || quote_ident(seq_relname)
            FROM {s}.sl_sequence WHERE seq_set = {sid}
UNION ALL SELECT 'subscribe', sub_receiver::text, sub_active::text FROM {s}.sl_subscribe
            WHERE sub_set = {sid}""", cluster.database)
    for kind, a, b in rows:
        if kind == "node":
            state["nodes"].add(int(a))
        elif kind == "path":
            state["paths"].add((int(a), int(b)))
        elif kind == "set":
            state["set"] = True
            state["origin"] = int(b)
        elif kind == "table":
            state["tables"][b] = int(a)
        elif kind == "sequence":
            state["sequences"][b] = int(a)
        elif kind == "subscribe":  # two nodes: one subscription, whichever way the set goes now
            state["subscribed"] = b == "true"
    return state


def slon_running(host: Host, cluster: Cluster, instance: str) -> int | None:
    """PID of the watchdog of a slon instance on this host when it is alive, else None."""
    pidfile = f"{cluster.rundir}/{instance}.watchdog.pid"
    r = host.run(f"p=$(cat {pidfile} 2>/dev/null) && grep -qa slon-watchdog /proc/$p/cmdline && echo $p",
                 check=False)
    return int(r.stdout.strip()) if r.ok and r.stdout.strip() else None


def copy_progress(master: Host, slave: Host, slon: Host, cl: Cluster) -> dict:
    """The initial copy as the receiver shows it: slon log, pg_stat_progress_copy, origin table sizes."""
    sizes = {render.plain(r[0]): int(r[1]) for r in master.psql(
        f"SELECT quote_ident(tab_nspname) || '.' || quote_ident(tab_relname), pg_table_size(tab_reloid) "
        f"FROM {cl.schema}.sl_table WHERE tab_set = {cl.set_id}", cl.database)}
    text = slon.sudo(f"tail -n 5000 {cl.logdir}/slon-{cl.slave.instance}.log", check=False).stdout
    log = render.parse_copy_log(text)
    rows = slave.psql("SELECT p.relid::regclass::text, p.bytes_processed FROM pg_stat_progress_copy p "
                          f"JOIN pg_database d ON d.oid = p.datid WHERE d.datname = {literal(cl.database)}", cl.database)
    current = sum(int(r[1]) for r in rows)
    if rows and not log["current"]:
        log["current"] = render.plain(rows[0][0])
    elapsed = 0.0
    if log["started"]:
        now = slon.run("date -u '+%Y-%m-%d %H:%M:%S'").stdout.strip()
        elapsed = time.mktime(time.strptime(now, "%Y-%m-%d %H:%M:%S")) - time.mktime(
            time.strptime(log["started"], "%Y-%m-%d %H:%M:%S"))
    return {"tables": len(sizes), "bytes_total": sum(sizes.values()), "tables_done": sorted(log["done"]),
            "current": log["current"], "current_bytes": current, "elapsed": elapsed, "retries": log["retries"],
            "line": render.progress_line(sizes, log, current, elapsed)}


# --- probes for preflight (read-only) ---------------------------------------------------------------

def sudo_failure(host: Host) -> str:
    """'' when the SSH user has passwordless sudo, else sudo's complaint (connects first)."""
    r = host.run("sudo -n true", check=False)
    if r.ok:
        return ""
    err = (r.stderr.strip() or r.stdout.strip()).splitlines()
    return err[-1] if err else f"exit code {r.exited}"


def server_version(host: Host) -> str:
    return host.value("SHOW server_version")


def database_size(host: Host, database: str) -> int:
    return int(host.value(f"SELECT pg_database_size({literal(database)})"))


def local_node_id(host: Host, cluster: Cluster) -> int | None:
    """The Slony node id this database holds for the cluster, or None without the cluster's schema."""
    if not schema_exists(host, cluster.database, cluster.schema):
        return None
    value = host.value(f"SELECT last_value FROM {cluster.schema}.sl_local_node_id", cluster.database)
    return int(value) if value and int(value) > 0 else None


def unlogged_tables(host: Host, cluster: Cluster) -> list[str]:
    return app_relations(host, cluster, "c.relkind = 'r' AND c.relpersistence = 'u'")


def unowned_sequences(host: Host, cluster: Cluster) -> list[str]:
    """Sequences of the application's schemas that no column owns (neither serial nor identity)."""
    return app_relations(host, cluster, """c.relkind = 'S'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                      AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
                      AND d.deptype IN ('a', 'i'))""")


def large_objects(host: Host, database: str) -> int:
    return int(host.value("SELECT count(*) FROM pg_largeobject_metadata", database))


def long_transactions(host: Host, seconds: int) -> list[tuple[str, str, str, str, int]]:
    """(pid, database, user, state, age in s) of client sessions, in any database of this server, whose
    transaction is idle or older than `seconds`."""
    rows = host.psql(f"""
SELECT pid, coalesce(datname, ''), coalesce(usename, ''), coalesce(state, ''),
       extract(epoch FROM now() - xact_start)::bigint
  FROM pg_stat_activity
 WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND xact_start IS NOT NULL
   AND (state LIKE 'idle in transaction%' OR xact_start < now() - make_interval(secs => {int(seconds)}))
 ORDER BY xact_start""")
    return [(pid, db, user, state, int(age)) for pid, db, user, state, age in rows]


def prepared_transactions(host: Host) -> list[tuple[str, str, int]]:
    """(gid, database, age in s) of every prepared transaction on this server."""
    rows = host.psql("SELECT gid, database, extract(epoch FROM now() - prepared)::bigint "
                     "FROM pg_prepared_xacts ORDER BY prepared")
    return [(gid, db, int(age)) for gid, db, age in rows]


def parse_df_available(text: str) -> int:
    """Bytes available from `df --output=avail -B1 PATH` (a header line, then the number)."""
    return int(text.split()[-1])


def disk_free(host: Host, path: str) -> int:
    """Bytes available to PostgreSQL on the filesystem that holds `path`."""
    return parse_df_available(host.sudo(f"df --output=avail -B1 {shlex.quote(path)}", what="df").stdout)


def normal_locale(name: str) -> str:
    """A locale name as glibc compares it: the codeset lower-case without punctuation (C.UTF-8 = C.utf8)."""
    base, dot, rest = name.partition(".")
    codeset, at, modifier = rest.partition("@")
    return base + dot + re.sub(r"[^a-z0-9]", "", codeset.lower()) + at + modifier


def has_locale(host: Host, name: str) -> bool:
    """Whether the OS of this host has the locale (C and POSIX always exist)."""
    if name in ("C", "POSIX"):
        return True
    have = host.run("locale -a", check=False).stdout.split()
    return normal_locale(name) in {normal_locale(l) for l in have}


def role_exists(host: Host, role: str) -> bool:
    return bool(host.psql(f"SELECT 1 FROM pg_roles WHERE rolname = {literal(role)}"))


def has_managed_block(host: Host, path: str, tag: str) -> bool:
    """Whether the file holds slony-migrate's managed block `tag` (as written by apply_block)."""
    from .render import BEGIN
    return BEGIN.format(tag) in (host.read_file(path) or "").splitlines()


def postgres_home(host: Host) -> str:
    return host.run("getent passwd postgres").stdout.split(":")[5]


def replication_login(host: Host, cluster: Cluster, node) -> str:
    """'' when the postgres user of this host logs in to the node's database as the replication user
    over TCP with its .pgpass (no prompt), else psql's error."""
    cmd = (f"psql -w -X -q -h {shlex.quote(node.dbhost)} -p {int(node.port)} -U {shlex.quote(cluster.user)} "
           f"-d {shlex.quote(cluster.database)} -c 'SELECT 1'")
    r = host.sudo(cmd, user="postgres", check=False, timeout=60)
    if r.ok:
        return ""
    err = [l.strip() for l in r.stderr.splitlines() if l.strip()]
    line = next((l for l in err if "FATAL" in l), err[0] if err else f"exit code {r.exited}")
    return line.split("failed: ", 1)[-1]
