"""`inv switchover` and `inv switchback`: checks, LOCK SET and MOVE SET, then proof on
the servers.

A move is one value (render.move.Move: its nodes, its limits, its two scripts rendered
once). The checks run first and change nothing; then the window: both slons quickened, a
fresh SYNC, PgBouncer paused (with --pooler), LOCK SET and MOVE SET, PgBouncer pointed
at the new origin and resumed, the configured slon timing back. Whatever ends the window
early is settled in one place (`window`): the old origin's catalog decides whether the
move happened; if not, the set is unlocked, PgBouncer resumed at the old origin and the
slon timing put back.
"""

from __future__ import annotations

import shlex
import time

from .. import facts, replication, settings
from ..errors import StepError
from ..model import Cluster, Node
from ..plan import Action, Change, Slonik, apply, preview
from ..remote import Host, psql_error
from ..render import parse, sql
from ..render.move import COMMITTED, TAKEN_OVER, Move, MoveResult, Switch
from ..render.slonik import slonik_unlock_set
from ..render.sql import literal
from ..runner import run_phases, run_slonik, stop_slonik
from ..session import Session
from ..steps import identity
from ..steps.cluster import pin_definers
from ..wait import poll, wait_until
from . import matviews, pooler, slontiming
from .status import Lag, Status, status, wait_for_sync
from .verify import missing_from_set, schema_diff


class Unmoved(StepError):
    """The window ended without a move, the set unlocked at the old origin: its
    message says so."""


# --- the checks, before anything changes ----------------------------------------------


def refuse_unready(report: Status, new: Node, cl: Cluster, slon_name: str) -> None:
    """StepError when a failover dropped a node, a node is unreachable, the new origin
    is no active subscriber or a slon is down."""
    fo = report.failed_over
    if fo:
        raise StepError(
            fo.host,
            f"{fo.host} was dropped from the cluster by a failover"
            + (f" at {fo.at}" if fo.at else "")
            + f" and is stale: {fo.origin} is the origin, without a subscriber",
            f"inv lost-rows, then inv rejoin --yes (once {fo.host} is back); then"
            " switch over",
        )
    down = report.unreachable()
    if down:
        raise StepError(
            down.host,
            f"unreachable, so no switchover ({down.error})",
            "bring it back, or if the origin is dead for good: inv failover",
        )
    if not report.subscription or not report.subscription.active:
        raise StepError(
            new.host,
            f"{new.host} is not an active subscriber of set {cl.set_id}",
            "wait for the initial copy (inv status), then run again",
        )
    if report.slons_error:
        raise StepError(
            slon_name,
            f"cannot tell whether the slons run ({report.slons_error})",
            "check the slon host, then run again",
        )
    stopped = [n for n, pid in report.slons.items() if not pid]
    if stopped:
        raise StepError(
            slon_name,
            f"slon not running for {', '.join(stopped)}",
            "run inv slons, then again",
        )


def lag_acceptable(lag: Lag | None, max_lag: float) -> bool:
    """sl_status lags by up to one idle SYNC interval even when all is applied: only
    a backlog of events older than max_lag counts."""
    return bool(lag) and (lag.events <= 1 or lag.seconds <= max_lag)


def wait_for_lag(
    s: Session, step: str, new: Node, report: Status, max_lag: float, wait_lag: float
) -> Lag:
    """Wait up to `wait_lag` s for the lag to `new` to be acceptable; its lag, or
    StepError."""
    reports = [report]  # the first look is at the report in hand

    def describe(lag: Lag | None) -> tuple:
        return (lag.seconds, lag.events) if lag else ("?", "?")

    def waiting(lag: Lag | None, left: float) -> None:
        s.say(
            new.host,
            step,
            f"lag {describe(lag)[0]} s is over {max_lag} s, waiting ({left:.0f} s"
            " left)",
        )

    ok, lag = poll(
        lambda: (reports.pop() if reports else status(s)).lag_of(new.host),
        every=settings.LAG_POLL,
        timeout=wait_lag,
        done=lambda lag: lag_acceptable(lag, max_lag),
        waiting=waiting,
    )
    if not ok:
        seconds, events = describe(lag)
        raise StepError(
            new.host,
            f"lag {seconds} s ({events} events) is over {max_lag} s",
            "wait until inv status shows less lag, or raise --max-lag",
        )
    return lag


