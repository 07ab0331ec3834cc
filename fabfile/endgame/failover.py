"""`inv failover`: the origin is dead; promote the receiver (FAILOVER, DROP NODE) and say what may be lost."""
from __future__ import annotations

from .. import facts, settings
from ..errors import StepError
from ..plan import apply, slonik_change, wait_until
from ..render import slonik
from ..session import Session
from .switchover import probe_table


def answers(s: Session, node) -> bool:
    """Whether the node's PostgreSQL answers (over SSH, as postgres)."""
    try:
        s.node_host(node).psql("SELECT 1")
        return True
    except StepError:
        return False


def failover(s: Session) -> dict:
    """Promote the slave when the master is dead: FAILOVER, DROP NODE; says what may be lost."""
    step, cl = "failover", s.cluster
    dead, backup = cl.master, cl.slave
    if answers(s, dead):
        raise StepError(dead.host, f"{dead.host} answers: failover would split the cluster",
                        "use inv switchover while the master is alive")
    if facts.slony_state(s.slave, cl).origin == backup.id:
        s.say(backup.host, step, f"{backup.host} is already the origin; nothing to do")
        return {"promoted": False}
    when, ago = facts.last_event_from(s.slave, cl, dead)
    s.say(backup.host, step, f"last event from {dead.host} at {when} ({ago} s ago): transactions "
          f"committed on {dead.host} after that are lost")
    if not apply(s, [slonik_change(s, step, slonik.slonik_failover(cl, dead, backup),
                                   f"fail over set {cl.set_id} to {backup.host}, drop node {dead.id}")]):
        return {"promoted": False}  # a dry run
    pid = facts.slon_running(s.slon, cl, dead.instance)
    if pid:
        s.slon.sudo(f"kill -TERM {pid}")
        s.say(s.slon.name, step, f"stopped slon for {dead.instance} (node dropped)")
    table, key = probe_table(s, s.slave)
    wait_until(lambda: not facts.write_error(s.slave, cl, table, key), settings.FAILOVER_WRITABLE, backup.host,
               f"{backup.host} still refuses writes", "inv logs")
    s.say(backup.host, step, f"{backup.host} is the origin and accepts writes; rebuild {dead.host} to rejoin")
    return {"promoted": True, "last_event": when, "seconds_since": ago}
