"""Facts of PostgreSQL's catalogs: versions, databases, the application's tables,
roles, sessions."""

from __future__ import annotations

from .. import settings
from ..errors import StepError
from ..model import Cluster, Membership, Role, Table
from ..remote import Host
from ..render.files import BEGIN
from ..render.files import hba_clusters as parse_hba_clusters
from ..render.parse import major
from ..render.roles import Grant
from ..render.slonik import slony_key
from ..render.sql import literal, read_tables

__all__ = [
    "app_schema",
    "own_relation",
    "relation_size",
    "pg_major",
    "server_version",
    "pg_dir",
    "database_exists",
    "database_info",
    "database_names",
    "require_database",
    "cluster_exists",
    "app_tables",
    "app_relations",
    "app_sequences",
    "replicable",
    "tables_with_rows",
    "unlogged_tables",
    "unowned_sequences",
    "large_objects",
    "long_transactions",
    "prepared_transactions",
    "role_exists",
    "role",
    "named_roles",
    "roles",
    "bootstrap_superuser",
    "memberships",
    "role_configs",
    "database_grants",
    "database_comment",
    "parameters",
    "tablespaces_used",
    "tablespace_names",
    "collations_used",
    "collation_names",
    "has_icu",
    "ts_dictionaries",
    "event_triggers",
    "hba_file",
    "hba_unloaded",
    "hba_errors",
    "role_settings",
    "role_database_settings",
    "client_sessions",
    "has_managed_block",
    "hba_clusters",
    "has_plpgsql",
    "database_size",
    "data_directory",
    "schema_objects",
    "fenced",
    "connect_grantees",
    "row_count",
    "ssl_on",
    "code_run_by_replication",
    "identity_columns",
    "generated_columns",
    "materialized_views",
    "object_counts",
    "extensions",
    "available_extensions",
]


def app_schema(column: str, cluster: Cluster) -> str:
    """SQL: the schema named by `column` belongs to the application (not
    PostgreSQL's, not Slony's)."""
    return (
        f"{column} NOT IN ('pg_catalog', 'information_schema') AND {column} NOT LIKE"
        f" 'pg\\_%' AND {column} <> {literal(cluster.schema)}"
    )


def own_relation(column: str, catalog: str = "pg_class") -> str:
    """SQL: the object whose oid is `column` (in `catalog`) is the application's own,
    not an extension's member (an extension's configuration tables are the extension's
    business on each server).
    """
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{catalog}'::regclass"
        f" AND e.objid = {column} AND e.deptype = 'e')"
    )


def pg_major(host: Host) -> str:
    """Major version of the server's PostgreSQL as Debian's packages name it ("9.6",
    "15", "17")."""
    return major(host.version_num)


def client_sessions(host: Host) -> str:
    """SQL: the pg_stat_activity row is an application's session (backend_type is
    there from 10; before, the view showed client backends only)."""
    return "backend_type = 'client backend'" if host.version_num >= 100000 else "true"


def server_version(host: Host) -> str:
    return host.value("SHOW server_version")


def pg_dir(host: Host, name: str) -> str:
    """A directory from pg_config: BINDIR, PKGLIBDIR, SHAREDIR."""
    return host.value(f"SELECT setting FROM pg_config WHERE name = {literal(name)}")


def database_exists(host: Host, database: str) -> bool:
    return bool(
        host.psql(f"SELECT 1 FROM pg_database WHERE datname = {literal(database)}")
    )


def database_info(host: Host, database: str) -> dict[str, str] | None:
    """owner, encoding, collate, ctype of a database, or None when it does not exist."""
    rows = host.psql(
        "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate,"
        f" datctype FROM pg_database WHERE datname = {literal(database)}"
    )
    if not rows:
        return None
    return dict(zip(("owner", "encoding", "collate", "ctype"), rows[0]))


def database_names(host: Host) -> list[str]:
    """The server's databases apart from templates and postgres."""
    return [
        r[0]
        for r in host.psql(
            "SELECT datname FROM pg_database WHERE NOT datistemplate "
            "AND datname <> 'postgres' ORDER BY 1"
        )
    ]


def require_database(host: Host, database: str) -> None:
    if not database_exists(host, database):
        raise StepError(
            host.name,
            f"database {database} does not exist",
            "check --database, or run the appdb step for the slave",
        )


def cluster_exists(host: Host, cluster: Cluster) -> bool:
    """Whether the cluster's schema (_<cluster>) is in the database; StepError when it
    is there but not Slony's: owned by a role that is not a superuser, or holding an
    object that such a role owns. Every read of Slony's catalog asks this first, so a
    schema the application's owner made in advance (its views would run their code
    as a superuser) is never read."""
    if not database_exists(host, cluster.database):
        return False
    rows = host.psql(
        f"""
SELECT pg_get_userbyid(n.nspowner), r.rolsuper,
       (SELECT string_agg(DISTINCT pg_get_userbyid(o.owner), ', ')
          FROM (SELECT relowner FROM pg_class WHERE relnamespace = n.oid
                UNION SELECT proowner FROM pg_proc WHERE pronamespace = n.oid
                UNION SELECT typowner FROM pg_type WHERE typnamespace = n.oid
                UNION SELECT oprowner FROM pg_operator WHERE oprnamespace = n.oid) o(owner)
          JOIN pg_roles x ON x.oid = o.owner WHERE NOT x.rolsuper)
  FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
 WHERE n.nspname = {literal(cluster.schema)}""",
        cluster.database,
    )
    if not rows:
        return False
    owner, superuser, strangers = rows[0]
    if superuser != "t" or strangers:
        whose = (
            f"owned by {owner}"
            if superuser != "t"
            else f"holding objects of {strangers}"
        )
        raise StepError(
            host.name,
            f"schema {cluster.schema} in {cluster.database} is {whose}, not a superuser:"
            " not Slony's (the tool or the replication role makes it); its views could"
            " run that role's code as a superuser, so nothing reads it",
            f"drop it if it is not a cluster in use (DROP SCHEMA {cluster.schema}"
            " CASCADE), or choose another --cluster",
        )
    return True


