"""Unit tests for fabfile.render: pure renderers of SQL, SCRAM, managed blocks and
Slony files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import shutil
import subprocess

import pytest

from fabfile.model import Table, make_cluster
from fabfile.render.files import (
    BEGIN,
    END,
    MarkerError,
    apply_block,
    hba_lines,
    pgpass_lines,
    slon_conf,
    slon_tools_conf,
    watchdog_script,
)
from fabfile.render.move import (
    CANCEL_AUTOVACUUM,
    lock_set_script,
    move_set_script,
    psql_arg,
    takeover_watch,
)
from fabfile.render.shell import psql_on
from fabfile.render.slonik import (
    conninfo,
    slonik_create_set,
    slonik_init,
    slonik_preamble,
    slonik_subscribe,
    slonik_uninstall,
)
from fabfile.render.sql import ident, literal, scram_matches, scram_verifier


@pytest.fixture
def cl():
    """A small cluster; the master's PostgreSQL is reached by address, so host !=
    dbhost."""
    return make_cluster(
        "db01",
        "db02",
        name="shots",
        database="appdb",
        user="slony",
        master_dbhost="10.0.0.1",
    )


CONN1 = "host=10.0.0.1 port=5432 dbname=appdb user=slony sslmode=require"
CONN2 = "host=db02 port=5432 dbname=appdb user=slony sslmode=require"
PREAMBLE = (
    "cluster name = shots;\n"
    f"node 1 admin conninfo = '{CONN1}';\n"
    f"node 2 admin conninfo = '{CONN2}';\n"
)


# --- SQL quoting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("abc", "'abc'"),
        ("", "''"),
        ("it's", "'it''s'"),
        ("''", "''''''"),
        ("a\\b", "'a\\b'"),  # standard_conforming_strings: backslash is not special
        ('say "hi"', "'say \"hi\"'"),
    ],
)
def test_literal(value, expected):
    assert literal(value) == expected


@pytest.mark.parametrize("name", ["foo", "shotserver04", "_x", "a$1", "slony"])
def test_ident_always_quotes_so_no_name_can_be_a_keyword(name):
    assert ident(name) == f'"{name}"'


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Foo", '"Foo"'),
        ("my table", '"my table"'),
        ("1abc", '"1abc"'),
        ("my-role", '"my-role"'),
        ('a"b', '"a""b"'),
        ("", '""'),
    ],
)
def test_ident_quotes_when_needed(name, expected):
    assert ident(name) == expected


@pytest.mark.parametrize("keyword", ["user", "select", "table", "all"])
def test_ident_quotes_reserved_keywords(keyword):
    # Unquoted, CREATE ROLE user ... is a syntax error; steps.py quotes role names with
    # ident().
    assert ident(keyword) == f'"{keyword}"'


def test_ident_quotes_name_with_trailing_newline():
    # `$` in the pattern also matches before a final newline, which must not pass as a
    # plain name.
    assert ident("foo\n") == '"foo\n"'


# --- SCRAM-SHA-256 --------------------------------------------------------------------


def _hi(password: bytes, salt: bytes, iterations: int) -> bytes:
    """RFC 5802 Hi(), written out with HMAC only (independent of
    hashlib.pbkdf2_hmac)."""
    u = hmac.new(password, salt + b"\x00\x00\x00\x01", hashlib.sha256).digest()
    out = bytearray(u)
    for _ in range(iterations - 1):
        u = hmac.new(password, u, hashlib.sha256).digest()
        out = bytearray(a ^ b for a, b in zip(out, u))
    return bytes(out)


def _expected_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = _hi(password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return stored_key, server_key


VERIFIER = re.compile(
    r"^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$"
)


def test_scram_verifier_format_random_salt():
    v = scram_verifier("secret")
    m = VERIFIER.fullmatch(v)
    assert m, v
    assert m.group(1) == "4096"
    assert len(base64.b64decode(m.group(2), validate=True)) == 16
    assert len(base64.b64decode(m.group(3), validate=True)) == 32
    assert len(base64.b64decode(m.group(4), validate=True)) == 32


def test_scram_verifier_salt_is_random():
    assert scram_verifier("secret") != scram_verifier("secret")


def test_scram_verifier_known_vector():
    salt = bytes(range(16))
    stored, server = _expected_keys("pencil", salt, 4096)
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    expected = f"SCRAM-SHA-256$4096:{b64(salt)}${b64(stored)}:{b64(server)}"
    assert scram_verifier("pencil", salt) == expected
    assert scram_verifier("pencil", salt, 4096) == expected


def test_scram_verifier_other_iteration_count():
    salt = b"0123456789abcdef"
    stored, server = _expected_keys("pw", salt, 10)
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    assert (
        scram_verifier("pw", salt, 10)
        == f"SCRAM-SHA-256$10:{b64(salt)}${b64(stored)}:{b64(server)}"
    )


def test_scram_verifier_against_rfc7677_exchange():
    """RFC 7677 section 3: user 'user', password 'pencil'. A verifier from the same
    salt and iteration count must reproduce the exchange's client proof and server
    signature."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    v = scram_verifier("pencil", salt, 4096)
    m = VERIFIER.fullmatch(v)
    assert m and m.group(1) == "4096" and base64.b64decode(m.group(2)) == salt
    stored_key, server_key = base64.b64decode(m.group(3)), base64.b64decode(m.group(4))
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = (
        "n=user,r=rOprNGfwEbeRWgbNEkqO,"
        f"r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        f"c=biws,r={nonce}"
    ).encode()
    server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
    assert (
        base64.b64encode(server_signature).decode()
        == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    )
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature))
    assert hashlib.sha256(client_key).digest() == stored_key


