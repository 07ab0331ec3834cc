"""Issue 12: the application's owner (no superuser) and the postgres account try to
get in through the migration. Each attack is one test: the tool refuses with one line
before any change, or completes with the attack having no effect."""

from __future__ import annotations

import contextlib

import pytest

from fabfile import facts
from testbed.bed import CLUSTER

ARGS = ("--master", "db01", "--slave", "db02")
INJECTION = (  # 58 bytes: a whole name
    "x');execute script(sql='create table pwn()',event node=1);#"
)


def as_owner(bed, sql: str) -> None:
    """Run SQL on db01 with the application owner's rights only (johann is no
    superuser)."""
    bed.sql("db01", f"SET ROLE johann; {sql}")


def no_pwn(bed) -> None:
    for name in ("db01", "db02"):
        if facts.database_exists(bed[name], "shotserver04"):
            assert bed.sql(
                name, "SELECT count(*) FROM pg_class WHERE relname = 'pwn'"
            ) == [["0"]], name
            assert bed.sql(
                name, "SELECT count(*) FROM pg_class WHERE relname = 'pwn'", "postgres"
            ) == [["0"]]
        assert bed[name].run("ls /tmp/pwned-* 2>/dev/null", check=False).stdout == "", (
            name
        )


@pytest.fixture
def hostile(bed):
    bed.reset()
    yield bed
    for sql in (
        'DROP TABLE IF EXISTS public."o\'brien", public."0" CASCADE',
        "DROP FUNCTION IF EXISTS public.evil() CASCADE",
        "DROP TABLE IF EXISTS public.pwn",
    ):
        bed.sql("db01", sql)
    bed["db01"].run("sudo -n rm -f /tmp/pwned-*", check=False)
    bed["db02"].run("sudo -n rm -f /tmp/pwned-*", check=False)
    bed.reset()


def test_quotes_and_slonik_injection_in_names_are_replicated_not_run(hostile):
    bed = hostile
    as_owner(
        bed,
        f"""CREATE TABLE public."o'brien" (a integer NOT NULL, b text);
        CREATE UNIQUE INDEX "{INJECTION.replace('"', '""')}" ON public."o'brien" (a);
        INSERT INTO public."o'brien" VALUES (1, 'one'), (2, 'two');""",
    )
    assert bed.inv("preflight", *ARGS).returncode == 0
    out = bed.inv("migrate", *ARGS).stdout
    assert "initial copy of set 1 done" in out
    no_pwn(bed)
    assert bed.sql(
        "db02",
        "SELECT tab_idxname FROM _replication.sl_table WHERE tab_relname = 'o''brien'",
    ) == [[INJECTION]]
    bed.sql("db01", "INSERT INTO public.\"o'brien\" VALUES (3, 'three')")
    bed.wait_same()
    bed.inv("verify", *ARGS)


TRIGGER = """CREATE FUNCTION public.evil() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'touch /tmp/pwned-' || current_user);
  RETURN NEW;
END $$;
CREATE TABLE public."0" (id integer PRIMARY KEY, v text);
INSERT INTO public."0" VALUES (1, 'a');
CREATE TRIGGER "0" BEFORE INSERT OR UPDATE OR DELETE ON public."0" FOR EACH ROW EXECUTE FUNCTION public.evil();"""


def test_a_trigger_of_the_owner_never_runs_as_superuser(hostile):
    """Table "0" sorts first; its trigger would run a program as whoever writes to it
    with superuser rights."""
    bed = hostile
    as_owner(bed, TRIGGER)
    bed.inv("migrate", *ARGS)
    bed.inv("switchover", *ARGS, timeout=300)
    bed.inv("verify", *ARGS)
    bed.inv("finish", *ARGS, "--yes")
    no_pwn(bed)


def test_a_trigger_that_fires_on_replicas_is_refused_before_anything_changes(hostile):
    bed = hostile
    as_owner(bed, TRIGGER + '\nALTER TABLE public."0" ENABLE ALWAYS TRIGGER "0";')
    bed.refuse_before_any_change(
        '[db01] preflight: FAIL application code: trigger "0" on public."0" fires'
        " ALWAYS",
        *ARGS,
    )
    no_pwn(bed)


@contextlib.contextmanager
def root_secret(h):
    """A root-only file with a secret in it; yields its path; checks afterwards that
    it is untouched."""
    h.write_file("/root/secret", "root's secret\n", mode="600")
    try:
        yield "/root/secret"
        assert h.run("sudo -n stat -c '%U %a' /root/secret").stdout.split() == [
            "root",
            "600",
        ]
        assert h.read_file("/root/secret") == "root's secret\n"
    finally:
        h.run("sudo -n rm -f /root/secret")


