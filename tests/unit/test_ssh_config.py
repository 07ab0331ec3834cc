"""The operator's OpenSSH configuration as OpenSSH reads it (`ssh -G`), and what a
failed connection reads like. The parser is pure; `ssh -G` runs for real (it does not
connect); the only connections go to listeners of the test's own on 127.0.0.1."""

from __future__ import annotations

import errno
import logging
import shutil
import socket
import sys
import threading
import time
from types import SimpleNamespace

import paramiko
import pytest
from paramiko.ssh_exception import NoValidConnectionsError

from fabfile import remote, settings
from fabfile.errors import StepError
from fabfile.remote import Host, Hosts, connection, failure, hops_of
from fabfile.render.ssh import Hop, expand, hops, parse_g, target

KEY = paramiko.ECDSAKey.generate()
needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client")

G = """\
host target
user alice
hostname 127.0.0.1
port 2299
identityfile ~/.ssh/%r@%h
identityfile %d/id_%n
identitiesonly yes
userknownhostsfile /k/known_hosts /k/known_hosts2
globalknownhostsfile /etc/ssh/ssh_known_hosts
connecttimeout none
proxyjump bob@jumper:2300,[::1]:23
proxycommand none
"""


# --- the parser -----------------------------------------------------------------------


def test_parse_g_keeps_every_value_of_a_repeated_key():
    options = parse_g(G)
    assert options["hostname"] == ["127.0.0.1"]
    assert options["identityfile"] == ["~/.ssh/%r@%h", "%d/id_%n"]
    assert options["userknownhostsfile"] == ["/k/known_hosts /k/known_hosts2"]
    assert parse_g("\n  Port 22\n") == {"port": ["22"]}


def test_target_from_ssh_g():
    t = target("target", parse_g(G), "me", "/home/me")
    assert (t.hostname, t.port, t.user) == ("127.0.0.1", 2299, "alice")
    assert t.identity_files == ("~/.ssh/alice@127.0.0.1", "/home/me/id_target")
    assert t.identities_only and t.connect_timeout is None and t.proxy_command == ""
    assert t.known_hosts == ("/k/known_hosts", "/k/known_hosts2")
    assert t.global_known_hosts == ("/etc/ssh/ssh_known_hosts",)
    assert t.jumps == (Hop("jumper", "bob", 2300), Hop("::1", "", 23))


def test_target_defaults_and_proxycommand():
    t = target(
        "db01",
        parse_g("connecttimeout 7\nproxycommand nc -X 5 %h %p %r 100%%\n"),
        "me",
        "/home/me",
    )
    assert (t.hostname, t.port, t.user, t.jumps) == ("db01", 22, "me", ())
    assert t.connect_timeout == 7
    assert t.proxy_command == "nc -X 5 db01 22 me 100%"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("none", ()),
        ("jump", (Hop("jump"),)),
        ("u@jump:2200", (Hop("jump", "u", 2200),)),
        ("ssh://u@jump:2200", (Hop("jump", "u", 2200),)),
        ("a@b@jump", (Hop("jump", "a@b"),)),
        ("[fd00::1]:2222,fd00::2", (Hop("fd00::1", "", 2222), Hop("fd00::2"))),
    ],
)
def test_proxyjump_hops(value, expected):
    assert hops(value) == expected


def test_expand_leaves_unknown_tokens():
    assert expand("%h-%x-%%h", {"h": "db01"}) == "db01-%x-%h"


# --- ssh -G on a real config ----------------------------------------------------------


@pytest.fixture
def config(tmp_path):
    """An ssh config that includes another file and uses Match and ProxyJump."""
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "id_target").write_text("not read before connecting\n")
    (tmp_path / "id_jump").write_text("not read before connecting\n")
    (tmp_path / "known_hosts").write_text(
        f"[127.0.0.1]:2299 {KEY.get_name()} {KEY.get_base64()}\n"
    )
    (tmp_path / "conf.d" / "hosts").write_text(
        f"""Host target
  HostName 127.0.0.1
  User alice
  IdentityFile {tmp_path}/id_target
  IdentityFile {tmp_path}/id_missing
  ProxyJump bob@jumper:2300
  ForwardAgent yes
Host jumper
  HostName 127.0.0.1
  Port 2201
  User carol
  IdentityFile {tmp_path}/id_jump
Host chained
  HostName 127.0.0.1
  ProxyJump first,jumper
Host first
  HostName 127.0.0.1
  Port 2202
Host loop
  HostName 127.0.0.1
  ProxyJump loop
"""
    )
    path = tmp_path / "ssh_config"
    path.write_text(
        f"""Include {tmp_path}/conf.d/*
Match originalhost target
  Port 2299
Host *
  UserKnownHostsFile {tmp_path}/known_hosts
  IdentitiesOnly yes
"""
    )
    return path


