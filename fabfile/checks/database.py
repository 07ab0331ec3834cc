"""Checks of the application's database on both servers: what can be replicated and
what cannot, what the new server lacks, what would hold the migration up. Each yields
Findings (checks.findings) and never changes anything."""

from __future__ import annotations

from .. import facts, settings
from ..remote import Host
from ..render import debian
from ..render import roles as render_roles
from ..render.parse import dictionary_files, size
from ..render.slonik import slony_key
from ..render.sql import add_key
from ..session import Session
from ..steps import identity
from ..steps import roles as role_plan
from .findings import FAIL, OK, WARN, Finding, Findings


def master_database(s: Session, add_keys: bool = False) -> Findings:
    """The database exists on the master, is node 1 if the cluster exists, its tables
    can be replicated."""
    cl, h = s.cluster, s.master_host
    if not facts.database_exists(h, cl.database):
        names = facts.database_names(h)
        yield Finding(
            h.name,
            FAIL,
            f"database {cl.database}",
            f"does not exist on {h.name} (there: "
            f"{', '.join(names) or 'no application database'})",
            "check --database and --master",
        )
        return False
    node = facts.local_node_id(h, cl)
    if node is not None and node != cl.master.id:
        yield Finding(
            h.name,
            FAIL,
            f"database {cl.database}",
            f"is node {node} of cluster {cl.name}, not the origin "
            f"(node {cl.master.id})",
            "check --master/--slave: are they swapped?",
        )
    yield Finding(
        h.name,
        OK,
        f"database {cl.database}",
        f"exists, {size(facts.database_size(h, cl.database))}",
    )
    tables = facts.app_tables(h, cl)
    for table, name in tables:
        if table is None:
            size_ = size(facts.relation_size(h, cl, name))
            if add_keys:
                yield Finding(
                    h.name,
                    WARN,
                    f"table {name}",
                    f"no key ({size_}): --add-keys will add one, rewriting the "
                    f"table under an exclusive lock: {add_key(name).splitlines()[1]}",
                )
            else:
                yield Finding(
                    h.name,
                    FAIL,
                    f"table {name}",
                    "no primary key and no unique index on NOT NULL columns "
                    f"({size_}): Slony cannot replicate it",
                    f"add a primary key to {name} (or a unique index on NOT NULL"
                    f" columns), e.g. {add_key(name).splitlines()[1]} (migrate"
                    " --add-keys does that)",
                )
        elif table.key and slony_key(table.key) is None:
            yield Finding(
                h.name,
                FAIL,
                f"table {name}",
                f"its key, unique index {table.key}, has a dot in its name and is "
                "too long to quote: Slony cannot be told to use it",
                "rename the index (ALTER INDEX ... RENAME "
                "TO) to a name without a dot, or shorter than 62 characters",
            )
        elif table.key:
            yield Finding(
                h.name,
                OK,
                f"table {name}",
                f"no primary key; unique index {table.key} on NOT NULL columns "
                "serves as the key",
            )
    if all(t for t, _ in tables) or add_keys:
        yield Finding(
            h.name, OK, "tables", f"all {len(tables)} tables have a key Slony can use"
        )
    for name in facts.app_relations(
        h, cl, "(c.relname ~ '[[:cntrl:]]' OR n.nspname ~ '[[:cntrl:]]')"
    ):
        yield Finding(
            h.name,
            FAIL,
            "name",
            f"{name} holds a control character (a newline, say): it would reach slonik "
            "scripts, Slony's configuration and logs",
            "rename it (ALTER ... RENAME TO) before the migration",
        )
    for what in facts.code_run_by_replication(h, cl):
        yield Finding(
            h.name,
            FAIL,
            "application code",
            f"{what}: slon applies replicated rows as a superuser on the new "
            "server, so this code would run with superuser rights there",
            "enable the trigger for the origin only (ALTER TABLE ... ENABLE TRIGGER);"
            " a function: review it and what it calls, then have a superuser own it"
            " (ALTER FUNCTION ... OWNER TO postgres), or drop the expression that calls"
            " it for the migration",
        )
    yield from objects(s, h)
    unlogged = facts.unlogged_tables(h, cl)
    if unlogged:
        yield Finding(
            h.name,
            WARN,
            "unlogged tables",
            f"{', '.join(unlogged)}: not replicated, their rows stay on {h.name}",
            "ALTER TABLE ... SET LOGGED if the slave needs their rows",
        )
    unowned = facts.unowned_sequences(h, cl)
    if unowned:
        yield Finding(
            h.name,
            OK,
            "sequences",
            f"not owned by a column: {', '.join(unowned)} (in the set all the same, "
            "replicated with each SYNC)",
        )
    lobs = facts.large_objects(h, cl.database)
    if lobs:
        yield Finding(
            h.name,
            WARN,
            "large objects",
            f"{lobs} in {cl.database}: Slony does not replicate large objects",
            "move them into bytea columns, or copy them separately at switchover",
        )
    return True


