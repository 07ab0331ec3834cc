"""Preflight and the guards in the steps: bad input is refused before anything changes
(issue 5).

Each bad case: exit code non-zero, a line on stderr naming host, object and fix, and
both servers' catalogs, pg_hba.conf, Slony files and processes exactly as before
(Bed.snapshot).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import pytest

from fabfile import facts, settings
from fabfile.errors import StepError
from fabfile.remote import Hosts
from testbed.bed import CLUSTER

ARGS = ("--master", "db01", "--slave", "db02")
NOSUDO = "pfnosudo"


def inv(
    bed, *args: str, ssh_config: str = "", check: bool = False
) -> subprocess.CompletedProcess:
    """Bed.inv, but a non-zero exit is returned to the test, not raised (unless
    check)."""
    return bed.inv(*args, check=check, ssh_config=ssh_config)


def assert_refused(
    result: subprocess.CompletedProcess, host: str, obj: str, *words: str
) -> str:
    """Non-zero exit and one stderr line naming the host, the object, the words and a
    fix; return it."""
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode != 0, output
    assert "Traceback" not in result.stderr, output
    hits = [
        l
        for l in result.stderr.splitlines()
        if host in l and obj in l and "; fix: " in l and all(w in l for w in words)
    ]
    assert hits, output
    return hits[0]


def ssh_config(bed, tmp_path: Path, host: str, **options: str) -> str:
    """A copy of the testbed's ssh config with some options of one host replaced."""
    out, current = [], None
    for l in Path(bed.ssh_config).read_text().splitlines():
        if l.startswith("Host "):
            current = l.split()[1]
        elif current == host and l.split() and l.split()[0] in options:
            l = f"  {l.split()[0]} {options[l.split()[0]]}"
        out.append(l)
    path = tmp_path / f"ssh_config_{'_'.join(options)}"
    path.write_text("\n".join(out) + "\n")
    return str(path)


