"""`inv switchover` and `inv switchback`: checks, LOCK SET and MOVE SET, then proof on the servers."""
from __future__ import annotations

import time

from .. import facts, settings
from ..errors import StepError
from ..model import Cluster, Node
from ..plan import Change, apply, run_phases, run_slonik, stop_slonik, wait_until
from ..remote import Host, psql_error
from ..render import slonik
from ..render.sql import literal
from ..session import Session
from ..steps import identity
from . import matviews, pooler as pooler_, slontiming
from .status import Lag, Status, node_states, origin_of, status, wait_for_sync
from .verify import missing_from_set, schema_diff


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


def lock_and_move(s: Session, step: str, old: Node, to: Node, timeout: int, lock_timeout: float) -> float:
    """LOCK SET (bounded by lock_timeout), then SYNC, a wait for the new origin to confirm it, MOVE SET
    (render.slonik.move_set_script), and a poll of the new origin until it has taken over; the seconds
    writes were blocked.

    Both phases run on one psql on the slon host, started by one SSH command (plan.run_phases): the move
    phase is sent only once the lock phase has said it is done, so a tool that dies before never moves
    the set; the slon host then unlocks it. Whatever ends a phase early (a timeout, an error, a
    lost connection, Ctrl-C), the psql is stopped on the slon host and the old origin's catalog decides:
    still the origin and locked, UNLOCK SET and fail; the move committed, wait for the new origin and go
    on (not a failure). The slon host unlocks by itself, too, when the psql fails there
    (render.slonik.slonik_shell).
    """
    cl, old_h = s.cluster, s.node_host(old)
    since = facts.server_now(old_h)
    parts = [(slonik.lock_set_script(cl, old, lock_timeout), slonik.LOCKED, lock_timeout + settings.LOCK_GRACE),
             (slonik.move_set_script(cl, old, to, timeout), "", timeout + settings.SSH_GRACE)]
    t0 = time.monotonic()
    try:
        result = run_phases(s, parts, lock_timeout + timeout, on_failure=slonik.slonik_unlock_set(cl, old),
                            program=slonik.psql_on(cl, old))
    except BaseException as e:
        if not settle(s, step, old, to):
            if isinstance(e, StepError):
                raise StepError(e.host, f"switchover failed ({e.message}); set {cl.set_id} unlocked, writes go "
                                f"on at {old.host}", e.fix or "run again once the host answers") from None
            raise  # Ctrl-C or exit: unlocked, nothing moved
        result = None
    if result is not None and not result.marks:
        sessions = facts.transactions_before(old_h, since)
        settle(s, step, old, to)
        raise StepError(old.host, f"LOCK SET did not succeed within {lock_timeout:g} s ({phase_error(result)}); "
                        f"set {cl.set_id} unlocked, nothing changed; " + blocking(sessions),
                        "end those transactions (pg_terminate_backend) or wait for them, then run again")
    if result is not None:
        s.say(old.host, step, f"set {cl.set_id} locked in {result.marks[0] - t0:.1f} s: writes refused until "
              "it moved")
        if result.failed and not settle(s, step, old, to):
            raise StepError(old.host, f"move set failed ({phase_error(result)}); set {cl.set_id} unlocked, writes "
                            f"go on at {old.host}", "read the slon logs (inv logs), fix, then run again")
    wait_taken_over(s, to, timeout, f"{to.host} has not taken over set {cl.set_id} although {old.host} moved it")
    return time.monotonic() - t0


def wait_taken_over(s: Session, to: Node, timeout: float, message: str) -> None:
    """Poll the new origin's catalog (every settings.TAKEOVER_POLL s) until it names itself the set's
    origin; StepError after `timeout` s."""
    wait_until(lambda: facts.slony_state(s.node_host(to), s.cluster).origin == to.id, timeout, to.host, message,
               "check that both slons run (inv status, inv logs)", every=settings.TAKEOVER_POLL)


def phase_error(result) -> str:
    """What a lock or move script was doing when it failed (its last echoed part), and why."""
    why = "timed out" if result.exited == 124 else (psql_error(result.stderr) if result.stderr.strip()
                                                    else f"exit code {result.exited}")
    parts = [line[len("step: "):] for line in result.stdout.splitlines() if line.startswith("step: ")]
    return f"{parts[-1]}: {why}" if parts else why