def blockers(
    sessions: list[tuple[str, str, str, str, int]], prepared: list[tuple[str, str, int]]
) -> list[tuple[str, str, str, int]]:
    """(pid or '-', database, state, age) of what would hold up LOCK SET, oldest
    first."""
    found = [(pid, db, state, age) for pid, db, _, state, age in sessions]
    found += [("-", db, f"prepared {gid}", age) for gid, db, age in prepared]
    return sorted(found, key=lambda b: -b[3])


def wait_no_long_transactions(
    s: Session, step: str, h: Host, xact_age: float, wait_xacts: float
) -> None:
    """Wait up to `wait_xacts` s until no transaction older than `xact_age` s is open
    on the origin's server."""

    def waiting(found: list, left: float) -> None:
        s.say(
            h.name,
            step,
            f"waiting for {len(found)} long transaction(s) to end ({left:.0f} s left)",
        )

    ok, found = poll(
        lambda: blockers(
            facts.long_transactions(h, xact_age), facts.prepared_transactions(h)
        ),
        every=settings.XACT_POLL,
        timeout=wait_xacts,
        done=lambda found: not found,
        waiting=waiting,
    )
    if not ok:
        pid, db, state, age = found[0]
        raise StepError(
            h.name,
            f"{len(found)} long or idle-in-transaction session(s) would block LOCK SET "
            f"(pid {pid} in {db}, {state}, {age} s)",
            "end them (pg_terminate_backend) or wait, then run again; nothing was"
            " locked",
        )
    s.say(h.name, step, f"no transaction older than {xact_age:.0f} s on {h.name}")


def wait_no_lockers(s: Session, step: str, h: Host, wait: float) -> None:
    """Wait up to `wait` s until no session on the new origin holds a lock on a set table
    that its slon's MOVE SET would wait for (facts.set_table_lockers): the window would
    last as long as that session, or end in a deadlock."""

    def waiting(found: list, left: float) -> None:
        pid, user, mode, table = found[0]
        s.say(
            h.name,
            step,
            f"waiting for pid {pid} ({user}, {mode} on {table}) to end"
            f" ({left:.0f} s left)",
        )

    ok, found = poll(
        lambda: facts.set_table_lockers(h, s.cluster),
        every=settings.XACT_POLL,
        timeout=wait,
        done=lambda found: not found,
        waiting=waiting,
    )
    if not ok:
        raise StepError(
            h.name,
            f"{len(found)} session(s) hold locks on set tables that MOVE SET would wait"
            " for: "
            + "; ".join(f"pid {p} user {u} {m} on {t}" for p, u, m, t in found[:5])
            + "; nothing was locked",
            "end them (pg_terminate_backend) or wait, then run again",
        )


def check(s: Session, step: str, move: Move) -> Lag:
    """Everything that can refuse the move, before anything changes; the lag it
    found."""
    cl, switch = s.cluster, move.switch
    old_host, new_host = s.node_host(move.old), s.node_host(move.new)
    report = status(s)
    refuse_unready(report, move.new, cl, s.slon_host.name)
    missing = missing_from_set(s, old_host)
    if missing:
        raise StepError(
            move.old.host,
            f"{', '.join(missing)} not in set {cl.set_id}: {move.new.host} would take "
            "over without them (empty or stale)",
            "add them to the replication (a new set, subscribed, "
            "then MERGE SET), or drop them if unused; then run again",
        )
    lag = wait_for_lag(s, step, move.new, report, switch.max_lag, switch.wait_lag)
    diff = schema_diff(s, old_host, new_host)
    if diff:
        raise StepError(
            move.new.host,
            f"schema differs from {move.old.host}: {diff[0]}"
            + (" ..." if len(diff) > 1 else ""),
            "apply DDL through EXECUTE SCRIPT on both nodes, then run again",
        )
    s.say(move.new.host, step, "schema identical on both nodes")
    for node, h in ((move.old, old_host), (move.new, new_host)):
        code = facts.code_run_by_replication(h, cl)
        if code:
            raise StepError(
                node.host,
                f"{code[0]}"
                + (f" (and {len(code) - 1} more)" if len(code) > 1 else "")
                + ": slon applies rows there as a superuser, so this code would run with"
                " superuser rights; nothing was locked",
                "review it (inv preflight names each), then have a superuser own it or"
                " drop it for the migration; then run again",
            )
    wait_no_long_transactions(s, step, old_host, switch.xact_age, switch.wait_xacts)
    wait_no_lockers(s, step, new_host, switch.wait_xacts)
    return lag


