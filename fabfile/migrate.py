"""`inv migrate`: preflight, then every runbook step in order, each a no-op when already done."""
from __future__ import annotations

from . import steps
from .model import StepError
from .preflight import preflight
from .steps import Run


def check(run: Run) -> None:
    """Preflight as a guard: StepError when any check failed (the FAIL lines name host and object)."""
    failed = preflight(run)
    if failed:
        raise StepError("preflight", f"{failed} check(s) failed (the FAIL lines above name host and object); "
                        "nothing was changed", "fix what they name, then run again")


def migrate(run: Run, tarball: str = "", sha256: str = "", timeout: int = 3600) -> None:
    """Run preflight and steps 1 (or build) to subscribe; return when the initial copy is done."""
    cl = run.cluster
    print("== preflight", flush=True)
    check(run)
    before = len(run.changed)
    for i, (fn, name) in enumerate(zip(steps.STEPS, steps.STEP_NAMES), 1):
        print(f"== {i}/{len(steps.STEPS)} {name}", flush=True)
        if fn is steps.install and tarball:
            for host in dict.fromkeys([cl.master.host, cl.slave.host, cl.slon_host]):
                steps.build(run, host, tarball, sha256)
        elif fn is steps.subscribe:
            steps.subscribe(run, wait=True, timeout=timeout)
        else:
            fn(run)
    made = len(run.changed) - before
    if not run.dry_run:
        print(f"migrate: done, {made} change(s); {cl.slave.host} replicates {cl.database} from {cl.master.host}"
              if made else "migrate: nothing to do, every step was already done", flush=True)
