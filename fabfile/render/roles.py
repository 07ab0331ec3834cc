"""Pure: the application's roles as the master has them, on the new server. Which roles
a database needs (the closure through memberships), and the SQL that creates them,
their memberships, their settings and the database's own privileges, settings and
comment. No I/O.

Passwords travel as their stored verifiers, shown as MASK (plan.Sql.secret).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..model import Membership, Role
from .sql import MASK, QUIET, ident, literal

# Parameters whose value is a list of quoted names (pg_dump's
# variable_is_guc_list_quote): stored as `"$user", public`, set as '$user', 'public'.
LIST_QUOTE = {
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
}
PARAMETER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)*")


# --- which roles ----------------------------------------------------------------------


def needed(
    named: dict[str, str],
    memberships: list[Membership],
    skip: set[str],
) -> dict[str, list[str]]:
    """{role: why the database needs it} for every role the database names (`named`:
    owner, grantee, ..., as facts.named_roles says) and every role reached from those
    through memberships, to any depth: their members (who log in through them: "member
    of G"), and the groups they are in (pg_hba.conf's +group, SET ROLE: "group of M").
    `skip`: roles never copied (the bootstrap superuser, the replication roles);
    PostgreSQL's own (pg_*) exist everywhere and are left out too."""

    def own(name: str) -> bool:
        return name not in skip and not name.startswith("pg_")

    # A role reached upwards (a group of one in scope) is not followed downwards: its
    # other members have nothing to do with this database.
    down = {r for r in named if own(r)}
    found = set(down)
    member_of: dict[str, set[str]] = {}
    group_of: dict[str, set[str]] = {}
    todo = sorted(found)
    while todo:
        role = todo.pop(0)
        for m in memberships:
            if m.group == role and role in down and own(m.member):
                member_of.setdefault(m.member, set()).add(role)
                reached = m.member
                down.add(reached)
            elif m.member == role and own(m.group):
                group_of.setdefault(m.group, set()).add(role)
                reached = m.group
            else:
                continue
            if reached not in found:
                found.add(reached)
                todo.append(reached)
    out = {}
    for r in sorted(found):
        why = [named[r]] if r in named else []
        if r in member_of:
            why.append("member of " + ", ".join(sorted(member_of[r])))
        if r in group_of and r not in named:
            why.append("group of " + ", ".join(sorted(group_of[r])))
        out[r] = why
    return out


def in_scope(
    memberships: list[Membership], roles: set[str], skip: set[str]
) -> list[Membership]:
    """The memberships among `roles`, and those of `roles` in PostgreSQL's own roles
    (pg_*), sorted; none that involves a skipped role."""
    return sorted(
        (
            m
            for m in memberships
            if m.member in roles
            and (m.group in roles or m.group.startswith("pg_"))
            and m.group not in skip
        ),
        key=lambda m: (m.group, m.member),
    )


# --- roles ----------------------------------------------------------------------------


def attributes(
    role: Role, version_num: int, privileged: bool = True, alter: bool = False
) -> str:
    """The role's attributes as CREATE/ALTER ROLE spells them on a server of
    `version_num`; privileged=False leaves SUPERUSER and REPLICATION out (never
    changed on a role that exists). Without an expiry CREATE names none; ALTER says
    'infinity' (SQL has no way back to none)."""
    words = [
        "LOGIN" if role.login else "NOLOGIN",
        "CREATEDB" if role.createdb else "NOCREATEDB",
        "CREATEROLE" if role.createrole else "NOCREATEROLE",
        "INHERIT" if role.inherit else "NOINHERIT",
    ]
    if privileged:
        words.insert(0, "SUPERUSER" if role.superuser else "NOSUPERUSER")
        words.append("REPLICATION" if role.replication else "NOREPLICATION")
    if version_num >= 90500:
        words.append("BYPASSRLS" if role.bypassrls else "NOBYPASSRLS")
    words.append(f"CONNECTION LIMIT {int(role.connlimit)}")
    if role.valid_until or alter:
        words.append(f"VALID UNTIL {literal(role.valid_until or 'infinity')}")
    return " ".join(words)


def create_role(role: Role, version_num: int) -> str:
    """CREATE ROLE as the role is on the master, its password as MASK (the verifier
    travels in plan.Sql.secret); its comment."""
    return (
        (QUIET if role.verifier else "")
        + f"CREATE ROLE {ident(role.name)} WITH {attributes(role, version_num)}"
        + (f" PASSWORD {literal(MASK)}" if role.verifier else "")
        + ";"
        + comment_role(role)
    )


def alter_role(role: Role, version_num: int) -> str:
    """ALTER ROLE to the master's attributes and password (MASK), SUPERUSER and
    REPLICATION left as they are."""
    return (
        QUIET
        + f"ALTER ROLE {ident(role.name)} WITH"
        + f" {attributes(role, version_num, privileged=False, alter=True)}"
        + f" PASSWORD {literal(MASK) if role.verifier else 'NULL'};"
        + comment_role(role)
    )


def comment_role(role: Role) -> str:
    return (
        f"\nCOMMENT ON ROLE {ident(role.name)} IS {literal(role.comment)};"
        if role.comment
        else ""
    )


def grant_membership(m: Membership, version_num: int, member_inherits: bool) -> str:
    """GRANT group TO member with the master's options: ADMIN; from PostgreSQL 16
    INHERIT and SET as well (a master before 16 had no such options: INHERIT as the
    member's attribute says, SET true)."""
    head = f"GRANT {ident(m.group)} TO {ident(m.member)}"
    if version_num < 160000:
        return head + (" WITH ADMIN OPTION" if m.admin else "")
    inherit = member_inherits if m.inherit is None else m.inherit
    set_ = True if m.set is None else m.set
    return (
        f"{head} WITH ADMIN {str(m.admin).upper()}, INHERIT {str(inherit).upper()},"
        f" SET {str(set_).upper()}"
    )


def revoke_membership(m: Membership) -> str:
    return f"REVOKE {ident(m.group)} FROM {ident(m.member)}"


def membership_words(m: Membership) -> str:
    """A membership for the operator: `member in group (ADMIN, NOINHERIT, NOSET)`."""
    options = [
        word
        for word, on in (
            ("ADMIN", m.admin),
            ("NOINHERIT", m.inherit is False),
            ("NOSET", m.set is False),
        )
        if on
    ]
    return f"{m.member} in {m.group}" + (f" ({', '.join(options)})" if options else "")


# --- settings -------------------------------------------------------------------------


def split_setting(setting: str) -> tuple[str, str]:
    """'name=value' as pg_db_role_setting stores it: (name, value)."""
    name, _, value = setting.partition("=")
    return name, value


def list_items(value: str) -> list[str]:
    """A stored list value (`"$user", public`) as its items, double quotes removed
    (SplitGUCList)."""
    items, current, quoted, i = [], "", False, 0
    while i < len(value):
        ch = value[i]
        if quoted:
            if ch == '"' and value[i + 1 : i + 2] == '"':
                current += '"'
                i += 1
            elif ch == '"':
                quoted = False
            else:
                current += ch
        elif ch == '"':
            quoted = True
        elif ch == ",":
            items.append(current.strip())
            current = ""
        else:
            current += ch
        i += 1
    if current.strip() or items:
        items.append(current.strip())
    return items


def setting_value(name: str, value: str) -> str:
    """A stored setting's value as SET takes it (pg_dump's makeAlterConfigCommand):
    a list of literals for list parameters, else one literal."""
    if name.lower() in LIST_QUOTE:
        items = list_items(value)
        return ", ".join(literal(v) for v in items) if items else "''"
    return literal(value)


def set_config(role: str, database: str, setting: str) -> str:
    """ALTER ROLE (IN DATABASE) or ALTER DATABASE ... SET for one stored setting.
    role '': the database's own setting. A parameter name that is no identifier is
    refused (ValueError)."""
    name, value = split_setting(setting)
    if not PARAMETER.fullmatch(name):
        raise ValueError(f"setting {setting!r}: {name!r} is not a parameter name")
    target = (
        f"ALTER ROLE {ident(role)}"
        + (f" IN DATABASE {ident(database)}" if database else "")
        if role
        else f"ALTER DATABASE {ident(database)}"
    )
    return f"{target} SET {name} = {setting_value(name, value)}"


# --- the database itself --------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One privilege on the database: to a role or PUBLIC, with grant option or not."""

    grantee: str  # a role, or PUBLIC
    privilege: str  # CONNECT, TEMPORARY, CREATE
    grantable: bool = False

    def words(self) -> str:
        return f"{self.privilege} to {self.grantee}" + (
            " WITH GRANT OPTION" if self.grantable else ""
        )


def database_grants(
    database: str, want: set[Grant], have: set[Grant], revoke: bool
) -> list[str]:
    """GRANT what the new server's database lacks of the master's privileges; with
    `revoke`, REVOKE what it has beyond them (PUBLIC's default CONNECT and TEMPORARY
    where the master took them)."""
    who = lambda g: "PUBLIC" if g.grantee == "PUBLIC" else ident(g.grantee)  # noqa: E731
    db = ident(database)
    out = []
    if revoke:
        for g in sorted(have - want, key=lambda g: (g.grantee, g.privilege)):
            same = Grant(g.grantee, g.privilege, not g.grantable)
            if same in want:  # only the grant option differs
                if g.grantable:
                    out.append(
                        f"REVOKE GRANT OPTION FOR {g.privilege} ON DATABASE {db}"
                        f" FROM {who(g)}"
                    )
                continue
            out.append(f"REVOKE {g.privilege} ON DATABASE {db} FROM {who(g)}")
    for g in sorted(want - have, key=lambda g: (g.grantee, g.privilege)):
        if not g.grantable and Grant(g.grantee, g.privilege, True) in have:
            continue  # there with the grant option (revoked above, or left)
        out.append(
            f"GRANT {g.privilege} ON DATABASE {db} TO {who(g)}"
            + (" WITH GRANT OPTION" if g.grantable else "")
        )
    return out


def comment_database(database: str, comment: str) -> str:
    return f"COMMENT ON DATABASE {ident(database)} IS " + (
        literal(comment) if comment else "NULL"
    )


def reset_database(database: str, name: str) -> str:
    return f"ALTER DATABASE {ident(database)} RESET {name}"
