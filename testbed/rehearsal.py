"""`inv testbed.rehearse`: the whole lifecycle on the running testbed with a writer
throughout.

migrate, verify, switchover, verify, switchback, verify, switchover, verify, every
acknowledged write on db02 exactly once, finish; then each phase's time, the
blocked-write window (as the tool measured it and as the writer saw it) and the checks
passed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from fabfile.errors import StepError

from . import compose
from .writer import Writer

PAIR = ["--master", "db01", "--slave", "db02"]


def rehearse(rate: float) -> None:
    tb = compose.current()
    env = {
        **os.environ,
        **tb.operator_env(),
        "SLONY_MIGRATE_HOME": os.environ.get(
            "SLONY_MIGRATE_HOME", str(tb.state / "secrets")
        ),
    }
    phases, checks, blocked = [], [], []
    writer = Writer(str(tb.ssh_config), rate=rate, max_seconds=3600, max_count=50_000)

    def inv(*argv: str) -> str:
        print(f"\n$ inv {' '.join(argv)}", flush=True)
        t = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", *argv],
            cwd=compose.ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        print(proc.stdout, end="", flush=True)
        phases.append((argv[0], time.monotonic() - t))
        if proc.returncode:
            raise StepError(
                "rehearsal", f"inv {' '.join(argv)} failed", "read its output above"
            )
        return proc.stdout

    writer.start()
    try:
        inv("migrate", *PAIR)
        inv("verify", *PAIR)
        checks.append("verify after migrate")
        for task_name in ("switchover", "switchback", "switchover"):
            since = time.monotonic()
            out = inv(task_name, *PAIR)
            time.sleep(3)
            tool = re.search(r"blocked for at most ([\d.]+) s( \((.*)\))?", out)
            blocked.append(
                (
                    task_name,
                    float(tool.group(1)) if tool else None,
                    writer.blocked_window(since),
                    tool.group(3) if tool and tool.group(3) else "",
                )
            )
            inv("verify", *PAIR)
            checks.append(f"verify after {task_name}")
    finally:
        writer.stop()
    with compose.hosts() as h:
        writer.check_acknowledged(h["db02"])
    checks.append(
        f"all {len(writer.acknowledged())} acknowledged writes on db02 exactly once"
    )
    inv("finish", *PAIR, "--yes")
    checks.append("finish: Slony removed from both nodes")
    print("\nrehearsal summary")
    for name, seconds in phases:
        print(f"  {name:<12} {seconds:6.1f} s")
    for name, tool, seen, phases_ in blocked:
        print(
            f"  {name:<12} writes blocked: {tool if tool is not None else '?'} s"
            f" (tool), {f'{seen:.1f}' if seen is not None else 'none seen'} s (writer"
            f" at {rate}/s)" + (f"; {phases_}" if phases_ else "")
        )
    failed = sum(1 for a in writer.attempts if not a.ok)
    print(
        f"  writer: {len(writer.attempts)} attempts, {len(writer.acknowledged())}"
        f" acknowledged, {failed} refused during locks"
    )
    for check in checks:
        print(f"  ok  {check}")