def blocking(sessions: list[tuple[str, str, str, int, str]]) -> str:
    """The sessions LOCK SET waited for, one clause each."""
    if not sessions:
        return "no transaction older than the lock was still open"
    return "blocking: " + "; ".join(f"pid {pid} user {user} application {app or '-'} transaction open {age} s, "
                                    f"query since {start}" for pid, user, app, age, start in sessions[:5])


def settle(s: Session, step: str, old: Node, to: Node) -> bool:
    """After a phase ended early: stop slonik, and let the old origin's catalog decide. True when the move
    committed; else the set is unlocked (StepError when it cannot be)."""
    cl, old_h = s.cluster, s.node_host(old)
    try:
        pid = stop_slonik(s)
        state = facts.slony_state(old_h, cl)
    except StepError as e:
        raise StepError(e.host, f"cannot tell how the switchover ended ({e.message}); slonik stops by itself "
                        "on the slon host and unlocks the set", "inv status once both hosts answer; then "
                        "inv switchover (or switchback) again finishes or undoes it") from None
    if pid:
        s.say(s.slon.name, step, f"stopped slonik (pid {pid})")
    deadline = time.monotonic() + settings.SETTLE
    while state.locked and state.origin == old.id and time.monotonic() < deadline:
        time.sleep(0.5)  # the slon host runs UNLOCK SET itself after a failed slonik
        state = facts.slony_state(old_h, cl)
    if state.locked and state.origin == old.id:
        run_slonik(s, slonik.slonik_unlock_set(cl, old), "unlock set", settings.UNLOCK, check=False)
        state = facts.slony_state(old_h, cl)
    if state.origin == to.id:
        s.say(old.host, step, f"the move of set {cl.set_id} to {to.host} committed on {old.host}")
        return True
    if state.locked:
        raise StepError(old.host, f"set {cl.set_id} is still locked: application writes are refused",
                        "run inv switchover (or switchback) again: it unlocks first; or inv status")
    s.say(old.host, step, f"set {cl.set_id} unlocked: writes go on at {old.host}")
    return False


def move_set(s: Session, step: str, old: Node, to: Node, timeout: int, lock_timeout: float) -> float | None:
    """The move as one Change (a dry run shows both scripts); the seconds writes were blocked, or None."""
    cl = s.cluster
    scripts = (f"{slonik.psql_on(cl, old)} <<'SQL'\n{slonik.lock_set_script(cl, old, lock_timeout)}"
               f"-- once it printed '{slonik.LOCKED}':\n{slonik.move_set_script(cl, old, to, timeout)}SQL\n")
    took: dict[str, float] = {}
    apply(s, [Change(cl.slon_host, step, f"lock set {cl.set_id} on {old.host}, move it to {to.host}",
                     lambda: took.update(blocked=lock_and_move(s, step, old, to, timeout, lock_timeout)),
                     scripts)])
    return took.get("blocked")


def pooled_move(s: Session, step: str, p: pooler_.Pooler, old: Node, to: Node, timeout: int,
                lock_timeout: float) -> float:
    """PAUSE on PgBouncer, the move (meanwhile pgbouncer.ini is written to point at the new origin), then
    PgBouncer pointed at whichever node is the origin now, RELOAD, RESUME: whatever ends the move (a
    failure, Ctrl-C), PgBouncer is resumed. The seconds the application's queries waited."""
    pooler_.mark_paused(s, p)  # until RESUME: a run killed meanwhile leaves the next one what to resume
    t0 = time.monotonic()
    staged = None
    try:
        pooler_.pause(s, step, p, lock_timeout)  # resumes by itself when the pause cannot complete
        staged = pooler_.stage(p, to)
        move_set(s, step, old, to, timeout, lock_timeout)
    except BaseException as e:
        if staged is None and isinstance(e, StepError):
            pooler_.unmark_paused(s)
            raise
        try:
            pooler_.release(s, step, p, origin_after(s, old, to), staged)
            pooler_.unmark_paused(s)
        except StepError as e:  # the move's own error matters more; this one says what to do by hand
            s.out.error(f"warning: {e.line()}")
        raise
    pooler_.release(s, step, p, to, staged)
    waited = time.monotonic() - t0
    pooler_.unmark_paused(s)
    s.say(p.host.name, step, f"the application's queries waited in PgBouncer for at most {waited:.1f} s")
    return waited


def origin_after(s: Session, old: Node, to: Node) -> Node:
    """After a move ended early: the origin as the old origin's catalog says (settle has decided it),
    once the new origin has applied a move that committed. The old origin when it cannot be told."""
    try:
        if facts.slony_state(s.node_host(old), s.cluster).origin != to.id:
            return old
    except StepError:
        return old
    try:
        wait_taken_over(s, to, settings.CONVERGE, f"{to.host} has not taken over set {s.cluster.set_id}")
    except StepError:
        pass  # it will: the move committed
    return to