def test_scram_matches_right_password():
    v = scram_verifier("s3cret!")
    assert scram_matches(v, "s3cret!") is True


def test_scram_matches_wrong_password():
    v = scram_verifier("s3cret!")
    assert scram_matches(v, "s3cret") is False
    assert scram_matches(v, "") is False


def test_scram_matches_other_iteration_count():
    v = scram_verifier("pw", b"saltsaltsaltsalt", 10)
    assert scram_matches(v, "pw") is True
    assert scram_matches(v, "px") is False


@pytest.mark.parametrize(
    "verifier",
    [
        None,
        "",
        "md5"
        + hashlib.md5(
            b"s3cret!slony"
        ).hexdigest(),  # PostgreSQL's md5 hash of password+user
        "s3cret!",
    ],
)
def test_scram_matches_non_scram_is_false(verifier):
    assert scram_matches(verifier, "s3cret!") is False


# --- managed blocks -------------------------------------------------------------------

TAG = "cluster shots"
B = BEGIN.format(TAG)
E = END.format(TAG)

HBA = (
    "# PostgreSQL Client Authentication Configuration File\n"
    "#\n"
    "   # TYPE  DATABASE  USER  ADDRESS  METHOD\n"
    "\n"
    "local   all             postgres                                peer\n"
    "host    all             all             127.0.0.1/32            scram-sha-256\n"
    "# trailing comment\n"
)


def test_markers_name_the_tag():
    assert TAG in B and TAG in E
    assert B.startswith("#") and E.startswith("#")


def test_apply_block_begin_without_end_is_a_marker_error():
    text = f"{BEGIN.format('t')}\nlocal all all peer\n"
    with pytest.raises(MarkerError, match="BEGIN marker but no END marker"):
        apply_block(text, "t", ["x"])


def test_apply_block_top_inserts_before_first_rule():
    out = apply_block(HBA, TAG, ["rule a", "rule b"], top=True)
    lines = HBA.splitlines()
    expected = "\n".join(lines[:4] + [B, "rule a", "rule b", E] + lines[4:]) + "\n"
    assert out == expected
    assert out.index(E) < out.index("local   all")


def test_apply_block_top_without_rules_appends():
    text = "# only comments\n\n   # and an indented one\n"
    out = apply_block(text, TAG, ["rule"], top=True)
    assert out == text + f"{B}\nrule\n{E}\n"


def test_apply_block_appends_by_default():
    out = apply_block(HBA, TAG, ["line 1", "line 2"])
    assert out == HBA + f"{B}\nline 1\nline 2\n{E}\n"


def test_apply_block_on_empty_text():
    assert apply_block("", TAG, ["x"]) == f"{B}\nx\n{E}\n"
    assert apply_block("", TAG, ["x"], top=True) == f"{B}\nx\n{E}\n"


def test_apply_block_same_lines_twice_is_idempotent():
    for top in (False, True):
        once = apply_block(HBA, TAG, ["a", "b"], top=top)
        twice = apply_block(once, TAG, ["a", "b"], top=top)
        assert twice == once
        assert twice.count(B) == 1 and twice.count(E) == 1
        assert twice.splitlines().count("a") == 1


