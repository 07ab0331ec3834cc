"""`inv migrate`, the runbook: preflight, then every runbook step in order, each a no-op
when already done.

STEPS is the one list of the runbook's steps: migrate runs it, the tests and the
benchmark read it.
"""

from __future__ import annotations

from . import clusters, settings
from .checks.findings import report
from .checks.preflight import preflight
from .endgame.returned import first_contact
from .errors import StepError
from .replication import dropped, states
from .session import Session
from .steps.access import hba, users
from .steps.cluster import config, create_set, init, slons, subscribe
from .steps.database import appdb, keys, plpgsql, schema
from .steps.software import build, install, install_hosts

# (name, function): the name is the task's, the log lines' and the one migrate prints.
STEPS = [
    ("install", install),
    ("users", users),
    ("hba", hba),
    ("appdb", appdb),
    ("plpgsql", plpgsql),
    ("schema", schema),
    ("config", config),
    ("init", init),
    ("slons", slons),
    ("create-set", create_set),
    ("subscribe", subscribe),
]
STEP_NAMES = [name for name, _ in STEPS]


def check(s: Session, add_keys: bool = False, update_roles: bool = False) -> None:
    """Preflight as a guard: its findings printed; StepError when any check failed
    (the FAIL lines name host and object)."""
    failed = report(s.out, preflight(s, add_keys, update_roles))
    if failed:
        raise StepError(
            "preflight",
            f"{failed} check(s) failed (the FAIL lines above name host and object); "
            "nothing was changed",
            "fix what they name, then run again",
        )


def migrate(
    s: Session,
    tarball: str = "",
    sha256: str = "",
    timeout: int = settings.COPY_WAIT,
    copy_retries: int = settings.COPY_RETRIES,
    add_keys: bool = False,
    checked: bool = False,
    update_roles: bool = False,
) -> None:
    """Run preflight and steps 1 (or build) to subscribe; return when the initial copy
    is done.

    add_keys: first give every table without a key one (steps.database.keys).
    checked: preflight passed already (migrate_all).
    update_roles: appdb makes roles the new server has otherwise as on the master."""
    cl = s.cluster
    refuse_dropped(s)
    if not checked:
        s.out.line("== preflight")
        check(s, add_keys, update_roles)
    before = len(s.changes)
    keyed: frozenset[str] = frozenset()
    if add_keys:
        s.out.line("== keys")
        keyed = keys(s)
    for i, (name, fn) in enumerate(STEPS, 1):
        s.out.line(f"== {i}/{len(STEPS)} {name}")
        if fn is install and tarball:
            for host in install_hosts(s):
                build(s, host, tarball, sha256)
        elif fn is subscribe:
            subscribe(s, wait=True, timeout=timeout, copy_retries=copy_retries)
        elif fn in (config, create_set):
            fn(s, keyed)
        elif fn is appdb:
            appdb(s, update_roles)
        else:
            fn(s)
    made = len(s.changes) - before
    if not s.dry_run:
        s.out.line(
            f"migrate: done, {made} change(s); {cl.slave.host} replicates {cl.database}"
            f" from {cl.master.host}"
            if made
            else "migrate: nothing to do, every step was already done"
        )


def refuse_dropped(s: Session) -> None:
    """StepError when a failover dropped a node of the cluster: rejoin first."""
    cl = s.cluster
    gone = dropped(states(s)[0])
    if gone:
        node = cl.node(min(gone))
        raise StepError(
            node.host,
            f"{node.host} was dropped from cluster {cl.name} by a failover;"
            f" {cl.other(node).host} is the origin",
            f"inv rejoin --yes --cluster {cl.name} --database {cl.database} rebuilds"
            f" {node.host} as its subscriber (inv lost-rows first lists what only it"
            " holds)",
        )


def migrate_all(
    s: Session,
    tarball: str = "",
    sha256: str = "",
    timeout: int = settings.COPY_WAIT,
    copy_retries: int = settings.COPY_RETRIES,
    add_keys: bool = False,
    update_roles: bool = False,
) -> None:
    """migrate --all-databases: every database of the master (not templates, not
    postgres) as a cluster of its own (clusters.for_databases), one after the other.
    Preflight of every one first: nothing is changed unless all pass."""
    found = clusters.for_databases(s)
    s.out.line(
        f"== {len(found)} database(s) on {s.cluster.master.host}: "
        + ", ".join(f"{cl.database} (cluster {cl.name})" for cl in found)
    )
    sessions = [clusters.session_for(s, cl) for cl in found]
    failed = 0
    for x in sessions:
        x.fenced_now = first_contact(x)
        refuse_dropped(x)
    for x in sessions:
        s.out.line(f"== preflight of {x.cluster.database} (cluster {x.cluster.name})")
        failed += report(x.out, preflight(x, add_keys, update_roles))
    if failed:
        raise StepError(
            "preflight",
            f"{failed} check(s) failed (the FAIL lines above name host and object);"
            " nothing was changed in any database",
            "fix what they name (or move the databases one by one with --database),"
            " then run again",
        )
    for x in sessions:
        s.out.line(f"==== {x.cluster.database} (cluster {x.cluster.name})")
        migrate(
            x,
            tarball,
            sha256,
            timeout,
            copy_retries,
            add_keys,
            checked=True,
            update_roles=update_roles,
        )
    if not s.dry_run:
        s.out.line(
            f"migrate: {s.cluster.slave.host} replicates {len(found)} database(s) from"
            f" {s.cluster.master.host}, each as its own cluster: "
            + ", ".join(f"{cl.database} ({cl.name})" for cl in found)
        )
