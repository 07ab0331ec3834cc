"""`inv finish`: after an accepted switchover, Slony out of both nodes, access and secrets removed."""
from __future__ import annotations

from .. import facts
from ..errors import StepError
from ..plan import Change, apply
from ..session import Session
from ..steps.access import hba, pgpass
from ..steps.cluster import slons, uninstall
from .status import origin_of


def finish(s: Session, drop_role: bool = False, force: bool = False) -> None:
    """After an accepted switchover: Slony out of both nodes, slons stopped, access and secrets removed."""
    step, cl = "finish", s.cluster
    origin = origin_of(s)
    if origin is cl.master and not force:
        raise StepError(cl.master.host, f"{cl.master.host} is still the origin", "run inv switchover first "
                        "(or --force to remove replication without moving)")
    slons(s, stop=True)
    uninstall(s)
    hba(s, remove=True)
    pgpass(s, step, remove=True)
    if drop_role:
        apply(s, [Change(h.name, step, f"drop role {cl.user}", lambda h=h: h.psql(f"DROP ROLE {cl.user}"),
                         f"DROP ROLE {cl.user}") for h in s.node_hosts() if facts.role_exists(h, cl.user)])
    s.say(cl.slave.host if origin is not cl.master else cl.master.host, step,
          "replication removed; tables, data and sequences stay. Reconnect the application's pools "
          "(cached plans refer to the removed triggers).")
