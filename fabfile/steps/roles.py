"""The application's roles on the new server, the way they were (part of the appdb
step; preflight reports the same plan): every role the database names and every role
reached from those through memberships, their attributes, passwords (as verifiers),
memberships and settings; and the database's own privileges, settings and comment.

A role the new server has already counts as the master's when its attributes and
stored password are the master's (what appdb makes): what it lacks is added. Any other
is named, and changed only with --update-roles (never SUPERUSER or REPLICATION). A
role that is a superuser or has REPLICATION on the master is not created: named,
refused. The replication role, the bootstrap superuser and PostgreSQL's own roles are
never touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import facts
from ..errors import StepError
from ..model import Cluster, Membership, Role
from ..plan import Change, Sql
from ..render import roles as render
from ..render.roles import Grant
from ..render.sql import ROLE_MARK
from ..session import Session


@dataclass
class RolePlan:
    """What the new server lacks of the master's roles (plan_roles)."""

    why: dict[str, list[str]]  # every role in scope: why the database needs it
    create: list[Role] = field(default_factory=list)
    same: list[str] = field(default_factory=list)  # there, as on the master
    differ: dict[str, list[str]] = field(default_factory=dict)  # there, otherwise
    refused: dict[str, str] = field(default_factory=dict)  # role: why not created
    grants: list[Membership] = field(default_factory=list)  # missing memberships
    held_grants: list[Membership] = field(default_factory=list)  # ... of a differing
    # memberships the new server's roles have beyond the master's (--update-roles)
    revokes: list[Membership] = field(default_factory=list)
    configs: list[tuple[str, str, str]] = field(default_factory=list)  # to set
    held_configs: list[tuple[str, str, str]] = field(default_factory=list)
    unknown: list[tuple[str, str, str]] = field(default_factory=list)  # no parameter
    missing_groups: list[Membership] = field(default_factory=list)  # pg_* not there
    md5: list[str] = field(default_factory=list)  # login roles stored as md5
    # login roles of the master (not superusers) that nothing in the database names
    unnamed: list[str] = field(default_factory=list)
    master: dict[str, Role] = field(default_factory=dict)

    def reasons(self, name: str) -> str:
        return "; ".join(self.why.get(name, []))


def skipped(cl: Cluster, every: dict[str, Role], bootstrap: str) -> set[str]:
    """Roles appdb never copies: the bootstrap superuser and every replication role of
    slony-migrate (this cluster's and any other's)."""
    return (
        {bootstrap, cl.user} | {n for n, r in every.items() if r.comment == ROLE_MARK}
    ) - {""}