def app_tables(host: Host, cluster: Cluster) -> list[tuple[Table | None, str]]:
    """Every ordinary table of the application's schemas, sorted, with the key Slony
    would use.

    Returns (Table, name) pairs; Table is None for a table with neither a primary key
    nor a unique index on NOT NULL columns. Table names are quoted identifiers; the
    index name is as it is.
    """
    rows = host.psql(
        f"""
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
       (SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
         WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
           AND i.indexprs IS NULL
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                             AND a.attnum = ANY (i.indkey) AND NOT a.attnotnull)
         ORDER BY ic.relname LIMIT 1)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND {app_schema("n.nspname", cluster)}
   AND {own_relation("c.oid")}
 ORDER BY 1""",
        cluster.database,
    )
    out = []
    for name, has_pk, index in rows:
        if has_pk == "t":
            out.append((Table(name), name))
        elif index:
            out.append((Table(name, index), name))
        else:
            out.append((None, name))
    return out


def relation_size(host: Host, cluster: Cluster, name: str) -> int:
    """Bytes a table takes with its indexes and TOAST."""
    return int(
        host.value(
            f"SELECT pg_total_relation_size({literal(name)}::regclass)",
            cluster.database,
        )
    )


def app_relations(host: Host, cluster: Cluster, where: str) -> list[str]:
    """Quoted names of the application's relations (pg_class c) that match `where`,
    sorted."""
    rows = host.psql(
        f"""
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {where} AND {app_schema("n.nspname", cluster)} AND {own_relation("c.oid")}
 ORDER BY 1""",
        cluster.database,
    )
    return [r[0] for r in rows]


def app_sequences(host: Host, cluster: Cluster) -> list[str]:
    return app_relations(host, cluster, "c.relkind = 'S'")


def replicable(
    host: Host, cluster: Cluster, keyed: frozenset[str] = frozenset()
) -> tuple[list[Table], list[str]]:
    """Tables and sequences for the set; StepError naming every table without a usable
    key.

    keyed: tables that are to get a primary key before the set is made (migrate
    --add-keys).
    """
    tables = [
        (Table(name) if t is None and name in keyed else t, name)
        for t, name in app_tables(host, cluster)
    ]
    unusable = [
        f"{name} (index {t.key})"
        for t, name in tables
        if t and t.key and slony_key(t.key) is None
    ]
    if unusable:
        raise StepError(
            host.name,
            f"unique index name(s) Slony cannot be given: {', '.join(unusable)}",
            "rename each index to a name without a dot or shorter than 62 characters",
        )
    keyless = [name for t, name in tables if t is None]
    if keyless:
        raise StepError(
            host.name,
            "table(s) without a primary key or a unique index on NOT NULL columns:"
            f" {', '.join(keyless)}",
            "add a primary key (or a unique index on NOT NULL columns) to each, then"
            " run again",
        )
    return [t for t, _ in tables], app_sequences(host, cluster)


def tables_with_rows(host: Host, database: str, tables: list[str]) -> list[str]:
    """The tables among `tables` (quoted qualified names) that hold at least one row;
    missing ones are skipped; anything but a table under such a name is an error
    (render.sql.read_tables)."""
    if not tables:
        return []
    names = ", ".join(literal(t) for t in tables)
    existing = [
        r[0]
        for r in host.psql(
            f"SELECT t FROM unnest(ARRAY[{names}]::text[]) t WHERE EXISTS (SELECT 1"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE"
            " quote_ident(n.nspname) || '.' || quote_ident(c.relname) = t)",
            database,
        )
    ]
    if not existing:
        return []
    checks = " UNION ALL ".join(
        f"SELECT {literal(t)} WHERE EXISTS (SELECT 1 FROM {t})" for t in existing
    )
    sql = f"BEGIN;\n{read_tables(existing)}{checks};\nCOMMIT;"
    return [r[0] for r in host.psql(sql, database)]


def unlogged_tables(host: Host, cluster: Cluster) -> list[str]:
    return app_relations(host, cluster, "c.relkind = 'r' AND c.relpersistence = 'u'")


def unowned_sequences(host: Host, cluster: Cluster) -> list[str]:
    """Sequences of the application's schemas that no column owns (neither serial nor
    identity)."""
    return app_relations(
        host,
        cluster,
        """c.relkind = 'S'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                      AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
                      AND d.deptype IN ('a', 'i'))""",
    )


def large_objects(host: Host, database: str) -> int:
    return int(host.value("SELECT count(*) FROM pg_largeobject_metadata", database))