# --- the window -----------------------------------------------------------------------


def lock_and_move(s: Session, step: str, move: Move) -> MoveResult:
    """LOCK SET (bounded by lock_timeout), then SYNC, a wait for the new origin to
    confirm it, MOVE SET (render.move), and a poll of the new origin until it has taken
    over; what each phase took.

    Both phases run on one psql on the slon host, started by one SSH command
    (runner.run_phases): the move phase is sent only once the lock phase has said it
    is done, so a tool that dies before never moves the set; the slon host then
    unlocks it. The slon host unlocks by itself, too, when the psql fails there
    (render.shell.slonik_shell). Unmoved when the lock or the move failed; whatever
    else ends it early propagates (window settles it)."""
    cl, old, old_host = s.cluster, move.old, s.node_host(move.old)
    since = facts.server_now(old_host)
    slon_clock = facts.epoch_now(s.slon_host)  # the new origin's slon log is in it
    t0 = time.monotonic()
    result = run_phases(
        s, move.parts(), move.bound, on_failure=move.unlock_script, program=move.program
    )
    if not result.marks:
        raise Unmoved(
            old.host,
            f"LOCK SET did not succeed within {move.switch.lock_timeout:g} s "
            f"({phase_error(result)}); set {cl.set_id} unlocked, nothing changed; "
            + blocking(facts.transactions_before(old_host, since)),
            "end those transactions (pg_terminate_backend) or wait for them, then run"
            " again",
        )
    locked = result.marks[0]
    s.say(
        old.host,
        step,
        f"set {cl.set_id} locked in {locked - t0:.1f} s: writes refused until it moved",
    )
    if result.failed:
        raise Unmoved(
            old.host,
            f"move set failed ({phase_error(result)}); set {cl.set_id} unlocked, writes"
            f" go on at {old.host}",
            "read the slon logs (inv logs), fix, then run again",
        )
    returned = time.monotonic()
    committed = next((t for t, line in result.seen if line == COMMITTED), returned)
    confirmed = next(
        (t for t, line in result.seen if line.startswith("step: MOVE SET")), committed
    )
    done = next((t for t, line in result.seen if line == TAKEN_OVER), None)
    if done is None:  # the slon host's watch ran out (render.move.takeover_watch)
        s.say(
            move.new.host,
            step,
            f"not the set's origin yet {settings.TAKEOVER_WATCH:g} s after the move:"
            " waiting for its slon",
        )
        wait_taken_over(
            s,
            move.new,
            move.switch.timeout,
            f"{move.new.host} has not taken over set {cl.set_id} although {old.host}"
            " moved it",
            wake=(step, slon_clock),
            since=committed,
        )
        done = time.monotonic()
    return MoveResult(
        done - t0,
        lock=locked - t0,
        sync=confirmed - locked,
        move=committed - confirmed,
        takeover=done - committed,
    )


def wait_taken_over(
    s: Session,
    node: Node,
    timeout: float,
    message: str,
    wake: tuple[str, float] | None = None,
    since: float | None = None,
) -> None:
    """Poll `node`'s catalog (every settings.TAKEOVER_POLL s) until it names itself
    the set's origin; StepError after `timeout` s. since: when the wait began
    (time.monotonic(); the stalls below count from it), if before this call.

    wake: (step, the slon host's clock when the move began): while the takeover has not
    come, every settings.WORKER_STALL s: when the node's slon log says its worker died
    since (a deadlock while it applied MOVE SET) and restarts in 10 s, the tool wakes
    that slon at once (SIGUSR1 ends its wait; sent only then: to a working slon it would
    cost a restart)."""
    cl, looked, woken = s.cluster, [0.0], []
    start = time.monotonic() if since is None else since
    h = s.node_host(node)

    def waiting(taken: bool, left: float) -> None:
        if wake is None:
            return
        stalled = time.monotonic() - start
        if stalled >= settings.AUTOVACUUM_STALL and h.version_num >= 90600:
            cancelled = h.value(sql.cancel_blocking_autovacuum(cl.user), cl.database)
            if cancelled and cancelled != "0":
                s.say(
                    node.host,
                    wake[0],
                    f"cancelled {cancelled} autovacuum worker(s)"
                    f" that held up the move there ({stalled:.2f} s in)",
                )
        if woken or stalled - looked[0] < settings.WORKER_STALL:
            return
        looked[0] = stalled  # its log, every WORKER_STALL s
        step, since = wake
        restart = parse.worker_restart(
            facts.slon_log(s.slon_host, cl, node, 200), since
        )
        if restart:
            woken.append(True)
            s.slon_host.sudo(wake_slon(cl, node), user="postgres", check=False)
            s.say(
                s.slon_host.name,
                step,
                f"slon for {cl.instance(node)} lost its worker ({restart}) and would restart"
                " it only 10 s later: woke it now",
            )

    ok, _ = poll(
        lambda: facts.slony_state(s.node_host(node), cl).origin == node.id,
        every=settings.TAKEOVER_POLL,
        timeout=timeout,
        waiting=waiting,
    )
    if not ok:
        raise StepError(
            node.host,
            f"{message} after {timeout:.0f} s",
            "check that both slons run (inv status, inv logs)",
        )