def wait_for_login(config: str, host: str = "db01", timeout: float = 20) -> None:
    """Wait until a fresh SSH login works (sshd re-executes itself on SIGHUP)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with Hosts(config) as hosts:
                hosts[host].run("true")
            return
        except StepError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def assert_unchanged(before: dict, after: dict, what: str = "") -> None:
    """Both servers as in `before`; on a difference name host, item and the lines
    that differ."""
    for host in before:
        for key in before[host]:
            old, new = before[host][key], after[host][key]
            if old != new:

                def lines(v):
                    return (
                        set(map(str, v))
                        if isinstance(v, list)
                        else set(str(v).splitlines())
                    )

                pytest.fail(
                    f"{what} changed {host} {key}: gone"
                    f" {sorted(lines(old) - lines(new))}, new"
                    f" {sorted(lines(new) - lines(old))}"
                )


def settled_snapshot(bed, timeout: float = 60) -> dict:
    """A snapshot once db02 knows db01's set and two snapshots in a row agree: slon adds
    its partial index on sl_log (PartInd_..._sl_log_N-node-1) on db02 a few seconds
    after the set is created.
    """
    deadline = time.monotonic() + timeout
    while (
        facts.slony_state(bed["db02"], CLUSTER).has_set
        != facts.slony_state(bed["db01"], CLUSTER).has_set
        and time.monotonic() < deadline
    ):
        time.sleep(1)
    last = bed.snapshot()
    while True:
        time.sleep(2)
        now = bed.snapshot()
        if now == last:
            return now
        if time.monotonic() > deadline:
            assert_unchanged(last, now, f"still after {timeout:.0f} s: slon")
        last = now


@pytest.fixture
def fresh(bed):
    """A freshly seeded testbed (Slony packages may be installed)."""
    bed.reset()
    return bed


# --- bad input cases: each a context manager that prepares the servers and yields an
# ssh config ------


@contextlib.contextmanager
def nothing(bed, tmp_path):
    yield ""


@contextlib.contextmanager
def refused(bed, tmp_path):
    yield ssh_config(bed, tmp_path, "db01", Port="9")


@contextlib.contextmanager
def foreign_key(bed, tmp_path):
    key = tmp_path / "foreign_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
    )
    yield ssh_config(bed, tmp_path, "db01", IdentityFile=str(key))


@contextlib.contextmanager
def user_without_sudo(bed, tmp_path):
    db01, admin = bed["db01"], bed.ssh_config
    config = ssh_config(bed, tmp_path, "db01", User=NOSUDO)
    try:
        db01.sudo(
            f"useradd -m -s /bin/bash {NOSUDO} && install -d -m 700 -o {NOSUDO} -g"
            f" {NOSUDO} /home/{NOSUDO}/.ssh && install -m 600 -o {NOSUDO} -g {NOSUDO}"
            f" /home/admin/.ssh/authorized_keys /home/{NOSUDO}/.ssh/ && echo"
            f" 'AllowUsers {NOSUDO}' > /etc/ssh/sshd_config.d/zz-{NOSUDO}.conf && kill"
            " -HUP $(cat /run/sshd.pid)"
        )
        wait_for_login(config)
        yield config
    finally:
        db01.sudo(
            f"rm -f /etc/ssh/sshd_config.d/zz-{NOSUDO}.conf; kill -HUP $(cat"
            " /run/sshd.pid)"
        )
        wait_for_login(admin)
        # sshd may still be closing the user's last session: retry userdel for a few
        # seconds
        db01.sudo(
            f"for i in 1 2 3 4 5 6 7 8 9 10; do userdel -r {NOSUDO} 2>/dev/null &&"
            f" break; id {NOSUDO} >/dev/null 2>&1 || break; sleep 1; done"
        )


@contextlib.contextmanager
def keyless_table(bed, tmp_path):
    bed.sql(
        "db01",
        "CREATE TABLE public.preflight_keyless (a integer, b text); "
        "CREATE UNIQUE INDEX ON public.preflight_keyless (a)",
    )  # nullable: no use as a key
    try:
        yield ""
    finally:
        bed.sql("db01", "DROP TABLE IF EXISTS public.preflight_keyless")


@contextlib.contextmanager
def slave_with_rows(bed, tmp_path):
    bed.sql("db02", "CREATE DATABASE shotserver04", "postgres")
    bed.sql(
        "db02",
        "CREATE TABLE leftover (id integer PRIMARY KEY); INSERT INTO leftover"
        " VALUES (1)",
    )
    yield ""  # the next reset drops the database


@contextlib.contextmanager
def tablespace_the_slave_lacks(bed, tmp_path):
    """Issue 21: a table in a tablespace only the master has."""
    db01, where = bed["db01"], "/var/lib/postgresql/preflight_fast"
    db01.sudo(f"install -d -o postgres -g postgres -m 700 {where}")
    db01.psql(f"CREATE TABLESPACE preflight_fast LOCATION '{where}'")
    bed.sql(
        "db01",
        "CREATE TABLE public.preflight_hot (id integer PRIMARY KEY) TABLESPACE"
        " preflight_fast",
    )
    try:
        yield ""
    finally:
        bed.sql("db01", "DROP TABLE IF EXISTS public.preflight_hot")
        db01.psql("DROP TABLESPACE IF EXISTS preflight_fast")
        db01.sudo(f"rm -rf {where}")


@contextlib.contextmanager
def event_trigger(bed, tmp_path):
    """Issue 21: an event trigger, which would run in Slony's superuser sessions."""
    bed.sql(
        "db01",
        "CREATE FUNCTION public.preflight_audit() RETURNS event_trigger LANGUAGE plpgsql"
        " AS $$BEGIN RAISE NOTICE 'ddl'; END$$; ALTER FUNCTION public.preflight_audit()"
        " OWNER TO johann; CREATE EVENT TRIGGER preflight_audit ON ddl_command_end"
        " EXECUTE FUNCTION public.preflight_audit()",
    )
    try:
        yield ""
    finally:
        bed.sql(
            "db01",
            "DROP EVENT TRIGGER IF EXISTS preflight_audit; DROP FUNCTION IF EXISTS"
            " public.preflight_audit()",
        )


@contextlib.contextmanager
def superuser_owner(bed, tmp_path):
    """Issue 21: a superuser of the master's (not postgres) owns an object there."""
    bed.sql(
        "db01",
        "CREATE ROLE preflight_dba SUPERUSER; CREATE FUNCTION public.preflight_f()"
        " RETURNS int LANGUAGE sql AS 'SELECT 1'; ALTER FUNCTION public.preflight_f()"
        " OWNER TO preflight_dba",
    )
    yield ""  # the next reset drops the role and what it owns


