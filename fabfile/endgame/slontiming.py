"""Both slons' timing tightened for the length of a switchover, then the configured
timing put back.

slon reads sync_interval and sync_interval_timeout only when it starts, so each change
restarts both slons. While tightened, the configured slon.conf waits beside it
(slon.conf.configured): a run that dies half-way leaves what the next switchover
(recover) or `restore` needs to put it back.
"""

from __future__ import annotations

import shlex

from .. import settings
from ..errors import StepError
from ..model import Cluster, Node
from ..plan import Change, Command, File, apply
from ..render import files
from ..session import Session
from ..steps.cluster import start_slon, stop_slons

SAVED = ".configured"


def conf_path(cl: Cluster, n: Node) -> str:
    return cl.slon_conf(n)


def restart_slons(s: Session, step: str) -> None:
    apply(s, stop_slons(s, step))
    apply(s, [start_slon(s, step, n) for n in s.cluster.nodes])


def quicken(s: Session, step: str) -> None:
    """Both slon.conf files with settings.QUICK_SYNC, the configured ones saved
    beside them first (a kill after that leaves what restore needs); slons restarted."""
    h, cl = s.slon_host, s.cluster
    interval, timeout = settings.QUICK_SYNC
    changes = []
    for n in cl.nodes:
        path = conf_path(cl, n)
        text = h.read_file(path)
        if text is None:
            raise StepError(
                h.name, f"{path} does not exist", "run inv config, then again"
            )
        if h.read_file(path + SAVED) is None:
            changes.append(
                Change(
                    h.name,
                    step,
                    f"save the configured {path} beside it ({path}{SAVED})",
                    File(path + SAVED, text),
                )
            )
        changes.append(
            Change(
                h.name,
                step,
                f"set sync_interval {interval} ms, sync_interval_timeout {timeout} "
                f"ms in {path} for the switchover",
                File(path, files.slon_timing(text, interval, timeout), text),
            )
        )
    apply(s, changes)
    restart_slons(s, step)


def restore(s: Session, step: str) -> None:
    """The configured slon.conf files back from beside them, and the slons restarted
    with them; nothing to do when none is saved."""
    h, cl = s.slon_host, s.cluster
    changes = []
    for n in cl.nodes:
        path = conf_path(cl, n)
        saved = h.read_file(path + SAVED)
        if saved is None:
            continue
        changes += [
            Change(
                h.name,
                step,
                f"configured timing back in {path}",
                File(path, saved, h.read_file(path)),
            ),
            Change(
                h.name,
                step,
                f"remove {path}{SAVED}",
                Command(f"rm -f {shlex.quote(path + SAVED)}"),
            ),
        ]
    if changes:
        apply(s, changes)
        restart_slons(s, step)