def wake_slon(cl: Cluster, node: Node) -> str:
    """The command that makes a slon waiting to restart its worker do it now."""
    return f"kill -s USR1 $(cat {shlex.quote(cl.slon_pidfile(node))})"


def phase_error(result) -> str:
    """What a lock or move script was doing when it failed (its last echoed part),
    and why."""
    why = (
        "timed out"
        if result.exited == 124
        else (
            psql_error(result.stderr)
            if result.stderr.strip()
            else f"exit code {result.exited}"
        )
    )
    parts = [
        line[len("step: ") :]
        for line in result.stdout.splitlines()
        if line.startswith("step: ")
    ]
    return f"{parts[-1]}: {why}" if parts else why


def blocking(sessions: list[tuple[str, str, str, int, str]]) -> str:
    """The sessions LOCK SET waited for, one clause each."""
    if not sessions:
        return "no transaction older than the lock was still open"
    return "blocking: " + "; ".join(
        f"pid {pid} user {user} application {app or '-'} transaction open {age} s, "
        f"query since {start}"
        for pid, user, app, age, start in sessions[:5]
    )


def settle(s: Session, step: str, move: Move) -> bool:
    """After the lock or move phase ended early: stop slonik, and let the old
    origin's catalog decide. True when the move committed; else the set is unlocked
    (StepError when it cannot be)."""
    cl, old, old_host = s.cluster, move.old, s.node_host(move.old)
    try:
        pid = stop_slonik(s)
        state = facts.slony_state(old_host, cl)
    except StepError as e:
        raise StepError(
            e.host,
            f"cannot tell how the switchover ended ({e.message}); slonik stops by"
            " itself on the slon host and unlocks the set",
            "inv status once both hosts answer; then "
            "inv switchover (or switchback) again finishes or undoes it",
        ) from None
    if pid:
        s.say(s.slon_host.name, step, f"stopped slonik (pid {pid})")

    def locked_here(state) -> bool:
        return state.locked and state.origin == old.id

    if locked_here(state):  # the slon host runs UNLOCK SET itself after a failed slonik
        looks = [state]  # the first look is at the state in hand
        _, state = poll(
            lambda: looks.pop() if looks else facts.slony_state(old_host, cl),
            every=0.5,
            timeout=settings.SETTLE,
            done=lambda st: not locked_here(st),
        )
    if locked_here(state):
        run_slonik(s, move.unlock_script, "unlock set", settings.UNLOCK, check=False)
        state = facts.slony_state(old_host, cl)
    if state.origin == move.new.id:
        s.say(
            old.host,
            step,
            f"the move of set {cl.set_id} to {move.new.host} committed on {old.host}",
        )
        return True
    if state.locked:
        raise StepError(
            old.host,
            f"set {cl.set_id} is still locked: application writes are refused",
            "run inv switchover (or switchback) again: it unlocks first; or inv status",
        )
    s.say(old.host, step, f"set {cl.set_id} unlocked: writes go on at {old.host}")
    return False


