"""Runbook steps 5 to 7: the application's roles and database (appdb), PL/pgSQL, the
schema."""

from __future__ import annotations

import shlex

from .. import facts, settings
from ..errors import StepError
from ..plan import Change, Command, Sql, apply
from ..render import sql
from ..render.parse import size
from ..render.shell import client_args, client_env
from ..session import Session
from . import identity, roles


def keys(s: Session) -> frozenset[str]:
    """Give each table without a primary key (or a unique index on NOT NULL columns) a
    new identity column as its primary key, on the master, before the schema is copied
    (migrate --add-keys).

    Returns the tables it gives a key: what config and create-set may count on, in a dry
    run too.
    """
    step, cl = "keys", s.cluster
    keyless = [
        name for table, name in facts.app_tables(s.master_host, cl) if table is None
    ]
    if not keyless:
        s.say(s.master_host.name, step, "every table has a key")
    apply(
        s,
        [
            Change(
                s.master_host.name,
                step,
                f"add a primary key to {name}"
                f" ({size(facts.relation_size(s.master_host, cl, name))}): column"
                f" {sql.KEY_COLUMN}",
                Sql(sql.add_key(name), cl.database, timeout=None),
            )
            for name in keyless
        ],
    )
    return frozenset(keyless)


def appdb(s: Session, update_roles: bool = False) -> None:
    """On the slave: the application's roles as on the master (every role the database
    names or reaches through memberships, with their passwords as verifiers,
    attributes, memberships and settings: steps.roles), and the database with the
    master's owner, encoding, locale, privileges, settings and comment.

    update_roles: make roles the new server has otherwise as on the master (never
    SUPERUSER or REPLICATION); without it they are named and left alone."""
    step, cl, slave = "appdb", s.cluster, s.slave_host
    facts.require_database(s.master_host, cl.database)
    info = facts.database_info(s.master_host, cl.database)
    plan = roles.read(s)
    roles.refuse(s, plan)
    apply(s, roles.role_changes(s, step, plan, update_roles))
    have = facts.database_info(slave, cl.database)
    if have:
        if (have["encoding"], have["owner"]) != (info["encoding"], info["owner"]):
            raise StepError(
                slave.name,
                f"database {cl.database} exists with owner {have['owner']}, encoding "
                f"{have['encoding']} (master: {info['owner']}, {info['encoding']})",
                f"drop it on {slave.name} if it is a leftover, then run again",
            )
        s.say(
            slave.name,
            step,
            f"database {cl.database} exists (owner {have['owner']},"
            f" {have['encoding']})",
        )
    else:
        apply(
            s,
            [
                Change(
                    slave.name,
                    step,
                    f"create database {cl.database} (owner {info['owner']}, "
                    f"{info['encoding']}, {info['collate']})",
                    Sql(sql.create_database(cl.database, info)),
                )
            ],
        )
    apply(
        s,
        roles.role_changes(s, step, plan, update_roles, database=True)
        + roles.database_changes(s, step, info["owner"], created=not have),
    )


def plpgsql(s: Session) -> None:
    """PL/pgSQL in the database on each node (built in since PostgreSQL 9.0: usually
    only a check)."""
    step, cl = "plpgsql", s.cluster
    changes = []
    for h in s.node_hosts():
        if not facts.database_exists(h, cl.database):
            if s.dry_run:  # appdb only showed what it would create
                s.say(
                    h.name,
                    step,
                    f"database {cl.database} not there yet (dry run); would check"
                    " PL/pgSQL",
                )
                continue
            facts.require_database(h, cl.database)
        if facts.has_plpgsql(h, cl.database):
            s.say(
                h.name,
                step,
                "PL/pgSQL present (built in since PostgreSQL 9.0; createlang is gone"
                " since 10)",
            )
            continue
        changes.append(
            Change(
                h.name,
                step,
                f"install PL/pgSQL in {cl.database}",
                Sql("CREATE EXTENSION IF NOT EXISTS plpgsql", cl.database),
            )
        )  # 9.1 and newer
    apply(s, changes)


def schema_pipeline(s: Session, pg_dump: str) -> str:
    """pg_dump -s on the slon host from the master, into psql to the slave, without
    Slony's schema and triggers."""
    cl, m, sl = s.cluster, s.cluster.master, s.cluster.slave
    deny = (
        rf"TRIGGER {cl.schema}_(logtrigger|truncatetrigger|denyaccess|truncatedeny)\b"
    )
    return (
        f"{shlex.quote(pg_dump)} {client_args(cl, m)} --schema-only "
        f"--no-publications --no-subscriptions --exclude-schema={cl.schema} "
        f"| grep -v -E {shlex.quote(deny)} "
        f"| psql -X -q {client_args(cl, sl)} "
        "-v ON_ERROR_STOP=1 --single-transaction -o /dev/null"
    )


def schema(s: Session) -> None:
    """Copy the schema from master to slave, streamed host to host from the slon host
    (not _<cluster>)."""
    step, cl = "schema", s.cluster
    facts.require_database(s.master_host, cl.database)
    wanted = [name for _, name in facts.app_tables(s.master_host, cl)]
    have: set[str] = set()
    if facts.database_exists(s.slave_host, cl.database):
        have = {name for _, name in facts.app_tables(s.slave_host, cl)}
    elif not s.dry_run:  # in a dry run, appdb only showed what it would create
        facts.require_database(s.slave_host, cl.database)
    if wanted and have >= set(wanted):
        s.say(s.slave_host.name, step, f"schema present ({len(wanted)} tables)")
        apply(
            s,
            identity.record(s, step)
            + identity.conform(s, step, cl.slave, always=False),
        )
        return
    if have:
        raise StepError(
            s.slave_host.name,
            f"database {cl.database} holds part of the schema "
            f"({len(have)} of {len(wanted)} tables)",
            f"drop and recreate {cl.database} on {s.slave_host.name}, then run again",
        )
    h = s.slon_host
    pg_dump = facts.newest_client(h, "pg_dump")
    if not pg_dump:
        raise StepError(
            h.name,
            "no pg_dump under /usr/lib/postgresql/*/bin",
            "install postgresql-client",
        )
    command = f"{client_env(cl)} bash -o pipefail -c {shlex.quote(schema_pipeline(s, pg_dump))}"

    def check():
        copied = {name for _, name in facts.app_tables(s.slave_host, cl)}
        if not copied >= set(wanted):
            raise StepError(
                s.slave_host.name,
                f"schema copy left out {', '.join(sorted(set(wanted) - copied))}",
                "check pg_dump's output by hand",
            )

    apply(
        s,
        [
            Change(
                h.name,
                step,
                f"copy the schema of {cl.database} from {cl.master.dbhost} to "
                f"{cl.slave.dbhost} ({len(wanted)} tables)",
                Command(
                    command,
                    "postgres",
                    timeout=settings.SCHEMA_COPY,
                    label="pg_dump -s | psql",
                ),
                check,
            )
        ],
    )
    always = identity.always_columns(s.master_host, cl)
    apply(
        s,
        identity.record(s, step, always)
        + identity.conform(
            s,
            step,
            cl.slave,
            always=False,
            columns=always,
            have=dict.fromkeys(always, "a"),
        ),
    )
