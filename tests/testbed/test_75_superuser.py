"""Issue 20: nobody becomes superuser or root through a migration. The application's
owner (johann, no superuser) attacks each class broadly, and the whole lifecycle runs
through it: shadows of every pg_catalog function and operator the tool, slonik and slon
call (generated: tests/testbed/trojans.sql), a cast from each table's row type to text,
`ALTER DATABASE ... SET search_path = public, pg_catalog`, a materialized view over his
code; then a cluster schema made in advance, and an extension renamed to shell syntax
by db01's postgres account. No marker of superuser execution may appear on either
server, and verify must still see a row changed behind Slony's back in a table with a
column named `t`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fabfile import facts

ARGS = ("--master", "db01", "--slave", "db02")
HERE = Path(__file__).resolve().parent
DB = "shotserver04"


def markers(bed) -> dict[str, str]:
    """The marker files the owner's code left, by server: what ran as a superuser."""
    found = {}
    for name in ("db01", "db02"):
        out = bed[name].run("cat /tmp/pwned-* 2>/dev/null; true", check=False).stdout
        if out.strip():
            found[name] = out
    return found


def as_johann(bed, host: str, sql: str, db: str = DB) -> None:
    """The test's own SQL with the owner's rights: what it creates is his, as if he had
    run it himself (SET SESSION AUTHORIZATION)."""
    error = bed[host].try_psql(
        f"SET SESSION AUTHORIZATION johann;\n{sql}", db, app=True
    )
    assert not error, error


def called_names(bed) -> list[str]:
    """Every identifier followed by '(' in Slony's SQL and in slon's and slonik's
    binaries on the slon host, and in the tool's own code: what a shadow must cover
    (trojans.sql keeps those that are pg_catalog functions)."""
    text = (
        bed["db02"]
        .run(
            "cat /usr/share/slony1/slony1_*.sql /usr/share/postgresql/*/slony1_*.sql 2>/dev/null;"
            " for b in $(command -v slon slonik); do grep -aoE '[a-z_][a-z0-9_]*[(]' $b; done",
            check=False,
        )
        .stdout
    )
    assert "moveset_int" in text.lower(), "Slony's SQL was not found on db02"
    for path in (HERE.parent.parent / "fabfile").rglob("*.py"):
        text += path.read_text()
    return sorted(set(re.findall(r"([a-z_][a-z0-9_]*)\s*\(", text.lower())))


@pytest.fixture
def hostile_owner(bed):
    bed.reset()
    bed.inv("install", *ARGS)  # Slony's SQL and binaries, to read the names from
    names = "{" + ",".join(called_names(bed)) + "}"
    as_johann(
        bed,
        "db01",
        "CREATE TABLE public.tcol (id integer PRIMARY KEY, t text, v integer);\n"
        "INSERT INTO public.tcol SELECT i, 'row ' || i, i FROM generate_series(1, 50) i;\n"
        f"SET trojans.names = '{names}';\n"
        + (HERE / "trojans.sql").read_text()
        + "\nCREATE FUNCTION public.mv_row() RETURNS integer LANGUAGE plpgsql AS"
        " $f$BEGIN PERFORM public._pw('matview query'); RETURN 1; END$f$;\n"
        "CREATE MATERIALIZED VIEW public.mv_trojan AS SELECT public.mv_row() AS one;",
    )
    count = bed.sql(
        "db01",
        "SELECT count(*) FROM pg_proc WHERE proname LIKE '\\_op\\_%' OR "
        "prosrc LIKE '%public._pw(%'",
    )[0][0]
    assert int(count) > 200, f"only {count} shadows made"
    yield bed
    bed.reset()
    bed.sql(
        "db01",
        "DROP MATERIALIZED VIEW IF EXISTS public.mv_trojan;"
        " DROP TABLE IF EXISTS public.tcol, public.ddl_trojan CASCADE",
    )
    bed["db01"].psql(f"ALTER DATABASE {DB} RESET search_path")
    bed["db01"].psql(
        "DO $d$DECLARE f record; BEGIN FOR f IN SELECT oid::regprocedure AS p FROM pg_proc"
        " WHERE pronamespace = 'public'::regnamespace AND (prosrc LIKE '%public._pw(%'"
        " OR proname = '_pw') LOOP EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE',"
        " f.p); END LOOP; END$d$",
        DB,
    )
    for name in ("db01", "db02"):
        bed[name].run("sudo -n rm -f /tmp/pwned-*", check=False)