def test_apply_block_replaces_in_place():
    for top in (False, True):
        once = apply_block(HBA, TAG, ["old 1", "old 2", "old 3"], top=top)
        twice = apply_block(once, TAG, ["new 1"], top=top)
        assert twice == once.replace("old 1\nold 2\nold 3\n", "new 1\n")
        assert "old" not in twice
        assert twice.count(B) == 1 and twice.count(E) == 1


def test_apply_block_replaces_block_in_the_middle_leaving_the_rest_untouched():
    before = "# head\nlocal all all peer\n\n"
    after = "host all all 10.0.0.0/8 md5\n# tail\n"
    text = before + f"{B}\nold\n{E}\n" + after
    for top in (False, True):
        out = apply_block(text, TAG, ["new a", "new b"], top=top)
        assert out == before + f"{B}\nnew a\nnew b\n{E}\n" + after


def test_apply_block_empty_lines_removes_block():
    for top in (False, True):
        with_block = apply_block(HBA, TAG, ["a", "b"], top=top)
        assert apply_block(with_block, TAG, [], top=top) == HBA


def test_apply_block_remove_only_block_gives_empty_text():
    assert apply_block(f"{B}\nx\n{E}\n", TAG, []) == ""


def test_apply_block_remove_without_block_returns_text_unchanged():
    for text in (HBA, "", "no newline at end", "a\r\nb\r\n"):
        assert apply_block(text, TAG, []) == text


def test_apply_block_keeps_other_tags():
    one = apply_block(HBA, "cluster one", ["1"])
    two = apply_block(one, "cluster two", ["2"])
    assert (
        two
        == HBA
        + f"{BEGIN.format('cluster one')}\n1\n{END.format('cluster one')}\n"
        + f"{BEGIN.format('cluster two')}\n2\n{END.format('cluster two')}\n"
    )
    # replacing / removing one leaves the other alone
    assert (
        apply_block(two, "cluster one", [])
        == HBA + f"{BEGIN.format('cluster two')}\n2\n{END.format('cluster two')}\n"
    )
    assert (
        apply_block(two, "cluster two", ["22"])
        == one + f"{BEGIN.format('cluster two')}\n22\n{END.format('cluster two')}\n"
    )


def test_apply_block_similar_tag_is_a_different_block():
    text = apply_block(HBA, "cluster shots2", ["x"])
    out = apply_block(text, TAG, ["y"])
    assert out == text + f"{B}\ny\n{E}\n"


def test_apply_block_text_without_final_newline():
    out = apply_block("local all all peer", TAG, ["x"])
    assert out == f"local all all peer\n{B}\nx\n{E}\n"


def test_apply_block_keeps_crlf_line_endings_of_the_rest():
    # "The rest of the text is untouched": a file with CRLF line ends keeps them.
    text = "# comment\r\nlocal all all peer\r\n"
    out = apply_block(text, TAG, ["x"])
    assert out.startswith(text)
    assert B in out and E in out


# --- pg_hba and .pgpass ---------------------------------------------------------------


def test_hba_lines_one_per_distinct_address(cl):
    lines = hba_lines(cl, ["10.0.0.3", "10.0.0.2", "10.0.0.3"])
    assert len(lines) == 2
    assert sorted(l.split() for l in lines) == [
        ["hostssl", "appdb", "slony", "10.0.0.2/32", "scram-sha-256"],
        ["hostssl", "appdb", "slony", "10.0.0.3/32", "scram-sha-256"],
    ]
    assert lines == sorted(lines)  # stable order: rerunning gives the same block


def test_hba_lines_empty(cl):
    assert hba_lines(cl, []) == []


def _pgpass_fields(line: str) -> list[str]:
    """Split a .pgpass line the way libpq does: ':' separates, '\\' escapes the next
    character."""
    fields, cur, i = [], "", 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            cur += line[i + 1]
            i += 2
            continue
        if c == ":":
            fields.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    return fields + [cur]


def test_pgpass_lines_plain(cl):
    assert pgpass_lines(cl, "secret") == [
        "10.0.0.1:5432:appdb:slony:secret",
        "db02:5432:appdb:slony:secret",
    ]


