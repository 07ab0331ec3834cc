"""Faults injected into a real replication: each time `inv verify` passes and no
acknowledged write is lost.

`make test-faults` (CI runs it after `make test`). The fifth fault of the issue, db01
stopped before a switchover, is
tests/testbed/test_50_endgame.py::test_failover_with_db01_stopped_makes_db02_writable.
"""

import signal
import subprocess
import time

import pytest

from fabfile import facts
from fabfile.runbook import STEP_NAMES
from testbed import compose as tb
from testbed.bed import CLUSTER
from testbed.writer import Writer

ARGS = ("--master", "db01", "--slave", "db02")
STEPS = STEP_NAMES


def max_lag_seconds(bed) -> float:
    return float(
        bed.sql(
            "db01",
            "SELECT coalesce(max(extract(epoch FROM st_lag_time)), 0) "
            "FROM _replication.sl_status",
        )[0][0]
    )


def test_receiver_slon_killed_during_the_initial_copy(bed):
    bed.reset()
    for step in STEPS[:-1]:
        bed.inv(step, *ARGS)
    log = CLUSTER.slon_log(CLUSTER.slave)
    # The watcher runs inside db02, so it strikes within 50 ms of the log line; it gives
    # up after 120 s.
    watcher = f"""#!/bin/sh
end=$(( $(date +%s) + 120 ))
until grep -q 'Begin COPY of table "public"."auth_message"' {log}; do
    [ "$(date +%s)" -lt "$end" ] || exit 1
    sleep 0.05
done
pkill -KILL -f '[s]lon -f {CLUSTER.slon_conf(CLUSTER.slave)}' && date > /tmp/slon-killed
"""
    db02 = bed["db02"]
    db02.run("sudo -n rm -f /tmp/slon-killed")
    db02.write_file("/tmp/kill-slon.sh", watcher, mode="755")
    db02.run("sudo -n setsid -f /tmp/kill-slon.sh >/dev/null 2>&1 </dev/null")
    out = bed.inv("subscribe", *ARGS, "--wait", timeout=600).stdout
    assert "initial copy of set 1 done" in out
    assert db02.run("cat /tmp/slon-killed", check=False).ok, (
        "the slon was never killed mid-copy"
    )
    text = db02.sudo(f"cat {log}").stdout
    killed_at = text.index('Begin COPY of table "public"."auth_message"')
    assert (
        f"watchdog: slon for {CLUSTER.instance(CLUSTER.slave)} exited"
        in text[killed_at:]
    )
    assert "copy_set 1 done" in text[killed_at:]
    bed.inv("verify", *ARGS)


def test_db02_postgresql_restarted_under_load(migrated):
    bed = migrated
    writer = Writer(
        bed.ssh_config, tag="restart", rate=5, max_seconds=120, max_count=400
    ).start()
    time.sleep(4)
    bed["db02"].sudo("pg_ctlcluster 17 main restart")
    time.sleep(15)
    writer.stop()
    bed.assert_acknowledged_once(writer, "db02", timeout=120)
    bed.inv("verify", *ARGS)


def test_network_cut_for_60_seconds_under_load(migrated):
    bed = migrated
    container = tb.compose("ps", "-q", "db02", capture=True).stdout.strip()
    network = f"{tb.current().project}_testbed"
    before = max_lag_seconds(bed)
    writer = Writer(
        bed.ssh_config, tag="netcut", rate=5, max_seconds=240, max_count=1000
    ).start()
    time.sleep(3)
    subprocess.run(["docker", "network", "disconnect", network, container], check=True)
    try:
        lags = []
        for _ in range(30):  # 60 s
            time.sleep(2)
            lags.append(max_lag_seconds(bed))
    finally:
        subprocess.run(
            [
                "docker",
                "network",
                "connect",
                "--ip",
                f"{tb.current().net}.12",
                "--alias",
                "db02",
                network,
                container,
            ],
            check=True,
        )
        bed.hosts["db02"].close()
    assert max(lags) > 30, f"lag did not grow while cut: {lags}"
    deadline = time.monotonic() + 180
    while max_lag_seconds(bed) > max(15, before + 5):
        assert time.monotonic() < deadline, (
            f"lag stayed at {max_lag_seconds(bed)} s after reconnecting"
        )
        time.sleep(2)
    writer.stop()
    bed.assert_acknowledged_once(writer, "db02", timeout=120)
    bed.inv("verify", *ARGS)


@pytest.mark.parametrize("step", STEPS)
def test_migrate_killed_in_each_step_then_run_again(bed, step):
    bed.reset()
    proc = bed.popen("migrate", *ARGS)
    seen, in_step = [], False
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("== ") and line.split()[-1] == step:
            in_step = True
        elif in_step and line.startswith("["):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    result = bed.inv("migrate", *ARGS, timeout=900)
    assert (
        "initial copy of set 1 done" in result.stdout
        or "nothing to do" in result.stdout
    )
    bed.wait_same()
    assert facts.slony_state(bed["db02"], CLUSTER).subscribed is True
    bed.inv("verify", *ARGS)
