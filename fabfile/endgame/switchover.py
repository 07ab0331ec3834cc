"""`inv switchover` and `inv switchback`: checks, LOCK SET and MOVE SET, then proof on the servers."""
from __future__ import annotations

import time

from .. import facts, settings
from ..errors import StepError
from ..model import Cluster, Node
from ..plan import Change, apply, run_slonik, wait_until
from ..remote import Host
from ..render import slonik
from ..render.sql import literal
from ..session import Session
from .status import Lag, Status, origin_of, status, wait_for_sync
from .verify import schema_diff


def refuse_unready(report: Status, to: Node, cl: Cluster, slon_host: str) -> None:
    """StepError when a node is unreachable, the new origin is no active subscriber or a slon is down."""
    down = report.unreachable()
    if down:
        raise StepError(down.host, f"unreachable, so no switchover ({down.error})",
                        "bring it back, or if the origin is dead for good: inv failover")
    if not report.subscription or not report.subscription.active:
        raise StepError(to.host, f"{to.host} is not an active subscriber of set {cl.set_id}",
                        "wait for the initial copy (inv status), then run again")
    if report.slons_error:
        raise StepError(slon_host, f"cannot tell whether the slons run ({report.slons_error})",
                        "check the slon host, then run again")
    dead = [n for n, pid in report.slons.items() if not pid]
    if dead:
        raise StepError(slon_host, f"slon not running for {', '.join(dead)}", "run inv slons, then again")


def lag_acceptable(lag: Lag | None, max_lag: float) -> bool:
    """sl_status lags by up to one idle SYNC interval even when all is applied: only a backlog of
    events older than max_lag counts."""
    return bool(lag) and (lag.events <= 1 or lag.seconds <= max_lag)


def wait_for_lag(s: Session, step: str, to: Node, report: Status, max_lag: float, wait_lag: float) -> Lag:
    """Wait up to `wait_lag` s for the lag to `to` to be acceptable; its lag, or StepError."""
    deadline = time.monotonic() + wait_lag
    while True:
        lag = report.lag_of(to.host)
        if lag_acceptable(lag, max_lag):
            return lag
        seconds, events = (lag.seconds, lag.events) if lag else ("?", "?")
        if time.monotonic() > deadline:
            raise StepError(to.host, f"lag {seconds} s ({events} events) is over {max_lag} s",
                            "wait until inv status shows less lag, or raise --max-lag")
        s.say(to.host, step, f"lag {seconds} s is over {max_lag} s, waiting "
              f"({deadline - time.monotonic():.0f} s left)")
        time.sleep(settings.LAG_POLL)
        report = status(s)


def blockers(sessions: list[tuple[str, str, str, str, int]], prepared: list[tuple[str, str, int]]
             ) -> list[tuple[str, str, str, int]]:
    """(pid or '-', database, state, age) of what would hold up LOCK SET, oldest first."""
    found = [(pid, db, state, age) for pid, db, _, state, age in sessions]
    found += [("-", db, f"prepared {gid}", age) for gid, db, age in prepared]
    return sorted(found, key=lambda b: -b[3])


def wait_no_long_transactions(s: Session, step: str, h: Host, xact_age: float, wait_xacts: float) -> None:
    """Wait up to `wait_xacts` s until no transaction older than `xact_age` s is open on the origin's server."""
    deadline = time.monotonic() + wait_xacts
    while True:
        found = blockers(facts.long_transactions(h, xact_age), facts.prepared_transactions(h))
        if not found:
            s.say(h.name, step, f"no transaction older than {xact_age:.0f} s on {h.name}")
            return
        if time.monotonic() > deadline:
            pid, db, state, age = found[0]
            raise StepError(h.name, f"{len(found)} long or idle-in-transaction session(s) would block LOCK SET "
                            f"(pid {pid} in {db}, {state}, {age} s)",
                            "end them (pg_terminate_backend) or wait, then run again; nothing was locked")
        s.say(h.name, step, f"waiting for {len(found)} long transaction(s) to end "
              f"({deadline - time.monotonic():.0f} s left)")
        time.sleep(settings.XACT_POLL)


def move_set(s: Session, step: str, old: Node, to: Node, timeout: int) -> float | None:
    """LOCK SET, SYNC, WAIT, MOVE SET, WAIT in one slonik script; UNLOCK SET when it fails.

    Returns how long the script ran (the most writes were blocked), or None in a dry run.
    """
    cl = s.cluster
    script = slonik.slonik_move_set(cl, old, to, timeout)
    took: dict[str, float] = {}

    def action():
        t0 = time.monotonic()
        result = run_slonik(s, script, "move set", timeout + 60, check=False)
        took["blocked"] = time.monotonic() - t0
        if result.failed:
            unlock = run_slonik(s, slonik.slonik_unlock_set(cl, old), "unlock set", settings.UNLOCK, check=False)
            detail = (result.stderr.strip().splitlines() or ["slonik failed"])[-1]
            raise StepError(old.host, f"move set failed ({detail}); " + (
                "set unlocked, writes go on at the old origin" if unlock.ok else "UNLOCK SET failed too"),
                "read the slon logs (inv logs), fix, then run again")
    apply(s, [Change(cl.slon_host, step, f"lock set {cl.set_id} on {old.host}, move it to {to.host}", action,
                     script)])
    return took.get("blocked")


