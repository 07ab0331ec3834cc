"""The tool as an operator installs and runs it: `pip install .` into a virtualenv of
its own, the console command run from outside the checkout, with an OpenSSH
configuration that reaches the testbed through `Include` and a configuration file that
names the servers; then `status --check` as a monitor runs it, against a healthy pair
(OK), a subscriber that falls behind (WARNING) and a stopped slon (CRITICAL)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed import DATABASE
from testbed.compose import ROOT

pytestmark = pytest.mark.testbed


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The slony-migrate command of a fresh virtualenv with the package installed
    from the checkout (not editable), at the versions the tests ran with."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            "-c",
            str(ROOT / "constraints.txt"),
            str(ROOT),
        ],
        check=True,
        timeout=600,
    )
    return venv / "bin" / "slony-migrate"


@pytest.fixture
def operator(migrated, installed, tmp_path):
    """Run the installed command from a directory outside the checkout, as an operator
    whose ssh config includes the testbed's hosts from ~/.ssh/config.d/ and whose
    configuration file names the pair. Returns run(*args) -> CompletedProcess."""
    ssh = tmp_path / "ssh"
    (ssh / "config.d").mkdir(parents=True)
    (ssh / "config.d" / "testbed.conf").write_text(
        Path(migrated.ssh_config).read_text()
    )
    (ssh / "config").write_text(f"Include {ssh}/config.d/*.conf\n")
    conf = tmp_path / "slony-migrate.toml"
    conf.write_text(
        f'master = "db01"\nslave = "db02"\ndatabase = "{DATABASE}"\n'
        f'ssh_config = "{ssh / "config"}"\n'
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INVOKE_", "SLONY_MIGRATE_"))
    }
    env.update(
        SLONY_MIGRATE_HOME=str(migrated.home),
        SLONY_MIGRATE_LOG_DIR=str(tmp_path / "logs"),
    )

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(installed), *args, "--config", str(conf)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )

    return run


def check_until(run, want: str, *args: str, seconds: float = 90) -> str:
    """`status --check` until its line starts with SLONY <want>; that line."""
    deadline = time.monotonic() + seconds
    while True:
        result = run("status", "--check", *args)
        line = result.stdout.strip()
        if line.startswith(f"SLONY {want} "):
            return line
        assert time.monotonic() < deadline, f"never {want}: {line}\n{result.stderr}"
        time.sleep(2)


def test_installed_command_outside_the_checkout_with_an_included_ssh_config(operator):
    result = operator("status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] and doc["errors"] == [] and doc["origin"] in ("db01", "db02")
    assert result.stdout.count("\n") == 1
    help_ = operator("switchover", "--help")
    assert "--lock-timeout SECONDS" in help_.stdout and "STRING" not in help_.stdout
    usage = operator("status", "--bogus")
    assert usage.returncode == 2 and "usage: slony-migrate" in usage.stderr
    verify = operator("verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout) == {"ok": True, "errors": []}


def test_status_check_ok_warning_critical(operator, migrated, tmp_path):
    line = check_until(operator, "OK")
    assert re.search(r" \| lag=[\d.]+s;60;300;0 lag_events=\d+;;;0 copy=100.0%", line)
    assert operator("status", "--check").returncode == 0

    # The subscriber falls behind: a transaction there holds a replicated table,
    # which slon must write; slon runs, the lag grows.
    origin = migrated.status("--master", "db01", "--slave", "db02")["origin"]
    subscriber = {"db01": "db02", "db02": "db01"}[origin]
    tag = "operator_lag"
    migrated.hold_transaction(
        "LOCK TABLE public.websites_domain IN ACCESS EXCLUSIVE MODE;", tag, subscriber
    )
    try:
        migrated.sql(
            origin,
            "INSERT INTO websites_domain (name) VALUES"
            " ('lag-' || clock_timestamp() || '.example')",
        )
        lags = []
        for _ in range(2):
            line = check_until(operator, "WARNING", "--lag-warning", "3")
            assert f"lag to {subscriber}" in line and "over 3 s" in line, line
            lags.append(float(re.search(r" \| lag=([\d.]+)s", line).group(1)))
            time.sleep(3)
        assert lags[1] > lags[0] + 2, lags  # held back, not a passing delay
        prom = operator("status", "--prometheus", "--lag-warning", "3")
        assert prom.returncode == 0  # the figures were printed; the state is in them
        assert re.search(
            rf'slony_migrate_lag_seconds{{cluster="replication",node="{subscriber}"}}'
            r" [1-9]",
            prom.stdout,
        ), prom.stdout
        assert 'slony_migrate_status{cluster="replication"} 1' in prom.stdout
    finally:
        migrated.end_transaction(tag, subscriber)
    check_until(operator, "OK")

    # Replication stopped: the slons are stopped.
    stopped = operator("slons", "--stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    try:
        result = operator("status", "--check")
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stdout.startswith(
            "SLONY CRITICAL - slon not running for replication-node1"
        )
        plain = operator("status")
        assert plain.returncode == 1 and "NOT running" in plain.stdout
    finally:
        started = operator("slons")
        assert started.returncode == 0, started.stdout + started.stderr
    check_until(operator, "OK")
    # each slons run left its log; status (polled by monitors) leaves none
    logs = sorted((tmp_path / "logs" / "replication").glob("*.log"))
    assert [re.sub(r"^\w+-|-\d+\.log$", "", p.name) for p in logs] == ["slons"] * 2
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in logs)
    assert "[db02] slons: " in logs[0].read_text()