def long_transactions(
    host: Host, seconds: float
) -> list[tuple[str, str, str, str, int]]:
    """(pid, database, user, state, age in s) of client sessions, in any database of
    this server, whose transaction is older than `seconds` or has sat idle for more
    than settings.IDLE_IN_TRANSACTION s (a client between two statements, slon's own
    sessions among them, is idle in transaction for a moment: that is not a session
    that holds anything up), oldest first."""
    idle = f"make_interval(secs => {settings.IDLE_IN_TRANSACTION})"
    rows = host.psql(f"""
SELECT pid, coalesce(datname, ''), coalesce(usename, ''), coalesce(state, ''),
       extract(epoch FROM now() - xact_start)::bigint
  FROM pg_stat_activity
 WHERE pid <> pg_backend_pid() AND {client_sessions(host)} AND xact_start IS NOT NULL
   AND (state LIKE 'idle in transaction%' AND state_change < now() - {idle}
        OR xact_start < now() - make_interval(secs => {float(seconds)}))
 ORDER BY xact_start""")
    return [(pid, db, user, state, int(age)) for pid, db, user, state, age in rows]


def prepared_transactions(host: Host) -> list[tuple[str, str, int]]:
    """(gid, database, age in s) of every prepared transaction on this server, oldest
    first."""
    rows = host.psql(
        "SELECT gid, database, extract(epoch FROM now() - prepared)::bigint "
        "FROM pg_prepared_xacts ORDER BY prepared"
    )
    return [(gid, db, int(age)) for gid, db, age in rows]


def role_exists(host: Host, role: str) -> bool:
    return bool(host.psql(f"SELECT 1 FROM pg_roles WHERE rolname = {literal(role)}"))


def role(host: Host, name: str) -> tuple[bool, bool, str, str] | None:
    """(superuser, can log in, stored password verifier, comment) of a role, or None
    when it does not exist."""
    rows = host.psql(
        "SELECT rolsuper, rolcanlogin, coalesce(rolpassword, ''),"
        " coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_authid WHERE"
        f" rolname = {literal(name)}"
    )
    return (
        (rows[0][0] == "t", rows[0][1] == "t", rows[0][2], rows[0][3]) if rows else None
    )


def role_database_settings(host: Host, role: str, database: str) -> list[str]:
    """The settings a role's sessions start with in one database (ALTER ROLE ... IN
    DATABASE ... SET), as "name=value"."""
    return [
        r[0]
        for r in host.psql(
            "SELECT unnest(s.setconfig) FROM pg_db_role_setting s"
            " JOIN pg_roles r ON r.oid = s.setrole JOIN pg_database d ON d.oid ="
            f" s.setdatabase WHERE r.rolname = {literal(role)}"
            f" AND d.datname = {literal(database)}"
        )
    ]


def role_settings(host: Host, name: str) -> list[str]:
    """The settings a role's sessions start with (ALTER ROLE ... SET), as
    "name=value"."""
    return [
        r[0]
        for r in host.psql(
            f"SELECT unnest(rolconfig) FROM pg_roles WHERE rolname = {literal(name)}"
        )
    ]


def named_roles(host: Host, cluster: Cluster) -> dict[str, str]:
    """{role: why} for every role the database names, as the schema step and the
    applications need them on the new server: the database's owner and grantees, the
    owners of the application's objects and of what pg_dump -s writes besides (event
    triggers, foreign servers and wrappers, user mappings), the grantees of every
    privilege there (tables, columns, sequences, schemas, functions, types, languages,
    foreign servers), default privileges, row security policies, and the roles with
    settings in this database. Not the bootstrap superuser; PUBLIC is no role."""
    v = host.version_num
    in_app = lambda column: f"{column} IN (SELECT oid FROM app)"  # noqa: E731
    owned = [
        ("pg_namespace", "nspowner", "oid"),
        ("pg_class", "relowner", "relnamespace"),
        ("pg_proc", "proowner", "pronamespace"),
        ("pg_type", "typowner", "typnamespace"),
        ("pg_collation", "collowner", "collnamespace"),
        ("pg_conversion", "conowner", "connamespace"),
        ("pg_operator", "oprowner", "oprnamespace"),
        ("pg_opclass", "opcowner", "opcnamespace"),
        ("pg_opfamily", "opfowner", "opfnamespace"),
        ("pg_ts_config", "cfgowner", "cfgnamespace"),
        ("pg_ts_dict", "dictowner", "dictnamespace"),
    ]
    if v >= 100000:
        owned.append(("pg_statistic_ext", "stxowner", "stxnamespace"))
    granted = [
        ("pg_namespace", "nspacl", "oid"),
        ("pg_class", "relacl", "relnamespace"),
        ("pg_proc", "proacl", "pronamespace"),
        ("pg_type", "typacl", "typnamespace"),
    ]
    parts = [
        "SELECT datdba, 'owner of the database' FROM db",
        "SELECT (aclexplode(datacl)).grantee, 'privileges on the database' FROM db"
        " WHERE datacl IS NOT NULL",
        "SELECT setrole, 'settings in the database' FROM pg_db_role_setting, db"
        " WHERE setdatabase = db.oid AND setrole <> 0",
        *(
            f"SELECT {owner}, 'owner' FROM {catalog} WHERE {in_app(space)}"
            for catalog, owner, space in owned
        ),
        *(
            f"SELECT (aclexplode({acl})).grantee, 'grantee' FROM {catalog}"
            f" WHERE {acl} IS NOT NULL AND {in_app(space)}"
            for catalog, acl, space in granted
        ),
        "SELECT (aclexplode(a.attacl)).grantee, 'grantee' FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid WHERE a.attacl IS NOT NULL AND"
        f" {in_app('c.relnamespace')}",
        "SELECT evtowner, 'owner' FROM pg_event_trigger",
        "SELECT fdwowner, 'owner' FROM pg_foreign_data_wrapper",
        "SELECT srvowner, 'owner' FROM pg_foreign_server",
        "SELECT umuser, 'user mapping' FROM pg_user_mapping WHERE umuser <> 0",
        "SELECT (aclexplode(fdwacl)).grantee, 'grantee' FROM pg_foreign_data_wrapper"
        " WHERE fdwacl IS NOT NULL",
        "SELECT (aclexplode(srvacl)).grantee, 'grantee' FROM pg_foreign_server"
        " WHERE srvacl IS NOT NULL",
        "SELECT (aclexplode(lanacl)).grantee, 'grantee' FROM pg_language"
        " WHERE lanacl IS NOT NULL",
        "SELECT defaclrole, 'default privileges' FROM pg_default_acl",
        "SELECT (aclexplode(defaclacl)).grantee, 'default privileges'"
        " FROM pg_default_acl",
    ]
    if v >= 90500:
        parts.append(
            "SELECT unnest(p.polroles), 'row security policy' FROM pg_policy p"
            f" JOIN pg_class c ON c.oid = p.polrelid WHERE {in_app('c.relnamespace')}"
        )
    rows = host.psql(
        "WITH app AS (SELECT n.oid FROM pg_namespace n WHERE "
        + app_schema("n.nspname", cluster)
        + "),\ndb AS (SELECT oid, datdba, datacl FROM pg_database WHERE datname ="
        " current_database()),\nused(r, why) AS (\n  "
        + "\n  UNION ALL ".join(parts)
        + ")\nSELECT r.rolname, string_agg(DISTINCT u.why, ', ' ORDER BY u.why)"
        " FROM used u JOIN pg_roles r ON r.oid = u.r WHERE r.oid <> 10"
        " GROUP BY r.rolname ORDER BY 1",
        cluster.database,
    )
    return {name: why for name, why in rows}


