"""Pure SQL: quoting, SCRAM verifiers, and the statements the steps run. No I/O."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re

MASK = "********"


def literal(value: str) -> str:
    """Quote a string as an SQL literal (standard_conforming_strings on)."""
    return "'" + value.replace("'", "''") + "'"


def ident(name: str) -> str:
    """Quote an identifier (always: a role may be named like a keyword, e.g. "user")."""
    return '"' + name.replace('"', '""') + '"'


def scram_verifier(
    password: str, salt: bytes | None = None, iterations: int = 4096
) -> str:
    """Return the SCRAM-SHA-256 verifier PostgreSQL stores for this password (RFC
    5802/7677)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def scram_matches(verifier: str | None, password: str) -> bool:
    """True when a stored verifier was made from this password."""
    m = re.fullmatch(
        r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+",
        verifier or "",
    )
    if not m:
        return False
    try:
        salt = base64.b64decode(m.group(2), validate=True)
    except binascii.Error:
        return False
    return hmac.compare_digest(
        scram_verifier(password, salt, int(m.group(1))), verifier
    )


def md5_verifier(password: str, user: str) -> str:
    """The md5 verifier PostgreSQL stored before 10 (no SCRAM there)."""
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def password_verifier(version_num: int, password: str, user: str) -> str:
    """What the server stores for this password: SCRAM from 10, md5 before."""
    return (
        scram_verifier(password)
        if version_num >= 100000
        else md5_verifier(password, user)
    )


def password_matches(verifier: str | None, password: str, user: str) -> bool:
    """True when a stored verifier (SCRAM or md5) was made from this password."""
    if (verifier or "").startswith("md5"):
        return hmac.compare_digest(md5_verifier(password, user), verifier)
    return scram_matches(verifier, password)


# --- statements -----------------------------------------------------------------------

ROLE_MARK = (  # the comment that tells the tool's own role from others
    "slony-migrate replication role"
)


def replication_role(
    name: str, verifier: str, *, exists: bool, float_digits: bool = False
) -> str:
    """CREATE (or ALTER) the replication superuser with a password verifier (or MASK,
    for showing), marked as the tool's own by its comment. Statement logging is off in
    the session (the verifier is a secret).

    Its sessions (slon's among them) resolve names in pg_catalog alone, whatever
    search_path the database sets. float_digits: a server before 12 prints float8
    rounded to 15 digits unless extra_float_digits is 3; slon copies and replicates as
    this role, so its sessions get 3 there."""
    verb = "ALTER" if exists else "CREATE"
    return (
        f"{QUIET}{verb} ROLE {ident(name)} WITH LOGIN SUPERUSER PASSWORD"
        f" {literal(verifier)};\nCOMMENT ON ROLE {ident(name)} IS {literal(ROLE_MARK)};"
        f"\nALTER ROLE {ident(name)} SET search_path = pg_catalog;"
        + (
            f"\nALTER ROLE {ident(name)} SET extra_float_digits = 3;"
            if float_digits
            else ""
        )
    )


# Sessions that carry a secret (a password verifier) keep it out of the server's log.
QUIET = (
    "SET log_statement = 'none'; SET log_min_error_statement = 'panic'; "
    "SET log_min_duration_statement = -1;\n"
)


def create_database(name: str, info: dict[str, str]) -> str:
    """CREATE DATABASE with the owner, encoding and locale of `info`
    (facts.database_info)."""
    return (
        f"CREATE DATABASE {name} OWNER {ident(info['owner'])} TEMPLATE template0 "
        f"ENCODING {literal(info['encoding'])} LC_COLLATE {literal(info['collate'])} "
        f"LC_CTYPE {literal(info['ctype'])}"
    )


# --- verify ---------------------------------------------------------------------------


# Both sides print values alike (PostgreSQL 15 and 17, any server settings).
def verify_session(float_digits: int) -> str:
    """Settings under which both servers print a row as the same text (see
    parse.float_digits)."""
    return (
        "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits ="
        f" {int(float_digits)};\n"
    )


def read_tables(tables: list[str]) -> str:
    """What goes before a statement that reads application tables by name, in its
    transaction: each table locked (ACCESS SHARE: it cannot be renamed and another
    relation put in its place meanwhile), then an error unless each is an ordinary
    table. A view or a foreign table there would run its owner's code in this
    superuser session; a table's own rows never do (they are read and printed by
    built-in functions only)."""
    names = sorted(set(tables))
    tag = "g" + hashlib.sha256("\0".join(names).encode()).hexdigest()[:16]
    oids = ", ".join(f"{literal(t)}::pg_catalog.regclass" for t in names)
    return (
        f"LOCK TABLE {', '.join(names)} IN ACCESS SHARE MODE;\n"
        f"DO ${tag}$DECLARE r record; BEGIN\n"
        "  FOR r IN SELECT c.oid::pg_catalog.regclass AS rel FROM pg_catalog.pg_class c\n"
        f"            WHERE c.oid = ANY (ARRAY[{oids}]::pg_catalog.oid[])\n"
        "              AND c.relkind NOT IN ('r', 'p') LOOP\n"
        "    RAISE EXCEPTION '% is not a table: its rows are not read', r.rel;\n"
        f"  END LOOP;\nEND${tag}$;\n"
    )


