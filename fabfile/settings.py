"""Defaults and time limits, in one place. Pure: no I/O.

DEFAULTS["slony"] are the settings an operator may configure (fabfile.config): a
configuration file (--config FILE) overrides them, the environment (SLONY_MIGRATE_<KEY>)
overrides the file, a flag on the command line wins over all. The time limits are
seconds; those an operator may need to change are flags as well.
"""

from __future__ import annotations

DEFAULTS = {
    "slony": {
        "master": "",  # SSH name of the old server, e.g. db01
        "slave": "",  # SSH name of the new server, e.g. db02
        # where slon and slonik run; empty: the slave, as in the runbook
        "slon_host": "",
        "cluster": "replication",
        "database": "",  # required: a flag or the configuration names it
        "user": "slony",  # the replication superuser
        "port": 5432,
        "ssh_config": "",  # empty: ~/.ssh/config
        # unknown SSH host keys are an error (known_hosts from the ssh config)
        "strict_host_keys": True,
        # the CA that signed the servers' certificates: sslmode=verify-full
        "ssl_ca": "",
        # each run's log file goes to <log_dir>/<cluster>/; empty: ~/.local/state/
        # slony-migrate ($XDG_STATE_HOME)
        "log_dir": "",
    }
}

# --- SSH and SQL ----------------------------------------------------------------------
# connecting to a host: TCP, SSH banner, authentication each (ConnectTimeout in the ssh
# config instead when it has one)
SSH_CONNECT = 15
SSH_GRACE = 15  # a remote command bounded on its host: how much longer SSH waits for it
PSQL = 120  # one psql call (catalog queries, DDL)
CHECKSUMS = 3600  # verify's checksum query over a whole database side

# --- software -------------------------------------------------------------------------
APT_UPDATE = 600
APT_INSTALL = 900
BUILD_DEPS = 1200  # apt-get install of the build dependencies
CONFIGURE = 600
MAKE = 1800
MAKE_INSTALL = 600
DOWNLOAD = 600

# --- steps ----------------------------------------------------------------------------
SCHEMA_COPY = 1800  # pg_dump -s | psql, host to host
SLONIK = 600  # one slonik script (init, create set, subscribe, uninstall)
SLON_START = 15  # a watchdog writes its pid file
SLON_STOP = 30  # a watchdog and its slon exit after SIGTERM
COPY_WAIT = 3600  # subscribe --wait / migrate: the initial copy (flag --timeout)
# ... and the replication role's sessions on the subscriber meanwhile (its slon copies and
# rebuilds the indexes): put back once the copy is done
COPY_TUNING = {
    "maintenance_work_mem": "1GB",
    "max_parallel_maintenance_workers": "2",
    "synchronous_commit": "off",
}
COPY_RETRIES = 3  # ... and so many failed attempts of it (flag --copy-retries)
PROGRESS_EVERY = 5  # a progress line in a log (not a terminal) every this many seconds

