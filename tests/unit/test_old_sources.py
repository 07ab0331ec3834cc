"""Issue 13, item 9: sources back to PostgreSQL 9.4. Each branch on the server's
version, with canned answers (no 9.x server is reachable here: Debian 11's PostgreSQL
13 is the oldest the testbed runs)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from fabfile import facts
from fabfile.remote import Host
from fabfile.render import files, parse, sql
from fabfile.steps import access

from .fakes import FakeHost, canned, output, session

PASSWORD = "correct-horse-battery"
MARK = sql.ROLE_MARK
V96, V11, V15 = 90624, 110022, 150004


class AnsweringHost(FakeHost):
    """A FakeHost whose psql answers from (substring, rows) pairs, first match wins."""

    def __init__(
        self,
        name: str,
        version_num: int,
        answers: list[tuple[str, list[list[str]]]] = (),
    ):
        super().__init__(name)
        self.version_num, self.answers = version_num, list(answers)

    def psql(self, query: str, database: str = "postgres", **kw) -> list[list[str]]:
        super().psql(query, database)
        return next((rows for key, rows in self.answers if key in query), [])


@pytest.mark.parametrize(
    "num, major",
    [(90400, "9.4"), (90624, "9.6"), (100023, "10"), (150004, "15"), (170006, "17")],
)
def test_major_is_spelled_as_debian_names_packages(num, major):
    assert parse.major(num) == major


def test_pg_major_of_a_96_server_names_its_packages():
    assert facts.pg_major(AnsweringHost("db01", V96)) == "9.6"


# --- psql without --csv (clients before 12) -------------------------------------------


def test_unaligned_output_reads_like_csv():
    text = '1\0o\'brien\x1e2\0a\nvalue, with "quotes"\x1e3\0\n'
    assert parse.unaligned(text) == [
        ["1", "o'brien"],
        ["2", 'a\nvalue, with "quotes"'],
        ["3", ""],
    ]
    assert parse.unaligned("") == []
    assert parse.unaligned("\n") == [[""]]  # one row, one empty value


def test_unaligned_output_that_cannot_be_split_is_refused_not_guessed():
    assert parse.unaligned("1\0a\x1e2\n") is None  # a value held the record separator


def answers(*results):
    """Stand-ins for _psql: each call returns the next result."""
    results = list(results)
    calls = []

    def fake(self, query, database, timeout, csv_rows, variables):
        calls.append(self.csv)
        return results.pop(0)

    return fake, calls


def test_psql_falls_back_to_unaligned_output_when_the_client_has_no_csv(monkeypatch):
    fake, calls = answers(
        SimpleNamespace(
            failed=True,
            ok=False,
            stdout="",
            stderr="/usr/lib/postgresql/9.6/bin/psql: unrecognized "
            "option '--csv'\nTry \"psql --help\" for more information.",
        ),
        SimpleNamespace(failed=False, ok=True, stdout="public.t\x0042\n", stderr=""),
        SimpleNamespace(failed=False, ok=True, stdout="x\n", stderr=""),
    )
    monkeypatch.setattr(Host, "_psql", fake)
    h = Host("db01")
    assert h.psql("SELECT 1") == [["public.t", "42"]]
    assert h.psql("SELECT 2") == [["x"]]
    assert calls == [True, False, False]  # asked with --csv once, then remembered


def test_psql_refuses_output_it_cannot_split(monkeypatch):
    fake, _ = answers(
        SimpleNamespace(
            failed=True, ok=False, stdout="", stderr="psql: unrecognized option '--csv'"
        ),
        SimpleNamespace(failed=False, ok=True, stdout="a\0b\x1ec\n", stderr=""),
    )
    monkeypatch.setattr(Host, "_psql", fake)
    with pytest.raises(Exception) as e:
        Host("db01").psql("SELECT 1")
    assert "version 12 or newer" in e.value.fix


def test_unaligned_options_need_no_csv():
    h = Host("db01")
    h.csv = False
    seen = []
    h.sudo = lambda command, **kw: seen.append(command)
    h._psql("SELECT 1", "postgres", None, True, None)
    assert "--csv" not in seen[0] and " -A -z -R " in seen[0]


# --- catalog branches -----------------------------------------------------------------


def test_sessions_are_filtered_by_backend_type_from_10_only():
    old, new = AnsweringHost("db01", V96), AnsweringHost("db01", V15)
    facts.long_transactions(old, 5), facts.long_transactions(new, 5)
    assert (
        "backend_type" not in old.commands[0]
        and "backend_type = 'client backend'" in new.commands[0]
    )
    facts.transactions_before(old, "2026-11-26 12:00:00+00")
    assert "backend_type" not in old.commands[1]


def test_identity_and_generated_columns_are_not_asked_of_servers_that_have_none():
    cl = session().cluster
    h96, h11 = AnsweringHost("db01", V96), AnsweringHost("db01", V11)
    assert facts.identity_columns(h96, cl) == {} and h96.commands == []
    assert facts.generated_columns(h11, cl) == [] and h11.commands == []
    facts.identity_columns(h11, cl)
    assert "attidentity" in h11.commands[0]


def test_sequences_are_read_one_by_one_before_10():
    cl = session().cluster
    h = AnsweringHost(
        "db01",
        V96,
        [
            ("UNION ALL", [["public.a_id_seq", "7"], ["public.b_id_seq", ""]]),
            ("sl_sequence", [["public.a_id_seq"], ["public.b_id_seq"]]),
        ],
    )
    assert facts.set_sequences(h, cl) == {"public.a_id_seq": 7, "public.b_id_seq": 0}
    assert "pg_sequences" not in " ".join(h.commands)
    assert (
        "SELECT 'public.a_id_seq', CASE WHEN is_called THEN last_value END FROM public.a_id_seq UNION ALL"
        in h.commands[1]
    )  # as pg_sequences says: NULL until first used
    new = AnsweringHost("db01", V15)
    facts.set_sequences(new, cl)
    assert "pg_sequences" in new.commands[0]


def test_copy_progress_on_a_receiver_before_14_counts_tables_done_only(monkeypatch):
    from fabfile.facts import slony

    monkeypatch.setattr(slony, "slon_log", lambda *a: "")
    monkeypatch.setattr(slony, "epoch_now", lambda *a: 0.0)
    cl = session().cluster
    master = AnsweringHost("db01", V96, [("sl_table", [["public.t", "8192"]])])
    slave = AnsweringHost("db02", 130016)
    assert slony.copy_progress(master, slave, slave, cl)["current_bytes"] == 0
    assert slave.commands == []


def test_hba_rules_are_checked_only_where_postgresql_can_say():
    h96, h15 = (
        AnsweringHost("db01", V96),
        AnsweringHost("db01", V15, [("pg_hba_file_rules", [["3", "bad"]])]),
    )
    assert facts.hba_errors(h96) == [] and h96.commands == []
    assert facts.hba_errors(h15) == [("3", "bad")]


def test_catalog_sql_uses_nothing_newer_than_94():
    cl = session().cluster
    h = AnsweringHost("db01", V96)
    (
        facts.schema_objects(h, cl),
        facts.table_keys(h, cl),
        facts.tables_with_rows(h, "shop", ["public.t"]),
    )
    text = " ".join(h.commands) + sql.fence_database("shop")
    # 9.5, or text argument 9.6
    for newer in ("regnamespace", "regrole", "array_position", "to_regclass"):
        assert newer not in text


# --- passwords, pg_hba.conf, float digits ---------------------------------------------


def test_before_10_the_password_is_md5_and_the_rule_says_md5():
    verifier = sql.password_verifier(V96, PASSWORD, "slony")
    assert verifier == "md5" + hashlib.md5((PASSWORD + "slony").encode()).hexdigest()
    assert sql.password_matches(
        verifier, PASSWORD, "slony"
    ) and not sql.password_matches(verifier, "x", "slony")
    assert sql.password_verifier(V15, PASSWORD, "slony").startswith("SCRAM-SHA-256$")
    cl = session().cluster
    assert files.hba_lines(cl, ["10.0.0.2"], files.auth_method(V96))[0].endswith(
        "10.0.0.2/32    md5"
    )
    assert files.hba_lines(cl, ["10.0.0.2"], files.auth_method(V15))[0].endswith(
        "scram-sha-256"
    )


def test_role_plan_before_12_wants_extra_float_digits():
    cl = session().cluster
    role = (True, True, sql.md5_verifier(PASSWORD, "slony"), MARK)
    assert access.role_plan(cl, "db01", None, PASSWORD, version_num=V96) == (
        "create role slony (superuser, md5 password, extra_float_digits 3, search_path"
        " pg_catalog)",
        False,
    )
    assert access.role_plan(cl, "db01", role, PASSWORD, version_num=V96) == (
        "update role slony (superuser, login, md5 password, extra_float_digits 3,"
        " search_path pg_catalog)",
        True,
    )
    assert (
        access.role_plan(
            cl,
            "db01",
            role,
            PASSWORD,
            version_num=V96,
            settings=["extra_float_digits=3", "search_path=pg_catalog"],
        )
        is None
    )


def test_users_on_a_96_master_stores_md5_and_sets_float_digits(monkeypatch):
    s = session()
    s._password = PASSWORD
    s.hosts["db01"] = AnsweringHost("db01", V96)
    canned(
        monkeypatch,
        role=None,
        postgres_home="/var/lib/postgresql",
        file_stat=("postgres:postgres", "600"),
    )
    access.users(s)
    old, new = s.hosts["db01"].commands[0], s.hosts["db02"].commands[0]
    assert (
        "PASSWORD 'md5" in old
        and 'ALTER ROLE "slony" SET extra_float_digits = 3;' in old
    )
    assert "PASSWORD 'SCRAM-SHA-256$" in new and "extra_float_digits" not in new
    assert PASSWORD not in old + new + output(s)


@pytest.mark.parametrize(
    "versions, digits", [((V15, 170006), 1), ((V96, V11), 3), ((V96, 170006), 0)]
)
def test_verify_compares_floats_in_the_one_format_both_servers_print(versions, digits):
    assert parse.float_digits(*versions) == digits
    assert f"SET extra_float_digits = {digits};" in sql.checksum_sql(
        {}, {}, 1000, parse.float_digits(*versions)
    )


def test_checksums_are_one_statement():
    text = sql.checksum_sql(
        {"public.a": [("id", "integer")], "public.b": [("k", "text")]}, {}, 1000
    )
    assert text.count("(SELECT ") == 2 and "\nUNION ALL (SELECT 'public.b'" in text


# --- issue 21: the application's roles from an older master ---------------------------


def test_role_facts_ask_only_what_an_older_server_has():
    cl = session().cluster
    old = AnsweringHost(
        "db01",
        90400,
        [("FROM pg_authid", [["r", "f", "t", "f", "f", "t", "f", "false", "-1", "",
                               "md5" + "0" * 32, ""]])],
    )  # fmt: skip
    assert facts.roles(old)["r"].bypassrls is False
    facts.named_roles(old, cl)
    facts.memberships(old)
    facts.collations_used(old, cl)
    asked = "\n".join(old.commands)
    for newer in ("rolbypassrls", "pg_statistic_ext", "pg_policy", "inherit_option",
                  "collprovider", "colliculocale", "colllocale"):  # fmt: skip
        assert newer not in asked, newer
    new = AnsweringHost("db01", 170000)
    facts.named_roles(new, cl)
    facts.memberships(new)
    facts.collations_used(new, cl)
    asked = "\n".join(new.commands)
    for there in ("pg_statistic_ext", "pg_policy", "inherit_option", "colllocale"):
        assert there in asked, there
    assert "colliculocale" not in asked