def origin_after(s: Session, move: Move) -> Node:
    """After a move ended early: the origin as the old origin's catalog says (settle has
    decided it), once the new origin has applied a move that committed. The old origin
    when it cannot be told.
    """
    try:
        if facts.slony_state(s.node_host(move.old), s.cluster).origin != move.new.id:
            return move.old
    except StepError:
        return move.old
    try:
        wait_taken_over(
            s,
            move.new,
            settings.CONVERGE,
            f"{move.new.host} has not taken over set {s.cluster.set_id}",
        )
    except StepError:
        pass  # it will: the move committed
    return move.new


def window(
    s: Session, step: str, move: Move, bouncer: pooler.Pooler | None, lag: Lag
) -> MoveResult | None:
    """The switchover's window, checks done: both slons quickened, a fresh SYNC
    confirmed, PgBouncer paused (`bouncer`), the lock and the move, PgBouncer pointed at
    the new origin and resumed, the configured slon timing back; what it measured. A dry
    run shows the quickening and the move's scripts (None).

    The one place that handles what ends it early (a failure, a lost connection,
    Ctrl-C): once the lock began, the old origin's catalog decides (settle). When the
    move committed all the same, the window goes on as if nothing happened. Otherwise
    the set is unlocked, PgBouncer resumed at the old origin, the configured slon
    timing put back (their own failures are warnings: the first error matters more),
    and the error raised."""
    cl = s.cluster
    lock_began = paused = pool_began = None
    staged = None
    try:
        slontiming.quicken(s, step)
        # A SYNC made from now on must come back confirmed: both (restarted) slons are
        # working right now.
        wait_for_sync(s, move.old, move.new, timeout=settings.FRESH_SYNC)
        s.say(
            move.new.host,
            step,
            f"lag {lag.seconds} s ({lag.events} events), a fresh SYNC confirmed",
        )
        if s.dry_run:
            if bouncer:
                s.say(
                    bouncer.host.name,
                    step,
                    f"would PAUSE {cl.database} on PgBouncer, move the set, point "
                    f"PgBouncer at {move.new.host} ({move.new.dbhost}), RELOAD, RESUME",
                )
            preview(
                s,
                cl.slon_name,
                step,
                f"lock set {cl.set_id} on {move.old.host}, move it to {move.new.host}",
                move.shown(),
            )
            return None
        if bouncer:
            pooler.mark_paused(
                s, bouncer
            )  # until RESUME: a run killed meanwhile leaves the next one what to resume
            pool_began = time.monotonic()
            paused = pooler.pause(
                s, step, bouncer, move.switch.lock_timeout
            )  # resumes itself when it cannot
            staged = pooler.stage(bouncer, move.new)
        s.say(
            cl.slon_name,
            step,
            f"lock set {cl.set_id} on {move.old.host}, move it to {move.new.host}",
        )
        lock_began = time.monotonic()
        result = lock_and_move(s, step, move)
    except BaseException as e:
        error, moved = e, False
        if lock_began is not None:
            try:
                moved = settle(s, step, move)
            except StepError as unsettled:
                error = unsettled
            if (
                not moved
                and isinstance(error, StepError)
                and not isinstance(error, Unmoved)
                and error is e
            ):
                error = StepError(
                    e.host,
                    f"switchover failed ({e.message}); set {cl.set_id} unlocked, writes"
                    f" go on at {move.old.host}",
                    e.fix or "run again once the host answers",
                )
        if not moved:
            wind_down(
                s,
                step,
                move,
                bouncer,
                resume=(
                    paused is not None or not isinstance(e, StepError)
                    if pool_began is not None
                    else False
                ),
                staged=staged,
            )
            if error is e:
                raise
            raise error from None
        wait_taken_over(
            s,
            move.new,
            move.switch.timeout,
            f"{move.new.host} has not taken over set {cl.set_id} "
            f"although {move.old.host} moved it",
        )
        result = MoveResult(time.monotonic() - lock_began)
    resumed = None
    if bouncer:
        t = time.monotonic()
        pooler.release(s, step, bouncer, move.new, staged)
        resumed = time.monotonic() - t
        waited = time.monotonic() - pool_began
        pooler.unmark_paused(s)
        s.say(
            bouncer.host.name,
            step,
            f"the application's queries waited in PgBouncer for at most {waited:.1f} s",
        )
        result = MoveResult(
            waited,
            result.lock,
            result.sync,
            result.move,
            result.takeover,
            paused,
            resumed,
        )
    try:
        slontiming.restore(s, step)
    except StepError as e:  # the move is done; the next switchover puts the timing back
        s.out.error(
            f"warning: {e.line()}; the next switchover (or switchback) puts the"
            " configured slon timing back"
        )
    return result


