"""remote.PsqlPipe's protocol on a fake SSH channel: what psql prints, line by line,
decides the outcome (the testbed test test_10_testbed proves it against a real psql)."""

from __future__ import annotations

import io
import socket
from types import SimpleNamespace

import pytest
from fabric import Connection

from fabfile.remote import LostPipe, PsqlPipe, no_delay


class Channel:
    """psql's stdout as canned lines; `mark` is replaced by the pipe's marker."""

    def __init__(
        self,
        out: str,
        err: bytes = b"",
        exit_status: int = 0,
        fail: Exception | None = None,
    ):
        self.out, self.err, self.exit_status, self.fail, self.sent = (
            out,
            err,
            exit_status,
            fail,
            b"",
        )
        self.closed = False

    def settimeout(self, t):
        pass

    def sendall(self, data: bytes):
        self.sent += data

    def recv_exit_status(self):
        return self.exit_status

    def recv_stderr(self, n):
        chunk, self.err = self.err[:n], self.err[n:]
        return chunk

    def recv_stderr_ready(self):
        return bool(self.err)


def pipe_on(channel: Channel, console: bool = False) -> PsqlPipe:
    pipe = PsqlPipe.__new__(PsqlPipe)
    pipe.mark, pipe.channel, pipe.console = "--slony-migrate 00 ", channel, console

    class Out:
        def __init__(self):
            self.lines = None

        def readline(self):
            if self.lines is None:
                self.lines = io.BytesIO(channel.out.replace("MARK", pipe.mark).encode())
            line = self.lines.readline()
            if not line and channel.fail:
                raise channel.fail
            return line

    pipe.out = Out()
    return pipe


def test_rows_between_the_markers_and_a_clean_session_around_the_query():
    ch = Channel(
        'MARKstarted\n1,"two\nlines"\nMARKdone\n',
        err=b"WARNING:  there is no transaction in progress\n",
    )
    result = pipe_on(ch).query("SELECT 1", 5)
    assert result.ok and result.stdout == '1,"two\nlines"\n' and result.stderr == ""
    assert ch.sent.decode().startswith(
        "DISCARD ALL;\n\\echo '--slony-migrate 00 started'\nSELECT 1\n;\nROLLBACK;\n"
    )


def test_an_error_after_the_start_is_the_query_s_own():
    ch = Channel(
        "MARKstarted\n",
        err=b"psql:<stdin>:3: ERROR:  division by zero\n",
        exit_status=3,
    )
    result = pipe_on(ch).query("SELECT 1/0", 5)
    assert result.failed and result.exited == 3 and "division by zero" in result.stderr


def test_a_psql_that_ended_before_the_start_ran_nothing():
    assert pipe_on(Channel("")).query("SELECT 1", 5) is None
    assert pipe_on(Channel("", fail=EOFError())).query("SELECT 1", 5) is None


def test_ssh_lost_during_the_query_is_not_retried():
    with pytest.raises(LostPipe):
        pipe_on(Channel("MARKstarted\n", fail=OSError("Socket is closed"))).query(
            "UPDATE t SET x = 1", 5
        )
    with pytest.raises(TimeoutError):
        pipe_on(Channel("MARKstarted\n", fail=TimeoutError())).query(
            "SELECT pg_sleep(9)", 1
        )


def test_pgbouncer_s_console_gets_the_commands_alone():
    ch = Channel("MARKstarted\nMARKdone\n")
    assert pipe_on(ch, console=True).query("PAUSE app;", 5).ok
    assert (
        ch.sent.decode()
        == "\\echo '--slony-migrate 00 started'\nPAUSE app;\n\\echo '--slony-migrate 00"
        " done'\n"
    )


def test_a_console_command_that_times_out_is_exit_code_124_and_its_psql_is_closed():
    """PgBouncer's PAUSE that cannot complete: the caller gets `timeout`'s exit code
    and decides (RESUME)."""
    import threading
    from types import SimpleNamespace

    from fabfile.remote import Host

    class Stuck:
        closed = False

        def alive(self):
            return not self.closed

        def query(self, sql, timeout):
            raise TimeoutError

        def close(self):
            self.closed = True

    h = Host.__new__(Host)
    h.name, h._pipe_lock, h.conn = (
        "app",
        threading.Lock(),
        SimpleNamespace(is_connected=True),
    )
    stuck = Stuck()
    h._pipes = {"pgbouncer /tmp:6432": stuck}
    result = h.console(["PAUSE app"], "/tmp", 6432, 2)
    assert result.failed and result.exited == 124 and stuck.closed


def test_no_delay_sets_tcp_nodelay_on_the_connection_and_its_gateway():
    """Without TCP_NODELAY each SSH command waited about 40 ms for a delayed ACK
    (Nagle's algorithm)."""

    def connected(name: str, gateway=None) -> tuple[Connection, socket.socket]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn = Connection(name, gateway=gateway)
        conn.transport = SimpleNamespace(active=True)
        conn.client = SimpleNamespace(get_transport=lambda: SimpleNamespace(sock=sock))
        return conn, sock

    gateway, outer = connected("bastion")
    conn, inner = connected("db02", gateway)
    try:
        no_delay(conn)
        assert inner.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert outer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        inner.close()
        outer.close()