def objects(s: Session, h: Host) -> Findings:
    """What happens to each kind of object beyond the tables with a key: handled,
    schema only, refused."""
    cl = s.cluster
    for column in facts.generated_columns(h, cl):
        yield Finding(
            h.name,
            FAIL,
            f"column {column}",
            "a stored generated column: Slony copies and logs its values, which the new"
            " server refuses (COPY and every later change to the table would fail)",
            "make it a plain column kept by a trigger (ALTER TABLE ... ALTER COLUMN ..."
            " DROP EXPRESSION, then CREATE TRIGGER) before the migration",
        )
    always = [f"{t}.{c}" for t, c in identity.always_columns(h, cl)]
    if always:
        yield Finding(
            h.name,
            OK,
            "identity columns",
            f"GENERATED ALWAYS: {', '.join(always)}: BY DEFAULT on the new server while"
            " it subscribes (slon writes the origin's values), ALWAYS again where a"
            " node becomes the origin and at finish",
        )
    for name, owner, _ in facts.materialized_views(h, cl):
        # Its query is the owner's code: never run here, where the session is a
        # superuser's (a function in it could RESET ROLE); its size says what a REFRESH
        # has to write.
        yield Finding(
            h.name,
            OK,
            f"materialized view {name}",
            f"rows not replicated: refreshed (as {owner}, at most"
            f" {settings.MATVIEW_REFRESH:g} s) on the new origin at switchover and"
            f" failover; {size(facts.relation_size(h, cl, name))} on {h.name} now",
        )
    counts = facts.object_counts(h, cl)
    foreign = counts.pop("foreign table", 0)
    if counts:
        yield Finding(
            h.name,
            OK,
            "schema only",
            "definitions copied by the schema step, nothing to replicate: "
            + ", ".join(f"{n} {kind}(s)" for kind, n in counts.items())
            + (
                "; leaf partitions are replicated as tables"
                if "partitioned table" in counts
                else ""
            ),
        )
    if foreign:
        yield Finding(
            h.name,
            WARN,
            "foreign tables",
            f"{foreign}: their data is elsewhere; the new server needs the same "
            "foreign servers and user mappings",
            "check CREATE SERVER and CREATE USER MAPPING on the new server",
        )


def extensions(s: Session) -> Findings:
    """Every extension of the master's database can be created on the slave (its
    package is there or install will add it)."""
    cl = s.cluster
    have = facts.extensions(s.master_host, cl.database)
    if not have:
        return
    available = facts.available_extensions(s.slave_host)
    major = facts.pg_major(s.slave_host)
    missing = [name for name in have if name not in available]
    for name in missing:
        package = debian.extension_package(major, name)
        if package is None:
            yield Finding(
                s.slave_host.name,
                FAIL,
                f"extension {name!r}",
                "its name cannot be part of a Debian package name, so install will not"
                " look for its package (a renamed extension: the name was changed in"
                " pg_extension)",
                f"check pg_extension on {s.master_host.name}; install "
                f"the extension on {s.slave_host.name} by hand",
            )
            continue
        candidate = facts.package_versions(s.slave_host, [package])[package][1]
        if candidate:
            yield Finding(
                s.slave_host.name,
                WARN,
                f"extension {name}",
                f"not available yet; install will add {package} {candidate}",
            )
        else:
            yield Finding(
                s.slave_host.name,
                FAIL,
                f"extension {name}",
                f"version {have[name]} on {s.master_host.name}, not available on"
                f" {s.slave_host.name} (no package {package} either): the schema step"
                " would fail",
                f"install the extension's package for PostgreSQL {major} on"
                f" {s.slave_host.name}",
            )
    newer = [
        f"{n} {v}" for n, v in have.items() if n in available and v not in available[n]
    ]
    if newer:
        yield Finding(
            s.slave_host.name,
            WARN,
            "extensions",
            f"versions not available as such on {s.slave_host.name}: "
            f"{', '.join(newer)}; CREATE EXTENSION takes the default version there",
            "compare the extensions' versions after the schema step (ALTER EXTENSION"
            " ... UPDATE)",
        )
    fine = [n for n in have if n not in missing]
    if fine:
        yield Finding(
            s.slave_host.name,
            OK,
            "extensions",
            f"available on {s.slave_host.name}: {', '.join(fine)}",
        )