def wind_down(
    s: Session,
    step: str,
    move: Move,
    bouncer: pooler.Pooler | None,
    resume: bool,
    staged,
) -> None:
    """After a window that ended without a move: PgBouncer resumed (`resume`: it was
    paused, or its PAUSE was interrupted) at whichever node is the origin, the
    configured slon timing back. Their own errors are warnings, with what to do."""
    if bouncer:
        try:
            if resume:
                pooler.release(s, step, bouncer, origin_after(s, move), staged)
            pooler.unmark_paused(s)
        except (
            StepError
        ) as e:  # the window's own error matters more; this one says what to do by hand
            s.out.error(f"warning: {e.line()}")
    try:
        slontiming.restore(s, step)
    except StepError as e:
        s.out.error(
            f"warning: {e.line()}; the next switchover (or switchback) puts the"
            " configured slon timing back"
        )


# --- before and after -----------------------------------------------------------------


def recover(s: Session, step: str) -> None:
    """Finish or undo what an interrupted switchover left behind: a slonik still
    running, a MOVE SET not yet applied on the new origin (wait for it), a set still
    locked (UNLOCK SET), PgBouncer still paused (pointed at the origin, RELOAD,
    RESUME)."""
    cl = s.cluster
    pid = facts.slonik_running(s.slon_host, cl)
    if pid:
        apply(
            s,
            [
                Change(
                    s.slon_host.name,
                    step,
                    f"stop slonik (pid {pid}), left running by an interrupted "
                    "switchover",
                    Action(lambda: stop_slonik(s)),
                )
            ],
        )
    slontiming.restore(s, step)  # an interrupted switchover's quick slon timing
    apply(s, pin_definers(s, step))  # clusters made before the tool pinned them
    states, errors = replication.states(s)
    if (
        errors
        or not all(st.has_set for st in states.values())
        or replication.dropped(states)
    ):
        return  # the checks name an unreachable or dropped node; no set, nothing to do
    if replication.disagreement(s, states):
        s.say(
            cl.slon_name,
            step,
            f"the nodes disagree about the origin of set {cl.set_id} ("
            + ", ".join(
                f"{cl.node(n).host} says {cl.node(st.origin).host}"
                for n, st in states.items()
            )
            + "): a MOVE SET is being applied; waiting for it",
        )
        wait_until(
            lambda: not replication.disagreement(s, replication.states(s)[0]),
            settings.CONVERGE,
            cl.slon_name,
            "the nodes still disagree about the origin",
            "check that both slons run (inv status, inv logs)",
            every=settings.POLL,
        )
        states, _ = replication.states(s)
    origin = cl.node(replication.origin_in(states))
    if states[origin.id].locked:

        def unlocked() -> None:
            if facts.slony_state(s.node_host(origin), cl).locked:
                raise StepError(
                    origin.host,
                    f"set {cl.set_id} is still locked after UNLOCK SET",
                    "inv logs",
                )

        apply(
            s,
            [
                Change(
                    cl.slon_name,
                    step,
                    f"unlock set {cl.set_id} on {origin.host}, left locked by an "
                    "interrupted switchover (application writes were refused)",
                    Slonik(
                        slonik_unlock_set(cl, origin), settings.UNLOCK, "unlock set"
                    ),
                    unlocked,
                )
            ],
        )
    apply(s, pooler.resume_left(s, step, origin))
    apply(
        s,
        identity.conform(s, step, origin, always=True)
        + identity.conform(s, step, cl.other(origin), always=False),
    )


