"""Hostile input against the pure parts: slonik literals, names, versions, SSH
options. No I/O."""

from __future__ import annotations

import pytest

from fabfile.errors import StepError
from fabfile.model import Table, make_cluster
from fabfile.remote import Host
from fabfile.render.files import hba_lines
from fabfile.render.parse import pg_dump_safe, pg_version, route_source
from fabfile.render.slonik import lit, slonik_create_set
from fabfile.render.sql import fence_database, replication_role

INJECTION = "x');execute script(sql='grant postgres to me',event node=1);#"


def statements(script: str) -> list[str]:
    """Split a slonik script into statements as slonik's scanner reads it ('' inside
    a literal)."""
    out, cur, quoted, i = [], "", False, 0
    while i < len(script):
        ch = script[i]
        if ch == "'" and quoted and script[i + 1 : i + 2] == "'":
            cur += "''"
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
        if ch == ";" and not quoted:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
        i += 1
    assert not quoted, "unterminated literal"
    return out


@pytest.mark.parametrize("name", ["o'brien", INJECTION, "a''b", "'", "x\\'y"])
def test_lit_doubles_quotes(name):
    assert lit(name) == "'" + name.replace("'", "''") + "'"


def test_a_hostile_index_name_stays_one_literal():
    cl = make_cluster("db01", "db02", database="shotserver04")
    script = slonik_create_set(
        cl,
        [(1, Table('public."o\'brien"', INJECTION))],
        [(1, 'public."s\'q"')],
        create=True,
    )
    stmts = statements(script)
    assert (
        len(stmts) == 6
    )  # cluster name, 2 conninfos, create set, add table, add sequence
    assert not any(s.startswith("execute script") for s in stmts)
    assert f"key = {lit(INJECTION)}" in stmts[4]


@pytest.mark.parametrize(
    "what, kw",
    [
        ("replication user", {"user": "all"}),
        ("replication user", {"user": "user"}),
        ("replication user", {"user": "pg_monitor"}),
        ("database", {"database": "replication"}),
        ("database", {"database": "sameuser"}),
        ("database", {"database": "select"}),
    ],
)
def test_reserved_names_are_refused(what, kw):
    with pytest.raises(StepError) as e:
        make_cluster("db01", "db02", **{"database": "shotserver04", **kw})
    assert (
        e.value.host == "input"
        and f"{what} name" in e.value.message
        and "reserved" in e.value.message
    )


def test_the_role_statement_keeps_its_secret_out_of_the_log():
    statement = replication_role("slony", "SCRAM-SHA-256$4096:abc", exists=False)
    assert statement.startswith(
        "SET log_statement = 'none'; SET log_min_error_statement = 'panic';"
    )
    assert "COMMENT ON ROLE \"slony\" IS 'slony-migrate replication role'" in statement


def test_fence_takes_connect_from_every_role_but_superusers():
    sql = fence_database("shot'db")
    assert "REVOKE CONNECT ON DATABASE %I FROM PUBLIC" in sql and "'shot''db'" in sql
    assert "NOT ro.rolsuper" in sql and "pg_terminate_backend" in sql


def test_hba_lines_are_encrypted_only_and_one_address_each():
    cl = make_cluster("db01", "db02", database="shotserver04")
    assert hba_lines(cl, ["10.0.0.2", "fd00::2"]) == [
        "hostssl    shotserver04    slony    10.0.0.2/32    scram-sha-256",
        "hostssl    shotserver04    slony    fd00::2/128    scram-sha-256",
    ]


@pytest.mark.parametrize(
    "text, version, safe",
    [
        ("pg_dump (PostgreSQL) 17.12 (Debian 17.12-0+deb13u1)", (17, 12), True),
        ("pg_dump (PostgreSQL) 17.5 (Debian 17.5-1)", (17, 5), False),
        ("pg_dump (PostgreSQL) 15.14", (15, 14), True),
        ("pg_dump (PostgreSQL) 13.21", (13, 21), False),
        ("pg_dump (PostgreSQL) 18.0", (18, 0), True),
        ("pg_dump (PostgreSQL) 12.22", (12, 22), False),
    ],
)
def test_pg_dump_versions(text, version, safe):
    assert pg_version(text) == version and pg_dump_safe(version) is safe


@pytest.mark.parametrize(
    "text, source",
    [
        (
            "172.30.173.11 dev eth0 src 172.30.173.12 uid 0 \\    cache ",
            "172.30.173.12",
        ),
        (
            (
                "local 172.30.173.12 dev lo table local src 172.30.173.12 uid 0 \\   "
                " cache <local> "
            ),
            "172.30.173.12",
        ),
        (
            "fd00::1 from :: dev eth0 proto kernel src fd00::2 metric 256 pref medium",
            "fd00::2",
        ),
        ("RTNETLINK answers: Network is unreachable", None),
    ],
)
def test_route_source(text, source):
    assert route_source(text) == source


def test_no_agent_forwarding_and_a_checked_proxyjump_gateway(tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host target\n  HostName 127.0.0.1\n  Port 2299\n  ProxyJump jumper\n "
        " ForwardAgent yes\nHost jumper\n  HostName 127.0.0.1\n  Port 2298\n "
        " ForwardAgent yes\n"
    )
    h = Host("target", str(config))
    gateway = h.conn.gateway
    assert h.conn.forward_agent is False and gateway.forward_agent is False
    assert type(h.conn.client._policy).__name__ == "RejectPolicy"
    assert type(gateway.client._policy).__name__ == "RejectPolicy"


def test_a_missing_ssh_config_is_one_error():
    with pytest.raises(
        StepError, match="ssh config /nonexistent/config does not exist"
    ):
        Host("db01", "/nonexistent/config")


@pytest.mark.parametrize(
    "index, key",
    [
        ("websites_alias_key", "websites_alias_key"),
        ("Mixed Case", "Mixed Case"),
        (INJECTION, INJECTION),
        ("a.b", '"a.b"'),
        ('"q', '"""q"'),
        ("x." + "y" * 59, '"x.' + "y" * 59 + '"'),
        ("x." + "y" * 60, None),
    ],
)
def test_slony_key_is_a_form_slony_finds_again(index, key):
    from fabfile.render.slonik import slony_key

    assert slony_key(index) == key
