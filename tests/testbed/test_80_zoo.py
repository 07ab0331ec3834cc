"""Issue 13: a schema like current applications have (the "zoo": a second schema,
identity columns ALWAYS and BY DEFAULT, a range-partitioned table, a materialized view,
a mixed-case table, an extension type, views, functions, a domain, an enum) replicated,
switched over and finished; stored generated columns refused before anything changes; a
failing initial copy is an error, not a wait.
"""

from __future__ import annotations

import pytest

from testbed.compose import DOCKER

ARGS = ("--master", "db01", "--slave", "db02")
COLUMNS = """SELECT c.oid::regclass::text, a.attname, format_type(a.atttypid, a.atttypmod), a.attidentity,
                    a.attgenerated, a.attnotnull
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'billing' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2"""


@pytest.fixture
def zoo(bed):
    bed.reset()
    error = bed["db01"].try_psql(
        (DOCKER / "zoo.sql").read_text(), "shotserver04", app=True
    )
    assert not error, error
    yield bed
    bed.reset()
    bed.sql(
        "db01", "DROP SCHEMA IF EXISTS billing CASCADE; DROP EXTENSION IF EXISTS citext"
    )


def test_the_zoo_replicates_switches_over_and_finishes_with_the_same_schema(zoo):
    bed = zoo
    before = bed.sql("db01", COLUMNS)
    pre = bed.inv("preflight", *ARGS).stdout
    assert "ok identity columns: GENERATED ALWAYS: billing.invoice.id" in pre, pre
    assert (
        "ok materialized view billing.totals: rows not replicated: refreshed (as"
        " johann, at most 600 s)" in pre
    )
    assert (
        "ok schema only: definitions copied by the schema step" in pre
        and "partitioned table" in pre
    )
    assert "ok extensions: available on db02: citext" in pre
    bed.inv("migrate", *ARGS)
    assert bed.sql(
        "db02",
        "SELECT attidentity FROM pg_attribute WHERE attrelid ="
        " 'billing.invoice'::regclass AND attname = 'id'",
    ) == [["d"]]  # BY DEFAULT while db02 subscribes
    bed.sql(
        "db01",
        """INSERT INTO billing.invoice (customer, amount) VALUES ('new', 42);
        UPDATE billing.line SET qty = qty + 1 WHERE id % 7 = 0;
        INSERT INTO billing.event (at, payload) VALUES ('2026-12-31', '{}'), ('2027-02-01', '{}');
        INSERT INTO billing."Customer Notes" (email) VALUES ('C@example.org');
        DELETE FROM billing.line WHERE id % 11 = 0;""",
    )
    bed.wait_same(timeout=60)
    bed.inv("verify", *ARGS)
    out = bed.inv("switchover", *ARGS, timeout=300).stdout
    assert (
        "identity column(s) billing.invoice.id: GENERATED ALWAYS (as an origin)" in out
    ), out
    assert "refresh materialized view billing.totals (as johann, at most" in out
    assert bed.sql("db02", "SELECT n FROM billing.totals WHERE customer = 'new'") == [
        ["1"]
    ]
    bed.sql(
        "db02", "INSERT INTO billing.invoice (customer, amount) VALUES ('after', 7)"
    )  # ALWAYS works on db02
    refused = bed["db02"].try_psql(
        "INSERT INTO billing.invoice (id, customer, amount) VALUES (99999, 'x', 1)",
        "shotserver04",
        app=True,
    )
    assert "cannot insert a non-DEFAULT value into column" in refused, refused
    bed.wait_same(
        timeout=60
    )  # the row from db02 reached db01, whose identity is BY DEFAULT now
    bed.inv("verify", *ARGS)
    bed.inv("finish", *ARGS, "--yes")
    assert bed.sql("db02", COLUMNS) == before
    # the schema step created citext on db02 as the replication role: it went to
    # postgres, the role is gone
    assert bed.sql(
        "db02",
        "SELECT pg_get_userbyid(extowner) FROM pg_extension WHERE extname = 'citext'",
    ) == [["postgres"]]
    assert bed.sql("db02", "SELECT count(*) FROM pg_roles WHERE rolname = 'slony'") == [
        ["0"]
    ]
    assert bed.sql("db01", COLUMNS) == before


def test_a_stored_generated_column_is_refused_before_anything_changes(zoo):
    bed = zoo
    bed.sql(
        "db01",
        "SET ROLE johann; CREATE TABLE billing.priced (id integer PRIMARY KEY, qty"
        " integer NOT NULL, price numeric NOT NULL, total numeric GENERATED ALWAYS AS"
        " (qty * price) STORED)",
    )
    bed.refuse_before_any_change(
        "[db01] preflight: FAIL column billing.priced.total: a stored generated column",
        *ARGS,
    )
    assert "DROP EXPRESSION" in bed.inv("preflight", *ARGS, check=False).stderr


def test_a_failing_initial_copy_is_an_error_with_slons_words(bed):
    bed.reset()
    bed.steps_before("subscribe", *ARGS)
    bed.sql(
        "db02",
        "ALTER TABLE public.auth_group ADD CONSTRAINT no_rows_here CHECK (false) NOT"
        " VALID",
    )
    try:
        result = bed.inv(
            "subscribe",
            *ARGS,
            "--wait",
            "--copy-retries",
            "1",
            check=False,
            timeout=300,
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert (
            "initial copy failed (attempt 1): " in result.stdout
            and "no_rows_here" in result.stdout
        ), result.stdout
        assert (
            "error: db02: the initial copy of set 1 failed 1 times: " in result.stderr
        )
        assert "no_rows_here" in result.stderr and "inv logs --node 2" in result.stderr
        assert not bed.status(*ARGS)["subscription"]["active"]
    finally:
        bed.sql(
            "db02",
            "ALTER TABLE public.auth_group DROP CONSTRAINT IF EXISTS no_rows_here",
        )
    assert (
        "initial copy of set 1 done"
        in bed.inv("subscribe", *ARGS, "--wait", timeout=600).stdout
    )


def test_add_keys_gives_a_keyless_table_a_key_then_replicates_it(bed):
    bed.reset()
    bed.sql(
        "db01",
        "SET ROLE johann; CREATE TABLE public.audit_log (at timestamptz NOT NULL, what"
        " text); INSERT INTO public.audit_log SELECT now(), 'row ' || g FROM"
        " generate_series(1, 1000) g",
    )
    try:
        refused = bed.inv("preflight", *ARGS, check=False)
        assert (
            refused.returncode == 1
            and "table public.audit_log: no primary key" in refused.stderr
        )
        assert "migrate --add-keys" in refused.stderr
        before = bed.snapshot()
        dry = bed.inv("migrate", *ARGS, "--add-keys", "--dry-run").stdout
        assert "[db01] keys: would add a primary key to public.audit_log" in dry, dry
        assert (
            "ADD COLUMN slony_migrate_id bigint GENERATED BY DEFAULT AS IDENTITY"
            " PRIMARY KEY" in dry
        )
        assert bed.snapshot() == before
        bed.inv("migrate", *ARGS, "--add-keys")
        bed.sql(
            "db01", "INSERT INTO public.audit_log (at, what) VALUES (now(), 'after')"
        )
        bed.wait_same(timeout=60)
        assert bed.sql("db02", "SELECT count(*) FROM public.audit_log") == [["1001"]]
    finally:
        bed.reset()
        bed.sql("db01", "DROP TABLE IF EXISTS public.audit_log")