CASES = {
    "unknown host name": (
        nothing,
        ("--master", "nosuchhost", "--slave", "db02"),
        ("[nosuchhost]", "ssh", "unknown host name"),
    ),
    "connection refused": (refused, ARGS, ("[db01]", "ssh", "connection refused")),
    "ssh authentication refused": (
        foreign_key,
        ARGS,
        ("[db01]", "ssh", "authentication refused"),
    ),
    "no sudo": (
        user_without_sudo,
        ARGS,
        ("[db01]", "sudo", NOSUDO, "passwordless sudo"),
    ),
    "database missing on the master": (
        nothing,
        (*ARGS, "--database", "nosuchdb"),
        ("[db01]", "database nosuchdb", "does not exist"),
    ),
    "table without a usable key": (
        keyless_table,
        ARGS,
        (
            "[db01]",
            "table public.preflight_keyless",
            "no primary key",
            "add a primary key",
        ),
    ),
    "slave database with rows": (
        slave_with_rows,
        ARGS,
        (
            "[db02]",
            "database shotserver04",
            "public.leftover",
            "subscribing would empty",
        ),
    ),
    "master and slave swapped": (
        nothing,
        ("--master", "db02", "--slave", "db01"),
        ("[db01]", "database shotserver04", "hold rows", "swapped"),
    ),
    "table in a tablespace the slave lacks": (
        tablespace_the_slave_lacks,
        ARGS,
        (
            "[db02]",
            "tablespace preflight_fast",
            "no such tablespace",
            "CREATE TABLESPACE",
        ),
    ),
    "enabled event trigger": (
        event_trigger,
        ARGS,
        (
            "[db01]",
            "event trigger preflight_audit",
            "Slony's superuser sessions",
            "ALTER EVENT TRIGGER preflight_audit DISABLE",
        ),
    ),
    "a superuser owns an object": (
        superuser_owner,
        ARGS,
        ("[db01]", "role preflight_dba", "a superuser", "by hand"),
    ),
    "invalid cluster name": (
        nothing,
        (*ARGS, "--cluster", "my-cluster"),
        ("input", "cluster name 'my-cluster'", "no -"),
    ),
}


def test_preflight_passes_on_a_fresh_testbed(fresh):
    bed = fresh
    before = bed.snapshot()
    result = inv(bed, "preflight", *ARGS)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert result.stderr == "" and " FAIL " not in out
    for line in (
        "[db01] preflight: ok ssh: connected as admin; sudo works",
        "[db02] preflight: ok ssh: connected as admin; sudo works",
        "[db01] preflight: ok postgresql: PostgreSQL 15.",
        "[db02] preflight: ok postgresql: PostgreSQL 17.",
        "[db01] preflight: ok database shotserver04: exists",
        (
            "[db01] preflight: ok table public.websites_alias: no primary key; unique"
            " index websites_alias_key"
        ),
        "[db01] preflight: ok sequences: not owned by a column: public.shot_number_seq",
        "[db01] preflight: ok transactions: none open longer than 300 s",
        "[db02] preflight: ok database shotserver04: not there yet",
        "[db02] preflight: ok encoding: appdb will create shotserver04 with UTF8",
        "[db02] preflight: ok disk: ",
        "[db02] preflight: warn login slony@db01/shotserver04: not set up yet",
    ):
        assert line in out, out
    assert (
        "slony version: Slony 2.2.11 everywhere" in out or "not installed yet" in out
    ), out
    assert_unchanged(before, bed.snapshot())


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_and_changes_nothing(fresh, tmp_path, case):
    bed = fresh
    setup, args, (host, obj, *words) = CASES[case]
    with setup(bed, tmp_path) as config:
        before = bed.snapshot()
        for command in ("preflight", "migrate"):
            result = inv(bed, command, *args, ssh_config=config)
            assert_refused(result, host, obj, *words)
            assert "== 1/" not in result.stdout, (
                result.stdout
            )  # migrate stopped before its first step
            assert_unchanged(before, bed.snapshot(), command)