def switchover(s: Session, to: Node, *, max_lag: float = settings.MAX_LAG, wait_lag: float = settings.WAIT_LAG,
               xact_age: float = settings.XACT_AGE, wait_xacts: float = settings.WAIT_XACTS,
               timeout: int = settings.MOVE_EVENT) -> dict:
    """Move the set's origin to `to` (MOVE SET) with writes blocked as briefly as possible; prove it."""
    cl = s.cluster
    step = "switchover" if to is cl.slave else "switchback"
    old = origin_of(s)
    if old is None:
        raise StepError(s.master.name, f"set {cl.set_id} does not exist", "run inv migrate first")
    if old is to:
        s.say(to.host, step, f"{to.host} is already the origin of set {cl.set_id}; nothing to do")
        return {"moved": False}
    old_h, new_h = s.node_host(old), s.node_host(to)
    # Checks, all before anything is locked.
    report = status(s)
    refuse_unready(report, to, cl, s.slon.name)
    lag = wait_for_lag(s, step, to, report, max_lag, wait_lag)
    # A SYNC made from now on must come back confirmed: both slons are working right now.
    wait_for_sync(s, old_h, old, to, timeout=settings.FRESH_SYNC)
    s.say(to.host, step, f"lag {lag.seconds} s ({lag.events} events), a fresh SYNC confirmed")
    diff = schema_diff(s, old_h, new_h)
    if diff:
        raise StepError(to.host, f"schema differs from {old.host}: {diff[0]}" + (" ..." if len(diff) > 1 else ""),
                        "apply DDL through EXECUTE SCRIPT on both nodes, then run again")
    s.say(to.host, step, "schema identical on both nodes")
    wait_no_long_transactions(s, step, old_h, xact_age, wait_xacts)
    blocked = move_set(s, step, old, to, timeout)
    if blocked is None:
        return {"moved": False}
    s.say(s.slon.name, step, f"set {cl.set_id} moved to {to.host}; writes were blocked for at most "
          f"{blocked:.1f} s")
    proof = prove_origin(s, step, old_h, new_h)
    return {"moved": True, "blocked_seconds": round(blocked, 2), **proof}


def probe_table(s: Session, h: Host) -> tuple[str, str]:
    """A replicated table with a one-column key, and that key: where a write can be probed."""
    keys = facts.table_keys(h, s.cluster)
    table = next(t for t, cols in sorted(keys.items()) if len(cols) == 1)
    return table, keys[table][0][0]


def prove_origin(s: Session, step: str, old_h: Host, new_h: Host) -> dict:
    """After MOVE SET: a write on the old origin is refused, one on the new origin replicates back,
    and every sequence on the new origin is past the values used on the old one."""
    cl = s.cluster
    table, key = probe_table(s, new_h)
    refused = wait_until(lambda: facts.write_error(old_h, cl, table, key), settings.PROOF, old_h.name,
                         f"a write on {table} is still accepted after the move", "inv status; inv logs",
                         every=settings.POLL)
    s.say(old_h.name, step, f"write on {table} refused: {refused.split('ERROR:')[-1].strip()[:90]}")
    wait_until(lambda: not facts.write_error(new_h, cl, table, key), settings.PROOF, new_h.name,
               f"a write on {table} is still refused", "inv status; inv logs", every=settings.POLL)
    s.say(new_h.name, step, f"write on {table} accepted")
    owned = facts.owned_sequences(new_h, cl)
    if owned:
        seq = owned[0][0]
        value = int(new_h.value(f"SELECT nextval({literal(seq)})", cl.database))
        wait_until(lambda: facts.sequence_value(old_h, cl, seq) >= value,
                   settings.PROOF, old_h.name, f"{seq} = {value} did not replicate back from {new_h.name}",
                   "inv status; inv logs", every=settings.POLL)
        s.say(old_h.name, step, f"{seq} = {value} from {new_h.name} replicated back")
    heads = facts.sequence_heads(new_h, cl, owned)
    behind = [f"{seq} = {last} < max({table}.{col}) = {top}"
              for (seq, table, col), (last, top) in zip(owned, heads) if last < top]
    if behind:
        raise StepError(new_h.name, f"sequences behind their columns: {'; '.join(behind)}",
                        "setval them past the column maximum before writing")
    s.say(new_h.name, step, f"{len(owned)} sequences past every value used on their columns")
    return {"write_refused_on_old": True, "write_replicated_back": bool(owned), "sequences_ok": True}