def test_pgpass_lines_escape_colon_and_backslash(cl):
    password = "p:a\\ss:\\"
    lines = pgpass_lines(cl, password)
    assert lines[0] == "10.0.0.1:5432:appdb:slony:p\\:a\\\\ss\\:\\\\"
    assert len(lines) == 2
    for line, node in zip(lines, cl.nodes):
        assert _pgpass_fields(line) == [node.dbhost, "5432", "appdb", "slony", password]


# --- Slony ----------------------------------------------------------------------------


def test_conninfo(cl):
    assert conninfo(cl, cl.master) == CONN1
    assert conninfo(cl, cl.slave) == CONN2
    assert "password" not in conninfo(cl, cl.master)


def test_slonik_preamble(cl):
    assert slonik_preamble(cl) == PREAMBLE


def test_slonik_init_everything(cl):
    assert (
        slonik_init(cl, init=True, store_slave=True, paths=[(1, 2), (2, 1)])
        == PREAMBLE
        + "init cluster (id = 1, comment = 'master db01');\n"
        "store node (id = 2, comment = 'slave db02', event node = 1);\n"
        f"store path (server = 1, client = 2, conninfo = '{CONN1}');\n"
        f"store path (server = 2, client = 1, conninfo = '{CONN2}');\n"
    )


def test_slonik_init_only_missing_path(cl):
    out = slonik_init(cl, init=False, store_slave=False, paths=[(2, 1)])
    assert (
        out
        == PREAMBLE + f"store path (server = 2, client = 1, conninfo = '{CONN2}');\n"
    )
    assert "init cluster" not in out and "store node" not in out


def test_slonik_create_set(cl):
    tables = [(1, Table("public.shots")), (2, Table("public.tags", "tags_name_key"))]
    sequences = [(1, "public.shots_id_seq")]
    assert (
        slonik_create_set(cl, tables, sequences, create=True)
        == PREAMBLE
        + "create set (id = 1, origin = 1, comment = 'slony-migrate appdb');\nset add"
        " table (set id = 1, origin = 1, id = 1, fully qualified name ="
        " 'public.shots', comment = 'public.shots');\nset add table (set id = 1,"
        " origin = 1, id = 2, fully qualified name = 'public.tags', key ="
        " 'tags_name_key', comment = 'public.tags');\nset add sequence (set id = 1,"
        " origin = 1, id = 1, fully qualified name = 'public.shots_id_seq', comment ="
        " 'public.shots_id_seq');\n"
    )


def test_slonik_create_set_key_only_for_keyed_tables(cl):
    out = slonik_create_set(
        cl, [(1, Table("public.a")), (2, Table("public.b", "b_key"))], [], create=False
    )
    adds = [l for l in out.splitlines() if l.startswith("set add table")]
    assert len(adds) == 2
    assert "key =" not in adds[0]
    assert "key = 'b_key'" in adds[1]
    assert "create set" not in out


def test_slonik_create_set_uses_set_id():
    c = make_cluster("db01", "db02", set_id=3, database="shotserver04")
    out = slonik_create_set(c, [(5, Table("public.a"))], [(6, "public.s")], create=True)
    assert "create set (id = 3, origin = 1," in out
    assert "set add table (set id = 3, origin = 1, id = 5," in out
    assert "set add sequence (set id = 3, origin = 1, id = 6," in out


def test_slonik_subscribe(cl):
    assert (
        slonik_subscribe(cl)
        == PREAMBLE
        + "subscribe set (id = 1, provider = 1, receiver = 2, forward = yes);\n"
    )


def test_slonik_uninstall(cl):
    assert (
        slonik_uninstall(cl, [2, 1])
        == PREAMBLE + "uninstall node (id = 2);\nuninstall node (id = 1);\n"
    )
    assert slonik_uninstall(cl, [1]) == PREAMBLE + "uninstall node (id = 1);\n"


def test_lock_set_script_is_slonik_s_lock_set_with_a_quicker_wait(cl):
    assert (
        lock_set_script(cl, cl.master, 2.5)
        == "\\echo step: LOCK SET on db01\nSET lock_timeout = 2500;\nSET"
        " statement_timeout = 2500;\nSET deadlock_timeout = 50;\nBEGIN;\nLOCK TABLE"
        ' "_shots".sl_config_lock;\nSELECT "_shots".lockSet(1);\nSELECT'
        " pg_catalog.txid_snapshot_xmax(pg_catalog.txid_current_snapshot()) AS xmax"
        " \\gset\nCOMMIT;\n\\echo step: transactions older than the lock on db01 to"
        " end\nSELECT pg_catalog.format('DO $w$BEGIN WHILE"
        " pg_catalog.txid_snapshot_xmin(pg_catalog.txid_current_snapshot()) < %s"
        " LOOP PERFORM pg_catalog.pg_sleep(0.02); END LOOP; END$w$', :'xmax')"
        " \\gexec\n\\! : >"
        f" {cl.lock_mark}\n\\echo locked: the move may start\n"
    )