def test_a_symlinked_pgpass_is_refused_and_the_root_file_stays_private(hostile):
    bed = hostile
    db02 = bed["db02"]
    with root_secret(db02) as secret:
        db02.sudo(f"ln -sfn {secret} /var/lib/postgresql/.pgpass", user="postgres")
        try:
            result = bed.inv("users", *ARGS, check=False)
            assert result.returncode == 1
            assert (
                "error: db02: cannot read /var/lib/postgresql/.pgpass: is a symlink"
                in result.stderr
            ), result.stderr
            assert "root's secret" not in result.stdout + result.stderr
        finally:
            db02.run("sudo -n rm -f /var/lib/postgresql/.pgpass")


def test_a_symlinked_pg_hba_is_refused_and_nothing_changes(hostile):
    bed = hostile
    db01 = bed["db01"]
    hba = facts.hba_file(db01)
    with root_secret(db01) as secret:
        db01.sudo(f"mv {hba} {hba}.real && ln -s {secret} {hba}", user="postgres")
        try:
            result = bed.inv("hba", *ARGS, check=False)
            assert result.returncode == 1
            assert f"error: db01: cannot read {hba}: is a symlink" in result.stderr, (
                result.stderr
            )
            assert "replace the symlink" in result.stderr
        finally:
            db01.sudo(f"rm -f {hba} && mv {hba}.real {hba}", user="postgres")


def test_the_applications_role_is_never_taken_over(hostile):
    bed = hostile
    before = bed.sql(
        "db01",
        "SELECT rolsuper, rolcanlogin, coalesce(rolpassword, '') FROM pg_authid "
        "WHERE rolname = 'johann'",
        "postgres",
    )
    for command in ("users", "migrate"):
        result = bed.inv(command, *ARGS, "--user", "johann", check=False)
        assert result.returncode == 1
        assert (
            "role johann" in result.stderr
            and "was not created by slony-migrate" in result.stderr
        ), result.stderr
    assert (
        bed.sql(
            "db01",
            "SELECT rolsuper, rolcanlogin, coalesce(rolpassword, '') FROM pg_authid "
            "WHERE rolname = 'johann'",
            "postgres",
        )
        == before
    )


def test_every_replication_connection_is_encrypted_and_verified(migrated):
    bed = migrated
    for name in ("db01", "db02"):
        rows = bed.sql(
            name,
            "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING"
            " (pid) WHERE a.usename = 'slony'",
            "postgres",
        )
        assert rows and all(ssl == "t" for ssl, _ in rows), (name, rows)
        rules = bed.sql(
            name,
            "SELECT type FROM pg_hba_file_rules WHERE 'slony' = ANY (user_name)",
            "postgres",
        )
        assert rules == [["hostssl"]], (name, rules)
    refused = bed["db02"].sudo(
        "PGSSLMODE=disable psql -w -X -h db01 -U slony -d shotserver04 -c 'SELECT 1'",
        user="postgres",
        check=False,
    )
    assert refused.failed and "no encryption" in refused.stderr, refused.stderr
    conninfo = bed.sql(
        "db01", "SELECT string_agg(pa_conninfo, ' ') FROM _replication.sl_path"
    )[0][0]
    assert (
        "sslmode=verify-full" in conninfo
        and f"sslrootcert={CLUSTER.mark('root.crt')}" in conninfo
    )


def test_no_secret_reaches_the_server_logs(bed):
    bed.reset()
    for name in ("db01", "db02"):
        bed.sql(
            name,
            "ALTER SYSTEM SET log_statement = 'all'; SELECT pg_reload_conf()",
            "postgres",
        )
    try:
        bed.inv("users", *ARGS)
        bed.inv("appdb", *ARGS)
    finally:
        for name in ("db01", "db02"):
            bed.sql(
                name,
                "ALTER SYSTEM RESET log_statement; SELECT pg_reload_conf()",
                "postgres",
            )
    for name in ("db01", "db02"):
        logs = bed[name].run("sudo -n sh -c 'cat /var/log/postgresql/*.log'").stdout
        assert "SCRAM-SHA-256$" not in logs and bed.password() not in logs, name
        assert "statement: SELECT" in logs or "statement:" in logs, (
            f"{name}: statement logging did not work"
        )
