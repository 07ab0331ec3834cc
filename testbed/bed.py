"""The testbed as tests and the benchmark see it: run the real CLI, query the real
servers, reset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from fabfile import facts
from fabfile.errors import StepError
from fabfile.model import make_cluster
from fabfile.remote import Hosts

from . import DATABASE
from .compose import ROOT, current

CLUSTER = make_cluster("db01", "db02", database=DATABASE)
# For Bed.hold_transaction: one row of a replicated table held, which LOCK SET has to
# wait for.
ROW_LOCK = (
    "UPDATE websites_domain SET name = name WHERE id = (SELECT min(id) FROM"
    " websites_domain);"
)


class Bed:
    """The running testbed: both hosts, the CLI, snapshots, reset."""

    def __init__(self, ssh_config: str, home: Path):
        self.ssh_config = ssh_config
        self.home = home
        self.hosts = Hosts(ssh_config)
        self.env = {
            **os.environ,
            **current().operator_env(),
            "INVOKE_SLONY_SSH_CONFIG": ssh_config,
            "SLONY_MIGRATE_HOME": str(home),
            "SLONY_MIGRATE_LOG_DIR": str(home / "logs"),
        }

    def __getitem__(self, name: str):
        return self.hosts[name]

    def inv(
        self,
        *args: str,
        check: bool = True,
        timeout: int = 900,
        ssh_config: str = "",
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> subprocess.CompletedProcess:
        """Run `inv ARGS` as an operator would (optionally with another ssh config,
        more environment, or another checkout's tool in `cwd`); the completed
        process."""
        env = {
            **self.env,
            **({"INVOKE_SLONY_SSH_CONFIG": ssh_config} if ssh_config else {}),
            **(env or {}),
        }
        result = subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode:
            raise StepError(
                "local",
                f"inv {' '.join(args)} exited {result.returncode}\n{result.stdout}\n"
                f"{result.stderr}",
            )
        return result

    def status(self, *args: str) -> dict:
        """`inv status ARGS --json` as a document (docs/json.md); its exit code is 0
        or 1 (something named is wrong), never a usage error."""
        result = self.inv("status", *args, "--json", check=False)
        assert result.returncode in (0, 1), result.stdout + result.stderr
        doc = json.loads(result.stdout)
        assert doc["ok"] is (result.returncode == 0), doc
        return doc

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-u", "-m", "invoke", *args],
            cwd=ROOT,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def steps_before(self, last: str, *args: str) -> None:
        """Run the runbook's steps by hand, in migrate's order, up to but not
        including `last`."""
        from fabfile.runbook import STEP_NAMES

        for step in STEP_NAMES[: STEP_NAMES.index(last)]:
            self.inv(step, *args)

    def refuse_before_any_change(self, words: str, *args: str) -> None:
        """preflight and migrate both exit 1 with `words` on stderr, and neither
        changes either server."""
        before = self.snapshot()
        for command in ("preflight", "migrate"):
            result = self.inv(command, *args, check=False)
            assert (
                result.returncode == 1
                and words in result.stderr
                and "; fix: " in result.stderr
            ), f"{command}: {result.stdout}\n{result.stderr}"
        assert self.snapshot() == before

    def hold_transaction(self, sql: str, tag: str, host: str = "db01") -> str:
        """Open a transaction on `host` that runs `sql`, then sleeps 90 s (active, not
        idle); its backend pid."""
        self[host].sudo(
            f"PGAPPNAME={tag} setsid -f psql -X -q -d {DATABASE} -c 'BEGIN; {sql}"
            " SELECT pg_sleep(90); COMMIT' >/dev/null 2>&1 </dev/null",
            user="postgres",
            stdin="",
        )
        query = (
            f"SELECT pid FROM pg_stat_activity WHERE application_name = '{tag}' AND"
            " state = 'active'"
        )
        deadline = time.monotonic() + 20
        while not self.sql(host, query, "postgres"):
            assert time.monotonic() < deadline, (
                f"the held transaction {tag} did not start"
            )
            time.sleep(0.3)
        return self.sql(host, query, "postgres")[0][0]

    def end_transaction(self, tag: str, host: str = "db01") -> None:
        self[host].psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE"
            f" application_name = '{tag}'"
        )

    def sql(self, host: str, query: str, db: str = DATABASE) -> list[list[str]]:
        """Rows of a query as the application would write it (unqualified names:
        public first)."""
        return self[host].psql("SET search_path = public, pg_catalog;\n" + query, db)

    def password(self) -> str:
        """The replication role's password (its file is named by the role)."""
        return (self.home / f"role-{CLUSTER.user}.password").read_text().strip()

    def state(self, host: str) -> dict:
        """The Slony state of a host's database as a plain dict."""
        return asdict(facts.slony_state(self[host], CLUSTER))

    def snapshot(self) -> dict:
        """Everything a step could change on either server: catalogs, pg_hba, Slony
        files, processes."""
        snap = {}
        for name in ("db01", "db02"):
            h = self[name]
            has_db = facts.database_exists(h, DATABASE)
            snap[name] = {
                "roles": h.psql(
                    "SELECT rolname, rolsuper, rolcanlogin, coalesce(rolpassword, '')"
                    " FROM pg_authid ORDER BY 1"
                ),
                "databases": h.psql(
                    "SELECT datname, pg_get_userbyid(datdba) FROM pg_database ORDER"
                    " BY 1"
                ),
                "hba": h.read_file(facts.hba_file(h)),
                "objects": (
                    h.psql(
                        "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN"
                        " pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT"
                        " IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY"
                        " 1, 2",
                        DATABASE,
                    )
                    if has_db
                    else []
                ),
                "triggers": (
                    h.psql(
                        "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE"
                        " NOT tgisinternal ORDER BY 1, 2",
                        DATABASE,
                    )
                    if has_db
                    else []
                ),
                "files": (
                    h.run(
                        "sudo -n sh -c 'ls -la /etc/slony1 /var/run/slony1"
                        " /usr/local/lib/slony-migrate /var/lib/postgresql/.pgpass"
                        " 2>&1; dpkg -l | grep -i slony; true' | grep -v -E '"
                        " \\.\\.?$|^total'"
                    ).stdout
                ),
                "slon": h.run("pgrep -a slon || true").stdout,
            }
        return snap

    def table_digests(self, host: str) -> dict[str, tuple[str, str]]:
        """Row count and an md5 of all rows, ordered, per application table."""
        out = {}
        for _, name in facts.app_tables(self[host], CLUSTER):
            row = self.sql(
                host,
                "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY"
                f" t::text), '')) FROM {name} t",
            )[0]
            out[name] = tuple(row)
        return out

    def sequences(self, host: str) -> dict[str, int]:
        return {
            r[0]: int(r[1] or 0)
            for r in self.sql(
                host,
                "SELECT schemaname || '.' || sequencename, last_value FROM"
                f" pg_sequences WHERE schemaname <> '{CLUSTER.schema}'",
            )
        }

    def assert_acknowledged_once(self, writer, host: str, timeout: float = 0) -> None:
        """Every write the writer saw acknowledged is on `host` exactly once (waiting
        up to `timeout`)."""
        acked = writer.acknowledged()
        assert len(acked) > 10, (
            f"only {len(acked)} writes acknowledged: too few to prove anything"
        )
        try:
            writer.check_acknowledged(self[host], timeout)
        except StepError as e:
            raise AssertionError(e.line()) from None

    def wait_same(self, timeout: float = 30) -> dict:
        """Wait until every table on db02 has db01's rows; return the digests."""
        deadline = time.monotonic() + timeout
        while True:
            a, b = self.table_digests("db01"), self.table_digests("db02")
            if a == b:
                return a
            if time.monotonic() > deadline:
                differ = [t for t in a if a[t] != b.get(t)]
                raise AssertionError(f"tables differ after {timeout} s: {differ}")
            time.sleep(1)

    def reset(self) -> None:
        """Back to a freshly seeded testbed, except the Slony packages, which stay
        installed: every cluster's files and processes, every database but the seed's
        (db01's shotserver04), every role but the seed's (johann on db01)."""
        db01, db02 = self["db01"], self["db02"]
        for h in (db01, db02):  # either may have been the slon host
            h.run(
                "sudo -n pkill -f slon-watchdog; sudo -n pkill -x slon; sudo -n pkill"
                " -x slonik; sleep 0.5; sudo -n pkill -9 -x slon; true",
                check=False,
            )
        for h in (db01, db02):
            keep = ("postgres", "template0", "template1") + (
                (DATABASE,) if h is db01 else ()
            )
            for (db,) in h.psql("SELECT datname FROM pg_database"):
                if db not in keep:
                    h.psql(f'DROP DATABASE "{db}" WITH (FORCE)')
        for h in (db01, db02):
            if facts.database_exists(h, DATABASE):
                for (schema,) in h.psql(
                    "SELECT nspname FROM pg_namespace n WHERE nspname LIKE '\\_%' AND"
                    " EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = n.oid AND"
                    " relname = 'sl_node')",
                    DATABASE,
                ):  # every cluster's schema
                    h.psql(f'DROP SCHEMA "{schema}" CASCADE', DATABASE)
                h.psql(
                    f"GRANT CONNECT ON DATABASE {DATABASE} TO PUBLIC"
                )  # undo a fence
                h.psql(f"ALTER DATABASE {DATABASE} RESET ALL")
                h.psql(
                    "DO $$BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname ="
                    f" '{CLUSTER.user}') THEN REASSIGN OWNED BY {CLUSTER.user} TO"
                    " postgres; END IF; END$$",
                    DATABASE,
                )
            h.psql(f"DROP ROLE IF EXISTS {CLUSTER.user}")
            for (role,) in h.psql(
                "SELECT rolname FROM pg_roles WHERE oid <> 10 AND rolname !~ '^pg_'"
                " AND rolname <> 'johann'"
            ):  # roles a test made (johann on db02: below)
                if facts.database_exists(h, DATABASE):
                    h.psql(f'DROP OWNED BY "{role}"', DATABASE)
                h.psql(f'DROP ROLE "{role}"')
            h.run(
                "sudo -n sed -i '/^# BEGIN slony-migrate/,/^# END slony-migrate/d'"
                f" {facts.hba_file(h)}"
            )
            h.psql("SELECT pg_reload_conf()")
            h.run(
                "sudo -n sh -c 'rm -rf /var/lib/postgresql/.pgpass /etc/slony1/*"
                " /var/run/slony1 /usr/local/lib/slony-migrate /var/log/slony1/*'"
            )
        db02.psql("DROP ROLE IF EXISTS johann")
        self.reset_pooler()

    def reset_pooler(self) -> None:
        """PgBouncer on app pointed at db01 and running (not paused); no application
        writer left running."""
        app = self["app"]
        app.run("pkill -f '[a]ppwriter.py'; true", check=False)
        ini = "/etc/pgbouncer/pgbouncer.ini"
        app.sudo(
            f"sed -i 's/^{DATABASE} = .*/{DATABASE} = host=db01 port=5432"
            f" dbname={DATABASE}/' {ini} && chown postgres:postgres {ini} && chmod 640"
            f" {ini}"
        )
        console = "psql -X -q -h /var/run/postgresql -p 6432 -d pgbouncer -c"
        app.sudo(
            f"{console} RELOAD; {console} 'RESUME {DATABASE}'",
            user="postgres",
            check=False,
        )

    def pooler_target(self) -> str:
        """The host PgBouncer on app sends the application's database to."""
        from fabfile.render.files import pooler_entry

        ini = self["app"].read_file("/etc/pgbouncer/pgbouncer.ini", user="postgres")
        return (pooler_entry(ini, DATABASE) or {}).get("host", "")
