"""One operation for every cluster on the pair (switchover, switchback or finish
--all-databases): cluster after cluster, the first that fails stops the rest."""

from __future__ import annotations

from collections.abc import Callable

from .. import clusters
from ..errors import StepError
from ..session import Session
from .returned import first_contact


def each_cluster(s: Session, step: str, operation: Callable[[Session], object]) -> list:
    """Run `operation` for every cluster of slony-migrate on the master and the slave
    (clusters.on_hosts), in turn, each with its own session (a node a failover dropped
    fenced first); what each returned. The first StepError ends the run, naming the
    clusters done and those left as they were."""
    found = clusters.on_hosts(s)
    if not found:
        raise StepError(
            s.cluster.master.host,
            f"no cluster of slony-migrate on {s.cluster.master.host} or"
            f" {s.cluster.slave.host} (no managed block in their pg_hba.conf)",
            "check --master and --slave; inv status --all lists the clusters",
        )
    s.out.line(
        f"== {step} of {len(found)} cluster(s): "
        + ", ".join(f"{cl.name} ({cl.database})" for cl in found)
    )
    done, results = [], []
    for i, cl in enumerate(found):
        x = clusters.session_for(s, cl)
        s.out.line(f"==== {cl.name} ({cl.database})")
        try:
            x.fenced_now = first_contact(x)
            results.append(operation(x))
        except StepError as e:
            left = [c.name for c in found[i + 1 :]]
            raise StepError(
                e.host,
                f"cluster {cl.name}: {e.message} ({step} done for:"
                f" {', '.join(done) or 'none'}; not begun for:"
                f" {', '.join(left) or 'none'})",
                e.fix,
            ) from None
        done.append(cl.name)
    return results