# --- end-game -------------------------------------------------------------------------
SYNC_CONFIRM = 120  # verify: a SYNC made after it started comes back confirmed
VERIFY_ROUNDS = 3  # a difference must survive this many SYNCs
CHECKSUM_CHUNK = 10000  # rows per checksum chunk of an integer key
FRESH_SYNC = 60  # switchover: a SYNC made now comes back confirmed
PROOF = 60  # switchover: the old origin refuses writes, the new one accepts them
# switchover: each event of the move is waited for this long (flag --timeout)
MOVE_EVENT = 120
UNLOCK = 60  # UNLOCK SET after a failed move
# switchover: LOCK SET (and PgBouncer's PAUSE) must succeed within this (--lock-timeout)
LOCK_TIMEOUT = 5.0
# ... and the tool waits this much longer for it (PostgreSQL's timeouts end it first)
LOCK_GRACE = 1.0
# switchover --pooler: PgBouncer's configuration there
POOLER_CONFIG = "/etc/pgbouncer/pgbouncer.ini"
POOLER_ADMIN = 10  # one command on PgBouncer's admin console
# switchover: both slons' sync_interval and sync_interval_timeout (ms) meanwhile. Each
# slon's listener polls the other node at most this often, twice per move (the last SYNC,
# then MOVE SET). bench/window.py through PgBouncer, before takeover_watch: p50 0.31 s at
# 100, 0.27 s at 50 (32 moves each); at 20 the slons' polling competes with PostgreSQL for
# the CPUs (2 CPUs, 12 moves: p50 0.82 s, max 1.56 s)
QUICK_SYNC = (50, 50)
SETTLE = 10  # after a failed slonik, the slon host's own UNLOCK SET
# switchover: the lock phase looks for a deadlock after this, and so cancels an autovacuum
# its CREATE TRIGGER waits behind that soon (a second by default)
LOCK_DEADLOCK = 0.05
# ... MOVE SET (on the old origin) and slon's sessions (on the new one: render.files
# slon_conf) look for a deadlock only after this: in a deadlock with an autovacuum, the
# autovacuum (1 s) is the one cancelled, not the move (slon restarts its worker 10 s later)
MOVE_DEADLOCK = 3.0
# ... and when the new origin's slon restarted its worker anyway, the tool wakes it (slon
# waits 10 s otherwise) if the takeover has not come within this
WORKER_STALL = 0.5
# ... and cancels, from this on, the autovacuum workers there that hold the takeover up
AUTOVACUUM_STALL = 0.15
CONVERGE = 60  # a MOVE SET committed on the old origin is applied on the new one
# finish: each attempt waits for one of the new origin's locks at most this (below
# PostgreSQL's deadlock_timeout, 1 s: an application's transaction that closes a lock
# cycle with the uninstall later than it began waiting finds it gone, not a deadlock)
UNINSTALL_LOCK = 0.5
# ... and looks for a deadlock after this (the application's sessions after 1 s): in a
# cycle with the application's transaction, the uninstall is the one that gives way
UNINSTALL_DEADLOCK = 0.02
UNINSTALL_STATEMENT = 4.0  # ... and holds the tables at most this long
UNINSTALL_TRIES = 20  # ... and so many attempts
LAG_WARNING = 60.0  # status: lag over this warns (flag --lag-warning)
LAG_CRITICAL = 300.0  # ... and over this is critical (flag --lag-critical)
MAX_LAG = 30.0  # switchover: refuse events older than this (flag --max-lag)
WAIT_LAG = 60.0  # ... after waiting this long for them (flag --wait-lag)
XACT_AGE = 60.0  # a transaction older than this blocks a switchover (flag --xact-age)
WAIT_XACTS = 30.0  # ... after waiting this long for it (flag --wait-xacts)
FAILOVER_WRITABLE = 120  # failover: the backup node accepts writes
MATVIEW_REFRESH = 600.0  # switchover, failover: one materialized view's REFRESH at most
# failover: libpq waits this long for the dead origin's PostgreSQL (from the slon host,
# and slonik's own connections) before it counts as not answering
FAILOVER_CONNECT = 5
# preflight: a transaction open longer than this on the master is reported
LONG_TRANSACTION = 300
POLL = 1.0  # between two looks at something that is expected to change
# subscribe: between two looks at whether the initial copy is done (one query)
COPY_POLL = 0.25
# switchover: between two looks at whether the new origin has taken the set (writes
# wait)
TAKEOVER_POLL = 0.05
# ... but first, for this long after MOVE SET committed, the slon host's psql watches the
# new origin itself, every 10 ms, and cancels the autovacuum workers that hold its slon up
# (render.move.takeover_watch): no SSH command per look. As long as WORKER_STALL: the
# tool's look for a lost slon worker comes right after it
TAKEOVER_WATCH = 0.5
LAG_POLL = 3.0  # switchover: between two looks at the lag while waiting for it to drop
# a session idle in its transaction longer than this holds things up
IDLE_IN_TRANSACTION = 1.0
# switchover: between two looks at long transactions while waiting for them
XACT_POLL = 2.0
LOGIN = 60  # preflight: a test login as the replication user
