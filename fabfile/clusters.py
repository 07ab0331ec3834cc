"""Several clusters on one pair of servers, one per database: where a cluster's files
are, which clusters the servers hold, which cluster each database gets. Read-only.

Every cluster's files on the slon host are named by the cluster (model.Cluster); a
cluster made by an earlier version keeps that version's names (`resolve`). The clusters
of slony-migrate on a server are the managed blocks of its pg_hba.conf (the hba step
writes one per cluster, finish removes it): each names the cluster, its database and
its replication role.
"""

from __future__ import annotations

import dataclasses

from . import facts
from .errors import StepError
from .model import Cluster, check_names
from .session import Session


def resolve(s: Session) -> Cluster:
    """The session's cluster with the layout of its files: an earlier version's names
    when that version's files on the slon host are this cluster's (kept, not moved),
    else the names of this version. A slon host that does not answer leaves it as it
    is (the task that needs it says so)."""
    cl = s.cluster
    if cl is None or cl.legacy:
        return cl
    try:
        name = facts.legacy_cluster(s.slon_host, cl.confdir)
    except StepError:
        return cl
    return dataclasses.replace(cl, legacy=True) if name == cl.name else cl


def named(cl: Cluster, name: str, database: str, user: str) -> Cluster:
    """`cl` (its hosts and settings) for another cluster: its name, database and
    role; StepError naming a value that cannot be one."""
    check_names(name, database, user)
    return dataclasses.replace(
        cl, name=name, database=database, user=user, legacy=False
    )


def session_for(s: Session, cl: Cluster) -> Session:
    """A session for another cluster on the same hosts, output, run and password: what
    it changes is counted with the rest."""
    other = dataclasses.replace(s, cluster=cl)
    other.cluster = resolve(other)
    return other


def on_hosts(s: Session) -> list[Cluster]:
    """Every cluster of slony-migrate on the master or the slave (their pg_hba.conf
    blocks), sorted by name, each with its files' layout."""
    found: dict[str, tuple[str, str]] = {}
    for h in (s.slave_host, s.master_host):
        found.update(facts.hba_clusters(h))
    return [
        session_for(s, named(s.cluster, name, *found[name])).cluster
        for name in sorted(found)
    ]


def sharing_role(s: Session, host_name: str) -> list[str]:
    """The other clusters on this server that log in as the session's replication role
    (their pg_hba.conf blocks name it), sorted."""
    cl = s.cluster
    return sorted(
        name
        for name, (_, user) in facts.hba_clusters(s.host(host_name)).items()
        if user == cl.user and name != cl.name
    )


def for_databases(s: Session) -> list[Cluster]:
    """One cluster per database of the master (not templates, not postgres): the
    cluster that replicates it already (its pg_hba.conf block), else one named after
    it. StepError naming a database whose name cannot be a cluster's, before anything
    is done."""
    cl, h = s.cluster, s.master_host
    databases = facts.database_names(h)
    if not databases:
        raise StepError(
            h.name,
            "no database to move (only templates and postgres)",
            "check --master",
        )
    existing = {db: name for name, (db, _) in facts.hba_clusters(h).items()}
    out = []
    for db in databases:
        try:
            out.append(named(cl, existing.get(db, db), db, cl.user))
        except StepError as e:
            raise StepError(
                h.name,
                f"database {db!r} cannot be moved as cluster {existing.get(db, db)!r}:"
                f" {e.message}",
                f"move it by itself: migrate --database {db} --cluster NAME (a name"
                " of at most 31 lower-case letters, digits or _), and the others one"
                " by one",
            ) from None
    return out