def transactions(h: Host) -> Findings:
    """Long or idle-in-transaction sessions and prepared transactions on the master's
    server, any database."""
    long, prepared = (
        facts.long_transactions(h, settings.LONG_TRANSACTION),
        facts.prepared_transactions(h),
    )
    for pid, db, user, state, age in long:
        yield Finding(
            h.name,
            WARN,
            f"session pid {pid}",
            f"database {db}, user {user}, {state}, transaction open "
            f"{age} s: the initial copy retries and LOCK SET waits until it ends",
            f"commit it in the application, or SELECT pg_terminate_backend({pid})",
        )
    for gid, db, age in prepared:
        yield Finding(
            h.name,
            WARN,
            f"prepared transaction {gid}",
            f"database {db}, prepared {age} s ago: it holds "
            "back the copy and LOCK SET like an open transaction",
            f"COMMIT PREPARED or ROLLBACK PREPARED '{gid}' in {db}",
        )
    if not long and not prepared:
        yield Finding(
            h.name,
            OK,
            "transactions",
            f"none open longer than {settings.LONG_TRANSACTION} s, none idle in "
            "transaction, none prepared",
        )


def slave_database(s: Session, master: Host | None) -> Findings:
    """The slave's database is absent, empty, or subscribed already: never subscribe
    into rows."""
    cl, h = s.cluster, s.slave_host
    obj = f"database {cl.database}"
    if not facts.database_exists(h, cl.database):
        yield Finding(
            h.name, OK, obj, "not there yet; appdb will create it like the master's"
        )
        return
    node = facts.local_node_id(h, cl)
    if node is not None and node != cl.slave.id:
        yield Finding(
            h.name,
            FAIL,
            obj,
            f"is node {node} of cluster {cl.name}, not the subscriber (node"
            f" {cl.slave.id})",
            "check --master/--slave: are they swapped?",
        )
        return
    if subscribed(s, master):
        yield Finding(
            h.name,
            OK,
            obj,
            f"subscribed to set {cl.set_id} already; its rows come from replication",
        )
        return
    tables = [name for _, name in facts.app_tables(h, cl)]
    full = facts.tables_with_rows(h, cl.database, tables)
    if full:
        yield Finding(
            h.name,
            FAIL,
            obj,
            f"{len(full)} table(s) hold rows ({', '.join(full[:5])}"
            f"{' ...' if len(full) > 5 else ''}): subscribing would empty them",
            "check --master/--slave (swapped?); if the rows are disposable, drop the"
            f" database on {h.name} and run again",
        )
        return
    yield Finding(h.name, OK, obj, f"exists, {len(tables)} tables, no rows")


def subscribed(s: Session, master: Host | None) -> bool:
    """Whether the slave is node 2 of the cluster and subscribed to the set (a re-run
    on a migrated pair)."""
    cl, h = s.cluster, s.slave_host
    if facts.local_node_id(h, cl) != cl.slave.id:
        return False
    return any(
        facts.slony_state(x, cl).subscribed is not None for x in (h, master) if x
    )