@needs_ssh
def test_a_connection_as_ssh_g_resolves_it(config, tmp_path):
    conn = connection("target", str(config), True)
    assert (conn.host, conn.port, conn.user) == ("127.0.0.1", 2299, "alice")
    kw = conn.connect_kwargs
    assert kw["key_filename"] == [f"{tmp_path}/id_target"]  # the missing one left out
    assert kw["allow_agent"] is False and kw["look_for_keys"] is False
    assert kw["banner_timeout"] == kw["auth_timeout"] == settings.SSH_CONNECT
    assert conn.client.get_host_keys().lookup("[127.0.0.1]:2299")
    gateway = conn.gateway
    assert (gateway.original_host, gateway.host) == ("jumper", "127.0.0.1")
    assert (gateway.port, gateway.user) == (2300, "bob")  # ProxyJump's, not Host's
    assert gateway.connect_kwargs["key_filename"] == [f"{tmp_path}/id_jump"]
    assert gateway.gateway is None
    for hop in (conn, gateway):
        assert hop.forward_agent is False
        assert isinstance(hop.client._policy, paramiko.RejectPolicy)


@needs_ssh
def test_a_proxyjump_chain_goes_through_each_hop_in_turn(config):
    conn = connection("chained", str(config), True)
    assert [h.original_host for h in hops_of(conn)] == ["chained", "jumper", "first"]
    assert [h.port for h in hops_of(conn)] == [22, 2201, 2202]


@needs_ssh
def test_a_proxyjump_loop_is_one_error(config):
    with pytest.raises(StepError, match="more than 8 ProxyJump hosts"):
        connection("loop", str(config), True)


@needs_ssh
def test_a_host_name_ssh_refuses_is_one_error(config):
    with pytest.raises(StepError, match="hostname contains invalid characters"):
        Host("db01;true", str(config))