def roles(host: Host, names: list[str] | None = None) -> dict[str, Role]:
    """{name: Role} of every role of this server (or of `names`), with its stored
    password verifier and comment (superuser's view: pg_authid)."""
    bypass = "rolbypassrls" if host.version_num >= 90500 else "false"
    only = (
        f" WHERE rolname = ANY (ARRAY[{', '.join(literal(n) for n in names)}]::text[])"
        if names
        else ""
    )
    if names is not None and not names:
        return {}
    rows = host.psql(
        f"""
SELECT rolname, rolsuper, rolcanlogin, rolcreatedb, rolcreaterole, rolinherit,
       rolreplication, {bypass}, rolconnlimit,
       CASE WHEN rolvaliduntil IS NULL THEN ''
            WHEN rolvaliduntil = 'infinity' THEN 'infinity'
            WHEN rolvaliduntil = '-infinity' THEN '-infinity'
            ELSE to_char(rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00'
       END,
       coalesce(rolpassword, ''), coalesce(shobj_description(oid, 'pg_authid'), '')
  FROM pg_authid{only} ORDER BY 1"""
    )
    out = {}
    for r in rows:
        flags = [v == "t" for v in r[1:8]]
        out[r[0]] = Role(
            r[0],
            login=flags[1],
            superuser=flags[0],
            createdb=flags[2],
            createrole=flags[3],
            inherit=flags[4],
            replication=flags[5],
            bypassrls=flags[6],
            connlimit=int(r[8]),
            valid_until=r[9],
            verifier=r[10],
            comment=r[11],
        )
    return out


def bootstrap_superuser(host: Host) -> str:
    """The role initdb made (postgres): it owns what nobody else does, on every
    server."""
    return host.value("SELECT rolname FROM pg_roles WHERE oid = 10") or ""


def memberships(host: Host) -> list[Membership]:
    """Every membership of this server's roles (pg_auth_members), one per group and
    member (from 16 several grantors may grant the same: their options together)."""
    options = (
        "bool_or(a.inherit_option)::text, bool_or(a.set_option)::text"
        if host.version_num >= 160000
        else "'', ''"
    )
    rows = host.psql(
        f"""
SELECT g.rolname, m.rolname, bool_or(a.admin_option)::text, {options}
  FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid
  JOIN pg_roles m ON m.oid = a.member
 GROUP BY 1, 2 ORDER BY 1, 2"""
    )
    flag = lambda v: None if v == "" else v == "true"  # noqa: E731
    return [
        Membership(g, m, admin == "true", flag(inherit), flag(set_))
        for g, m, admin, inherit, set_ in rows
    ]


def role_configs(host: Host, database: str) -> list[tuple[str, str, str]]:
    """(role or '', database or '', 'name=value') of every setting roles' sessions
    start with anywhere (ALTER ROLE ... SET: database ''), or in `database` (ALTER
    ROLE ... IN DATABASE ... SET), and the database's own (ALTER DATABASE ... SET:
    role ''), in the order stored. ALTER ROLE ALL SET is the server's, not the
    database's: left out."""
    return [
        tuple(r)
        for r in host.psql(
            f"""
SELECT coalesce(r.rolname, ''), coalesce(d.datname, ''), c.setting
  FROM pg_db_role_setting s
  LEFT JOIN pg_roles r ON r.oid = s.setrole
  LEFT JOIN pg_database d ON d.oid = s.setdatabase
  CROSS JOIN LATERAL unnest(s.setconfig) WITH ORDINALITY c(setting, n)
 WHERE (s.setdatabase = 0 AND s.setrole <> 0) OR d.datname = {literal(database)}
 ORDER BY 1, 2, c.n"""
        )
    ]


