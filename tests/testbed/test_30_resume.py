"""Steps by hand reach migrate's state; an interrupted migrate completes when run
again."""

import signal

import pytest

from fabfile import facts
from fabfile.runbook import STEP_NAMES
from testbed.bed import CLUSTER

ARGS = ("--master", "db01", "--slave", "db02")
STEPS = STEP_NAMES[:-1]  # all but subscribe, which the test runs with --wait


def slony_picture(bed) -> dict:
    """What migrate leaves behind, without timestamps or pids: Slony catalogs, files,
    slons, data."""
    out = {}
    for name in ("db01", "db02"):
        out[name] = {
            k: sorted(v) if isinstance(v, set) else v
            for k, v in bed.state(name).items()
        }
    db02 = bed["db02"]
    out["files"] = db02.run(
        f"sudo -n cat {CLUSTER.tools_conf} {CLUSTER.slon_conf(CLUSTER.master)} "
        f"{CLUSTER.slon_conf(CLUSTER.slave)} /usr/local/lib/slony-migrate/slon-watchdog"
    ).stdout
    out["slons"] = [bool(facts.slon_running(db02, CLUSTER, n)) for n in CLUSTER.nodes]
    return out


def test_steps_by_hand_reach_the_same_state_as_migrate(migrated):
    bed = migrated
    bed.wait_same()
    after_migrate = slony_picture(bed)
    bed.reset()
    for step in STEPS:
        bed.inv(step, *ARGS)
    bed.inv("subscribe", *ARGS, "--wait")
    bed.wait_same()
    assert slony_picture(bed) == after_migrate


@pytest.mark.parametrize(
    "kill_at", ["[db02] init: init cluster", "[db02] subscribe: subscribe db02"]
)
def test_interrupted_migrate_completes_when_run_again(bed, kill_at):
    bed.reset()
    proc = bed.popen("migrate", *ARGS)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(kill_at):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    result = bed.inv("migrate", *ARGS)
    assert "initial copy of set 1 done" in result.stdout
    bed.wait_same()
    assert facts.slony_state(bed["db02"], CLUSTER).subscribed is True


def test_uninstall_removes_the_cluster_and_keeps_data(migrated):
    bed = migrated
    digests = bed.wait_same()
    refused = bed.inv("uninstall", *ARGS, check=False)
    assert refused.returncode != 0 and facts.cluster_exists(bed["db01"], CLUSTER)
    bed.inv("uninstall", *ARGS, "--yes")
    for name in ("db01", "db02"):
        assert not facts.cluster_exists(bed[name], CLUSTER)
        assert bed.table_digests(name) == digests
    assert bed["db02"].run("pgrep -x slon", check=False).failed
    again = bed.inv("uninstall", *ARGS, "--yes")
    assert "nothing to remove" in again.stdout
