"""Both slons' timing tightened for the length of a switchover, then the configured timing put back.

slon reads sync_interval and sync_interval_timeout only when it starts, so each change restarts both
slons. While tightened, the configured slon.conf waits beside it (slon.conf.configured): a run that
dies half-way leaves what the next switchover (recover) or `restore` needs to put it back.
"""
from __future__ import annotations

import shlex
from contextlib import contextmanager

from .. import settings
from ..errors import StepError
from ..model import Cluster, Node
from ..plan import Change, apply
from ..render import files
from ..session import Session
from ..steps.cluster import start_slon, stop_slons

SAVED = ".configured"


def conf_path(cl: Cluster, n: Node) -> str:
    return f"{cl.confdir}/{n.instance}/slon.conf"


def restart_slons(s: Session, step: str) -> None:
    apply(s, stop_slons(s, step))
    apply(s, [start_slon(s, step, n) for n in s.cluster.nodes])


def quicken(s: Session, step: str) -> None:
    """Both slon.conf files with settings.QUICK_SYNC, the configured ones saved beside them; slons restarted."""
    h, cl = s.slon, s.cluster
    interval, timeout = settings.QUICK_SYNC
    changes = []
    for n in cl.nodes:
        path = conf_path(cl, n)
        text = h.read_file(path)
        if text is None:
            raise StepError(h.name, f"{path} does not exist", "run inv config, then again")

        def write(path=path, text=text):
            if h.read_file(path + SAVED) is None:  # saved first: a kill after this leaves what restore needs
                h.write_file(path + SAVED, text)
            h.write_file(path, files.slon_timing(text, interval, timeout))
        changes.append(Change(h.name, step, f"set sync_interval {interval} ms, sync_interval_timeout {timeout} "
                              f"ms in {path} for the switchover", write))
    apply(s, changes)
    restart_slons(s, step)


def restore(s: Session, step: str) -> None:
    """The configured slon.conf files back from beside them, and the slons restarted with them; nothing
    to do when none is saved."""
    h, cl = s.slon, s.cluster
    changes = []
    for n in cl.nodes:
        path = conf_path(cl, n)
        saved = h.read_file(path + SAVED)
        if saved is None:
            continue

        def put(path=path, saved=saved):
            h.write_file(path, saved)
            h.sudo(f"rm -f {shlex.quote(path + SAVED)}")
        changes.append(Change(h.name, step, f"configured timing back in {path}", put))
    if changes:
        apply(s, changes)
        restart_slons(s, step)


@contextmanager
def quick_slons(s: Session, step: str):
    """Tightened timing inside the block; the configured timing back afterwards, whatever happened."""
    quicken(s, step)
    try:
        yield
    except BaseException:
        try:
            restore(s, step)
        except StepError as e:  # the switchover's own error matters more; the next one restores
            s.out.error(f"warning: {e.line()}; the next switchover (or switchback) puts the configured "
                        "slon timing back")
        raise
    restore(s, step)