def database_grants(host: Host, database: str) -> set:
    """The privileges on `database` (PostgreSQL's defaults where none were granted),
    as render.roles.Grant; empty when it does not exist."""
    rows = host.psql(
        f"""
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
       a.privilege_type, a.is_grantable
  FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
 WHERE d.datname = {literal(database)}"""
    )
    return {Grant(who, what, grantable == "t") for who, what, grantable in rows}


def database_comment(host: Host, database: str) -> str:
    return (
        host.value(
            "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM"
            f" pg_database WHERE datname = {literal(database)}"
        )
        or ""
    )


def parameters(host: Host) -> set[str]:
    """The names of this server's configuration parameters (lower case)."""
    return {r[0].lower() for r in host.psql("SELECT name FROM pg_settings")}


def hba_file(host: Host) -> str:
    return host.value("SHOW hba_file")


def hba_unloaded(host: Host, path: str) -> bool:
    """Whether pg_hba.conf changed after PostgreSQL last loaded its configuration."""
    return (
        host.value(
            f"SELECT pg_conf_load_time() < (pg_stat_file({literal(path)})).modification"
        )
        == "t"
    )


def hba_errors(host: Host) -> list[tuple[str, str]]:
    """(line number, error) of every rule PostgreSQL cannot use in the pg_hba.conf on
    disk. Before 10 there is no pg_hba_file_rules: a reload that fails keeps the old
    rules and says so in the log only.
    """
    if host.version_num < 100000:
        return []
    return [
        tuple(r)
        for r in host.psql(
            "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL"
        )
    ]


def has_managed_block(host: Host, path: str, tag: str) -> bool:
    """Whether the file holds slony-migrate's managed block `tag` (as written by
    render.files.apply_block)."""
    return BEGIN.format(tag) in (host.read_file(path) or "").splitlines()


def hba_clusters(host: Host) -> dict[str, tuple[str, str]]:
    """{cluster: (database, replication user)} of every cluster of slony-migrate on this
    server: the managed blocks of its pg_hba.conf (the hba step writes one per cluster,
    finish removes it)."""
    path = hba_file(host)
    return parse_hba_clusters(host.read_file(path, user="postgres") or "")


def has_plpgsql(host: Host, database: str) -> bool:
    return bool(
        host.psql("SELECT 1 FROM pg_language WHERE lanname = 'plpgsql'", database)
    )


def database_size(host: Host, database: str) -> int:
    return int(host.value(f"SELECT pg_database_size({literal(database)})"))


def data_directory(host: Host) -> str:
    return host.value("SHOW data_directory")


def schema_objects(host: Host, cluster: Cluster) -> set[tuple[str, str, str]]:
    """The application's columns (type, NOT NULL) and index definitions, for
    comparing two servers."""
    rows = host.psql(
        f"""
SELECT 'column', quote_ident(n.nspname) || '.' || c.relname || '.' || a.attname,
       format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relkind IN ('r', 'p') AND {app_schema("n.nspname", cluster)}
UNION ALL
SELECT 'index', schemaname || '.' || indexname, indexdef FROM pg_indexes
 WHERE {app_schema("schemaname", cluster)}
ORDER BY 1, 2""",
        cluster.database,
    )
    return {tuple(r) for r in rows}


def fenced(host: Host, database: str) -> bool:
    """Whether no role but superusers may connect to `database` (see
    render.sql.fence_database)."""
    return (
        host.value(
            f"""
SELECT NOT EXISTS (SELECT 1 FROM pg_roles r WHERE NOT r.rolsuper AND r.rolcanlogin
                      AND has_database_privilege(r.oid, {literal(database)}, 'CONNECT'))"""
        )
        == "t"
    )


def connect_grantees(host: Host, database: str) -> list[str]:
    """Who but superusers may connect to `database`: PUBLIC and the roles granted
    CONNECT by name (what render.sql.fence_database takes, and unfence_database gives
    back)."""
    return [
        r[0]
        for r in host.psql(
            f"""
SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE r.rolname END
  FROM pg_database d,
       aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
  LEFT JOIN pg_roles r ON r.oid = a.grantee
 WHERE d.datname = {literal(database)} AND a.privilege_type = 'CONNECT'
   AND (a.grantee = 0 OR NOT r.rolsuper)
 ORDER BY 1"""
        )
    ]


def row_count(host: Host, database: str, tables: list[str]) -> int:
    """How many rows the tables (quoted qualified names) hold together; missing ones
    count 0."""
    if not tables:
        return 0
    names = ", ".join(literal(t) for t in tables)
    existing = [
        r[0]
        for r in host.psql(
            f"SELECT t FROM unnest(ARRAY[{names}]::text[]) t WHERE EXISTS (SELECT 1"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE"
            " quote_ident(n.nspname) || '.' || quote_ident(c.relname) = t)",
            database,
        )
    ]
    if not existing:
        return 0
    total = " + ".join(f"(SELECT count(*) FROM {t})" for t in existing)
    return int(host.value(f"SELECT {total}", database) or 0)


def ssl_on(host: Host) -> bool:
    return host.value("SHOW ssl") == "on"


