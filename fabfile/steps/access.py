"""Runbook steps 3 and 4: the replication superuser and its .pgpass (users),
pg_hba.conf (hba)."""

from __future__ import annotations

from .. import clusters, facts, secrets
from ..errors import StepError
from ..model import Cluster, Node
from ..plan import Action, Change, File, Sql, apply, diff, file_change
from ..remote import Host
from ..render import files, sql
from ..render.sql import MASK
from ..session import Session


def role_plan(
    cl: Cluster,
    host: str,
    role: tuple[bool, bool, str, str] | None,
    password: str,
    *,
    version_num: int,
    settings: list[str] | tuple = (),
    shared: list[str] | tuple = (),
) -> tuple[str, bool] | None:
    """What the replication role needs: None when it is right, else (what to do, whether
    it exists).

    A role the tool did not create (no mark, and not already a superuser with this
    password) is refused: it may be the application's, which must never become a
    superuser or lose its password. Before PostgreSQL 10 the password is stored as md5
    (no SCRAM); before 12 the role's sessions need extra_float_digits = 3 (`settings`:
    the role's own) so that slon copies float8 unrounded. Its sessions resolve names in
    pg_catalog alone (search_path, a role setting that outranks the database's own):
    slon's too, whose sessions the tool does not start itself. A role that other
    clusters log in as (`shared`: their names) keeps its password: a new one would cut
    their slons off.
    """
    what = (
        "superuser, "
        + ("SCRAM" if version_num >= 100000 else "md5")
        + " password"
        + (", extra_float_digits 3" if version_num < 120000 else "")
        + ", search_path pg_catalog"
    )
    if role is None:
        return f"create role {cl.user} ({what})", False
    superuser, login, verifier, comment = role
    current = superuser and login and sql.password_matches(verifier, password, cl.user)
    digits = version_num >= 120000 or "extra_float_digits=3" in settings
    pinned = "search_path=pg_catalog" in settings
    if comment != sql.ROLE_MARK and not current:
        raise StepError(
            host,
            f"role {cl.user} exists and was not created by slony-migrate (it may be the"
            " application's: it would become a superuser with a new password)",
            "choose another --user, or drop that role if it is a leftover",
        )
    if current and comment == sql.ROLE_MARK and digits and pinned:
        return None
    if shared and not current:
        raise StepError(
            host,
            f"role {cl.user} serves cluster(s) {', '.join(shared)} with another password"
            " than this run's: a new one would cut their slons off",
            "run with that password: the role's password file from the run that made"
            " them (secrets: role-<user>.password in $SLONY_MIGRATE_HOME), or"
            " SLONY_MIGRATE_PASSWORD; or choose another --user",
        )
    return (
        f"update role {cl.user} ({what.replace('superuser, ', 'superuser, login, ')})",
        True,
    )


def users(s: Session) -> None:
    """The replication superuser on each node (SCRAM verifier; md5 before 10), and
    its .pgpass on the slon host."""
    step, cl = "users", s.cluster
    adopt_password(s, step)
    password = s.password()
    changes = []
    for h in s.node_hosts():
        version, role = h.version_num, facts.role(h, cl.user)
        settings = facts.role_settings(h, cl.user) if role else []
        plan = role_plan(
            cl,
            h.name,
            role,
            password,
            version_num=version,
            settings=settings,
            shared=clusters.sharing_role(s, h.name) if role else (),
        )
        if plan is None:
            s.say(h.name, step, f"role {cl.user} exists (superuser, password current)")
            continue
        message, exists = plan
        statement = sql.replication_role(
            cl.user, MASK, exists=exists, float_digits=version < 120000
        )
        changes.append(
            Change(
                h.name,
                step,
                message,
                Sql(
                    statement, secret=sql.password_verifier(version, password, cl.user)
                ),
            )
        )
    apply(s, changes)
    pgpass(s, step)
    if (
        cl.ssl_ca
        # libpq on the slon host checks the servers' certificates against it (verify-full)
    ):
        with open(cl.ssl_ca) as f:
            apply(s, file_change(s, s.slon_host, step, cl.sslrootcert, f.read()))


def adopt_password(s: Session, step: str) -> None:
    """An earlier version's password file (named by its cluster) moved to the role's
    name: this cluster's, or another's whose password the role on the master has."""
    cl = s.cluster
    role = facts.role(s.master_host, cl.user)
    verifier = role[2] if role and role[3] == sql.ROLE_MARK else ""
    said = secrets.adopt(
        cl.user,
        cl.name,
        (lambda p: sql.password_matches(verifier, p, cl.user)) if verifier else None,
        dry_run=s.dry_run,
    )
    if said:
        s.say("local", step, said)