ROW_TEXT = "pg_catalog.textin(pg_catalog.record_out(ROW(t.*)))"
"""A row of table `t` as text, by built-in functions only: no cast (the owner of a
table's row type may define one to text, which `t::text` would call) and no reference
that a column named `t` could take for the row."""


def checksum_sql(
    keys: dict[str, list[tuple[str, str]]],
    cutoffs: dict[str, str | None],
    chunk: int,
    float_digits: int = 1,
) -> str:
    """One read-only transaction: per table (per key chunk for integer keys) a row
    count and an md5 of its rows (ROW_TEXT), the tables read only as read_tables allows.

    keys: table -> key columns (name, type); cutoffs: table -> largest key to include
    (rows newer than that are left out), for tables with a one-column key.
    """
    parts = []
    for table, cols in sorted(keys.items()):
        order = ", ".join(c for c, _ in cols)
        rowmd5 = (
            f"pg_catalog.md5(coalesce(pg_catalog.string_agg(pg_catalog.md5({ROW_TEXT}),"
            f" '' ORDER BY {order}), ''))"
        )
        if len(cols) == 1 and cols[0][1] in INTEGER_KEYS:
            k = cols[0][0]
            where = (
                f" WHERE {k} <= {int(cutoffs[table])}"
                if cutoffs.get(table) not in (None, "")
                else ""
            )
            parts.append(
                f"(SELECT {literal(table)}, ({k} / {chunk})::text, pg_catalog.count(*),"
                f" {rowmd5} FROM {table} t{where} GROUP BY 2)"
            )
        else:
            parts.append(
                f"(SELECT {literal(table)}, 'all', pg_catalog.count(*), {rowmd5}"
                f" FROM {table} t)"
            )
    return (
        verify_session(float_digits)
        + "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
        + (read_tables(list(keys)) if keys else "")
        + "\nUNION ALL ".join(parts)
        + ";\nCOMMIT;\n"
    )


INTEGER_KEYS = ("integer", "bigint", "smallint")
"""Key types verify chunks by (and reads the largest value of)."""


def copy_tuning(user: str, database: str, tuning: dict[str, str], on: bool) -> str:
    """The replication role's settings in `database` for the initial copy (`on`), or
    the same settings reset."""
    role = f"ALTER ROLE {ident(user)} IN DATABASE {ident(database)}"
    return "".join(
        f"{role} SET {k} = {literal(v)};\n" if on else f"{role} RESET {k};\n"
        for k, v in tuning.items()
    )


def cancel_blocking_autovacuum(user: str) -> str:
    """Cancel every autovacuum worker that holds up a session of `user` (slon applying
    MOVE SET): it starts again by itself. The number cancelled. From PostgreSQL 9.6
    (pg_blocking_pids)."""
    return (
        "SELECT pg_catalog.count(pg_catalog.pg_cancel_backend(v.pid))"
        " FROM pg_catalog.pg_stat_activity a,"
        " LATERAL pg_catalog.unnest(pg_catalog.pg_blocking_pids(a.pid)) b(pid)"
        " JOIN pg_catalog.pg_stat_activity v ON v.pid = b.pid"
        f" WHERE a.usename = {literal(user)} AND v.query LIKE 'autovacuum: %'"
    )


def pin_search_path(functions: list[str]) -> str:
    """Give each function (as regprocedure prints it) search_path pg_catalog."""
    return "".join(
        f"ALTER FUNCTION {f} SET search_path = pg_catalog;\n" for f in functions
    )


# --- fencing --------------------------------------------------------------------------


def fence_database(database: str) -> str:
    """Take CONNECT on `database` from PUBLIC and every role that is not a superuser
    (the owner too), and end their sessions: applications can no longer write there;
    superusers (slonik, postgres) still can.
    """
    db = literal(database)
    return f"""DO $fence$
DECLARE r record;
BEGIN
  EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', {db});
  FOR r IN SELECT DISTINCT quote_ident(ro.rolname) AS name
             FROM pg_database d, aclexplode(d.datacl) a JOIN pg_roles ro ON ro.oid = a.grantee
            WHERE d.datname = {db} AND a.privilege_type = 'CONNECT' AND NOT ro.rolsuper
  LOOP
    EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM %s', {db}, r.name);
  END LOOP;
END $fence$;
SELECT count(pg_terminate_backend(a.pid))
  FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename
 WHERE a.datname = {db} AND NOT r.rolsuper AND a.pid <> pg_backend_pid();
"""