def switchover(s: Session, new: Node, switch: Switch = Switch()) -> dict:
    """Move the set's origin to `new` (MOVE SET) with writes blocked as briefly as
    possible; prove it.

    switch.pooler: the host of the PgBouncer the application goes through; it is paused
    around the move and then sent to the new origin, so the application's queries wait
    instead of failing.
    """
    cl = s.cluster
    step = "switchover" if new == cl.slave else "switchback"
    recover(s, step)
    old = replication.require_origin(s)
    if old == new:
        s.say(
            new.host,
            step,
            f"{new.host} is already the origin of set {cl.set_id}; nothing to do",
        )
        if switch.pooler:
            apply(s, pooler.repoint(s, step, switch.pooler, switch.pooler_config, new))
        return {"moved": False}
    move = Move(cl, old, new, switch)
    bouncer = (
        pooler.open_pooler(s, switch.pooler, switch.pooler_config, old)
        if switch.pooler
        else None
    )
    lag = check(s, step, move)
    result = window(s, step, move, bouncer, lag)
    if result is None:  # a dry run
        return {"moved": False}
    apply(
        s,
        identity.conform(s, step, new, always=True)
        + identity.conform(s, step, old, always=False),
    )
    matviews.refresh_all(s, step, new)
    s.say(
        s.slon_host.name,
        step,
        f"set {cl.set_id} moved to {new.host}; writes were blocked for at most "
        f"{result.blocked:.1f} s" + (f" ({result.line()})" if result.line() else ""),
    )
    proof = prove_origin(s, step, move)
    return {
        "moved": True,
        "blocked_seconds": round(result.blocked, 2),
        "phases": {
            name: round(getattr(result, name), 3)
            for name, _ in MoveResult.PHASES
            if getattr(result, name) is not None
        },
        **proof,
    }


def as_origin(s: Session, h: Host, node: Node) -> bool:
    """Whether `h` is the set's origin in its own catalog, every table configured to
    log and accept writes."""
    tables, origin_like, _ = facts.guarded_tables(h, s.cluster)
    return facts.slony_state(h, s.cluster).origin == node.id and tables == origin_like


def as_subscriber(s: Session, h: Host, origin: Node) -> bool:
    """Whether `h` names `origin` as the origin and Slony's deny-access trigger
    guards every table."""
    tables, _, guarded = facts.guarded_tables(h, s.cluster)
    return facts.slony_state(h, s.cluster).origin == origin.id and tables == guarded


def prove_origin(s: Session, step: str, move: Move) -> dict:
    """After MOVE SET, from the catalogs (no write into application tables, no
    application code run): the old origin refuses writes (Slony's deny-access trigger
    on every table), the new origin takes them; a sequence advanced on the new origin
    replicates back; every sequence on the new origin is past the values used on the
    old one."""
    cl, old, new = s.cluster, move.old, move.new
    old_host, new_host = s.node_host(old), s.node_host(new)
    wait_until(
        lambda: as_subscriber(s, old_host, new),
        settings.PROOF,
        old.host,
        f"{old.host} does not refuse writes yet (Slony's deny-access trigger is not on"
        " every table)",
        "inv status; inv logs",
        every=settings.POLL,
    )
    tables = facts.guarded_tables(old_host, cl)[0]
    s.say(
        old.host,
        step,
        f"{old.host} is a subscriber: Slony's deny-access trigger refuses writes on all"
        f" {tables} tables",
    )
    wait_until(
        lambda: as_origin(s, new_host, new),
        settings.PROOF,
        new.host,
        f"{new.host} does not take writes yet",
        "inv status; inv logs",
        every=settings.POLL,
    )
    s.say(
        new.host,
        step,
        f"{new.host} is the origin: all {tables} tables log and take writes",
    )
    owned = facts.owned_sequences(new_host, cl)
    if owned:
        seq = owned[0][0]
        value = int(new_host.value(f"SELECT nextval({literal(seq)})", cl.database))
        wait_until(
            lambda: facts.sequence_value(old_host, cl, seq) >= value,
            settings.PROOF,
            old.host,
            f"{seq} = {value} did not replicate back from {new.host}",
            "inv status; inv logs",
            every=settings.POLL,
        )
        s.say(old.host, step, f"{seq} = {value} from {new.host} replicated back")
    heads = facts.sequence_heads(new_host, cl, owned)
    behind = [
        f"{seq} = {last} < max({table}.{col}) = {top}"
        for (seq, table, col), (last, top) in zip(owned, heads)
        if last < top
    ]
    if behind:
        raise StepError(
            new.host,
            f"sequences behind their columns: {'; '.join(behind)}",
            "setval them past the column maximum before writing",
        )
    s.say(
        new.host, step, f"{len(owned)} sequences past every value used on their columns"
    )
    return {
        "write_refused_on_old": True,
        "write_replicated_back": bool(owned),
        "sequences_ok": True,
    }