def test_move_set_script_syncs_on_the_old_origin_waits_on_the_new_one_then_moves(cl):
    lines = move_set_script(cl, cl.master, cl.slave, 90).splitlines()
    assert (
        lines[0] == f"\\! rm -f {cl.lock_mark}"
    )  # the move has begun: the slon host must not unlock
    assert lines[2:5] == [
        "RESET lock_timeout;",
        "RESET statement_timeout;",
        "RESET deadlock_timeout;",
    ]  # the lock's, on the same psql
    del lines[0], lines[1:4]
    assert lines[:5] == [
        "\\echo step: SYNC on db01",
        "BEGIN;",
        'LOCK TABLE "_shots".sl_event_lock;',
        """SELECT "_shots".createEvent('_shots', 'SYNC') AS ev \\gset""",
        "COMMIT;",
    ]
    assert lines[5] == "\\echo step: db02 to confirm SYNC (1,:ev) within 90 s"
    assert (
        lines[6] == f"\\connect '{CONN2}'"
        and lines[7] == "SET statement_timeout = 90000;"
    )
    assert "WHERE name = 'client_connection_check_interval'" in lines[8]
    # autovacuum cancelled on the new origin just before its slon applies MOVE SET
    assert lines[9] == CANCEL_AUTOVACUUM and "pg_cancel_backend" in lines[9]
    assert (
        'WHILE NOT EXISTS (SELECT FROM "_shots".sl_confirm WHERE con_origin = 1 AND'
        " con_received = 2 AND con_seqno >= %s) LOOP PERFORM pg_catalog.pg_sleep(0.02)"
        in lines[10]
        and lines[10].endswith(":'ev') \\gexec")
    )
    assert lines[11:] == [
        "\\echo step: MOVE SET on db01",
        f"\\connect '{CONN1}'",
        "SET deadlock_timeout = 3000;",
        CANCEL_AUTOVACUUM,
        "BEGIN;",
        'LOCK TABLE "_shots".sl_event_lock, "_shots".sl_config_lock;',
        'SELECT "_shots".moveSet(1, 2);',
        "COMMIT;",
        "\\echo step: MOVE SET committed",
        takeover_watch(cl, cl.slave),
    ]
    back = move_set_script(cl, cl.slave, cl.master, 90)
    assert (
        "con_origin = 2 AND con_received = 1" in back
        and 'SELECT "_shots".moveSet(1, 1);' in back
    )


def test_takeover_watch_looks_at_the_new_origin_bounded_and_cannot_fail_the_move(cl):
    import shlex

    line = takeover_watch(cl, cl.slave)
    assert line.startswith("\\! PGCONNECT_TIMEOUT=2 timeout 2.5 ")
    words = shlex.split(line[len("\\! ") :])
    # a second psql, connected to the new origin as the replication user
    assert words[words.index("-d") + 1] == CONN2
    watch = words[words.index("-c") + 1]
    assert (
        'WHILE NOT EXISTS (SELECT FROM "_shots".sl_set WHERE set_id = 1 AND'
        " set_origin = 2) LOOP" in watch
    )
    assert "interval '500 milliseconds'" in watch and "RAISE EXCEPTION" in watch
    # autovacuum that holds slon's MOVE SET up there is cancelled from the first look
    assert "pg_blocking_pids" in watch and "a.usename = 'slony'" in watch
    # ... as pg_stat_activity is now, not as the watch's transaction first read it
    assert watch.index("pg_stat_clear_snapshot()") < watch.index("pg_blocking_pids")
    assert "pg_catalog.pg_sleep(0.01)" in watch
    # TAKEN_OVER only when the watch saw the move; whatever happens, psql goes on
    assert line.endswith(" 2>/dev/null && echo 'step: taken over' || :")
    back = takeover_watch(cl, cl.master)
    assert "set_origin = 1" in back and CONN1 in back


