"""The testbed itself: two real servers (and the app host) over SSH, as a fresh
migration finds them."""

import subprocess
from pathlib import Path

import pytest

from fabfile import facts
from fabfile.errors import StepError
from fabfile.remote import Hosts
from testbed import compose as tb


def test_every_host_answers_over_ssh_with_sudo(bed):
    for name in ("db01", "db02", "app"):
        out = bed[name].run("hostname; sudo -n id -u").stdout.split()
        assert out == [name, "0"]


def test_postgresql_versions(bed):
    assert facts.pg_major(bed["db01"]) == "15"
    assert facts.pg_major(bed["db02"]) == "17"
    assert facts.os_release(bed["db01"])["VERSION_ID"] == "12"
    assert facts.os_release(bed["db02"])["VERSION_ID"] == "13"


def test_seeded_rows_on_db01_and_empty_db02(bed):
    counts = dict(
        bed.sql("db01", "SELECT relname, n_live_tup FROM pg_stat_user_tables")
    )
    assert int(bed.sql("db01", "SELECT count(*) FROM auth_message")[0][0]) > 10000
    assert {
        "auth_user",
        "auth_group",
        "auth_group_permissions",
        "auth_message",
        "websites_domain",
        "websites_website",
    } <= set(counts)
    assert bed.sql(
        "db01",
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname ="
        " 'shotserver04'",
        "postgres",
    ) == [["johann"]]
    assert not facts.database_exists(bed["db02"], "shotserver04")


def test_no_slony_installed_yet(bed):
    for name in ("db01", "db02"):
        h = bed[name]
        assert facts.slony_modules(h) == []
        assert facts.slony_tool(h, "slonik") is None
        assert facts.slony_tool(h, "slon") is None


def test_postgres_user_not_reachable_over_ssh(bed):
    result = subprocess.run(
        [
            "ssh",
            "-F",
            bed.ssh_config,
            "-o",
            "BatchMode=yes",
            "-l",
            "postgres",
            "db01",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "Permission denied" in result.stderr


def test_unknown_host_key_is_refused(bed, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(
        open(bed.ssh_config).read().replace("known_hosts", "no_such_known_hosts")
    )
    with Hosts(str(config)) as hosts:
        with pytest.raises(StepError, match="host key unknown"):
            hosts["db01"].run("true")


def test_an_ssh_config_with_include_and_proxyjump(bed, tmp_path):
    """The ssh config as OpenSSH reads it (ssh -G): the testbed's hosts from an included
    file, and db02 reached through db01 by its name on the testbed's network, its host
    key checked there too."""
    state = tb.current().state
    (tmp_path / "config.d").mkdir()
    (tmp_path / "config.d" / "testbed").write_text(Path(bed.ssh_config).read_text())
    pub = (state / "db02" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"db02 {' '.join(pub)}\n")
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Include {tmp_path}/config.d/*\n"
        "Host inner-db02\n  HostName db02\n  User admin\n  ProxyJump db01\n"
        f"  IdentityFile {state / 'id_ed25519'}\n  UserKnownHostsFile {known}\n"
    )
    with Hosts(str(config)) as hosts:
        assert hosts["db01"].run("hostname").stdout.strip() == "db01"
        assert hosts["inner-db02"].run("hostname").stdout.strip() == "db02"


def test_queries_share_one_psql_per_database_and_nothing_carries_over(bed):
    """remote.PsqlPipe: one psql per host and database for a run; each query starts
    from a clean session, an error is the query's own, and a psql whose backend was
    terminated is replaced."""
    with Hosts(bed.ssh_config) as hosts:
        h = hosts["db01"]
        pid = h.value("SELECT pg_backend_pid()")
        assert h.value("SELECT pg_backend_pid()") == pid  # the same session
        assert h.psql(
            "SET ROLE johann; SET statement_timeout = '1s'; SELECT current_user"
        ) == [["johann"]]
        assert h.psql(
            "SELECT current_user, current_setting('statement_timeout'),"
            " current_setting('search_path')"
        ) == [["postgres", "0", "pg_catalog"]]
        assert h.psql("BEGIN; SELECT 1") == [
            ["1"]
        ]  # a transaction left open is rolled back at once
        assert bed["db01"].psql(
            f"SELECT state FROM pg_stat_activity WHERE pid = {pid}"
        ) == [["idle"]]
        assert h.value("SELECT pg_backend_pid()") == pid
        with pytest.raises(StepError) as e:
            h.psql("SELECT 1; SELECT 1/0; SELECT 2")
        assert e.value.message == "psql on database postgres: ERROR:  division by zero"
        assert h.psql("SELECT E'two\\nlines', NULL::text, ''") == [
            ["two\nlines", "", ""]
        ]
        pid = h.value("SELECT pg_backend_pid()")
        bed["db01"].psql(f"SELECT pg_terminate_backend({pid})")
        assert h.value("SELECT 42") == "42"
        with pytest.raises(StepError) as e:
            h.psql("SELECT 1", "nosuchdb")
        assert 'database "nosuchdb" does not exist' in e.value.message
        with pytest.raises(StepError) as e:
            h.psql("SELECT pg_sleep(5)", timeout=1)
        assert "timed out after 1 s" in e.value.message
        assert h.value("SELECT 'after the timeout'") == "after the timeout"
