"""remote.Host.staged: a command's stdin in parts, each sent only once the part before
has said it is done.

The command runs here under sh, behind a stand-in for the SSH channel (pure protocol;
the testbed's switchover tests run it over real SSH with psql)."""

from __future__ import annotations

import os
import select
import shlex
import subprocess
import time
from types import SimpleNamespace

from fabfile.remote import Host


class Channel:
    """The part of paramiko's Channel that staged uses, over a local process."""

    def __init__(self):
        self.timeout = None

    def exec_command(self, command: str) -> None:
        # as_user wraps it in sudo; here the command runs as we are
        self.proc = subprocess.Popen(
            ["sh", "-c", shlex.split(command)[-1]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def sendall(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def shutdown_write(self) -> None:
        self.proc.stdin.close()

    def settimeout(self, seconds) -> None:
        self.timeout = seconds

    def makefile(self, mode: str):
        channel, buffer = self, bytearray()

        class Lines:
            def readline(self):
                fd = channel.proc.stdout.fileno()
                while b"\n" not in buffer:
                    ready, _, _ = select.select([fd], [], [], channel.timeout)
                    if not ready:
                        raise TimeoutError()
                    data = os.read(fd, 4096)
                    if not data:
                        line = bytes(buffer)
                        buffer.clear()
                        return line
                    buffer.extend(data)
                end = buffer.index(b"\n") + 1
                line = bytes(buffer[:end])
                del buffer[:end]
                return line

        return Lines()

    def recv_exit_status(self) -> int:
        return self.proc.wait()

    def recv_stderr(self, size: int) -> bytes:
        return self.proc.stderr.read(size)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def host(channel: Channel) -> Host:
    h = Host("db02")
    h.conn = SimpleNamespace(
        is_connected=True,
        client=SimpleNamespace(
            get_transport=lambda: SimpleNamespace(open_session=lambda: channel)
        ),
    )
    return h


# Reads lines; echoes each; a line "done N" is the marker of part N.
ECHO = 'while read -r line; do echo "got $line"; done; echo end'


def test_each_part_only_after_the_marker_of_the_one_before():
    result = host(Channel()).staged(ECHO, [("a\nb\n", "got b", 5), ("c\n", "", 5)])
    assert result.ok and result.stdout == "got a\ngot b\ngot c\nend\n"
    assert len(result.marks) == 1


def test_the_next_part_waits_for_the_marker():
    # the command prints the marker only after 0.3 s: the second part must not have been
    # read before
    command = (
        "read -r a; sleep 0.3; date +%s.%N; echo ready; read -r b; date +%s.%N; echo"
        ' "$b"'
    )
    t0 = time.time()
    result = host(Channel()).staged(command, [("x\n", "ready", 5), ("y\n", "", 5)])
    lines = result.stdout.splitlines()
    assert lines[1] == "ready" and lines[3] == "y" and float(lines[0]) >= t0 + 0.3
    assert result.marks and result.ok


def test_a_marker_that_does_not_come_in_time_is_exit_code_124_and_nothing_more_is_sent():
    channel = Channel()
    t0 = time.monotonic()
    result = host(channel).staged(
        "read -r a; echo started; sleep 30", [("x\n", "never", 0.5), ("y\n", "", 5)]
    )
    assert (
        result.exited == 124
        and result.failed
        and result.marks == []
        and result.stdout == "started\n"
    )
    assert time.monotonic() - t0 < 5


def test_a_command_that_ends_before_its_marker_gets_no_further_part():
    result = host(Channel()).staged(
        'read -r a; echo "failed at $a" >&2; exit 3', [("x\n", "ok", 5), ("y\n", "", 5)]
    )
    assert (result.exited, result.marks, result.stderr) == (3, [], "failed at x\n")