# Built-in functions that run SQL given as text, or that change the session that calls
# them (set_config: a search_path that lets the owner's functions in), and dblink's: in
# an expression slon evaluates they would run as the replication superuser.
SQL_RUNNERS = (
    "query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema", "table_to_xml",
    "table_to_xml_and_xmlschema", "table_to_xmlschema", "schema_to_xml",
    "schema_to_xml_and_xmlschema", "schema_to_xmlschema", "database_to_xml",
    "database_to_xml_and_xmlschema", "database_to_xmlschema", "cursor_to_xml",
    "cursor_to_xmlschema", "ts_stat", "ts_rewrite", "set_config",
)  # fmt: skip

CODE_RUN_BY_REPLICATION = """
WITH RECURSIVE app AS (
  SELECT c.oid, c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p') AND {app}),
rel_exprs(what, owner, tree) AS (
  SELECT format('constraint %I on %s', k.conname, k.conrelid::regclass), a.relowner,
         k.conbin::text
    FROM pg_constraint k JOIN app a ON a.oid = k.conrelid WHERE k.conbin IS NOT NULL
  UNION ALL
  SELECT format('the default of %s.%I', d.adrelid::regclass, t.attname), a.relowner,
         d.adbin::text
    FROM pg_attrdef d JOIN app a ON a.oid = d.adrelid
    JOIN pg_attribute t ON t.attrelid = d.adrelid AND t.attnum = d.adnum
  UNION ALL
  SELECT format('index %s on %s', i.indexrelid::regclass, i.indrelid::regclass),
         a.relowner, coalesce(i.indexprs::text, '') || coalesce(i.indpred::text, '')
    FROM pg_index i JOIN app a ON a.oid = i.indrelid
  UNION ALL
  SELECT format('constraint %I on %s', k.conname, k.conrelid::regclass), a.relowner,
         string_agg(format(':opfuncid %s', o.oprcode::oid), ' ')
    FROM pg_constraint k JOIN app a ON a.oid = k.conrelid
    JOIN pg_operator o ON o.oid = ANY (k.conexclop)
   GROUP BY 1, 2),
types(oid) AS (
  SELECT a.atttypid FROM pg_attribute a
   WHERE a.attrelid IN (SELECT oid FROM app) AND a.attnum > 0 AND NOT a.attisdropped
  UNION
  SELECT m[1]::oid FROM rel_exprs e,
         regexp_matches(e.tree, ':resulttype (\\d+)', 'g') m
  UNION
  SELECT x.oid FROM types t JOIN pg_type y ON y.oid = t.oid,
         LATERAL unnest(ARRAY[CASE WHEN y.typtype = 'd' THEN y.typbasetype END,
                              CASE WHEN y.typelem <> 0 AND y.typlen = -1 THEN y.typelem END,
                              (SELECT rngsubtype FROM pg_range WHERE rngtypid = y.oid),
                              (SELECT rngtypid FROM pg_range r
                                WHERE (to_jsonb(r) ->> 'rngmultitypid')::oid = y.oid)]
                        || ARRAY(SELECT atttypid FROM pg_attribute
                                  WHERE attrelid = y.typrelid AND attnum > 0
                                    AND NOT attisdropped)) x(oid)
   WHERE x.oid IS NOT NULL),
exprs(what, owner, tree) AS (
  SELECT * FROM rel_exprs
  UNION ALL
  SELECT format('constraint %I of domain %s', k.conname, k.contypid::regtype), y.typowner,
         k.conbin::text
    FROM pg_constraint k JOIN pg_type y ON y.oid = k.contypid
   WHERE k.contypid IN (SELECT oid FROM types) AND k.conbin IS NOT NULL
  UNION ALL
  SELECT format('the default of domain %s', y.oid::regtype), y.typowner,
         y.typdefaultbin::text
    FROM pg_type y
   WHERE y.oid IN (SELECT oid FROM types) AND y.typdefaultbin IS NOT NULL),
called(what, owner, fn) AS (
  SELECT e.what, e.owner, m[1]::oid FROM exprs e,
         regexp_matches(e.tree, ':(?:funcid|opfuncid|aggfnoid|winfnoid) (\\d+)', 'g') m
  UNION ALL
  SELECT format('the %s function of %s', f.kind, r.rngtypid::regtype), y.typowner, f.fn
    FROM pg_range r JOIN pg_type y ON y.oid = r.rngtypid,
         LATERAL (VALUES ('subtype difference', r.rngsubdiff::oid),
                         ('canonical', r.rngcanonical::oid)) f(kind, fn)
   WHERE f.fn <> 0
     AND (r.rngtypid IN (SELECT oid FROM types)
          OR (to_jsonb(r) ->> 'rngmultitypid')::oid IN (SELECT oid FROM types)))
SELECT format('%s calls %s (owned by %s)', c.what, p.oid::regprocedure,
              pg_get_userbyid(p.proowner))
  FROM called c JOIN pg_proc p ON p.oid = c.fn
 WHERE NOT (
         (p.oid < 16384 OR (SELECT rolsuper FROM pg_roles WHERE oid = p.proowner))
         AND p.proname NOT IN ({runners}) AND p.proname NOT LIKE 'dblink%'
         AND has_function_privilege(c.owner, p.oid, 'EXECUTE'))
UNION
SELECT format('trigger %I on %s fires %s', t.tgname, t.tgrelid::regclass,
              CASE t.tgenabled WHEN 'A' THEN 'ALWAYS' ELSE 'in REPLICA mode' END)
  FROM pg_trigger t
 WHERE NOT t.tgisinternal AND t.tgenabled IN ('A', 'R')
   AND t.tgrelid IN (SELECT oid FROM app)
UNION
SELECT format('rule %I on %s fires %s', w.rulename, w.ev_class::regclass,
              CASE w.ev_enabled WHEN 'A' THEN 'ALWAYS' ELSE 'in REPLICA mode' END)
  FROM pg_rewrite w
 WHERE w.ev_enabled IN ('A', 'R') AND w.ev_class IN (SELECT oid FROM app)
 ORDER BY 1"""


