"""Runbook steps 5 to 7: the application's roles and database (appdb), PL/pgSQL, the schema."""
from __future__ import annotations

import shlex

from .. import facts, settings
from ..errors import StepError
from ..plan import Change, apply
from ..render import sql
from ..render.parse import size
from ..render.slonik import client_args, ssl_env
from ..render.sql import MASK
from ..session import Session
from . import identity


def keys(s: Session) -> None:
    """Give each table without a primary key (or a unique index on NOT NULL columns) a new identity
    column as its primary key, on the master, before the schema is copied (migrate --add-keys)."""
    step, cl = "keys", s.cluster
    keyless = [name for table, name in facts.app_tables(s.master, cl) if table is None]
    if not keyless:
        s.say(s.master.name, step, "every table has a key")
    s.keyed = frozenset(keyless)  # what the later steps may count on, in a dry run too
    apply(s, [Change(s.master.name, step, f"add a primary key to {name} "
                     f"({size(facts.relation_size(s.master, cl, name))}): column {sql.KEY_COLUMN}",
                     lambda statement=sql.add_key(name): s.master.psql(statement, cl.database, timeout=None),
                     sql.add_key(name)) for name in keyless])


def appdb(s: Session) -> None:
    """On the slave: the application's roles and the database with the master's owner, encoding, locale."""
    step, cl, slave = "appdb", s.cluster, s.slave
    facts.require_database(s.master, cl.database)
    info = facts.database_info(s.master, cl.database)
    existing = {r[0] for r in slave.psql("SELECT rolname FROM pg_roles")}
    changes = []
    for name, *attrs, verifier in facts.app_roles(s.master, cl):
        if name in existing:
            s.say(slave.name, step, f"role {name} exists")
            continue
        changes.append(Change(slave.name, step, f"create role {name} (as on {s.master.name})",
                              lambda statement=sql.app_role(name, *attrs, verifier): slave.psql(statement),
                              sql.app_role(name, *attrs, MASK if verifier else "")))
    apply(s, changes)
    have = facts.database_info(slave, cl.database)
    if have:
        if (have["encoding"], have["owner"]) != (info["encoding"], info["owner"]):
            raise StepError(slave.name, f"database {cl.database} exists with owner {have['owner']}, encoding "
                            f"{have['encoding']} (master: {info['owner']}, {info['encoding']})",
                            f"drop it on {slave.name} if it is a leftover, then run again")
        s.say(slave.name, step, f"database {cl.database} exists (owner {have['owner']}, {have['encoding']})")
        return
    statement = sql.create_database(cl.database, info)
    apply(s, [Change(slave.name, step, f"create database {cl.database} (owner {info['owner']}, "
                     f"{info['encoding']}, {info['collate']})", lambda: slave.psql(statement), statement)])


def plpgsql(s: Session) -> None:
    """PL/pgSQL in the database on each node (built in since PostgreSQL 9.0: usually only a check)."""
    step, cl = "plpgsql", s.cluster
    changes = []
    for h in s.node_hosts():
        if not facts.database_exists(h, cl.database):
            if s.dry_run:  # appdb only showed what it would create
                s.say(h.name, step, f"database {cl.database} not there yet (dry run); would check PL/pgSQL")
                continue
            facts.require_database(h, cl.database)
        if facts.has_plpgsql(h, cl.database):
            s.say(h.name, step, "PL/pgSQL present (built in since PostgreSQL 9.0; createlang is gone since 10)")
            continue
        statement = "CREATE EXTENSION IF NOT EXISTS plpgsql"  # 9.1 and newer
        changes.append(Change(h.name, step, f"install PL/pgSQL in {cl.database}",
                              lambda h=h, statement=statement: h.psql(statement, cl.database), statement))
    apply(s, changes)


def schema_pipeline(s: Session, pg_dump: str) -> str:
    """pg_dump -s on the slon host from the master, into psql to the slave, without Slony's schema and triggers."""
    cl, m, sl = s.cluster, s.cluster.master, s.cluster.slave
    deny = rf"TRIGGER {cl.schema}_(logtrigger|truncatetrigger|denyaccess|truncatedeny)\b"
    return (
        f"{pg_dump} {client_args(cl, m)} --schema-only "
        f"--no-publications --no-subscriptions --exclude-schema={cl.schema} "
        f"| grep -v -E {shlex.quote(deny)} "
        f"| psql -X -q {client_args(cl, sl)} "
        "-v ON_ERROR_STOP=1 --single-transaction -o /dev/null"
    )


def schema(s: Session) -> None:
    """Copy the schema from master to slave, streamed host to host from the slon host (not _<cluster>)."""
    step, cl = "schema", s.cluster
    facts.require_database(s.master, cl.database)
    wanted = [name for _, name in facts.app_tables(s.master, cl)]
    have: set[str] = set()
    if facts.database_exists(s.slave, cl.database):
        have = {name for _, name in facts.app_tables(s.slave, cl)}
    elif not s.dry_run:  # in a dry run, appdb only showed what it would create
        facts.require_database(s.slave, cl.database)
    if wanted and have >= set(wanted):
        s.say(s.slave.name, step, f"schema present ({len(wanted)} tables)")
        apply(s, identity.record(s, step) + identity.conform(s, step, cl.slave, always=False))
        return
    if have:
        raise StepError(s.slave.name, f"database {cl.database} holds part of the schema "
                        f"({len(have)} of {len(wanted)} tables)",
                        f"drop and recreate {cl.database} on {s.slave.name}, then run again")
    h = s.slon
    pg_dump = facts.newest_client(h, "pg_dump")
    if not pg_dump:
        raise StepError(h.name, "no pg_dump under /usr/lib/postgresql/*/bin", "install postgresql-client")
    pipeline = schema_pipeline(s, pg_dump)

    def action():
        h.sudo(f"{ssl_env(cl)} bash -o pipefail -c {shlex.quote(pipeline)}", user="postgres",
               timeout=settings.SCHEMA_COPY,
               what="pg_dump -s | psql")
        copied = {name for _, name in facts.app_tables(s.slave, cl)}
        if not copied >= set(wanted):
            raise StepError(s.slave.name, f"schema copy left out {', '.join(sorted(set(wanted) - copied))}",
                            "check pg_dump's output by hand")
    apply(s, [Change(h.name, step, f"copy the schema of {cl.database} from {cl.master.dbhost} to "
                     f"{cl.slave.dbhost} ({len(wanted)} tables)", action, pipeline)])
    always = identity.always_columns(s.master, cl)
    apply(s, identity.record(s, step, always) + identity.conform(s, step, cl.slave, always=False, columns=always,
                                                                  have=dict.fromkeys(always, "a")))