def unfence_database(database: str, grantees: list[str] | None = None) -> str:
    """What gives the applications their CONNECT back: to `grantees` (PUBLIC or role
    names, as they had it before the fence: facts.connect_grantees), else PUBLIC's, as
    PostgreSQL grants it by default."""
    names = grantees if grantees else ["PUBLIC"]
    return "; ".join(
        f"GRANT CONNECT ON DATABASE {ident(database)} TO "
        + ("PUBLIC" if name == "PUBLIC" else ident(name))
        for name in names
    )


# --- the guard against a node that comes back after a failover ------------------------

GUARD = "slony_migrate_guard"


def guard(schema: str, user: str, version_num: int) -> str:
    """The guard that makes a node refuse the applications' writes by itself when it
    comes back after a crash, until a slon of its own has run since PostgreSQL
    started: a trigger on Slony's log tables (sl_log_1, sl_log_2), which every write
    of the applications on an origin goes through (Slony's log trigger). A node dropped
    by a failover gets no slon any more, so it refuses; an origin that only restarted
    takes writes again as soon as its slon (restarted by its watchdog) has connected.

    It fires only in PostgreSQL's origin role: slon applies replicated rows as a
    replica and is never stopped by it. A session that passed it once is not checked
    again (from 9.6; before, each write looks). Created or replaced with its triggers:
    running it again changes nothing. `schema` is the cluster's (_<cluster>), `user`
    the replication role the slons log in as.
    """
    cached = version_num >= 90600
    check = (
        "  IF current_setting('slony_migrate.guard', true) = 'passed' THEN\n"
        "    RETURN NEW;\n  END IF;\n"
        if cached
        else ""
    )
    passed = (
        "    PERFORM set_config('slony_migrate.guard', 'passed', false);\n"
        if cached
        else ""
    )
    node = f"(SELECT last_value FROM {schema}.sl_local_node_id)"
    triggers = "".join(
        f"DROP TRIGGER IF EXISTS {GUARD} ON {schema}.{table};\n"
        f"CREATE TRIGGER {GUARD} BEFORE INSERT ON {schema}.{table} FOR EACH ROW"
        f" EXECUTE PROCEDURE {schema}.{GUARD}();\n"
        for table in ("sl_log_1", "sl_log_2")
    )
    return f"""CREATE OR REPLACE FUNCTION {schema}.{GUARD}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $guard$
BEGIN
{check}  IF EXISTS (SELECT 1 FROM pg_stat_activity
              WHERE datname = current_database() AND usename = {literal(user)}
                AND application_name LIKE 'slon.local%')
     OR EXISTS (SELECT 1 FROM {schema}.sl_event
                 WHERE ev_origin = {node} AND ev_timestamp >= pg_postmaster_start_time())
  THEN
{passed}    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'slony-migrate: writes refused on Slony node %: PostgreSQL started at %'
    ' and no slon of this node has run since: it may have been dropped by a failover',
    {node}, pg_postmaster_start_time()
    USING HINT = 'slony-migrate status (on the operator''s machine) tells; if this node'
      ' is still the origin, start its slon (slony-migrate slons) and write again';
END
$guard$;
COMMENT ON FUNCTION {schema}.{GUARD}() IS
  'slony-migrate: refuses writes on a node that came back without its slon (status)';
{triggers}"""


# --- the failover record (sl_registry on the new origin) ------------------------------


def registry_key(node_id: int) -> str:
    """The key of the failover record of a dropped node in sl_registry on the node that
    took over."""
    return f"slony-migrate:failover:{int(node_id)}"


def registry_set(schema: str, key: str, text: str) -> str:
    """Store `text` under `key` in the cluster's sl_registry (replacing it)."""
    return (
        f"BEGIN;\nDELETE FROM {schema}.sl_registry WHERE reg_key = {literal(key)};\n"
        f"INSERT INTO {schema}.sl_registry (reg_key, reg_text, reg_timestamp) VALUES"
        f" ({literal(key)}, {literal(text)}, now());\nCOMMIT;\n"
    )


def registry_delete(schema: str, key: str) -> str:
    return f"DELETE FROM {schema}.sl_registry WHERE reg_key = {literal(key)}"


# --- keys -----------------------------------------------------------------------------

KEY_COLUMN = "slony_migrate_id"


def add_key(table: str) -> str:
    """A primary key for a table that has none: a new identity column (the table is
    rewritten, under an exclusive lock; waiting for that lock is bounded)."""
    return (
        f"SET lock_timeout = '5s';\nALTER TABLE {table} ADD COLUMN {KEY_COLUMN} bigint "
        "GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY;\n"
    )


# --- identity columns -----------------------------------------------------------------


def set_identity(columns: list[tuple[str, str]], always: bool) -> str:
    """Make identity columns GENERATED ALWAYS (an origin: as the application made them)
    or BY DEFAULT (a subscriber: slon writes the origin's values into them). One
    statement each, bounded lock waits.
    """
    kind = "ALWAYS" if always else "BY DEFAULT"
    return "SET lock_timeout = '5s';\n" + "".join(
        f"ALTER TABLE {table} ALTER COLUMN {column} SET GENERATED {kind};\n"
        for table, column in columns
    )