def test_the_lifecycle_runs_no_code_of_the_owner_as_a_superuser(
    hostile_owner, tmp_path
):
    bed = hostile_owner
    assert bed.inv("preflight", *ARGS).returncode == 0
    bed.inv("migrate", *ARGS, timeout=900)
    # The new server's database: the same setting, made by its owner there too.
    as_johann(bed, "db02", f"ALTER DATABASE {DB} SET search_path = public, pg_catalog")
    assert markers(bed) == {}
    # A row changed behind Slony's back, in the table with a column named t.
    bed["db02"].psql(
        "SET session_replication_role = replica; UPDATE public.tcol SET v = -1 WHERE id = 7",
        DB,
    )
    refused = bed.inv("verify", *ARGS, check=False)
    assert refused.returncode == 1 and "table public.tcol" in refused.stderr, (
        refused.stderr
    )
    bed["db02"].psql(
        "SET session_replication_role = replica; UPDATE public.tcol SET v = 7 WHERE id = 7",
        DB,
    )
    assert "tables" in bed.inv("verify", *ARGS).stdout
    change = tmp_path / "change.sql"
    change.write_text(
        "ALTER TABLE public.tcol ADD COLUMN note text CHECK (length(note) < 100);\n"
        "CREATE TABLE public.ddl_trojan (id serial PRIMARY KEY, v text DEFAULT now()::text);\n"
    )
    bed.inv("ddl", *ARGS, "--file", str(change), timeout=600)
    # Code added later on the subscriber: the switchover names it and refuses.
    bed["db02"].psql(
        "ALTER TABLE public.tcol ADD CONSTRAINT late CHECK (public.mv_row() = 1) NOT VALID",
        DB,
    )
    refused = bed.inv("switchover", *ARGS, check=False)
    assert (
        refused.returncode == 1
        and "constraint late on public.tcol calls public.mv_row()" in (refused.stderr)
    ), refused.stderr
    assert "nothing was locked" in refused.stderr
    bed["db02"].psql("ALTER TABLE public.tcol DROP CONSTRAINT late", DB)
    out = bed.inv("switchover", *ARGS, timeout=600).stdout
    assert (
        "set 1 moved to db02" in out
        and "refresh materialized view public.mv_trojan" in out
    )
    bed.inv("switchback", *ARGS, timeout=600)
    refused = bed.inv("failover", *ARGS, "--yes", check=False)
    assert refused.returncode == 1 and "still answers" in refused.stderr, refused.stderr
    bed.inv("switchover", *ARGS, timeout=600)
    bed.inv("finish", *ARGS, "--yes", timeout=600)
    assert markers(bed) == {}, markers(bed)
    for name in ("db01", "db02"):
        assert bed.sql(
            name, "SELECT rolsuper FROM pg_roles WHERE rolname = 'johann'"
        ) == [["f"]]


def test_a_cluster_schema_made_in_advance_is_refused_unread(hostile_owner):
    bed = hostile_owner
    as_johann(
        bed,
        "db01",
        "CREATE SCHEMA _replication; CREATE FUNCTION _replication.trap() RETURNS bigint"
        " LANGUAGE plpgsql AS $f$BEGIN PERFORM public._pw('cluster view'); RETURN 1; END$f$;"
        " CREATE VIEW _replication.sl_local_node_id AS SELECT _replication.trap() AS last_value;",
    )
    try:
        for command in ("preflight", "migrate"):
            result = bed.inv(command, *ARGS, check=False)
            assert result.returncode == 1, result.stdout
            assert (
                "schema _replication in shotserver04 is owned by johann"
                in result.stderr
            )
        assert markers(bed) == {}
        assert not facts.database_exists(bed["db02"], DB)
    finally:
        bed.sql("db01", "DROP SCHEMA IF EXISTS _replication CASCADE")


def test_an_extension_renamed_to_shell_syntax_runs_nothing_on_db02(bed):
    """db01's postgres account renames an extension: its name reaches no shell on db02,
    preflight names it, migrate refuses before any change."""
    bed.reset()
    name = "citext$(touch /tmp/pwned-extension)"
    bed["db01"].psql("CREATE EXTENSION IF NOT EXISTS citext", DB)
    bed["db01"].psql(
        f"UPDATE pg_extension SET extname = '{name}' WHERE extname = 'citext'", DB
    )
    try:
        for command in ("preflight", "migrate"):
            result = bed.inv(command, *ARGS, check=False)
            assert result.returncode == 1, result.stdout
            assert "cannot be part of a Debian package name" in result.stderr, (
                result.stderr
            )
        assert markers(bed) == {}
        assert (
            json.dumps(name)[1:-1] not in bed["db02"].run("ls /tmp", check=False).stdout
        )
    finally:
        bed["db01"].psql(
            f"UPDATE pg_extension SET extname = 'citext' WHERE extname = '{name}'", DB
        )
        bed["db01"].psql("DROP EXTENSION IF EXISTS citext", DB)