def test_long_transaction_on_the_master_is_reported(fresh):
    bed, db01 = fresh, fresh["db01"]
    db01.write_file(
        "/tmp/preflight-idle.sh",
        "echo $$ > /tmp/preflight-idle.pid\n"
        "{ echo 'BEGIN; SELECT txid_current();'; sleep 120; } | "
        "PGAPPNAME=preflight-test psql -X -q -d shotserver04 >/dev/null 2>&1\n",
        owner="postgres:postgres",
    )
    db01.sudo(
        "setsid -f sh /tmp/preflight-idle.sh </dev/null >/dev/null 2>&1",
        user="postgres",
    )
    try:
        query = (
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'preflight-test'"
            " AND state = 'idle in transaction'"
        )
        deadline = time.monotonic() + 20
        while not bed.sql("db01", query, "postgres") and time.monotonic() < deadline:
            time.sleep(0.5)
        pid = bed.sql("db01", query, "postgres")[0][0]
        time.sleep(
            settings.IDLE_IN_TRANSACTION + 0.1
        )  # idle in its transaction for longer than a moment
        result = inv(bed, "preflight", *ARGS)
        assert result.returncode == 0, (
            result.stdout + result.stderr
        )  # a warning, not a failure
        assert (
            f"[db01] preflight: warn session pid {pid}: database shotserver04, user"
            " postgres, idle in transaction" in result.stdout
        ), result.stdout
        assert f"pg_terminate_backend({pid})" in result.stdout
    finally:
        db01.sudo(
            "kill -- -$(cat /tmp/preflight-idle.pid); rm -f /tmp/preflight-idle.sh"
            " /tmp/preflight-idle.pid",
            check=False,
        )


def test_guards_in_the_steps_refuse_by_hand(fresh):
    """create-set refuses a keyless table; subscribe refuses a receiver with rows;
    preflight proves logins."""
    bed = fresh
    for step in (
        "install",
        "users",
        "hba",
        "appdb",
        "plpgsql",
        "schema",
        "config",
        "init",
        "slons",
    ):
        inv(bed, step, *ARGS, check=True)
    settled_snapshot(bed)
    result = inv(bed, "preflight", *ARGS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "[db02] preflight: ok login slony@db01/shotserver04: psql from db02 as slony"
        " works" in result.stdout
    )
    assert (
        "[db02] preflight: ok database shotserver04: exists, 8 tables, no rows"
        in result.stdout
    )

    verifier = bed.sql(
        "db01", "SELECT rolpassword FROM pg_authid WHERE rolname = 'slony'", "postgres"
    )[0][0]
    bed.sql(
        "db01", "ALTER ROLE slony PASSWORD 'not-the-password-in-pgpass'", "postgres"
    )
    try:
        assert_refused(
            inv(bed, "preflight", *ARGS),
            "[db02]",
            "login slony@db01/shotserver04",
            "password authentication failed",
            "inv users",
        )
    finally:
        bed.sql("db01", f"ALTER ROLE slony PASSWORD '{verifier}'", "postgres")

    with keyless_table(bed, None):
        before = settled_snapshot(bed)
        line = assert_refused(
            inv(bed, "create-set", *ARGS),
            "db01",
            "public.preflight_keyless",
            "add a primary key",
        )
        assert line.startswith("error: db01: table(s) without a primary key")
        assert_unchanged(before, bed.snapshot())
    inv(bed, "create-set", *ARGS, check=True)

    bed.sql(
        "db02", "INSERT INTO websites_domain (name) VALUES ('only-on-db02.example')"
    )
    try:
        before = settled_snapshot(bed)
        line = assert_refused(
            inv(bed, "subscribe", *ARGS),
            "db02",
            "public.websites_domain",
            "subscribing would empty them",
        )
        assert line.startswith("error: db02: receiver tables hold rows")
        assert_unchanged(before, bed.snapshot())
        assert facts.slony_state(bed["db01"], CLUSTER).subscribed is None
    finally:
        bed.sql("db02", "DELETE FROM websites_domain")


def test_preflight_passes_on_a_migrated_pair(migrated):
    bed = migrated
    before = bed.snapshot()
    result = inv(bed, "preflight", *ARGS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "[db02] preflight: ok database shotserver04: subscribed to set 1 already"
        in result.stdout
    )
    assert (
        "[db01, db02] preflight: ok slony version: Slony 2.2.11 everywhere"
        in result.stdout
    )
    assert (
        "[db02] preflight: ok login slony@db02/shotserver04: psql from db02 as slony"
        " works" in result.stdout
    )
    assert_unchanged(before, bed.snapshot())


def test_swapped_on_a_migrated_pair_is_refused(migrated):
    bed = migrated
    before = bed.snapshot()
    for command in ("preflight", "migrate"):
        result = inv(bed, command, "--master", "db02", "--slave", "db01")
        assert_refused(
            result, "[db01]", "database shotserver04", "is node 1", "swapped"
        )
        assert_refused(
            result, "[db02]", "database shotserver04", "is node 2", "swapped"
        )
        assert_unchanged(before, bed.snapshot())