def by_name(configs: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """{(role, database, parameter): value} of stored settings."""
    out = {}
    for role, db, setting in configs:
        name, value = render.split_setting(setting)
        out[(role, db, name.lower())] = value
    return out


def plan_roles(
    cl: Cluster,
    why: dict[str, list[str]],
    master: dict[str, Role],
    slave: dict[str, Role],
    master_members: list[Membership],
    slave_members: list[Membership],
    master_configs: list[tuple[str, str, str]],
    slave_configs: list[tuple[str, str, str]],
    parameters: set[str],
    skip: set[str],
) -> RolePlan:
    """Pure: what appdb does about the roles in scope (`why`), from both servers'
    roles, memberships and settings."""
    p = RolePlan(why, master={n: master[n] for n in why if n in master})
    p.unnamed = sorted(
        n
        for n, r in master.items()
        if r.login
        and not r.superuser
        and n not in why
        and n not in skip
        and not n.startswith("pg_")
    )
    ours = set()  # roles appdb may add to: created now, or there as on the master
    on_master = {(m.group, m.member) for m in master_members}
    extra: dict[str, list[Membership]] = {}
    for m in slave_members:
        if m.member in why and (m.group, m.member) not in on_master:
            extra.setdefault(m.member, []).append(m)
    for name in why:
        want = master[name]
        have = slave.get(name)
        if want.login and want.verifier.startswith("md5"):
            p.md5.append(name)
        if have is None:
            if want.superuser or want.replication:
                p.refused[name] = " and ".join(
                    w
                    for w, on in (
                        ("a superuser", want.superuser),
                        ("has REPLICATION", want.replication),
                    )
                    if on
                )
                continue
            p.create.append(want)
            ours.add(name)
        elif want.same(have) and name not in extra:
            p.same.append(name)
            ours.add(name)
        else:
            p.differ[name] = want.differences(have) + [
                f"also {render.membership_words(m)}" for m in extra.get(name, [])
            ]
            p.revokes += extra.get(name, [])
    there = {(m.group, m.member) for m in slave_members}
    for m in render.in_scope(master_members, set(why), skip):
        if (m.group, m.member) in there:
            continue
        if m.group.startswith("pg_") and m.group not in slave:
            p.missing_groups.append(m)
        elif m.member in ours and (m.group in ours or m.group.startswith("pg_")):
            p.grants.append(m)
        elif m.member in p.differ or m.group in p.differ:
            p.held_grants.append(m)
    have = by_name(slave_configs)
    for role, db, setting in master_configs:
        if (role and role not in why) or (db and db != cl.database):
            continue
        name, value = render.split_setting(setting)
        if name.lower() not in parameters and "." not in name:
            p.unknown.append((role, db, setting))
            continue
        if not role:
            continue  # the database's own: database_changes
        current = have.get((role, db, name.lower()))
        if current == value:
            continue
        if role in ours and current is None:
            p.configs.append((role, db, setting))
        elif role in ours or role in p.differ:
            p.held_configs.append((role, db, setting))
    return p


def read(s: Session) -> RolePlan:
    """The facts of both servers, planned (plan_roles)."""
    cl, master, slave = s.cluster, s.master_host, s.slave_host
    every = facts.roles(master)
    skip = skipped(cl, every, facts.bootstrap_superuser(master))
    members = facts.memberships(master)
    why = render.needed(facts.named_roles(master, cl), members, skip)
    groups = {m.group for m in members if m.group.startswith("pg_")}
    return plan_roles(
        cl,
        why,
        every,
        facts.roles(slave, sorted(set(why) | groups)),
        members,
        facts.memberships(slave),
        facts.role_configs(master, cl.database),
        facts.role_configs(slave, cl.database),
        facts.parameters(slave),
        skip,
    )


def refuse(s: Session, p: RolePlan) -> None:
    """StepError naming every role appdb may not make and every setting the new
    server cannot take, before anything is changed."""
    cl, slave = s.cluster, s.slave_host.name
    if p.refused:
        raise StepError(
            slave,
            "role(s) the database needs that slony-migrate does not create: "
            + ", ".join(
                f"{n} ({why} on {cl.master.host}; {p.reasons(n)})"
                for n, why in sorted(p.refused.items())
            ),
            f"create them on {slave} by hand (CREATE ROLE ... SUPERUSER), or have"
            f" postgres own what they own on {cl.master.host} (ALTER ... OWNER TO"
            " postgres) and take the attribute from them",
        )
    if p.unknown:
        raise StepError(
            slave,
            "setting(s) of the master that this server does not know: "
            + ", ".join(setting_words(*u) for u in p.unknown),
            f"RESET them on {cl.master.host} (or set them by hand on {slave} later),"
            " then run again",
        )


def setting_words(role: str, db: str, setting: str) -> str:
    return f"{setting} ({'role ' + role if role else 'database'}" + (
        f" in {db})" if db and role else ")"
    )


def role_changes(
    s: Session, step: str, p: RolePlan, update_roles: bool, database: bool = False
) -> list[Change]:
    """The Changes that create the roles, grant their memberships and set their
    settings (database=False: those that need no database; True: the settings in the
    database, once it exists). Roles that differ: named, changed only with
    update_roles."""
    cl, h = s.cluster, s.slave_host
    version = h.version_num
    changes = []
    if not database:
        for r in p.create:
            changes.append(
                Change(
                    h.name,
                    step,
                    f"create role {r.name} as on {cl.master.host} ({p.reasons(r.name)})",
                    Sql(render.create_role(r, version), secret=r.verifier),
                )
            )
        for name in p.same:
            s.say(h.name, step, f"role {name} exists as on {cl.master.host}")
        for name, diff in sorted(p.differ.items()):
            what = f"role {name} exists with {', '.join(diff)}"
            if not update_roles:
                s.say(
                    h.name,
                    step,
                    f"{what}: left as it is (--update-roles makes it as on"
                    f" {cl.master.host}; {p.reasons(name)})",
                )
                continue
            r = p.master[name]
            changes.append(
                Change(
                    h.name,
                    step,
                    f"update role {name} as on {cl.master.host} (--update-roles): it"
                    f" had {', '.join(diff)}"
                    + (
                        "; SUPERUSER and REPLICATION stay as they are"
                        if any("SUPERUSER" in d or "REPLICATION" in d for d in diff)
                        else ""
                    ),
                    Sql(render.alter_role(r, version), secret=r.verifier),
                )
            )
        grants = p.grants + (p.held_grants if update_roles else [])
        for m in grants:
            member = p.master.get(m.member)
            changes.append(
                Change(
                    h.name,
                    step,
                    f"grant membership {render.membership_words(m)}",
                    Sql(
                        render.grant_membership(
                            m, version, member.inherit if member else True
                        )
                    ),
                )
            )
        for m in p.revokes if update_roles else []:
            changes.append(
                Change(
                    h.name,
                    step,
                    f"revoke membership {render.membership_words(m)} (not on"
                    f" {cl.master.host}; --update-roles)",
                    Sql(render.revoke_membership(m)),
                )
            )
        if p.held_grants and not update_roles:
            s.say(
                h.name,
                step,
                "membership(s) of roles that differ here, left out (--update-roles"
                " grants them): "
                + ", ".join(render.membership_words(m) for m in p.held_grants),
            )
        for m in p.missing_groups:
            s.say(
                h.name,
                step,
                f"{m.group} does not exist on PostgreSQL"
                f" {version // 10000}: {m.member} is not made a member",
            )
    configs = p.configs + (p.held_configs if update_roles else [])
    for role, db, setting in configs:
        if bool(db) != database:
            continue
        changes.append(
            Change(
                h.name,
                step,
                f"set {setting_words(role, db, setting)} as on {cl.master.host}",
                Sql(render.set_config(role, db, setting)),
            )
        )
    held = [c for c in p.held_configs if bool(c[1]) == database]
    if held and not update_roles:
        s.say(
            h.name,
            step,
            "setting(s) that differ here, left as they are (--update-roles sets"
            " them): " + ", ".join(setting_words(*c) for c in held),
        )
    return changes


# --- the database's own privileges, settings and comment ------------------------------


def default_grants(owner: str) -> set[Grant]:
    """What CREATE DATABASE grants: the owner everything, PUBLIC CONNECT and
    TEMPORARY."""
    return {Grant(owner, p) for p in ("CONNECT", "TEMPORARY", "CREATE")} | {
        Grant("PUBLIC", p) for p in ("CONNECT", "TEMPORARY")
    }


def shaping(s: Session, created: bool) -> bool:
    """Whether appdb still makes the new server's database like the master's, both
    ways (REVOKE, RESET): it is made in this run, holds no application table yet, or
    subscribes (the applications are not there yet). Once it is the origin, or after
    finish, appdb only adds what is missing."""
    cl, h = s.cluster, s.slave_host
    if created or not facts.app_tables(h, cl):
        return True
    state = facts.slony_state(h, cl)
    return state.has_set and state.origin != cl.slave.id


def database_changes(s: Session, step: str, owner: str, created: bool) -> list[Change]:
    """The Changes that give the new server's database the master's privileges,
    settings and comment (created: appdb makes it in this run)."""
    cl, h, m = s.cluster, s.slave_host, s.master_host
    db = cl.database
    full = shaping(s, created)
    want = facts.database_grants(m, db)
    have = default_grants(owner) if created else facts.database_grants(h, db)
    changes = []
    grants = render.database_grants(db, want, have, revoke=full)
    if grants:
        changes.append(
            Change(
                h.name,
                step,
                f"set privileges on database {db} as on {cl.master.host}: "
                + ", ".join(g.words() for g in sorted(want, key=Grant.words)),
                Sql(";\n".join(grants)),
            )
        )
    if not full and have - want:
        s.say(
            h.name,
            step,
            f"database {db} grants here what {cl.master.host} does not: "
            + ", ".join(g.words() for g in sorted(have - want, key=Grant.words))
            + " (left: it takes writes)",
        )
    mine = [c for c in facts.role_configs(m, db) if not c[0] and c[1] == db]
    theirs = (
        {}
        if created
        else {
            k: v
            for k, v in by_name(facts.role_configs(h, db)).items()
            if not k[0] and k[1] == db
        }
    )
    wanted = by_name(mine)
    for _, _, setting in mine:
        name, value = render.split_setting(setting)
        current = theirs.get(("", db, name.lower()))
        if current == value:
            continue
        if current is not None and not full:
            s.say(h.name, step, f"database {db} has {name}={current} here (left)")
            continue
        changes.append(
            Change(
                h.name,
                step,
                f"set {setting} for database {db} as on {cl.master.host}",
                Sql(render.set_config("", db, setting)),
            )
        )
    for _, _, name in sorted(set(theirs) - set(wanted)):
        if full:
            changes.append(
                Change(
                    h.name,
                    step,
                    f"reset {name} of database {db} ({cl.master.host} does not set it)",
                    Sql(render.reset_database(db, name)),
                )
            )
    comment = facts.database_comment(m, db)
    current = "" if created else facts.database_comment(h, db)
    if comment != current and (full or not current):
        changes.append(
            Change(
                h.name,
                step,
                f"set the comment on database {db} as on {cl.master.host}",
                Sql(render.comment_database(db, comment)),
            )
        )
    return changes