def code_run_by_replication(host: Host, cluster: Cluster) -> list[str]:
    """What slon, a superuser, would run on this node beyond built-in code while it
    applies rows to the application's tables, one description each: a whitelist, not a
    list of known tricks. Every expression it evaluates (CHECK and exclusion
    constraints, index expressions and predicates, defaults, and the CHECKs and
    defaults of every domain a column's type reaches through domains, arrays,
    composites and ranges), and the functions of those range types (a GiST index calls
    the subtype difference), may call, directly or through an operator, only functions
    that are built in or owned by a superuser (who reviewed them: an extension's, or the
    application's after ALTER FUNCTION ... OWNER TO postgres), that the table's owner
    may call himself and that run no SQL given as text (SQL_RUNNERS); no trigger or rule
    may fire in replica mode. The calls are read from the expressions' trees (built-in
    functions have no pg_depend entries). Reads the catalog only."""
    runners = ", ".join(literal(name) for name in SQL_RUNNERS)
    rows = host.psql(
        CODE_RUN_BY_REPLICATION.format(
            app=app_schema("n.nspname", cluster), runners=runners
        ),
        cluster.database,
    )
    return [r[0] for r in rows]


def identity_columns(host: Host, cluster: Cluster) -> dict[tuple[str, str], str]:
    """{(table, column): 'a' (ALWAYS) or 'd' (BY DEFAULT)} for every identity column
    of the application's tables (partitions follow their parent and are left out);
    names quoted. Identity columns are there from PostgreSQL 10."""
    if host.version_num < 100000:
        return {}
    rows = host.psql(
        f"""
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), quote_ident(a.attname),
       a.attidentity
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE a.attidentity IN ('a', 'd') AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
   AND NOT c.relispartition
   AND {app_schema("n.nspname", cluster)}
 ORDER BY 1, 2""",
        cluster.database,
    )
    return {(t, col): kind for t, col, kind in rows}


def generated_columns(host: Host, cluster: Cluster) -> list[str]:
    """table.column of every stored generated column of the application's tables
    (there from 12)."""
    if host.version_num < 120000:
        return []
    rows = host.psql(
        f"""
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) || '.' || quote_ident(a.attname)
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE a.attgenerated = 's' AND NOT a.attisdropped AND c.relkind IN ('r', 'p')
   AND {app_schema("n.nspname", cluster)}
 ORDER BY 1""",
        cluster.database,
    )
    return [r[0] for r in rows]


def materialized_views(host: Host, cluster: Cluster) -> list[tuple[str, str, bool]]:
    """(name, owner, populated) of every materialized view of the application's
    schemas."""
    rows = host.psql(
        f"""
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_userbyid(c.relowner),
       c.relispopulated
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'm' AND {app_schema("n.nspname", cluster)} ORDER BY 1""",
        cluster.database,
    )
    return [(name, owner, populated == "t") for name, owner, populated in rows]


def object_counts(host: Host, cluster: Cluster) -> dict[str, int]:
    """How many objects of each kind the application's schemas hold that Slony does
    not replicate as rows (the schema step copies their definitions)."""
    rows = host.psql(
        f"""
SELECT 'view', count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'v' AND {app_schema("n.nspname", cluster)} AND {own_relation("c.oid")}
UNION ALL SELECT 'partitioned table', count(*)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'p' AND {app_schema("n.nspname", cluster)}
UNION ALL SELECT 'foreign table', count(*)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'f' AND {app_schema("n.nspname", cluster)}
UNION ALL SELECT 'function', count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE {app_schema("n.nspname", cluster)} AND {own_relation("p.oid", "pg_proc")}
UNION ALL SELECT 'type or domain', count(*)
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE t.typtype IN ('d', 'e', 'c', 'r')
   AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
   AND {app_schema("n.nspname", cluster)} AND {own_relation("t.oid", "pg_type")}
UNION ALL SELECT 'trigger', count(*) FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT g.tgisinternal AND {app_schema("n.nspname", cluster)}
   AND g.tgname NOT LIKE {literal(cluster.schema + "%")}""",
        cluster.database,
    )
    return {kind: int(n) for kind, n in rows if int(n)}


def extensions(host: Host, database: str) -> dict[str, str]:
    """{extension: version} installed in the database (plpgsql left out: it is
    everywhere)."""
    return dict(
        host.psql(
            "SELECT extname, extversion FROM pg_extension WHERE extname <> 'plpgsql'"
            " ORDER BY 1",
            database,
        )
    )


def available_extensions(host: Host) -> dict[str, set[str]]:
    """{extension: versions} this server could install (its packages are there)."""
    out: dict[str, set[str]] = {}
    for name, version in host.psql(
        "SELECT name, version FROM pg_available_extension_versions"
    ):
        out.setdefault(name, set()).add(version)
    return out


# --- what the schema step cannot create on an empty server ----------------------------