@pytest.fixture
def stray_module(migrated):
    """db01 with a second Slony module, 2.2.99, beside 2.2.11: its newest version
    differs from db02's."""
    db01 = migrated["db01"]
    path = f"{facts.pg_dir(db01, 'PKGLIBDIR')}/slony1_funcs.2.2.99.so"
    db01.run(f"sudo -n touch {path}")
    try:
        yield migrated
    finally:
        db01.run(f"sudo -n rm -f {path}")


def test_slony_version_mismatch_is_refused(stray_module):
    bed = stray_module
    before = bed.snapshot()
    line = assert_refused(
        inv(bed, "preflight", *ARGS),
        "[db01, db02]",
        "slony version",
        "db01 module 2.2.99",
        "db02 module 2.2.11",
        "inv build",
    )
    assert line.startswith(
        "[db01, db02] preflight: FAIL slony version: Slony versions differ"
    )
    assert_refused(
        inv(bed, "migrate", *ARGS), "[db01, db02]", "slony version", "2.2.99"
    )
    assert_refused(
        inv(bed, "install", *ARGS), "db01, db02", "Slony versions differ", "db01 2.2.99"
    )
    assert_unchanged(before, bed.snapshot())


TARBALL = "slony1-2.2.11.tar.bz2"
BAD_FLAGS = {
    "logs --node 3": (
        ("logs", *ARGS, "--node", "3"),
        "--node 3 is not a node of cluster replication",
    ),
    "logs --lines x": (
        ("logs", *ARGS, "--lines", "x"),
        "--lines 'x' is not a positive whole number",
    ),
    "status --watch -1": (
        ("status", *ARGS, "--watch", "-1"),
        "--watch '-1' is not a whole number",
    ),
    "switchover --timeout 0": (
        ("switchover", *ARGS, "--timeout", "0"),
        "--timeout '0' is not a positive",
    ),
    "build --deps {0}": (
        ("build", "--host", "db01", "--tarball", f"/tmp/{TARBALL}", "--deps", "{0}"),
        "--deps '{0}' is not a list of package names",
    ),
    "build over http": (
        (
            "build",
            "--host",
            "db01",
            "--tarball",
            f"http://example.org/{TARBALL}",
            "--sha256",
            "a" * 64,
        ),
        "only https:// downloads are accepted",
    ),
    "build download without checksum": (
        ("build", "--host", "db01", "--tarball", f"https://example.org/{TARBALL}"),
        "downloaded without --sha256",
    ),
    "user all": (
        ("migrate", *ARGS, "--user", "all"),
        "replication user name 'all' is reserved",
    ),
    "user user": (
        ("users", *ARGS, "--user", "user"),
        "replication user name 'user' is reserved",
    ),
    "database replication": (
        ("preflight", *ARGS, "--database", "replication"),
        "database name 'replication' is reserved",
    ),
    "the application's role": (
        ("users", *ARGS, "--user", "johann"),
        "role johann exists and was not created",
    ),
}


@pytest.mark.parametrize("case", BAD_FLAGS)
def test_bad_flags_are_one_line_and_change_nothing(fresh, tmp_path, case):
    """Issue 12, point 12 and reserved names: one line naming the flag and the fix,
    nothing changed; exit 2 for what the operator typed, 1 for what a host said."""
    bed = fresh
    (tmp_path / TARBALL).write_bytes(b"not a tarball")
    args, words = BAD_FLAGS[case]
    args = tuple(a.replace("/tmp/", f"{tmp_path}/") for a in args)
    before = bed.snapshot()
    result = inv(bed, *args)
    assert "Traceback" not in result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and words in errors[0] and "; fix: " in errors[0], (
        result.stderr
    )
    usage = errors[0].startswith(
        ("error: input: ", "error: config: ", "error: local: ")
    )
    assert result.returncode == (2 if usage else 1), result.stdout + result.stderr
    assert_unchanged(before, bed.snapshot(), case)


def test_a_missing_ssh_config_is_one_line(fresh, tmp_path):
    result = inv(fresh, "preflight", *ARGS, ssh_config=str(tmp_path / "no_such_config"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        f"ssh config {tmp_path}/no_such_config does not exist; fix: " in result.stderr
    ), result.stderr
