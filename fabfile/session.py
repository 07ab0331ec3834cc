"""One invocation: the cluster, its hosts, dry run or not, the password once read, and
the output.

Output goes through `Output`: one line per finding or change, `[host] step: message`; a
progress line redraws itself in place on a terminal and prints every few seconds in a
log. Every line also goes to the run's log file (fabfile.log), and names the command the
operator ran (`inv` in a checkout, `slony-migrate` installed).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from . import log, settings
from .model import Cluster, Node
from .remote import Host, Hosts
from .secrets import replication_password


def named(text: str, program: str) -> str:
    """`text` with the tool's commands (`inv TASK`, as messages write them) as the
    operator runs them."""
    if program == "inv":
        return text
    return re.sub(r"\binv (?=[a-z])", program + " ", text)


class Output:
    """The operator's view: step lines, dry-run details, progress. `quiet`: only
    warnings and errors on the terminal (the log file gets every line)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        tty: bool | None = None,
        program: str = "inv",
        quiet: bool = False,
        results: TextIO | None = None,
    ):
        self.stream = stream or sys.stdout
        # what the operator asked for (a status, JSON) goes here; the rest to `stream`
        self.results = results or self.stream
        self.tty = self.stream.isatty() if tty is None else tty
        self.program = program
        self.quiet = quiet
        self._progress = False  # a progress line is on the screen without its newline
        self._last_progress = self._last_logged = -1e9

    def to(self, stream: TextIO) -> Output:
        """The same view on another stream (never redrawn in place)."""
        return Output(stream, False, self.program, self.quiet)

    def _end_progress(self) -> None:
        if self._progress:
            self.stream.write("\n")
            self._progress = False

    def line(self, text: str) -> None:
        text = named(text, self.program)
        log.record(text)
        if not self.quiet:
            self._end_progress()
            print(text, file=self.stream, flush=True)

    def result(self, text: str) -> None:
        """What the operator asked for (a status, JSON): shown even when quiet."""
        text = named(text, self.program)
        log.record(text)
        self._end_progress()
        print(text, file=self.results, flush=True)

    def say(self, host: str, step: str, message: str) -> None:
        self.line(f"[{host}] {step}: {message}")

    def warn(self, text: str) -> None:
        """A warning: on the terminal even when quiet."""
        text = named(text, self.program)
        log.record(text, logging.WARNING)
        self._end_progress()
        print(text, file=self.stream, flush=True)

    def error(self, text: str) -> None:
        """A line on stderr (a failed check, the final error)."""
        text = named(text, self.program)
        log.record(text, logging.WARNING)
        self._end_progress()
        print(text, file=sys.stderr, flush=True)

    def detail(self, text: str) -> None:
        """An indented block (a script, SQL, a diff), as a dry run shows it."""
        self.line("\n".join("    " + l for l in text.rstrip("\n").splitlines()))

    def progress_due(self, every: float = settings.PROGRESS_EVERY) -> bool:
        """Whether a progress line would be shown now (worth computing one): on a
        terminal every second."""
        return time.monotonic() - self._last_progress >= (
            settings.POLL if self.tty else every
        )

    def progress(
        self, host: str, step: str, message: str, every: float = settings.PROGRESS_EVERY
    ) -> None:
        """A line that changes: redrawn in place on a terminal; in a log (and the
        log file), printed at most every `every` s."""
        text = named(f"[{host}] {step}: {message}", self.program)
        now = time.monotonic()
        if now - self._last_logged >= every:
            log.record(text)
            self._last_logged = now
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._progress = True
            self._last_progress = now
        elif now - self._last_progress >= every:
            self._end_progress()
            print(text, file=self.stream, flush=True)
            self._last_progress = now


def ask_terminal(question: str) -> bool:
    """Ask on the terminal; only "yes" is yes (and no terminal is no)."""
    try:
        return input(f"{question} Type yes: ").strip() == "yes"
    except EOFError:
        return False


@dataclass
class Session:
    """Everything one task works with. `cluster` is None for tasks that name their
    hosts themselves."""

    hosts: Hosts
    cluster: Cluster | None
    dry_run: bool = False
    prompt_password: bool = False
    out: Output = field(default_factory=Output)
    changes: list = field(
        default_factory=list
    )  # plan.Change, as applied (or shown, in a dry run)
    ask: Callable[[str], bool] = ask_terminal  # a yes/no question to the operator
    # hosts this run fenced before its task began: a node a failover dropped, found
    # back and open to the applications (endgame.returned.first_contact)
    fenced_now: list = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)  # when the task began
    _password: str | None = None

    def host(self, name: str) -> Host:
        return self.hosts[name]

    def node_host(self, node: Node) -> Host:
        return self.hosts[node.host]

    @property
    def master_host(self) -> Host:
        return self.node_host(self.cluster.master)

    @property
    def slave_host(self) -> Host:
        return self.node_host(self.cluster.slave)

    @property
    def slon_host(self) -> Host:
        return self.host(self.cluster.slon_name)

    def node_hosts(self) -> list[Host]:
        return [self.master_host, self.slave_host]

    def password(self) -> str:
        if self._password is None:
            self._password = log.hide(
                replication_password(
                    self.cluster.user,
                    self.cluster.name,
                    prompt=self.prompt_password,
                    dry_run=self.dry_run,
                )
            )
        return self._password

    def say(self, host: str, step: str, message: str) -> None:
        self.out.say(host, step, message)