def test_psql_on_connects_as_the_replication_user_without_a_password(cl):
    command = psql_on(cl, cl.master)
    assert (
        command.endswith(f"-d '{CONN1}'")
        and "ON_ERROR_STOP=1" in command
        and "password" not in command
    )
    assert "/usr/lib/postgresql/*/bin/psql" in command


def test_psql_arg_quotes_as_psql_reads_it():
    assert psql_arg("host=a dbname=b") == "'host=a dbname=b'"
    assert psql_arg("it's") == "'it''s'" and psql_arg("a\\b") == "'a\\\\b'"


def test_slon_conf(cl):
    text = slon_conf(cl, cl.master)
    lines = text.splitlines()
    assert "cluster_name='shots'" in lines
    assert f"conn_info='{CONN1} options=-cdeadlock_timeout=3000'" in lines
    assert "pid_file='/var/run/slony1/shots-node1.pid'" in lines
    assert "password=" not in text.lower()
    assert "pass" not in "\n".join(l for l in lines if not l.startswith("#")).lower()
    assert text.endswith("\n")


def test_slon_conf_slave(cl):
    text = slon_conf(cl, cl.slave)
    assert f"conn_info='{CONN2} options=-cdeadlock_timeout=3000'" in text.splitlines()
    assert "pid_file='/var/run/slony1/shots-node2.pid'" in text.splitlines()


TABLES = [
    Table("public.shots"),
    Table("public.tags", "tags_name_key"),
    Table("public.users"),
]
SEQUENCES = ["public.shots_id_seq", "public.users_id_seq"]


def test_slon_tools_conf_structure(cl):
    text = slon_tools_conf(cl, TABLES, SEQUENCES)
    assert "password" not in text.lower()
    assert "$CLUSTER_NAME = 'shots';" in text
    assert "$MASTERNODE = 1;" in text
    assert re.search(
        r"'pkeyedtables' => \[\n\s+'public\.shots',\n\s+'public\.users',\n\s+\],", text
    )
    assert re.search(
        r"'keyedtables' => \{\n\s+'public\.tags' => 'tags_name_key',\n\s+\},", text
    )
    assert re.search(
        r"'sequences' =>"
        r" \[\n\s+'public\.shots_id_seq',\n\s+'public\.users_id_seq',\n\s+\],",
        text,
    )
    # no Perl arrays (@...) or lists assigned where references are needed
    assert "@" not in text
    assert "'pkeyedtables' => (" not in text and "'sequences' => (" not in text
    adds = [l for l in text.splitlines() if l.startswith("add_node(")]
    assert len(adds) == 2
    assert "node => 1, host => '10.0.0.1'" in adds[0] and "parent" not in adds[0]
    assert "node => 2, host => 'db02'" in adds[1] and "parent => 1" in adds[1]
    assert "config => '/etc/slony1/shots-node1/slon.conf'" in adds[0]


PERL = shutil.which("perl")
PERL_COUNT = (
    "sub add_node { my %p=@_; push @main::NODES, $p{node} } do $ARGV[0] or die $@ ||"
    ' $!; print scalar(@{$SLONY_SETS->{set1}{pkeyedtables}}), "\\n"'
)


def _perl(script: str, path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PERL, "-e", script, str(path)], capture_output=True, text=True, timeout=30
    )


@pytest.mark.skipif(not PERL, reason="perl is not installed")
def test_slon_tools_conf_is_valid_perl(cl, tmp_path):
    path = tmp_path / "slon_tools.conf"
    path.write_text(slon_tools_conf(cl, TABLES, SEQUENCES))
    r = _perl(PERL_COUNT, path.resolve())
    assert r.returncode == 0, r.stderr
    assert r.stdout == "2\n"


@pytest.mark.skipif(not PERL, reason="perl is not installed")
def test_slon_tools_conf_perl_values(cl, tmp_path):
    path = tmp_path / "slon_tools.conf"
    path.write_text(slon_tools_conf(cl, TABLES, SEQUENCES))
    script = (
        'sub add_node { my %p=@_; push @main::NODES, "$p{node}:$p{host}:" . ($p{parent}'
        ' // "-") } do $ARGV[0] or die $@ || $!; my $s = $SLONY_SETS->{set1}; print'
        ' join("|", $CLUSTER_NAME, $MASTERNODE, $s->{set_id}, @main::NODES), "\\n";'
        ' print join("|", @{$s->{pkeyedtables}}), "\\n"; print join("|", map {'
        ' "$_=$s->{keyedtables}{$_}" } sort keys %{$s->{keyedtables}}), "\\n"; print'
        ' join("|", @{$s->{sequences}}), "\\n";'
    )
    r = _perl(script, path.resolve())
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "shots|1|1|1:10.0.0.1:-|2:db02:1",
        "public.shots|public.users",
        "public.tags=tags_name_key",
        "public.shots_id_seq|public.users_id_seq",
    ]


