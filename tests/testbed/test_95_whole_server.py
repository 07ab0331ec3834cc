"""Issue 21: a whole server's move. Several databases side by side, one cluster each
(one of them made by the previous version of the tool), switched over and finished on
their own; `migrate --all-databases` on a master with three databases; and every role
the applications log in as (group roles, a login role that only has membership, role
and database settings, database grants, default privileges) logging in on db02 with
its old password over TCP, able to do what it could on db01.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time

import pytest

from fabfile import facts
from fabfile.model import make_cluster
from testbed import compose as tb
from testbed.compose import ROOT

ARGS = ("--master", "db01", "--slave", "db02")
# The tool as it was before issue 21: its clusters' files are named by node only.
EARLIER = "a43ac12"
SHOP = make_cluster("db01", "db02", name="shop", database="shop")

SHOP_SQL = """
CREATE DATABASE shop OWNER johann;
\\connect shop
SET ROLE johann;
CREATE TABLE item (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO item (name) SELECT 'item ' || g FROM generate_series(1, 500) g;
"""

# The roles of a CRM: two group roles holding the grants, login roles that reach the
# database only through them, settings of a role, of a role in the database and of the
# database, the database's privileges (PUBLIC's taken), default privileges.
CRM_SQL = """
CREATE ROLE crm_owner LOGIN PASSWORD 'owner-pw-1234';
CREATE ROLE crm_rw NOLOGIN;
CREATE ROLE crm_ro NOLOGIN;
CREATE ROLE staff NOLOGIN;
CREATE ROLE alice LOGIN PASSWORD 'alice-pw-1234' CONNECTION LIMIT 10
  VALID UNTIL '2099-01-01 00:00:00+00';
CREATE ROLE bob LOGIN PASSWORD 'bob-pw-12345';
CREATE ROLE dave LOGIN NOINHERIT PASSWORD 'dave-pw-1234';
CREATE ROLE carol LOGIN BYPASSRLS PASSWORD 'carol-pw-1234';
GRANT crm_rw TO alice;
GRANT staff TO alice;
GRANT crm_ro TO bob;
GRANT crm_rw TO dave;
GRANT crm_rw TO carol WITH ADMIN OPTION;
ALTER ROLE alice SET statement_timeout = '5s';
CREATE DATABASE crm OWNER crm_owner;
ALTER ROLE alice IN DATABASE crm SET search_path = crm, public;
ALTER DATABASE crm SET work_mem = '8MB';
REVOKE ALL ON DATABASE crm FROM PUBLIC;
GRANT CONNECT ON DATABASE crm TO crm_rw, crm_ro, dave;
GRANT TEMPORARY ON DATABASE crm TO crm_rw;
COMMENT ON DATABASE crm IS 'the CRM';
\\connect crm
SET ROLE crm_owner;
CREATE SCHEMA crm;
GRANT USAGE ON SCHEMA crm TO crm_rw, crm_ro;
ALTER DEFAULT PRIVILEGES IN SCHEMA crm GRANT SELECT ON TABLES TO crm_ro;
ALTER DEFAULT PRIVILEGES IN SCHEMA crm GRANT SELECT, INSERT ON TABLES TO crm_rw;
ALTER DEFAULT PRIVILEGES IN SCHEMA crm GRANT USAGE ON SEQUENCES TO crm_rw;
CREATE TABLE crm.customer (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO crm.customer (name) SELECT 'customer ' || g FROM generate_series(1, 200) g;
"""
PASSWORDS = {
    "crm_owner": "owner-pw-1234",
    "alice": "alice-pw-1234",
    "bob": "bob-pw-12345",
    "dave": "dave-pw-1234",
    "carol": "carol-pw-1234",
}


def load(bed, sql: str) -> None:
    """Run a script on db01 as postgres (psql, so \\connect works)."""
    bed["db01"].sudo("psql -X -q -v ON_ERROR_STOP=1", user="postgres", stdin=sql)


def login(bed, host: str, role: str, *sql: str, db: str = "crm") -> tuple[bool, str]:
    """Log in to `db` on `host` as `role` with its password, over TCP (127.0.0.1,
    scram-sha-256 in pg_hba.conf), and run each statement: (ok, output or error)."""
    command = (
        "PGPASSWORD=$(cat) psql -X -A -t -q -v ON_ERROR_STOP=1 -h 127.0.0.1"
        f" -U {role} -d {db} " + " ".join(f"-c {shlex.quote(q)}" for q in sql)
    )
    password = (
        (tb.current().state / "app" / "johann.password").read_text().strip()
        if role == "johann"  # made with the testbed
        else PASSWORDS[role]
    )
    r = bed[host].run(command, stdin=password, check=False)
    return r.ok, (r.stdout if r.ok else r.stderr).strip()


def what_each_role_can_do(bed, host: str) -> dict:
    """What each role of the CRM can do on `host`: settings in effect, writes, reads,
    refusals."""
    out = {}
    out["alice"] = login(
        bed,
        host,
        "alice",
        "SELECT current_setting('search_path'), current_setting('statement_timeout'),"
        " current_setting('work_mem')",
        "INSERT INTO customer (name) VALUES ('by alice')",
        "SELECT count(*) > 0 FROM customer",
    )
    out["bob reads"] = login(bed, host, "bob", "SELECT count(*) > 0 FROM crm.customer")
    out["bob writes"] = login(
        bed, host, "bob", "INSERT INTO crm.customer (name) VALUES ('by bob')"
    )[0]
    out["dave writes"] = login(
        bed, host, "dave", "INSERT INTO crm.customer (name) VALUES ('by dave')"
    )[0]
    out["dave as crm_rw"] = login(
        bed,
        host,
        "dave",
        "SET ROLE crm_rw; INSERT INTO crm.customer (name) VALUES ('by dave')",
    )[0]
    out["carol"] = login(
        bed,
        host,
        "carol",
        "SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user",
        "GRANT crm_rw TO bob",
        "REVOKE crm_rw FROM bob",
    )
    out["owner"] = login(
        bed,
        host,
        "crm_owner",
        "CREATE TABLE crm.later (id int PRIMARY KEY)",
        "SELECT has_table_privilege('crm_ro', 'crm.later', 'SELECT'),"
        " has_table_privilege('crm_rw', 'crm.later', 'INSERT')",
        "DROP TABLE crm.later",
    )
    refused = login(bed, host, "johann", "SELECT 1")  # PUBLIC may not connect
    out["public"] = (refused[0], "permission denied for database" in refused[1])
    out["comment"] = bed[host].psql(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname"
        " = 'crm'"
    )
    return out


@pytest.fixture
def whole(bed):
    bed.reset()
    yield bed
    bed.reset()


def status_all(bed, env=None) -> dict[str, dict]:
    """`status --all --json`: {cluster: its status}."""
    result = bed.inv("status", "--all", "--json", *ARGS, env=env, check=False)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is (result.returncode == 0) and result.stdout.count("\n") == 1
    return {r["cluster"]: r for r in doc["clusters"]}


def test_two_databases_side_by_side_one_made_by_the_earlier_version(whole, tmp_path):
    bed = whole
    env = {"SLONY_MIGRATE_HOME": str(tmp_path / "home")}
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", EARLIER, "fabfile", "tasks.py", "testbed"],
        capture_output=True,
    )
    if archive.returncode:
        pytest.skip(f"the earlier version ({EARLIER}) is not in this checkout")
    subprocess.run(["tar", "-x", "-C", str(earlier)], input=archive.stdout, check=True)
    # 1. The earlier version moves shotserver04 as cluster replication.
    bed.inv("migrate", *ARGS, env=env, cwd=earlier)
    db02 = bed["db02"]
    assert "cluster_name='replication'" in db02.read_file("/etc/slony1/node1/slon.conf")
    assert (tmp_path / "home" / "replication.password").exists()
    # 2. This version finds it where it is, and moves shop beside it.
    status = bed.inv("status", *ARGS, env=env).stdout
    assert "slon node1: running" in status and "slon node2: running" in status
    load(bed, SHOP_SQL)
    out = bed.inv("migrate", *ARGS, "--cluster", "shop", "--database", "shop", env=env)
    assert "moved the replication password file of an earlier version" in out.stdout
    assert not (tmp_path / "home" / "replication.password").exists()
    assert "start slon for shop-node1 with watchdog" in out.stdout
    assert "cluster_name='replication'" in db02.read_file("/etc/slony1/node1/slon.conf")
    assert "cluster_name='shop'" in db02.read_file(SHOP.slon_conf(SHOP.master))
    watchdogs = db02.run("pgrep -f -a slon-watchdog").stdout
    assert all(
        i in watchdogs for i in ("node1", "node2", "shop-node1", "shop-node2")
    ), watchdogs
    table = bed.inv("status", "--all", *ARGS, env=env).stdout
    assert [l.split()[:5] for l in table.splitlines()[2:]] == [
        ["replication", "shotserver04", "db01", "db02", "replicating"],
        ["shop", "shop", "db01", "db02", "replicating"],
    ], table
    # 3. Each replicates on its own; shop is switched over alone.
    bed.sql("db01", "INSERT INTO websites_domain (name) VALUES ('side.example')")
    bed.wait_same(timeout=30)
    out = bed.inv(
        "switchover", *ARGS, "--cluster", "shop", "--database", "shop", env=env
    ).stdout
    assert "set 1 moved to db02" in out
    found = status_all(bed, env)
    assert (
        found["shop"]["origin"] == "db02" and found["replication"]["origin"] == "db01"
    )
    db02.psql("INSERT INTO public.item (name) VALUES ('sold on db02')", "shop")
    # 4. shop finished while replication goes on: the role, its pg_hba.conf block and
    # its .pgpass lines stay for the other.
    out = bed.inv(
        "finish", *ARGS, "--cluster", "shop", "--database", "shop", "--yes", env=env
    ).stdout
    assert "role slony stays: cluster(s) replication log in as it there" in out
    assert facts.role_exists(bed["db01"], "slony") and facts.role_exists(db02, "slony")
    assert set(facts.hba_clusters(bed["db01"])) == {"replication"}
    pgpass = db02.read_file("/var/lib/postgresql/.pgpass", user="postgres")
    assert ":shotserver04:slony:" in pgpass and ":shop:" not in pgpass
    assert (tmp_path / "home" / "role-slony.password").exists()
    assert db02.run("pgrep -f -a slon-watchdog").stdout.count("shop-node") == 0
    bed.sql("db01", "INSERT INTO websites_domain (name) VALUES ('after.example')")
    bed.wait_same(timeout=30)
    assert list(status_all(bed, env)) == ["replication"]
    # 5. The earlier version's cluster is switched over and finished by this one.
    assert "set 1 moved to db02" in bed.inv("switchover", *ARGS, env=env).stdout
    out = bed.inv("finish", *ARGS, "--yes", env=env).stdout
    assert "would" not in out and "drop role slony" in out
    assert not facts.role_exists(db02, "slony")
    assert not (tmp_path / "home" / "role-slony.password").exists()


def test_migrate_all_databases_and_every_role_logs_in_after_switchover(whole):
    bed = whole
    load(bed, SHOP_SQL)
    load(bed, CRM_SQL)
    before = what_each_role_can_do(bed, "db01")
    assert before["alice"] == (True, "crm, public|5s|8MB\nt"), before
    assert before["bob reads"] == (True, "t") and before["bob writes"] is False
    assert before["dave writes"] is False and before["dave as crm_rw"] is True
    assert before["carol"] == (True, "t") and before["owner"] == (True, "t|t")
    assert before["public"] == (False, True) and before["comment"] == [["the CRM"]]
    pre = bed.inv("preflight", *ARGS, "--cluster", "crm", "--database", "crm").stdout
    for line in (
        "ok role alice: appdb creates it as on db01 (settings in the database; member"
        " of crm_rw)",
        "ok role bob: appdb creates it as on db01 (member of crm_ro)",
        "ok role staff: appdb creates it as on db01 (group of alice)",
        "ok role crm_ro: appdb creates it as on db01 (default privileges, grantee,"
        " privileges on the database)",
    ):
        assert line in pre, pre
    start = time.monotonic()
    out = bed.inv("migrate", *ARGS, "--all-databases", timeout=1800).stdout
    took = time.monotonic() - start
    assert (
        "migrate: db02 replicates 3 database(s) from db01, each as its own cluster:"
        " crm (crm), shop (shop), shotserver04 (shotserver04)" in out
    ), out
    assert "create role alice as on db01" in out and "create role johann" in out
    table = bed.inv("status", "--all", *ARGS).stdout
    assert [l.split()[0] for l in table.splitlines()[2:]] == [
        "crm",
        "shop",
        "shotserver04",
    ] and table.count("replicating") == 3, table
    again = bed.inv("migrate", *ARGS, "--all-databases").stdout
    assert again.count("migrate: nothing to do") == 3, again
    out = bed.inv("switchover", *ARGS, "--all-databases", timeout=900).stdout
    assert out.count("set 1 moved to db02") == 3, out
    assert bed.inv("status", "--all", "--check", *ARGS).stdout.startswith("SLONY OK")
    after = what_each_role_can_do(bed, "db02")
    assert after == before, (before, after)
    out = bed.inv("finish", *ARGS, "--all-databases", "--yes", timeout=900).stdout
    assert out.count("role slony stays") == 4 and "drop role slony" in out, out
    assert not facts.role_exists(bed["db02"], "slony")
    assert facts.hba_clusters(bed["db02"]) == {}
    # the application's roles stay, as they were
    assert what_each_role_can_do(bed, "db02")["alice"] == before["alice"]
    print(f"migrate --all-databases of 3 databases: {took:.1f} s")