def merged(
    h: Host, path: str, old: str, tag: str, lines: list[str], *, top: bool = False
) -> str:
    """`old` with the managed block `tag` set to `lines`; a broken block is an error
    naming the file."""
    try:
        return files.apply_block(old, tag, lines, top=top)
    except files.MarkerError as e:
        raise StepError(
            h.name,
            f"{path}: {e}",
            "repair the slony-migrate markers by hand (each BEGIN with its END, no block"
            " inside another), then run again",
        ) from None


def pgpass(s: Session, step: str, remove: bool = False) -> None:
    """The managed .pgpass block of the postgres user on the slon host (mode 0600)."""
    cl, h = s.cluster, s.slon_host
    path = f"{facts.postgres_home(h)}/.pgpass"
    old = h.read_file(path, user="postgres")
    lines = [] if remove else files.pgpass_lines(cl, s.password())
    new = merged(h, path, old or "", f"cluster {cl.name}", lines)
    stat = facts.file_stat(h, path)
    if new == (old or "") and (not new or (stat and stat[1] == "600")):
        s.say(h.name, step, f"{path} is up to date")
        return
    if new == old:  # right content, wrong mode
        apply(
            s,
            [
                Change(
                    h.name,
                    step,
                    f"set mode 600 on {path}",
                    File(
                        path,
                        new,
                        old,
                        owner="postgres:postgres",
                        mode="600",
                        secret=True,
                    ),
                )
            ],
        )
        return
    apply(
        s,
        file_change(
            s,
            h,
            step,
            path,
            new,
            owner="postgres:postgres",
            mode="600",
            secret=True,
            old=old,
        ),
    )


def hba_address(s: Session, node: Node) -> str:
    """The address the slon host (slon, slonik, pg_dump) really connects from to this
    node's PostgreSQL: its source address on the route there (IPv4 or IPv6, whichever
    interface that is).
    """
    return facts.source_address(s.slon_host, node.dbhost)


def hba(s: Session, remove: bool = False) -> None:
    """A managed pg_hba.conf block admitting the replication user from the slon host;
    reload."""
    step, cl = "hba", s.cluster
    changes = []
    for node, h in zip(cl.nodes, s.node_hosts()):
        address = "" if remove else hba_address(s, node)
        lines = (
            files.hba_lines(cl, [address], files.auth_method(h.version_num))
            if address
            else []
        )
        path = facts.hba_file(h)
        old = h.read_file(path, user="postgres") or ""  # as PostgreSQL itself reads it
        new = merged(h, path, old, f"cluster {cl.name}", lines, top=True)
        if new != old:
            admit = (
                ""
                if remove
                else (
                    f" (admit {cl.user} from {address}: {cl.slon_name}'s source address"
                    f" towards {node.dbhost}, encrypted only)"
                )
            )
            changes.append(
                Change(
                    h.name,
                    step,
                    f"{'remove the managed block from' if remove else 'update'} "
                    f"{path} and reload{admit}",
                    Action(
                        lambda h=h, path=path, old=old, new=new: write_hba(
                            h, path, old, new
                        ),
                        diff(old, new, path),
                    ),
                )
            )
        elif facts.hba_unloaded(h, path):
            # A run killed between writing the file and reloading leaves it unloaded:
            # reload then.
            changes.append(
                Change(
                    h.name,
                    step,
                    f"reload PostgreSQL ({path} changed since the last load)",
                    Sql("SELECT pg_reload_conf()"),
                )
            )
        else:
            s.say(h.name, step, f"{path} is up to date")
    apply(s, changes)


def write_hba(h: Host, path: str, old: str, new: str) -> None:
    """Write pg_hba.conf and reload; put the old file back when PostgreSQL cannot use
    the new one."""
    owner, mode = facts.file_stat(h, path)
    h.write_file(path, new, owner=owner, mode=mode)
    h.psql("SELECT pg_reload_conf()")
    errors = facts.hba_errors(h)
    if errors:
        h.write_file(path, old, owner=owner, mode=mode)
        h.psql("SELECT pg_reload_conf()")
        raise StepError(
            h.name,
            f"{path} line {errors[0][0]}: {errors[0][1]} (old file restored)",
            "fix pg_hba.conf by hand, then run again",
        )
