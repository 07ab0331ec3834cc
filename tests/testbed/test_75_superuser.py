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


# Where slon evaluates an expression while it applies rows, and what the owner can put
# there: every carrier with every payload it accepts (an index takes immutable code only).
PAYLOADS = {
    "fn": ("cx.f({x})", True),
    "op": "({x} OPERATOR(cx.#@#) 1)",
    "xml": (
        "length(pg_catalog.query_to_xml('SELECT 1', false, false, '')::text)",
        False,
    ),
    "cfg": ("length(pg_catalog.set_config('work_mem', '4MB', true))", False),
}


def payload(name: str) -> tuple[str, bool]:
    value = PAYLOADS[name]
    return (value, True) if isinstance(value, str) else value


def carriers(p: str) -> list[tuple[str, str, str]]:
    """(object that must be named, statement that makes it, column that uses it) for
    payload p."""
    expr, immutable = payload(p)
    e = expr.format
    made = [
        (f"constraint c_{p} on cx.t", f"ALTER TABLE cx.t ADD CONSTRAINT c_{p} CHECK ({e(x='v')} IS NOT NULL);", ""),
        (f"the default of cx.t.d_{p}", f"ALTER TABLE cx.t ADD COLUMN d_{p} integer DEFAULT {e(x='1')};", ""),
        (f"constraint dc_{p}_check of domain cx.dc_{p}", f"CREATE DOMAIN cx.dc_{p} AS integer CHECK ({e(x='VALUE')} IS NOT NULL);", f"dc_{p}"),
        (f"the default of domain cx.dd_{p}", f"CREATE DOMAIN cx.dd_{p} AS integer DEFAULT {e(x='1')};", f"dd_{p}"),
        # reached only through another type: a domain over it, an array, a composite
        (f"constraint dn_{p}_check of domain cx.dn_{p}", f"CREATE DOMAIN cx.dn_{p} AS integer CHECK ({e(x='VALUE')} IS NOT NULL); CREATE DOMAIN cx.dnn_{p} AS cx.dn_{p};", f"dnn_{p}"),
        (f"constraint da_{p}_check of domain cx.da_{p}", f"CREATE DOMAIN cx.da_{p} AS integer CHECK ({e(x='VALUE')} IS NOT NULL);", f"da_{p}[]"),
        (f"constraint dk_{p}_check of domain cx.dk_{p}", f"CREATE DOMAIN cx.dk_{p} AS integer CHECK ({e(x='VALUE')} IS NOT NULL); CREATE TYPE cx.k_{p} AS (x cx.dk_{p});", f"k_{p}"),
    ]  # fmt: skip
    if immutable:
        made += [
            (f"index cx.ie_{p} on cx.t", f"CREATE INDEX ie_{p} ON cx.t (({e(x='v')}));", ""),
            (f"index cx.ip_{p} on cx.t", f"CREATE INDEX ip_{p} ON cx.t (id) WHERE {e(x='v')} > 0;", ""),
        ]  # fmt: skip
    return made


CALLED = {"fn": "cx.f(integer)", "op": "cx.plus(integer,integer)",
          "xml": "query_to_xml(", "cfg": "set_config("}  # fmt: skip


def test_every_expression_slon_evaluates_is_checked_against_a_whitelist(bed):
    """Generated: each carrier of an expression slon evaluates while applying rows, with
    each payload the owner can put in it (his function, his operator, a built-in that
    runs SQL text), and a range type whose subtype difference function is his (a GiST
    index calls it): preflight names every one, and nothing of the built-in controls."""
    bed.reset()
    setup = [
        "CREATE SCHEMA cx;",
        "CREATE FUNCTION cx.f(integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS"
        " $f$BEGIN RETURN $1; END$f$;",
        "CREATE FUNCTION cx.plus(integer, integer) RETURNS integer LANGUAGE plpgsql"
        " IMMUTABLE AS $f$BEGIN RETURN $1 + $2; END$f$;",
        "CREATE OPERATOR cx.#@# (LEFTARG = integer, RIGHTARG = integer, FUNCTION = cx.plus);",
        "CREATE FUNCTION cx.diff(integer, integer) RETURNS double precision LANGUAGE"
        " plpgsql IMMUTABLE AS $f$BEGIN RETURN $1 - $2; END$f$;",
        "CREATE TYPE cx.r AS RANGE (subtype = integer, subtype_diff = cx.diff);",
        "CREATE TABLE cx.t (id integer PRIMARY KEY, v integer, rr cx.r,"
        " ok_a integer CHECK (ok_a > 0), ok_b text DEFAULT now()::text);",
        "CREATE INDEX ok_i ON cx.t (lower(ok_b)) WHERE ok_a > 0;",
        "CREATE INDEX ok_g ON cx.t USING gist (rr);",
    ]
    expected = {"the subtype difference function of cx.r": "cx.diff(integer,integer)"}
    for p in PAYLOADS:
        for what, sql, column in carriers(p):
            setup.append(sql)
            if column:
                name = column.replace("[]", "")
                setup.append(f"ALTER TABLE cx.t ADD COLUMN u_{name} cx.{column};")
            expected[what] = CALLED[p]
    as_johann(bed, "db01", "\n".join(setup))
    try:
        result = bed.inv("preflight", *ARGS, check=False)
        assert result.returncode == 1, result.stdout
        named = [line for line in result.stderr.splitlines() if " calls " in line]
        missed = [
            f"{what} calls {fn}"
            for what, fn in expected.items()
            if not any(what + " calls " in line and fn in line for line in named)
        ]
        assert not missed, "\n".join(missed) + "\n---\n" + result.stderr
        assert len(expected) > 30
        assert not [line for line in named if "ok_" in line], named
    finally:
        bed.sql("db01", "DROP SCHEMA IF EXISTS cx CASCADE")
