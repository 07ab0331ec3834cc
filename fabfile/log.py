"""The run's record: a log file with timestamps (every line the terminal gets, and with
--verbose the SQL and commands sent), secrets masked wherever a line goes.

Lines reach it through the logger "slony_migrate": Output (session.py) records what it
prints at INFO (WARNING for stderr), the Fabric layer (remote.py) traces what it sends
at DEBUG. `start` opens the file (0600, in a 0700 directory) for one task (not for
the tasks a monitor polls); with verbose, the traces are shown on stderr too.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path

from .render.sql import MASK

LOG = logging.getLogger("slony_migrate")
LOG.setLevel(logging.DEBUG)
LOG.propagate = False
_secrets: set[str] = set()
_tracing = False  # --verbose: traces are kept


def hide(secret: str) -> str:
    """Mask `secret` in every line from now on (a password, a verifier); returns it."""
    if secret:
        _secrets.add(secret)
    return secret


# password verifiers (appdb copies the roles' own): never in a log, registered or not
VERIFIER = re.compile(r"SCRAM-SHA-256\$[^'\s]+|\bmd5[0-9a-f]{32}\b")


def masked(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return VERIFIER.sub(MASK, text)


class Masking(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = masked(record.getMessage()), None
        return True


def trace(host: str, text: str) -> None:
    """What is sent to a host (a command, SQL, a script): the log with --verbose."""
    if _tracing:
        LOG.debug("[%s] > %s", host, text.rstrip("\n").replace("\n", "\n    "))


def record(text: str, level: int = logging.INFO) -> None:
    """A line the terminal got."""
    if LOG.handlers:
        LOG.log(level, "%s", text)


def log_dir(configured: str, cluster: str) -> Path:
    """Where a cluster's logs go: the configured directory, else
    $XDG_STATE_HOME/slony-migrate (~/.local/state/slony-migrate), one folder per
    cluster."""
    base = configured or os.path.join(
        os.environ.get("XDG_STATE_HOME") or "~/.local/state", "slony-migrate"
    )
    return Path(base).expanduser() / cluster


class UTC(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's name)
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + (
            f".{int(record.msecs):03d}Z"
        )


def start(directory: Path | None, task: str, verbose: bool) -> Path | None:
    """Open this run's log file in `directory` (`<UTC time>-<task>-<pid>.log`, 0600;
    None: no file) and, with verbose, show the traces on stderr; the file's path."""
    global _tracing
    _tracing = verbose
    if verbose:
        terminal = logging.StreamHandler(sys.stderr)
        terminal.setLevel(logging.DEBUG)
        terminal.addFilter(lambda r: r.levelno == logging.DEBUG)
        terminal.addFilter(Masking())
        LOG.addHandler(terminal)
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = directory / f"{stamp}-{task}-{os.getpid()}.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    file = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8"))
    file.setLevel(logging.DEBUG if verbose else logging.INFO)
    file.setFormatter(UTC("%(asctime)s %(levelname)s %(message)s"))
    file.addFilter(Masking())
    LOG.addHandler(file)
    LOG.info("%s", f"slony-migrate {task}: log {path}")
    return path


def stop() -> None:
    """Close this run's log."""
    global _tracing
    _tracing = False
    for handler in list(LOG.handlers):
        LOG.removeHandler(handler)
        if handler.stream not in (sys.stderr, sys.stdout):
            handler.close()
