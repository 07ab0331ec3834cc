"""Pure renderers of the switchover's psql scripts, which stand in for slonik's lock
set, sync and move set, and the one value a move is: its nodes, its limits and its two
scripts, rendered once. No I/O.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from .. import settings
from ..model import Cluster, Node
from .shell import psql_on
from .slonik import conninfo, slonik_unlock_set
from .sql import cancel_blocking_autovacuum, ident, literal


@dataclass(frozen=True)
class Switch:
    """The operator's flags for a switchover (or switchback): the checks' limits and
    the move's bounds."""

    max_lag: float = settings.MAX_LAG  # events older than this wait: refused
    wait_lag: float = settings.WAIT_LAG  # ... after waiting this long for them
    xact_age: float = settings.XACT_AGE  # a transaction older than this blocks the move
    wait_xacts: float = settings.WAIT_XACTS  # ... after waiting this long for it to end
    # each event of the move: the last SYNC confirmed, the takeover
    timeout: float = settings.MOVE_EVENT
    # LOCK SET (and PgBouncer's PAUSE) succeeds within this
    lock_timeout: float = settings.LOCK_TIMEOUT
    pooler: str = ""  # SSH name of the PgBouncer host, if the application uses one
    pooler_config: str = settings.POOLER_CONFIG


@dataclass(frozen=True)
class Move:
    """One move of the set from the `old` origin to the `new` one, with its two psql
    scripts rendered once: the dry run shows them (`shown`), the run sends them
    (`parts`)."""

    cluster: Cluster
    old: Node
    new: Node
    switch: Switch = Switch()
    lock_script: str = field(init=False, repr=False)
    move_script: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "lock_script",
            lock_set_script(self.cluster, self.old, self.switch.lock_timeout),
        )
        object.__setattr__(
            self,
            "move_script",
            move_set_script(self.cluster, self.old, self.new, self.switch.timeout),
        )

    @property
    def program(self) -> str:
        """What reads both scripts on the slon host: psql, connected to the old
        origin."""
        return psql_on(self.cluster, self.old)

    @property
    def unlock_script(self) -> str:
        """The slonik script that undoes the lock when the move does not happen."""
        return slonik_unlock_set(self.cluster, self.old)

    @property
    def bound(self) -> float:
        """How long the psql may run on the slon host in all."""
        return self.switch.lock_timeout + self.switch.timeout

    def parts(self) -> list[tuple[str, str, float]]:
        """The scripts as remote.Host.staged sends them: the lock, then (once it
        printed LOCKED) the move."""
        return [
            (self.lock_script, LOCKED, self.switch.lock_timeout + settings.LOCK_GRACE),
            (self.move_script, "", self.switch.timeout + settings.SSH_GRACE),
        ]

    def shown(self) -> str:
        """What a dry run shows: the one psql and both scripts, as they would be
        sent."""
        return (
            f"{self.program} <<'SQL'\n{self.lock_script}-- once it printed"
            f" '{LOCKED}':\n{self.move_script}SQL\n"
        )


@dataclass(frozen=True)
class MoveResult:
    """What one move measured, in seconds. `blocked`: how long application writes were
    refused (through PgBouncer: how long its queries waited, PAUSE to RESUME). The
    phases of the window, each None when the move ended another way (a failure after
    which the move turned out to have committed):
    """

    blocked: float
    # LOCK SET on the old origin, and the wait for transactions older than it
    lock: float | None = None
    # the last SYNC made on the old origin and confirmed by the new one
    sync: float | None = None
    move: float | None = None  # MOVE SET committed on the old origin
    # the new origin names itself the origin (its slon applied the move)
    takeover: float | None = None
    pause: float | None = None  # PgBouncer's PAUSE (its running transactions ended)
    resume: float | None = None  # PgBouncer's RELOAD and RESUME

    PHASES = (
        ("lock", "lock"),
        ("sync", "SYNC confirmed"),
        ("move", "MOVE SET"),
        ("takeover", "takeover"),
        ("pause", "PAUSE"),
        ("resume", "RESUME"),
    )

    def line(self) -> str:
        """The phases that were measured, one clause each."""
        return ", ".join(
            f"{label} {getattr(self, name):.2f} s"
            for name, label in self.PHASES
            if getattr(self, name) is not None
        )


CANCEL_AUTOVACUUM = (
    "SELECT pg_catalog.count(pg_catalog.pg_cancel_backend(pid)) FROM"
    " pg_catalog.pg_stat_activity WHERE datname = pg_catalog.current_database() AND"
    " query LIKE 'autovacuum: %';"
)
"""Cancel the autovacuum workers in this database (they start again by themselves)."""

COMMITTED = "step: MOVE SET committed"
"""The line move_set_script prints once MOVE SET has committed on the old origin."""