def recover(s: Session, step: str) -> None:
    """Finish or undo what an interrupted switchover left behind: a slonik still running, a MOVE SET not
    yet applied on the new origin (wait for it), a set still locked (UNLOCK SET), PgBouncer still
    paused (pointed at the origin, RELOAD, RESUME)."""
    cl = s.cluster
    pid = facts.slonik_running(s.slon, cl)
    if pid:
        apply(s, [Change(s.slon.name, step, f"stop slonik (pid {pid}), left running by an interrupted switchover",
                         lambda: stop_slonik(s))])
    slontiming.restore(s, step)  # an interrupted switchover's quick slon timing
    states, errors = node_states(s)
    if errors or not all(st.has_set for st in states.values()):
        return  # the checks name an unreachable node; no set, nothing to recover
    if len({st.origin for st in states.values()}) > 1:
        s.say(cl.slon_host, step, f"the nodes disagree about the origin of set {cl.set_id} ("
              + ", ".join(f"{cl.node(n).host} says {cl.node(st.origin).host}" for n, st in states.items())
              + "): a MOVE SET is being applied; waiting for it")
        wait_until(lambda: len({facts.slony_state(s.node_host(n), cl).origin for n in cl.nodes}) == 1,
                   settings.CONVERGE, cl.slon_host, "the nodes still disagree about the origin",
                   "check that both slons run (inv status, inv logs)", every=settings.POLL)
        states, _ = node_states(s)
    origin = cl.node(next(iter(states.values())).origin)
    if states[origin.id].locked:
        def unlock():
            run_slonik(s, slonik.slonik_unlock_set(cl, origin), "unlock set", settings.UNLOCK)
            if facts.slony_state(s.node_host(origin), cl).locked:
                raise StepError(origin.host, f"set {cl.set_id} is still locked after UNLOCK SET", "inv logs")
        apply(s, [Change(cl.slon_host, step, f"unlock set {cl.set_id} on {origin.host}, left locked by an "
                         "interrupted switchover (application writes were refused)", unlock,
                         slonik.slonik_unlock_set(cl, origin))])
    apply(s, pooler_.resume_left(s, step, origin))
    other = cl.slave if origin is cl.master else cl.master
    apply(s, identity.conform(s, step, origin, always=True) + identity.conform(s, step, other, always=False))


def switchover(s: Session, to: Node, *, max_lag: float = settings.MAX_LAG, wait_lag: float = settings.WAIT_LAG,
               xact_age: float = settings.XACT_AGE, wait_xacts: float = settings.WAIT_XACTS,
               timeout: int = settings.MOVE_EVENT, lock_timeout: float = settings.LOCK_TIMEOUT, pooler: str = "",
               pooler_config: str = settings.POOLER_CONFIG) -> dict:
    """Move the set's origin to `to` (MOVE SET) with writes blocked as briefly as possible; prove it.

    pooler: the host of the PgBouncer the application goes through; it is paused around the move and
    then sent to the new origin, so the application's queries wait instead of failing."""
    cl = s.cluster
    step = "switchover" if to is cl.slave else "switchback"
    recover(s, step)
    old = origin_of(s)
    if old is None:
        raise StepError(s.master.name, f"set {cl.set_id} does not exist", "run inv migrate first")
    if old is to:
        s.say(to.host, step, f"{to.host} is already the origin of set {cl.set_id}; nothing to do")
        if pooler:
            apply(s, pooler_.repoint(s, step, pooler, pooler_config, to))
        return {"moved": False}
    old_h, new_h = s.node_host(old), s.node_host(to)
    # Checks, all before anything is locked.
    bouncer = pooler_.open_pooler(s, pooler, pooler_config, old) if pooler else None
    report = status(s)
    refuse_unready(report, to, cl, s.slon.name)
    missing = missing_from_set(s, old_h)
    if missing:
        raise StepError(old.host, f"{', '.join(missing)} not in set {cl.set_id}: {to.host} would take over "
                        "without them (empty or stale)", "add them to the replication (a new set, subscribed, "
                        "then MERGE SET), or drop them if unused; then run again")
    lag = wait_for_lag(s, step, to, report, max_lag, wait_lag)
    diff = schema_diff(s, old_h, new_h)
    if diff:
        raise StepError(to.host, f"schema differs from {old.host}: {diff[0]}" + (" ..." if len(diff) > 1 else ""),
                        "apply DDL through EXECUTE SCRIPT on both nodes, then run again")
    s.say(to.host, step, "schema identical on both nodes")
    wait_no_long_transactions(s, step, old_h, xact_age, wait_xacts)
    # Every check that can refuse is done: from here on the slons run with the quick timing.
    with slontiming.quick_slons(s, step):
        # A SYNC made from now on must come back confirmed: both (restarted) slons are working right now.
        wait_for_sync(s, old_h, old, to, timeout=settings.FRESH_SYNC)
        s.say(to.host, step, f"lag {lag.seconds} s ({lag.events} events), a fresh SYNC confirmed")
        if bouncer and not s.dry_run:
            blocked = pooled_move(s, step, bouncer, old, to, timeout, lock_timeout)
        else:
            if bouncer:
                s.say(pooler, step, f"would PAUSE {cl.database} on PgBouncer, move the set, point PgBouncer at "
                      f"{to.host} ({to.dbhost}), RELOAD, RESUME")
            blocked = move_set(s, step, old, to, timeout, lock_timeout)
    if blocked is None:
        return {"moved": False}
    apply(s, identity.conform(s, step, to, always=True) + identity.conform(s, step, old, always=False)
          + matviews.refresh(s, step, to))
    s.say(s.slon.name, step, f"set {cl.set_id} moved to {to.host}; writes were blocked for at most "
          f"{blocked:.1f} s")
    proof = prove_origin(s, step, old, to)
    return {"moved": True, "blocked_seconds": round(blocked, 2), **proof}