def encoding(s: Session) -> Findings:
    """The slave's database has (or can get) the master's encoding and collation."""
    cl = s.cluster
    want = facts.database_info(s.master_host, cl.database)
    if not want:
        return
    have = facts.database_info(s.slave_host, cl.database)
    describe = lambda i: f"{i['encoding']}, collate {i['collate']}, ctype {i['ctype']}"  # noqa: E731
    if have:
        if [have[k] for k in ("encoding", "collate", "ctype")] != [
            want[k] for k in ("encoding", "collate", "ctype")
        ]:
            yield Finding(
                s.slave_host.name,
                FAIL,
                "encoding",
                f"{cl.database} is {describe(have)} on {s.slave_host.name}, "
                f"{describe(want)} on {s.master_host.name}",
                f"drop {cl.database} on {s.slave_host.name} if it holds "
                "nothing, and let the appdb step create it like the master's",
            )
        else:
            yield Finding(
                s.slave_host.name, OK, "encoding", f"{describe(want)} on both"
            )
        return
    missing = [
        loc
        for loc in dict.fromkeys([want["collate"], want["ctype"]])
        if not facts.has_locale(s.slave_host, loc)
    ]
    if missing:
        yield Finding(
            s.slave_host.name,
            FAIL,
            "encoding",
            f"locale {', '.join(missing)} of the master's {cl.database} "
            f"is not available on {s.slave_host.name}",
            f"generate it on {s.slave_host.name} (locale-gen), then "
            "restart PostgreSQL there",
        )
    else:
        yield Finding(
            s.slave_host.name,
            OK,
            "encoding",
            f"appdb will create {cl.database} with {describe(want)} "
            f"(locale available on {s.slave_host.name})",
        )


def disk(s: Session) -> Findings:
    """Free space in the slave's data directory against the database's size on the
    master."""
    cl, h = s.cluster, s.slave_host
    path = facts.data_directory(h)
    free, need = (
        facts.disk_free(h, path),
        facts.database_size(s.master_host, cl.database),
    )
    what = (
        f"{size(free)} free in {path}, {cl.database} is {size(need)} on"
        f" {s.master_host.name}"
    )
    if subscribed(s, s.master_host):
        yield Finding(h.name, OK, "disk", what + " (copied already)")
    elif free < need:
        yield Finding(
            h.name, FAIL, "disk", what, f"free space or grow the filesystem of {path}"
        )
    elif free < 2 * need:
        yield Finding(
            h.name,
            WARN,
            "disk",
            what + ": little room for sl_log and growth",
            f"free space in {path} before the copy",
        )
    else:
        yield Finding(h.name, OK, "disk", what)


def roles(s: Session, update_roles: bool = False) -> Findings:
    """The roles the new server gets (steps.roles), each with why the database needs
    it; those it has otherwise (changed only with --update-roles); those slony-migrate
    does not make; login roles the database does not name."""
    cl, m, sl = s.cluster, s.master_host.name, s.slave_host.name
    p = role_plan.read(s)
    for r in p.create:
        yield Finding(
            sl,
            OK,
            f"role {r.name}",
            f"appdb creates it as on {m} ({p.reasons(r.name)})",
        )
    for name in p.same:
        yield Finding(sl, OK, f"role {name}", f"as on {m} ({p.reasons(name)})")
    held = {
        name: [
            render_roles.membership_words(g)
            for g in p.held_grants
            if name in (g.member, g.group)
        ]
        + [role_plan.setting_words(*c) for c in p.held_configs if c[0] == name]
        for name in set(p.differ) | {c[0] for c in p.held_configs}
    }
    for name in sorted(held):
        what = ", ".join(p.differ.get(name, []) + held[name])
        if update_roles:
            yield Finding(
                sl,
                OK,
                f"role {name}",
                f"differs from {m}'s ({what}): --update-roles makes it as on {m}"
                " (SUPERUSER and REPLICATION stay as they are)",
            )
        else:
            yield Finding(
                sl,
                WARN,
                f"role {name}",
                f"exists with {what} ({p.reasons(name)}): appdb leaves it as it is, and"
                f" whoever logs in as it may fail or lose a setting after the move",
                f"--update-roles makes it as on {m}; or change it by hand on {sl}",
            )
    for name, why in sorted(p.refused.items()):
        yield Finding(
            m,
            FAIL,
            f"role {name}",
            f"{why} ({p.reasons(name)}) and not on {sl}: slony-migrate does not create"
            " such a role",
            f"create it on {sl} by hand, or have postgres own what it owns on {m}"
            " (ALTER ... OWNER TO postgres) and take the attribute from it",
        )
    for role, db, setting in p.unknown:
        yield Finding(
            sl,
            FAIL,
            "setting",
            f"{role_plan.setting_words(role, db, setting)}: PostgreSQL"
            f" {s.slave_host.version_num // 10000} on {sl} has no such parameter",
            f"RESET it on {m} (ALTER {'ROLE ' + role if role else 'DATABASE'}"
            " ... RESET), or set it by hand later",
        )
    for g in p.missing_groups:
        yield Finding(
            sl,
            WARN,
            f"role {g.member}",
            f"member of {g.group}, which PostgreSQL"
            f" {s.slave_host.version_num // 10000} does not have",
            "grant it what it needs by hand after the move",
        )
    for name in p.md5:
        yield Finding(
            m,
            WARN,
            f"role {name}",
            "its password is stored as md5: on the new server it logs in only where"
            " pg_hba.conf says md5, not scram-sha-256",
            f"set its password again on {m} with password_encryption ="
            " 'scram-sha-256' before the move",
        )
    others = p.unnamed
    if others:
        yield Finding(
            m,
            WARN,
            "login roles",
            f"{', '.join(others)}: nothing in {cl.database} names them (no object,"
            " privilege, membership or setting there): appdb does not create them",
            f"if they use {cl.database} through PUBLIC's privileges, create them on"
            f" {sl} by hand",
        )