def test_without_an_ssh_binary_fabric_reads_the_config(config, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    conn = Host("jumper", str(config)).conn  # Include is not read: jumper is not known
    assert (conn.host, conn.port) == ("jumper", 22)
    assert conn.connect_kwargs["banner_timeout"] == settings.SSH_CONNECT
    assert isinstance(conn.client._policy, paramiko.RejectPolicy)


# --- one message per kind of failure ------------------------------------------------


def refused():
    return NoValidConnectionsError(
        {("127.0.0.1", 9): ConnectionRefusedError(errno.ECONNREFUSED, "refused")}
    )


KINDS = [
    (socket.gaierror(-2, "Name or service not known"), "unknown host name"),
    (refused(), "connection refused (127.0.0.1:{port})"),
    (TimeoutError("timed out"), "host unreachable (127.0.0.1:{port}: no answer within"),
    (
        NoValidConnectionsError(
            {("127.0.0.1", 9): OSError(errno.EHOSTUNREACH, "No route to host")}
        ),
        "host unreachable (127.0.0.1:{port}: No route to host)",
    ),
    (
        paramiko.SSHException("Error reading SSH protocol banner"),
        "no SSH banner from 127.0.0.1:{port} (not an SSH server?)",
    ),
    (
        paramiko.SSHException("No existing session"),
        "no SSH banner from 127.0.0.1:{port} (not an SSH server?)",
    ),
    (
        paramiko.AuthenticationException("Authentication failed."),
        "SSH authentication refused for user {user}",
    ),
    (
        paramiko.SSHException("Server '[127.0.0.1]:2299' not found in known_hosts"),
        "SSH host key unknown (127.0.0.1:{port})",
    ),
    (
        paramiko.BadHostKeyException("127.0.0.1", KEY, KEY),
        "SSH host key differs from known_hosts (127.0.0.1:{port})",
    ),
]


@needs_ssh
@pytest.mark.parametrize("error, text", KINDS, ids=[k[1][:24] for k in KINDS])
def test_each_kind_of_failure_reads_the_same_for_every_host(config, error, text):
    seen = set()
    for name in ("jumper", "first"):
        conn = connection(name, str(config), True)
        what, fix = failure(error, conn, name)
        assert what.startswith(text.format(port=conn.port, user=conn.user)), what
        seen.add(
            (
                what.replace(str(conn.port), "PORT").replace(conn.user, "USER"),
                fix.replace(name, "NAME"),
            )
        )
    assert len(seen) == 1


@needs_ssh
def test_a_failure_at_the_proxyjump_host_names_it(config):
    conn = connection("target", str(config), True)
    what, _ = failure(refused(), conn, "target")
    assert what == "ProxyJump host jumper: connection refused (127.0.0.1:2300)"


@needs_ssh
def test_a_target_the_proxyjump_host_cannot_reach(config):
    conn = connection("target", str(config), True)
    conn.gateway.transport = SimpleNamespace(active=True)  # as if connected
    what, _ = failure(paramiko.ChannelException(2, "Connect failed"), conn, "target")
    assert what == (
        "host unreachable (127.0.0.1:2299 from ProxyJump host jumper: Connect failed)"
    )


# --- real connections to 127.0.0.1 ------------------------------------------------------


class Mute:
    """A TCP listener on 127.0.0.1 that accepts and never sends an SSH banner."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.accepted:
            c.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def local_config(tmp_path, **ports: int) -> str:
    path = tmp_path / "ssh_config"
    path.write_text(
        "".join(
            f"Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User nobody\n"
            f"  UserKnownHostsFile {tmp_path}/known_hosts\n"
            for name, port in ports.items()
        )
    )
    return str(path)


def test_no_banner_is_one_quick_error_and_not_tried_again(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(settings, "SSH_CONNECT", 1)
    # as if something had configured logging for the terminal (logging.basicConfig)
    terminal = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(terminal)
    mute = Mute()
    try:
        with Hosts(local_config(tmp_path, mute=mute.port)) as hosts:
            began = time.monotonic()
            with pytest.raises(StepError) as first:
                hosts["mute"].open()
            took = time.monotonic() - began
            began = time.monotonic()
            with pytest.raises(StepError) as second:
                hosts["mute"].run("true")
            again = time.monotonic() - began
            assert len(mute.accepted) == 1
            hosts.retry()  # status --watch: each round tries again
            with pytest.raises(StepError):
                hosts["mute"].open()
            assert len(mute.accepted) == 2
    finally:
        logging.getLogger().removeHandler(terminal)
        mute.close()
    assert first.value.line() == (
        f"mute: no SSH banner from 127.0.0.1:{mute.port} (not an SSH server?); fix:"
        " check the Port in your ssh config and that sshd answers there"
    )
    assert second.value.line() == first.value.line()
    assert took < 4 and again < 0.1
    time.sleep(0.2)  # paramiko's transport thread, had it anything left to say
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_paramiko_logs_reach_neither_a_root_handler_nor_the_last_resort(capfd):
    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        root.handlers[:] = []  # nothing configured: Python's last resort
        logging.getLogger("paramiko.transport").error("Traceback (most recent ...")
        root.addHandler(logging.StreamHandler(sys.stderr))
        logging.getLogger("paramiko.transport").error("Traceback (most recent ...")
    finally:
        root.handlers[:] = saved
    assert capfd.readouterr().err == ""
    assert remote._paramiko_log.propagate is False


def test_a_closed_port_is_refused_at_once_and_not_tried_again(tmp_path, monkeypatch):
    port = closed_port()
    with Hosts(local_config(tmp_path, shut=port)) as hosts:
        tries = []
        real = paramiko.SSHClient.connect
        monkeypatch.setattr(
            paramiko.SSHClient,
            "connect",
            lambda *a, **kw: tries.append(1) or real(*a, **kw),
        )
        for _ in range(2):
            began = time.monotonic()
            with pytest.raises(StepError) as e:
                hosts["shut"].open()
            assert time.monotonic() - began < 1
        assert tries == [1]
    assert e.value.line() == (
        f"shut: connection refused (127.0.0.1:{port}); fix: check that sshd runs"
        " there and the Port in your ssh config"
    )


def test_hosts_are_connected_at_the_same_time(tmp_path, monkeypatch):
    """A run with two silent hosts waits for one timeout, not for two."""
    monkeypatch.setattr(settings, "SSH_CONNECT", 1)
    mutes = [Mute(), Mute()]
    try:
        config = local_config(tmp_path, one=mutes[0].port, two=mutes[1].port)
        with Hosts(config) as hosts:
            began = time.monotonic()
            hosts.connect(["one", "two", "one"])
            took = time.monotonic() - began
            for name in ("one", "two"):
                with pytest.raises(StepError, match="no SSH banner"):
                    hosts[name].open()
        assert [len(m.accepted) for m in mutes] == [1, 1]
        assert took < 1.8, took
    finally:
        for m in mutes:
            m.close()
