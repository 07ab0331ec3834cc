"""Issue 23: the switchover's window under the deadlock that made it last 12 s. On the
new origin a session holds a set table the way autovacuum does (SHARE UPDATE
EXCLUSIVE), waits until slon's MOVE SET waits for it, then ANALYZEs the table: its
catalog update waits for slon's transaction, a deadlock. The holder is started by a
watcher on db02 as soon as db01's set is locked, after the tool's checks (which would
have named it). A writer runs throughout; every acknowledged write once."""

import re
import time

from testbed.bed import CLUSTER
from testbed.writer import Writer

ARGS = ("--master", "db01", "--slave", "db02")
TABLE = "public.websites_alias"

WATCHER = """#!/bin/sh
# Waits (at most 120 s) for db01's set to be locked, then holds {table} on db02 as
# autovacuum would and closes the deadlock with slon's MOVE SET.
end=$(( $(date +%s) + 120 ))
on_db01() {{ psql -w -X -A -t -h db01 -U slony -d shotserver04 -c "$1"; }}
until [ "$(on_db01 'SELECT set_locked IS NOT NULL FROM _replication.sl_set' 2>/dev/null)" = t ]; do
    [ "$(date +%s)" -lt "$end" ] || exit 1
    sleep 0.01
done
psql -X -q -d shotserver04 >/tmp/holder.out 2>&1 <<'SQL'
SET application_name = 'holder';
SET deadlock_timeout = '{deadlock}';
SET statement_timeout = '60s';
BEGIN;
LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE;
DO $w$BEGIN
  WHILE NOT EXISTS (SELECT 1 FROM pg_locks WHERE relation = '{table}'::regclass
                      AND mode = 'ShareRowExclusiveLock' AND NOT granted) LOOP
    PERFORM pg_sleep(0.005);
  END LOOP; END$w$;
ANALYZE {table};
COMMIT;
SQL
date +%s.%N > /tmp/holder.done
"""


def switch_with_holder(bed, deadlock: str) -> tuple[str, str, float]:
    """A switchover (db01 to db02) with the holder on db02: (the tool's output, the
    holder's, the window the tool reported)."""
    db02 = bed["db02"]
    if bed.sql("db01", "SELECT set_origin FROM _replication.sl_set")[0][0] != "1":
        bed.inv("switchback", *ARGS)
    db02.run("sudo -n rm -f /tmp/holder.out /tmp/holder.done")
    db02.write_file(
        "/tmp/holder.sh",
        WATCHER.format(table=TABLE, deadlock=deadlock),
        owner="postgres:postgres",
        mode="755",
    )
    mark = f"MARK {time.time()}"
    db02.sudo(f"sh -c 'echo {mark} >> {CLUSTER.slon_log(CLUSTER.slave)}'")
    db02.sudo("setsid -f /tmp/holder.sh >/dev/null 2>&1 </dev/null", user="postgres")
    writer = Writer(
        bed.ssh_config,
        tag=f"holder{int(time.time())}",
        rate=10,
        max_seconds=180,
        max_count=1500,
    ).start()
    try:
        time.sleep(2)
        out = bed.inv("switchover", *ARGS, timeout=300).stdout
        deadline = time.monotonic() + 60
        while not db02.run("test -e /tmp/holder.done", check=False).ok:
            assert time.monotonic() < deadline, "the holder never ended"
            time.sleep(0.5)
        time.sleep(2)
    finally:
        writer.stop()
    holder = db02.read_file("/tmp/holder.out") or ""
    log = db02.sudo(
        f"sed -n '/{mark}/,$p' {CLUSTER.slon_log(CLUSTER.slave)}", check=False
    ).stdout
    bed.assert_acknowledged_once(writer, "db02", timeout=30)
    window = float(re.search(r"writes were blocked for at most ([\d.]+) s", out)[1])
    print(f"holder with deadlock_timeout {deadlock}: writes blocked {window} s")
    return out, holder + "\n--- slon log:\n" + log, window


def test_the_other_party_loses_the_deadlock_not_slon(migrated):
    """The holder looks for a deadlock after 1 s (as autovacuum does), slon's sessions
    after 3 s: the holder is cancelled, slon's MOVE SET commits, no 10 s restart."""
    out, seen, window = switch_with_holder(migrated, "1s")
    assert "deadlock detected" in seen.split("--- slon log:")[0], seen
    assert "restart of worker" not in seen, seen
    assert "set 1 moved to db02" in out
    assert window < 3.0, f"writes blocked {window} s\n{out}\n{seen}"


def test_a_worker_lost_in_the_move_is_woken_not_waited_for(migrated):
    """The holder waits longer than slon (10 s) before it looks for the deadlock: slon's
    worker loses and dies; the tool wakes slon instead of waiting out its 10 s."""
    out, seen, window = switch_with_holder(migrated, "10s")
    assert "restart of worker" in seen, seen
    assert "lost its worker (deadlock detected)" in out and "woke it now" in out, out
    assert window < 7.0, f"writes blocked {window} s\n{out}\n{seen}"