def restorable(s: Session) -> Findings:
    """What the schema step cannot create on an empty new server: objects in a
    tablespace it lacks, collations it cannot make, text search dictionaries whose
    files it lacks; and event triggers, which would run in Slony's superuser
    sessions there."""
    cl, m, sl = s.cluster, s.master_host, s.slave_host
    spaces = facts.tablespace_names(sl)
    for space, objects in facts.tablespaces_used(m, cl).items():
        shown = ", ".join(objects[:5]) + (" ..." if len(objects) > 5 else "")
        if space in spaces:
            yield Finding(sl.name, OK, f"tablespace {space}", f"there ({shown})")
        else:
            yield Finding(
                sl.name,
                FAIL,
                f"tablespace {space}",
                f"holds {shown} on {m.name}, and {sl.name} has no such tablespace: the"
                " schema step would stop half way",
                f"create it on {sl.name} first (CREATE TABLESPACE {space} LOCATION"
                " '...')",
            )
    have, icu = facts.collation_names(sl), None
    for name, (provider, locale, what) in facts.collations_used(m, cl).items():
        if name in have:
            continue
        if what != "defined here":
            yield Finding(
                sl.name,
                FAIL,
                f"collation {name}",
                f"{what} uses it; {sl.name} has no such collation",
                f"generate locale {locale} on {sl.name} (locale-gen), then SELECT"
                " pg_import_system_collations('pg_catalog') there"
                if provider == "c"
                else f"create collation {name} on {sl.name} first",
            )
        elif provider == "i":
            icu = facts.has_icu(sl) if icu is None else icu
            if not icu:
                yield Finding(
                    sl.name,
                    FAIL,
                    f"collation {name}",
                    f"an ICU collation ({locale}); PostgreSQL on {sl.name} has no ICU",
                    f"use a PostgreSQL built with ICU on {sl.name} (Debian's is)",
                )
        elif not facts.has_locale(sl, locale):
            yield Finding(
                sl.name,
                FAIL,
                f"collation {name}",
                f"defined with locale {locale}, which {sl.name} lacks: the schema step"
                " would stop half way",
                f"generate it on {sl.name} (locale-gen {locale}), then run again",
            )
    dictionaries = facts.ts_dictionaries(m, cl)
    if dictionaries:
        data = f"{facts.pg_dir(sl, 'SHAREDIR')}/tsearch_data"
        for name, template, options in dictionaries:
            wanted = [f"{data}/{f}" for f in dictionary_files(template, options)]
            missing = facts.missing_files(sl, wanted)
            if missing:
                yield Finding(
                    sl.name,
                    FAIL,
                    f"text search dictionary {name}",
                    f"needs {', '.join(missing)} on {sl.name}: the schema step would"
                    " stop half way",
                    f"install the dictionary's files on {sl.name} (the same package"
                    f" as on {m.name}, e.g. hunspell-xx), then run again",
                )
    for name, event, enabled, function in facts.event_triggers(m, cl.database):
        if not enabled:
            yield Finding(
                m.name,
                OK,
                f"event trigger {name}",
                "disabled: copied disabled by the schema step",
            )
            continue
        yield Finding(
            m.name,
            FAIL,
            f"event trigger {name}",
            f"fires on {event} and calls {function}: it would run in Slony's superuser"
            " sessions (init, subscribe, EXECUTE SCRIPT, the switchover) on both"
            " servers, and its writes on the subscriber would be refused",
            f"disable it for the migration (ALTER EVENT TRIGGER {name} DISABLE), and"
            " enable it on the new server after finish",
        )