@pytest.mark.skipif(not PERL, reason="perl is not installed")
def test_slon_tools_conf_perl_quoting(cl, tmp_path):
    """Names with a quote or a backslash come back from Perl exactly as given."""
    odd = ['public."it\'s"', 'public."back\\slash"']
    path = tmp_path / "slon_tools.conf"
    path.write_text(
        slon_tools_conf(cl, [Table(odd[0]), Table(odd[1], "k'ey")], [odd[1]])
    )
    script = (
        "sub add_node {} do $ARGV[0] or die $@ || $!; my $s = $SLONY_SETS->{set1};"
        ' print join("\\n", @{$s->{pkeyedtables}}, %{$s->{keyedtables}},'
        ' @{$s->{sequences}}), "\\n";'
    )
    r = _perl(script, path.resolve())
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [odd[0], odd[1], "k'ey", odd[1]]


@pytest.mark.skipif(not PERL, reason="perl is not installed")
def test_slon_tools_conf_empty_lists_are_valid_perl(cl, tmp_path):
    path = tmp_path / "slon_tools.conf"
    path.write_text(slon_tools_conf(cl, [], []))
    r = _perl(PERL_COUNT, path.resolve())
    assert r.returncode == 0, r.stderr
    assert r.stdout == "0\n"


def test_watchdog_script(cl):
    text = watchdog_script(cl, "/usr/lib/postgresql/17/bin/slon")
    assert text.startswith("#!/bin/sh\n")
    assert "flock -n 9" in text
    assert '/usr/lib/postgresql/17/bin/slon -f "$conf"' in text
    assert "conf=/etc/slony1/$instance/slon.conf" in text
    assert "run=/var/run/slony1" in text
    assert "log=/var/log/slony1/slon-$instance.log" in text
    assert "password" not in text.lower()


def test_watchdog_script_uses_given_binary(cl):
    assert "/opt/slony/bin/slon -f" in watchdog_script(cl, "/opt/slony/bin/slon")
    assert "/usr/lib/postgresql/17/bin/slon" not in watchdog_script(
        cl, "/opt/slony/bin/slon"
    )


@pytest.mark.skipif(not shutil.which("sh"), reason="no /bin/sh")
def test_watchdog_script_is_valid_sh(cl, tmp_path):
    path = tmp_path / "slon-watchdog"
    path.write_text(watchdog_script(cl, "/usr/bin/slon"))
    r = subprocess.run(
        ["sh", "-n", str(path)], capture_output=True, text=True, timeout=30
    )  # parse only
    assert r.returncode == 0, r.stderr


def test_a_move_renders_its_scripts_once_for_the_dry_run_and_the_run(cl):
    from dataclasses import FrozenInstanceError

    from fabfile.render.move import LOCKED, Move, MoveResult, Switch

    m = Move(cl, cl.master, cl.slave, Switch(timeout=90, lock_timeout=2.5))
    assert m.lock_script == lock_set_script(cl, cl.master, 2.5)
    assert m.move_script == move_set_script(cl, cl.master, cl.slave, 90)
    assert m.parts() == [(m.lock_script, LOCKED, 3.5), (m.move_script, "", 105)]
    assert (
        m.shown() == f"{m.program} <<'SQL'\n{m.lock_script}-- once it printed"
        f" '{LOCKED}':\n{m.move_script}SQL\n"
    )
    assert m.program == psql_on(cl, cl.master) and m.bound == 92.5
    assert m.unlock_script.endswith("unlock set (id = 1, origin = 1);\n")
    with pytest.raises(FrozenInstanceError):
        m.lock_script = "SELECT 1"
    back = Move(cl, cl.slave, cl.master)
    assert "moveSet(1, 1)" in back.move_script and back.switch == Switch()
    result = MoveResult(0.31, lock=0.05, sync=0.12, move=0.04, takeover=0.1)
    assert (
        result.line()
        == "lock 0.05 s, SYNC confirmed 0.12 s, MOVE SET 0.04 s, takeover 0.10 s"
    )
    assert MoveResult(1.5).line() == ""
