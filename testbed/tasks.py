"""`inv testbed.*` in a checkout: bring the testbed up and down, open a shell,
rehearse the migration."""

from __future__ import annotations

import functools
import os
import sys

from invoke import Exit, task

from fabfile.errors import StepError

from . import compose, rehearsal


def exits(fn):
    """A StepError becomes one line on stderr and exit code 1, as in slony-migrate's
    own tasks."""

    @functools.wraps(fn)
    def body(c, *args, **kwargs):
        try:
            return fn(c, *args, **kwargs)
        except StepError as e:
            print(f"error: {e.line()}", file=sys.stderr, flush=True)
            raise Exit(code=1) from None

    return body


@task(
    help={
        "size_mb": "size of the demo database on db01 in MB (default 200)",
        "rebuild": "rebuild the images even when they exist",
    }
)
@exits
def up(c, size_mb=200, rebuild=False):
    """Build the images (base images via debootstrap when no registry), start, wait
    healthy, seed."""
    times = compose.up(size_mb, rebuild)
    tb = compose.current()
    print("testbed: up; " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    print(
        f"testbed: reach the servers with ssh -F {tb.ssh_config} db01, or: export "
        + " ".join(f"{k}={v}" for k, v in tb.operator_env().items())
    )


@task
@exits
def down(c):
    """Remove the testbed's containers, network and volumes (images stay)."""
    compose.compose("down", "-v", "--remove-orphans")


@task
@exits
def status(c):
    """Show the testbed's containers and their health."""
    compose.compose("ps")


@task(help={"host": "db01 or db02"})
@exits
def ssh(c, host="db01"):
    """Open an interactive shell on a testbed server as admin."""
    compose.keys()
    os.execvp("ssh", ["ssh", "-F", str(compose.current().ssh_config), host])


@task(help={"rate": "writer inserts per second"})
@exits
def rehearse(c, rate=5):
    """The whole lifecycle on the running, seeded testbed with a writer throughout;
    prints a summary."""
    rehearsal.rehearse(float(rate))