def as_origin(s: Session, h: Host, node: Node) -> bool:
    """Whether `h` is the set's origin in its own catalog, every table configured to log and accept writes."""
    tables, origin_like, _ = facts.guarded_tables(h, s.cluster)
    return facts.slony_state(h, s.cluster).origin == node.id and tables == origin_like


def as_subscriber(s: Session, h: Host, origin: Node) -> bool:
    """Whether `h` names `origin` as the origin and Slony's deny-access trigger guards every table."""
    tables, _, guarded = facts.guarded_tables(h, s.cluster)
    return facts.slony_state(h, s.cluster).origin == origin.id and tables == guarded


def prove_origin(s: Session, step: str, old: Node, to: Node) -> dict:
    """After MOVE SET, from the catalogs (no write into application tables, no application code run):
    the old origin refuses writes (Slony's deny-access trigger on every table), the new origin takes
    them; a sequence advanced on the new origin replicates back; every sequence on the new origin is
    past the values used on the old one."""
    cl = s.cluster
    old_h, new_h = s.node_host(old), s.node_host(to)
    wait_until(lambda: as_subscriber(s, old_h, to), settings.PROOF, old.host,
               f"{old.host} does not refuse writes yet (Slony's deny-access trigger is not on every table)",
               "inv status; inv logs", every=settings.POLL)
    tables = facts.guarded_tables(old_h, cl)[0]
    s.say(old.host, step, f"{old.host} is a subscriber: Slony's deny-access trigger refuses writes on all "
          f"{tables} tables")
    wait_until(lambda: as_origin(s, new_h, to), settings.PROOF, to.host,
               f"{to.host} does not take writes yet", "inv status; inv logs", every=settings.POLL)
    s.say(to.host, step, f"{to.host} is the origin: all {tables} tables log and take writes")
    owned = facts.owned_sequences(new_h, cl)
    if owned:
        seq = owned[0][0]
        value = int(new_h.value(f"SELECT nextval({literal(seq)})", cl.database))
        wait_until(lambda: facts.sequence_value(old_h, cl, seq) >= value,
                   settings.PROOF, old.host, f"{seq} = {value} did not replicate back from {to.host}",
                   "inv status; inv logs", every=settings.POLL)
        s.say(old.host, step, f"{seq} = {value} from {to.host} replicated back")
    heads = facts.sequence_heads(new_h, cl, owned)
    behind = [f"{seq} = {last} < max({table}.{col}) = {top}"
              for (seq, table, col), (last, top) in zip(owned, heads) if last < top]
    if behind:
        raise StepError(to.host, f"sequences behind their columns: {'; '.join(behind)}",
                        "setval them past the column maximum before writing")
    s.say(to.host, step, f"{len(owned)} sequences past every value used on their columns")
    return {"write_refused_on_old": True, "write_replicated_back": bool(owned), "sequences_ok": True}