def tablespaces_used(host: Host, cluster: Cluster) -> dict[str, list[str]]:
    """{tablespace: what is in it} beyond the database's default: the application's
    tables, indexes and materialized views (pg_dump -s names each one's), and the
    database itself when its default is not pg_default."""
    rows = host.psql(
        f"""
SELECT t.spcname, format('%s %s', CASE c.relkind WHEN 'i' THEN 'index'
         WHEN 'I' THEN 'index' WHEN 'm' THEN 'materialized view' ELSE 'table' END,
         quote_ident(n.nspname) || '.' || quote_ident(c.relname))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_tablespace t ON t.oid = c.reltablespace
 WHERE c.reltablespace <> 0 AND c.relkind IN ('r', 'p', 'i', 'I', 'm')
   AND {app_schema("n.nspname", cluster)}
UNION ALL
SELECT t.spcname, 'the database''s default' FROM pg_database d
  JOIN pg_tablespace t ON t.oid = d.dattablespace
 WHERE d.datname = current_database() AND t.spcname <> 'pg_default'
 ORDER BY 1, 2""",
        cluster.database,
    )
    out: dict[str, list[str]] = {}
    for space, what in rows:
        out.setdefault(space, []).append(what)
    return out


def tablespace_names(host: Host) -> set[str]:
    return {r[0] for r in host.psql("SELECT spcname FROM pg_tablespace")}


def collations_used(host: Host, cluster: Cluster) -> dict[str, tuple[str, str, str]]:
    """{qualified collation: (provider, locale, what uses it)} of every collation the
    application's schema needs but the default: those it defines, and those its
    columns, domains and indexes name (pg_dump -s writes COLLATE schema.name). provider
    'c' (libc, locale: its LC_COLLATE) or 'i' (ICU)."""
    locale = (
        "coalesce(c.colliculocale, c.collcollate)"
        if 150000 <= host.version_num < 170000
        else "coalesce(c.colllocale, c.collcollate)"
        if host.version_num >= 170000
        else "c.collcollate"
    )
    provider = "c.collprovider" if host.version_num >= 100000 else "'c'"
    rows = host.psql(
        f"""
WITH used(coll, what) AS (
  SELECT a.attcollation, format('column %s.%I', a.attrelid::regclass, a.attname)
    FROM pg_attribute a JOIN pg_class r ON r.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = r.relnamespace
   WHERE a.attcollation NOT IN (0, 100) AND a.attnum > 0 AND NOT a.attisdropped
     AND {app_schema("n.nspname", cluster)}
  UNION ALL
  SELECT t.typcollation, format('domain %s', t.oid::regtype)
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
   WHERE t.typcollation NOT IN (0, 100) AND t.typtype = 'd'
     AND {app_schema("n.nspname", cluster)}
  UNION ALL
  SELECT k.coll, format('index %s', i.indexrelid::regclass)
    FROM pg_index i JOIN pg_class r ON r.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = r.relnamespace,
         unnest(i.indcollation::oid[]) k(coll)
   WHERE k.coll NOT IN (0, 100) AND {app_schema("n.nspname", cluster)}
  UNION ALL
  SELECT c.oid, 'defined here' FROM pg_collation c
    JOIN pg_namespace n ON n.oid = c.collnamespace
   WHERE {app_schema("n.nspname", cluster)} AND {own_relation("c.oid", "pg_collation")})
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.collname), {provider},
       coalesce({locale}, ''), min(u.what)
  FROM used u JOIN pg_collation c ON c.oid = u.coll
  JOIN pg_namespace n ON n.oid = c.collnamespace
 GROUP BY 1, 2, 3 ORDER BY 1""",
        cluster.database,
    )
    return {name: (prov, loc, what) for name, prov, loc, what in rows}


def collation_names(host: Host, database: str = "postgres") -> set[str]:
    """Every collation of a database, qualified and quoted as collations_used names
    them."""
    return {
        r[0]
        for r in host.psql(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.collname) FROM"
            " pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace",
            database,
        )
    }


def has_icu(host: Host) -> bool:
    """Whether this PostgreSQL was built with ICU (it made ICU collations)."""
    if host.version_num < 100000:
        return False
    return bool(
        host.psql("SELECT 1 FROM pg_collation WHERE collprovider = 'i' LIMIT 1")
    )


def ts_dictionaries(host: Host, cluster: Cluster) -> list[tuple[str, str, str]]:
    """(dictionary, template, init options) of every text search dictionary of the
    application's schemas: the files its options name must be on the new server
    (render.parse.dictionary_files)."""
    return [
        tuple(r)
        for r in host.psql(
            f"""
SELECT quote_ident(n.nspname) || '.' || quote_ident(d.dictname), t.tmplname,
       coalesce(d.dictinitoption, '')
  FROM pg_ts_dict d JOIN pg_namespace n ON n.oid = d.dictnamespace
  JOIN pg_ts_template t ON t.oid = d.dicttemplate
 WHERE {app_schema("n.nspname", cluster)} AND {own_relation("d.oid", "pg_ts_dict")}
 ORDER BY 1""",
            cluster.database,
        )
    ]


def event_triggers(host: Host, database: str) -> list[tuple[str, str, bool, str]]:
    """(name, event, enabled, function and its owner) of every event trigger of the
    database that no extension brings."""
    rows = host.psql(
        f"""
SELECT v.evtname, v.evtevent, v.evtenabled <> 'D',
       format('%s (owned by %s)', v.evtfoid::regprocedure, pg_get_userbyid(p.proowner))
  FROM pg_event_trigger v JOIN pg_proc p ON p.oid = v.evtfoid
 WHERE {own_relation("v.oid", "pg_event_trigger")} ORDER BY 1""",
        database,
    )
    return [(name, event, on == "t", fn) for name, event, on, fn in rows]