TAKEN_OVER = "step: taken over"
"""The line move_set_script prints once the new origin names itself the set's origin
(takeover_watch)."""


def ms(seconds: float) -> int:
    """A PostgreSQL setting in milliseconds, at least 1."""
    return max(1, round(seconds * 1000))


def psql_arg(value: str) -> str:
    """An argument of a psql meta-command (\\connect), single-quoted as psql reads
    it."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


LOCKED = "locked: the move may start"
"""The line lock_set_script ends with: the tool sends move_set_script only once it
has seen it."""


def lock_set_script(cluster: Cluster, origin: Node, lock_timeout: float) -> str:
    """Switchover, phase 1, for the slon host's psql (psql_on the origin): LOCK SET on
    the origin (from now on its tables refuse writes), then a wait until every
    transaction older than the lock has ended; then it prints LOCKED.

    The statements slonik sends for `lock set` (slonik.c: slonik_lock_set), with its
    wait for older transactions done every 20 ms instead of every second;
    lock_timeout and statement_timeout bound each of them; deadlock_timeout is short
    (settings.LOCK_DEADLOCK): lockSet's CREATE TRIGGER behind an autovacuum cancels it
    that soon instead of after a second (lockSet updates no catalog row autovacuum
    waits for, so it closes no deadlock). Before LOCKED it writes
    the cluster's lock_mark, which move_set_script removes: a psql that ends with the
    mark still there ended between the two (the tool died), and the slon host then
    unlocks the set itself (slonik_shell's `unfinished`)."""
    schema, limit = ident(cluster.schema), max(1, round(lock_timeout * 1000))
    return (
        "\n".join(
            [
                f"\\echo step: LOCK SET on {origin.host}",
                f"SET lock_timeout = {limit};",
                f"SET statement_timeout = {limit};",
                f"SET deadlock_timeout = {ms(settings.LOCK_DEADLOCK)};",
                "BEGIN;",
                f"LOCK TABLE {schema}.sl_config_lock;",
                f"SELECT {schema}.lockSet({cluster.set_id});",
                (
                    "SELECT"
                    " pg_catalog.txid_snapshot_xmax(pg_catalog.txid_current_snapshot())"
                    " AS xmax \\gset"
                ),
                "COMMIT;",
                (
                    f"\\echo step: transactions older than the lock on {origin.host}"
                    " to end"
                ),
                (
                    "SELECT pg_catalog.format('DO $w$BEGIN WHILE"
                    " pg_catalog.txid_snapshot_xmin(pg_catalog.txid_current_snapshot())"
                    " < %s LOOP PERFORM pg_catalog.pg_sleep(0.02); END LOOP; END$w$',"
                    " :'xmax')"
                    " \\gexec"
                ),
                f"\\! : > {shlex.quote(cluster.lock_mark)}",
                f"\\echo {LOCKED}",
            ]
        )
        + "\n"
    )


def move_set_script(cluster: Cluster, old: Node, new: Node, timeout: float) -> str:
    """Switchover, phase 2 (the set is locked), for the same psql after lock_set_script:
    a last SYNC on the old origin, a wait until the new origin has applied it, MOVE SET
    on the old origin. Before each part it echoes what it starts (`step: ...`). Without
    the lock's timeouts: only the wait has one.

    The wait decides: the move commits only once the new origin has confirmed all data
    up to the lock (a stuck subscriber aborts the switchover with the set unlocked at
    the old origin). This is slonik's `sync; wait for event; move set` in one process,
    about 0.4 s quicker per move:
    - SYNC and MOVE SET are the statements slonik sends for them (slonik.c: slonik_sync,
      slonik_move_set), each in a transaction of its own; slon's own SYNCs are made the
      same way.
    - The wait asks the new origin itself, whose slon writes the confirmation as it
      applies the SYNC, every 20 ms; slonik's WAIT FOR EVENT asks the old origin, which
      learns of it only from its slon's next poll, once a second. The loop runs in the
      new origin's server, bounded by statement_timeout, and from PostgreSQL 14 on also
      ends when psql is gone (client_connection_check_interval).
    - slonik connects to every node as it starts (about 0.1 s for each script); this
      psql is connected to the old origin already, and started with the lock (no SSH
      command of its own). After MOVE SET, takeover_watch: the new origin is watched
      from the slon host for settings.TAKEOVER_WATCH; the tool polls it over SSH only
      when that was not enough.
    - MOVE SET alters the triggers of every set table in one transaction, on the old
      origin here and on the new one where its slon applies it; an autovacuum of one of
      those tables there can close a deadlock with it (autovacuum's last catalog update
      waits for that transaction, which waits for autovacuum's lock). So autovacuum
      workers in the database are cancelled on both just before (they start again by
      themselves), and this MOVE SET waits settings.MOVE_DEADLOCK before it looks for a
      deadlock, so that in one the other party is the one cancelled (slon's own sessions
      likewise: render.files.slon_conf).
    """
    schema = ident(cluster.schema)
    confirmed = (
        f"SELECT FROM {schema}.sl_confirm WHERE con_origin = {old.id} AND con_received"
        f" = {new.id} AND con_seqno >= %s"
    )
    return (
        "\n".join(
            [
                f"\\! rm -f {shlex.quote(cluster.lock_mark)}",
                f"\\echo step: SYNC on {old.host}",
                "RESET lock_timeout;",
                "RESET statement_timeout;",
                "RESET deadlock_timeout;",
                "BEGIN;",
                f"LOCK TABLE {schema}.sl_event_lock;",
                (
                    f"SELECT {schema}.createEvent({literal(cluster.schema)}, 'SYNC') AS"
                    " ev \\gset"
                ),
                "COMMIT;",
                (
                    f"\\echo step: {new.host} to confirm SYNC ({old.id},:ev) within"
                    f" {int(timeout)} s"
                ),
                f"\\connect {psql_arg(conninfo(cluster, new))}",
                f"SET statement_timeout = {int(timeout) * 1000};",
                (
                    "SELECT pg_catalog.set_config(name, '1000', false) FROM"
                    " pg_catalog.pg_settings WHERE name ="
                    " 'client_connection_check_interval';"
                ),
                CANCEL_AUTOVACUUM,
                (
                    "SELECT pg_catalog.format('DO $w$BEGIN WHILE NOT EXISTS"
                    f" ({confirmed}) LOOP PERFORM pg_catalog.pg_sleep(0.02); END LOOP;"
                    " END$w$', :'ev') \\gexec"
                ),
                f"\\echo step: MOVE SET on {old.host}",
                f"\\connect {psql_arg(conninfo(cluster, old))}",
                f"SET deadlock_timeout = {ms(settings.MOVE_DEADLOCK)};",
                CANCEL_AUTOVACUUM,
                "BEGIN;",
                f"LOCK TABLE {schema}.sl_event_lock, {schema}.sl_config_lock;",
                f"SELECT {schema}.moveSet({cluster.set_id}, {new.id});",
                "COMMIT;",
                f"\\echo {COMMITTED}",
                takeover_watch(cluster, new),
            ]
        )
        + "\n"
    )


def takeover_watch(cluster: Cluster, new: Node) -> str:
    """The psql line, after MOVE SET committed, that watches the `new` origin every 10 ms
    until its slon has applied the move (it names itself the set's origin), at most
    settings.TAKEOVER_WATCH, and prints TAKEN_OVER when it has. Meanwhile it cancels the
    autovacuum workers that hold up a session of the replication user there (slon's
    MOVE SET alters the triggers of every set table; cancelled, autovacuum starts again
    by itself), as wait_taken_over does after it. pg_stat_activity is read once per
    transaction and the watch is one: pg_stat_clear_snapshot before each look, or an
    autovacuum that began after the first would never be seen.

    A second psql, started by psql's `\\!`: this one stays connected to the old origin,
    and nothing the watch does can fail the move, which has committed (its connection is
    bounded by PGCONNECT_TIMEOUT and `timeout`; `|| :`). A watch that ran out prints
    nothing: the tool then polls (switchover.wait_taken_over)."""
    schema = ident(cluster.schema)
    cancel = cancel_blocking_autovacuum(cluster.user)
    watch = (
        "DO $w$DECLARE deadline timestamptz := pg_catalog.clock_timestamp()"
        f" + interval '{ms(settings.TAKEOVER_WATCH)} milliseconds'; BEGIN"
        f" WHILE NOT EXISTS (SELECT FROM {schema}.sl_set WHERE set_id ="
        f" {cluster.set_id} AND set_origin = {new.id}) LOOP"
        " IF pg_catalog.clock_timestamp() > deadline THEN"
        " RAISE EXCEPTION 'not taken over yet'; END IF;"
        " IF CAST(pg_catalog.current_setting('server_version_num') AS int) >= 90600"
        " THEN PERFORM pg_catalog.pg_stat_clear_snapshot();"
        f" EXECUTE $c${cancel}$c$; END IF;"
        " PERFORM pg_catalog.pg_sleep(0.01); END LOOP; END$w$"
    )
    bound = settings.TAKEOVER_WATCH + 2
    return (
        f"\\! PGCONNECT_TIMEOUT=2 timeout {bound:g} {psql_on(cluster, new)}"
        f" -c {shlex.quote(watch)} 2>/dev/null && echo {shlex.quote(TAKEN_OVER)} || :"
    )
