"""One function per runbook step: read facts, render, apply unless dry run, check again.

Each step is a no-op when its work is already done and says so. Steps print one line per finding
or change as `[host] step: message`; they raise StepError (host, object, fix) when they cannot go on.
"""
from __future__ import annotations

import difflib
import hashlib
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from . import facts, render
from .model import Cluster, StepError
from .remote import Host, Hosts
from .render import MASK, literal
from .secrets import replication_password

WATCHDOG = "/usr/local/lib/slony-migrate/slon-watchdog"


@dataclass
class Run:
    """One invocation: the cluster, its hosts, dry-run or not, and the password once read."""

    hosts: Hosts
    cluster: Cluster | None  # None for tasks that name their hosts themselves (build)
    dry_run: bool = False
    prompt_password: bool = False
    changed: list[str] = field(default_factory=list)
    _password: str | None = None

    def host(self, name: str) -> Host:
        return self.hosts[name]

    @property
    def master(self) -> Host:
        return self.host(self.cluster.master.host)

    @property
    def slave(self) -> Host:
        return self.host(self.cluster.slave.host)

    @property
    def slon(self) -> Host:
        return self.host(self.cluster.slon_host)

    def node_hosts(self) -> list[Host]:
        return [self.master, self.slave]

    def password(self) -> str:
        if self._password is None:
            self._password = replication_password(self.cluster.name, prompt=self.prompt_password,
                                                  dry_run=self.dry_run)
        return self._password

    def say(self, host: str, step: str, message: str) -> None:
        print(f"[{host}] {step}: {message}", flush=True)

    def change(self, host: str, step: str, message: str, detail: str = "") -> bool:
        """Report a change; return True when it is to be applied (not a dry run)."""
        prefix = "would " if self.dry_run else ""
        self.say(host, step, prefix + message)
        if detail and self.dry_run:
            print("\n".join("    " + l for l in detail.rstrip("\n").splitlines()), flush=True)
        self.changed.append(f"{host} {step}: {message}")
        return not self.dry_run

    def slonik(self, step: str, script: str, what: str, timeout: int = 600, check: bool = True, quiet=False):
        """Run a slonik script on the slon host as postgres, script on stdin (never in argv).

        Reports it as a change first (quiet: not); returns the result, or None in a dry run.
        """
        if not quiet and not self.change(self.cluster.slon_host, step, what, script):
            return None
        slonik = facts.slony_tool(self.slon, "slonik")
        if not slonik:
            raise StepError(self.slon.name, "slonik is not installed", "run the install (or build) step first")
        return self.slon.sudo(f"{slonik} -w", user="postgres", stdin=script, timeout=timeout, check=check,
                              what=f"slonik ({what})")


def diff(old: str, new: str, path: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), path, path + " (new)"))


def put_file(run: Run, host: Host, step: str, path: str, text: str, *, owner: str = "root:root",
             mode: str = "644", secret: bool = False) -> bool:
    """Write a file when its content differs; show a diff (or only its name when it holds a secret)."""
    old = host.read_file(path)
    if old == text:
        run.say(host.name, step, f"{path} is up to date")
        return False
    detail = "" if secret else diff(old or "", text, path)
    verb = "update" if old is not None else "create"
    if run.change(host.name, step, f"{verb} {path} (mode {mode}{', contents not shown' if secret else ''})",
                  detail):
        host.write_file(path, text, owner=owner, mode=mode)
    return True


# --- 1, 2: Slony software ---------------------------------------------------------------------------

def install(run: Run) -> None:
    """Install Slony from the distribution: the module on each node, the tools on the slon host."""
    step, cl = "install", run.cluster
    names = list(dict.fromkeys([cl.master.host, cl.slave.host, cl.slon_host]))
    plans: dict[str, list[str]] = {}
    versions: dict[str, str] = {}
    for name in names:
        h = run.host(name)
        wanted = []
        if name in (cl.master.host, cl.slave.host):
            major = facts.pg_major(h)
            modules = facts.slony_modules(h)
            if modules:
                versions[name] = modules[-1]
                run.say(name, step, f"Slony module {modules[-1]} present for PostgreSQL {major}")
            else:
                wanted.append(f"postgresql-{major}-slony1-2")
        if name == cl.slon_host:
            have = facts.slonik_version(h)
            if have:
                run.say(name, step, f"slonik {have} present")
                versions.setdefault(name, have)
                if versions[name] != have:
                    raise StepError(name, f"slonik {have} differs from the Slony module {versions[name]}",
                                    "install one Slony version on this host")
            else:
                wanted += ["slony1-2-bin", "libswitch-perl"]
        if not wanted:
            continue
        pkgs = facts.package_versions(h, wanted)
        if any(not cand for _, cand in pkgs.values()) and not run.dry_run:
            run.say(name, step, "refreshing the package lists (apt-get update)")
            h.sudo("apt-get update -q", timeout=600, what="apt-get update")
            pkgs = facts.package_versions(h, wanted)
        missing = [p for p, (_, cand) in pkgs.items() if not cand]
        release = facts.os_release(h).get("PRETTY_NAME", "this distribution")
        if missing and not run.dry_run:
            raise StepError(name, f"no package {', '.join(missing)} in {release}",
                            f"build Slony from source: inv build --host {name} --tarball slony1-VERSION.tar.bz2")
        module = next((p for p in wanted if p.startswith("postgresql-")), wanted[0])
        if pkgs[module][1]:
            versions.setdefault(name, facts.upstream(pkgs[module][1]))
        plans[name] = wanted
    if len(set(versions.values())) > 1:
        listed = ", ".join(f"{h} {v}" for h, v in versions.items())
        raise StepError(", ".join(versions), f"Slony versions differ ({listed})",
                        "use the same Slony version everywhere: build the matching version with inv build")
    for name, wanted in plans.items():
        cmd = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends " + " ".join(wanted)
        if run.change(name, step, f"install {' '.join(wanted)} ({versions.get(name, '?')})", cmd):
            run.host(name).sudo(cmd, timeout=900, what="apt-get install")
            if name in (cl.master.host, cl.slave.host) and not facts.slony_modules(run.host(name)):
                raise StepError(name, "the Slony module is still missing after apt-get install",
                                "check the package's contents (dpkg -L)")


def build(run: Run, host_name: str, tarball: str, sha256: str = "",
          deps: str = "build-essential flex bison postgresql-server-dev-{major}") -> None:
    """Build and install Slony from a source tarball (URL or local path) on one host."""
    step = "build"
    m = re.match(r"^slony1-(\d+\.\d+\.\d+)\.tar\.(bz2|gz)$", PurePosixPath(tarball).name)
    if not m:
        raise StepError(host_name, f"tarball {tarball!r} is not named slony1-VERSION.tar.bz2 or .tar.gz",
                        "give Slony's release tarball")
    version = m.group(1)
    remote_url = re.match(r"^https?://", tarball)
    if not remote_url and not os.path.isfile(tarball):
        raise StepError("local", f"tarball {tarball} not found", "give an existing path or a URL")
    if sha256 and not re.match(r"^[0-9a-f]{64}$", sha256):
        raise StepError("input", f"--sha256 {sha256!r} is not a SHA-256 hex digest", "give 64 hex digits")
    h = run.host(host_name)
    major = facts.pg_major(h)
    if version in facts.slony_modules(h):
        run.say(host_name, step, f"Slony {version} already installed for PostgreSQL {major}; nothing to do")
        return
    bindir = facts.pg_dir(h, "BINDIR")
    # Unpacking a .bz2 needs bzip2 on top of the build dependencies.
    packages = " ".join([deps.format(major=major), *(["bzip2"] if tarball.endswith(".bz2") else [])])
    plan = (f"apt-get install {packages}\nfetch {tarball}" + (f"\nverify sha256 {sha256}" if sha256 else "")
            + f"\n./configure --with-pgconfigdir={bindir}\nmake\nsudo make install")
    if not run.change(host_name, step, f"build Slony {version} for PostgreSQL {major} from {tarball}", plan):
        return
    name = PurePosixPath(tarball).name
    mismatch = lambda got: StepError(host_name, f"checksum mismatch for {name}: expected {sha256}, got {got}",  # noqa: E731
                                     "check the tarball and --sha256; nothing was installed")
    if sha256 and not remote_url:
        with open(tarball, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        if got != sha256:
            raise mismatch(got)
    work = h.run("mktemp -d /tmp/slony-build.XXXXXX").stdout.strip()
    archive = f"{work}/{name}"
    if remote_url:
        if h.run("command -v curl", check=False).failed:
            h.sudo("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl ca-certificates",
                   timeout=600, what="apt-get install curl")
        h.run(f"curl -fsSL -o {archive} {shlex.quote(tarball)}", timeout=600, what=f"download {tarball}")
        if sha256:
            got = h.run(f"sha256sum {archive}").stdout.split()[0]
            if got != sha256:
                h.run(f"rm -rf {work}", check=False)
                raise mismatch(got)
    else:
        h.conn.put(tarball, archive)
    if sha256:
        run.say(host_name, step, "checksum verified")
    status = h.run(f"dpkg-query -W -f '${{db:Status-Status}}\\n' {packages}", check=False)
    if status.failed or set(status.stdout.split()) != {"installed"}:
        run.say(host_name, step, f"installing build dependencies: {packages}")
        h.sudo(f"apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
               f"--no-install-recommends {packages}", timeout=1200, what="apt-get install (build dependencies)")
    h.run(f"tar -xf {archive} -C {work}", what="tar")
    src = f"{work}/slony1-{version}"
    run.say(host_name, step, f"configure --with-pgconfigdir={bindir}")
    h.run(f"cd {src} && ./configure --with-pgconfigdir={bindir} > {work}/configure.log 2>&1",
          timeout=600, what=f"configure (log {work}/configure.log)")
    run.say(host_name, step, "make (serial: the flex scanner is not parallel-safe)")
    h.run(f"cd {src} && make > {work}/make.log 2>&1", timeout=1800, what=f"make (log {work}/make.log)")
    h.sudo(f"cd {src} && make install > {work}/install.log 2>&1", timeout=600,
           what=f"make install (log {work}/install.log)")
    h.run(f"rm -rf {work}", check=False)  # kept, with its logs, when a command above failed
    if version not in facts.slony_modules(h):
        raise StepError(host_name, f"make install left no slony1_funcs.{version}.so in the pkglibdir",
                        "check the build logs in /tmp/slony-build.*")
    run.say(host_name, step, f"Slony {version} installed for PostgreSQL {major}")


# --- 3-7: users, access, database, language, schema ---------------------------------------------------

def users(run: Run) -> None:
    """The replication superuser on each node (SCRAM verifier), and its .pgpass on the slon host."""
    step, cl = "users", run.cluster
    password = run.password()
    for h in run.node_hosts():
        rows = h.psql("SELECT rolsuper, rolcanlogin, rolpassword FROM pg_authid "
                      f"WHERE rolname = {literal(cl.user)}")
        if not rows:
            sql = f"CREATE ROLE {cl.user} WITH LOGIN SUPERUSER PASSWORD {{}}"
            if run.change(h.name, step, f"create role {cl.user} (superuser, SCRAM password)",
                          sql.format(literal(MASK))):
                h.psql(sql.format(literal(render.scram_verifier(password))))
            continue
        superuser, login, verifier = rows[0]
        if superuser == "t" and login == "t" and render.scram_matches(verifier, password):
            run.say(h.name, step, f"role {cl.user} exists (superuser, password current)")
            continue
        sql = f"ALTER ROLE {cl.user} WITH LOGIN SUPERUSER PASSWORD {{}}"
        if run.change(h.name, step, f"update role {cl.user} (superuser, login, SCRAM password)",
                      sql.format(literal(MASK))):
            h.psql(sql.format(literal(render.scram_verifier(password))))
    pgpass(run, step)


def pgpass(run: Run, step: str, remove: bool = False) -> None:
    """The managed .pgpass block of the postgres user on the slon host (mode 0600)."""
    cl, h = run.cluster, run.slon
    home = h.run("getent passwd postgres").stdout.split(":")[5]
    path = f"{home}/.pgpass"
    old = h.read_file(path) or ""
    lines = [] if remove else render.pgpass_lines(cl, run.password())
    new = render.apply_block(old, f"cluster {cl.name}", lines)
    mode = h.run(f"sudo -n stat -c %a {shlex.quote(path)}", check=False).stdout.strip()
    if new == old and (mode == "600" or not new):
        run.say(h.name, step, f"{path} is up to date")
        return
    put_file(run, h, step, path, new, owner="postgres:postgres", mode="600", secret=True)


def hba_addresses(run: Run, h: Host) -> list[str]:
    """Addresses, as this node sees them, of the host that runs slon (and slonik, pg_dump)."""
    cl = run.cluster
    own = {n.host: n.dbhost for n in cl.nodes}
    return [facts.address_of(h, own.get(cl.slon_host, cl.slon_host))]


def hba(run: Run, remove: bool = False) -> None:
    """A managed pg_hba.conf block admitting the replication user from the slon host; reload."""
    step, cl = "hba", run.cluster
    for h in run.node_hosts():
        lines = [] if remove else render.hba_lines(cl, hba_addresses(run, h))
        path = h.value("SHOW hba_file")
        old = h.read_file(path) or ""
        new = render.apply_block(old, f"cluster {cl.name}", lines, top=True)
        if new == old:
            # A run killed between writing the file and reloading leaves it unloaded: reload then.
            if h.value(f"SELECT pg_conf_load_time() < (pg_stat_file({literal(path)})).modification") == "t":
                if run.change(h.name, step, f"reload PostgreSQL ({path} changed since the last load)"):
                    h.psql("SELECT pg_reload_conf()")
                continue
            run.say(h.name, step, f"{path} is up to date")
            continue
        owner_mode = h.run(f"sudo -n stat -c '%U:%G %a' {shlex.quote(path)}").stdout.split()
        if not run.change(h.name, step, f"{'remove the managed block from' if remove else 'update'} {path}"
                          " and reload", diff(old, new, path)):
            continue
        h.write_file(path, new, owner=owner_mode[0], mode=owner_mode[1])
        h.psql("SELECT pg_reload_conf()")
        errors = h.psql("SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL")
        if errors:
            h.write_file(path, old, owner=owner_mode[0], mode=owner_mode[1])
            h.psql("SELECT pg_reload_conf()")
            raise StepError(h.name, f"{path} line {errors[0][0]}: {errors[0][1]} (old file restored)",
                            "fix pg_hba.conf by hand, then run again")


APP_ROLES = r"""
WITH app AS (SELECT oid FROM pg_namespace
              WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', {schema})
                AND nspname NOT LIKE 'pg\_%'),
used AS (
  SELECT datdba AS r FROM pg_database WHERE datname = current_database()
  UNION SELECT nspowner FROM pg_namespace WHERE oid IN (SELECT oid FROM app)
  UNION SELECT relowner FROM pg_class WHERE relnamespace IN (SELECT oid FROM app)
  UNION SELECT proowner FROM pg_proc WHERE pronamespace IN (SELECT oid FROM app)
  UNION SELECT typowner FROM pg_type WHERE typnamespace IN (SELECT oid FROM app)
  UNION SELECT (aclexplode(relacl)).grantee FROM pg_class
         WHERE relacl IS NOT NULL AND relnamespace IN (SELECT oid FROM app)
  UNION SELECT (aclexplode(nspacl)).grantee FROM pg_namespace
         WHERE nspacl IS NOT NULL AND oid IN (SELECT oid FROM app))
SELECT rolname, rolcanlogin, rolcreatedb, rolcreaterole, rolinherit, coalesce(rolpassword, '')
  FROM pg_authid WHERE oid IN (SELECT r FROM used) AND oid <> 10 AND rolname <> {user}
   AND rolname NOT LIKE 'pg\_%'
 ORDER BY rolname"""


def appdb(run: Run) -> None:
    """On the slave: the application's roles and the database with the master's owner, encoding, locale."""
    step, cl = "appdb", run.cluster
    facts.require_database(run.master, cl.database)
    info = facts.database_info(run.master, cl.database)
    roles = run.master.psql(APP_ROLES.format(schema=literal(cl.schema), user=literal(cl.user)), cl.database)
    existing = {r[0] for r in run.slave.psql("SELECT rolname FROM pg_roles")}
    for name, login, createdb, createrole, inherit, verifier in roles:
        if name in existing:
            run.say(run.slave.name, step, f"role {name} exists")
            continue
        attrs = " ".join([
            "LOGIN" if login == "t" else "NOLOGIN", "CREATEDB" if createdb == "t" else "NOCREATEDB",
            "CREATEROLE" if createrole == "t" else "NOCREATEROLE", "INHERIT" if inherit == "t" else "NOINHERIT"])
        sql = f"CREATE ROLE {render.ident(name)} WITH {attrs}" + (" PASSWORD {}" if verifier else "")
        if run.change(run.slave.name, step, f"create role {name} (as on {run.master.name})",
                      sql.format(literal(MASK))):
            run.slave.psql(sql.format(literal(verifier)))
    have = facts.database_info(run.slave, cl.database)
    if have:
        if (have["encoding"], have["owner"]) != (info["encoding"], info["owner"]):
            raise StepError(run.slave.name, f"database {cl.database} exists with owner {have['owner']}, encoding "
                            f"{have['encoding']} (master: {info['owner']}, {info['encoding']})",
                            f"drop it on {run.slave.name} if it is a leftover, then run again")
        run.say(run.slave.name, step, f"database {cl.database} exists (owner {have['owner']}, {have['encoding']})")
        return
    sql = (f"CREATE DATABASE {cl.database} OWNER {render.ident(info['owner'])} TEMPLATE template0 "
           f"ENCODING {literal(info['encoding'])} LC_COLLATE {literal(info['collate'])} "
           f"LC_CTYPE {literal(info['ctype'])}")
    if run.change(run.slave.name, step, f"create database {cl.database} (owner {info['owner']}, "
                  f"{info['encoding']}, {info['collate']})", sql):
        run.slave.psql(sql)


def plpgsql(run: Run) -> None:
    """PL/pgSQL in the database on each node (built in since PostgreSQL 9.0: usually only a check)."""
    step, cl = "plpgsql", run.cluster
    for h in run.node_hosts():
        if not facts.database_exists(h, cl.database):
            if run.dry_run:
                run.say(h.name, step, f"database {cl.database} not there yet (dry run); would check PL/pgSQL")
                continue
            facts.require_database(h, cl.database)
        if h.psql("SELECT 1 FROM pg_language WHERE lanname = 'plpgsql'", cl.database):
            run.say(h.name, step, "PL/pgSQL present (built in since PostgreSQL 9.0; createlang is gone since 10)")
            continue
        sql = "CREATE EXTENSION IF NOT EXISTS plpgsql" if facts.pg_major(h) >= 10 else "CREATE LANGUAGE plpgsql"
        if run.change(h.name, step, f"install PL/pgSQL in {cl.database}", sql):
            h.psql(sql, cl.database)


def schema(run: Run) -> None:
    """Copy the schema from master to slave, streamed host to host from the slon host (not _<cluster>)."""
    step, cl = "schema", run.cluster
    facts.require_database(run.master, cl.database)
    wanted = [name for _, name in facts.app_tables(run.master, cl)]
    if not run.dry_run or facts.database_exists(run.slave, cl.database):
        have = {name for _, name in facts.app_tables(run.slave, cl)}
    else:
        have = set()
    if wanted and have >= set(wanted):
        run.say(run.slave.name, step, f"schema present ({len(wanted)} tables)")
        return
    if have:
        raise StepError(run.slave.name, f"database {cl.database} holds part of the schema "
                        f"({len(have)} of {len(wanted)} tables)",
                        f"drop and recreate {cl.database} on {run.slave.name}, then run again")
    h = run.slon
    pg_dump = facts.newest_client(h, "pg_dump")
    if not pg_dump:
        raise StepError(h.name, "no pg_dump under /usr/lib/postgresql/*/bin", "install postgresql-client")
    m, s = cl.master, cl.slave
    deny = rf"TRIGGER {cl.schema}_(logtrigger|truncatetrigger|denyaccess|truncatedeny)\b"
    pipeline = (
        f"{pg_dump} -w -h {m.dbhost} -p {m.port} -U {cl.user} -d {cl.database} --schema-only "
        f"--no-publications --no-subscriptions --exclude-schema={cl.schema} "
        f"| grep -v -E {shlex.quote(deny)} "
        f"| psql -w -X -q -h {s.dbhost} -p {s.port} -U {cl.user} -d {cl.database} "
        "-v ON_ERROR_STOP=1 --single-transaction -o /dev/null"
    )
    if run.change(h.name, step, f"copy the schema of {cl.database} from {m.dbhost} to {s.dbhost} "
                  f"({len(wanted)} tables)", pipeline):
        h.sudo(f"bash -o pipefail -c {shlex.quote(pipeline)}", user="postgres", timeout=1800,
               what="pg_dump -s | psql")
        have = {name for _, name in facts.app_tables(run.slave, cl)}
        if not have >= set(wanted):
            raise StepError(run.slave.name, f"schema copy left out {', '.join(sorted(set(wanted) - have))}",
                            "check pg_dump's output by hand")


# --- 8: configuration -----------------------------------------------------------------------------

def config(run: Run) -> None:
    """Write slon_tools.conf and each node's slon.conf on the slon host (no passwords in them)."""
    step, cl = "config", run.cluster
    tables, sequences = facts.replicable(run.master, cl)
    h = run.slon
    put_file(run, h, step, f"{cl.confdir}/slon_tools.conf", render.slon_tools_conf(cl, tables, sequences))
    for n in cl.nodes:
        put_file(run, h, step, f"{cl.confdir}/{n.instance}/slon.conf", render.slon_conf(cl, n))


def show_config(run: Run) -> str:
    """The configuration as the altperl tools read it (slony_show_configuration)."""
    return run.slon.run("slony_show_configuration", what="slony_show_configuration").stdout


# --- 9-11: cluster and daemons --------------------------------------------------------------------

def init(run: Run) -> None:
    """Init cluster on the master, store the slave node and the paths both ways; no-op when done."""
    step, cl = "init", run.cluster
    origin = facts.slony_state(run.master, cl)
    receiver = facts.slony_state(run.slave, cl)
    if receiver["schema"] and not origin["schema"]:
        raise StepError(run.slave.name, f"schema {cl.schema} exists on the slave but not on the master "
                        "(left over from an earlier attempt)", "run inv uninstall, then run again")
    m, s = cl.master.id, cl.slave.id
    # A path (server, client) is stored on its client first; slon spreads it to the other node later.
    on_client = {m: origin, s: receiver}
    paths = [(a, b) for a, b in ((m, s), (s, m)) if (a, b) not in on_client[b]["paths"]]
    store_slave = s not in origin["nodes"]
    if origin["schema"] and not store_slave and not paths:
        run.say(run.master.name, step, f"cluster {cl.name} initialised: nodes {m}, {s} and paths both ways")
        return
    script = render.slonik_init(cl, init=not origin["schema"], store_slave=store_slave, paths=paths)
    run.slonik(step, script, f"init cluster {cl.name} (schema {cl.schema}, nodes, paths)")
    if not run.dry_run:
        origin, receiver = facts.slony_state(run.master, cl), facts.slony_state(run.slave, cl)
        if s not in origin["nodes"] or (m, s) not in receiver["paths"] or (s, m) not in origin["paths"]:
            raise StepError(run.master.name, f"init left cluster {cl.name} incomplete", "read slonik's output")


def slons(run: Run, stop: bool = False) -> None:
    """Start a watchdog and slon per node on the slon host (never two per node); or stop them."""
    step, cl, h = "slons", run.cluster, run.slon
    if stop:
        for n in cl.nodes:
            pid = facts.slon_running(h, cl, n.instance)
            if pid is None:
                run.say(h.name, step, f"slon for {n.instance} is not running")
            elif run.change(h.name, step, f"stop slon for {n.instance} (watchdog {pid})"):
                h.sudo(f"kill -TERM {pid}")
                wait_until(lambda: facts.slon_running(h, cl, n.instance) is None, 30, h.name,
                           f"slon watchdog {pid} still running", f"kill it by hand: sudo kill {pid}")
        return
    slon = facts.slony_tool(h, "slon")
    if not slon:
        if run.dry_run:
            slon = "/usr/bin/slon"
        else:
            raise StepError(h.name, "slon is not installed", "run the install (or build) step first")
    put_file(run, h, step, WATCHDOG, render.watchdog_script(cl, slon), mode="755")
    for d in (cl.logdir, cl.rundir):
        if h.run(f"test -d {d} && test -w {d} || sudo -n -u postgres test -w {d}", check=False).failed:
            if run.change(h.name, step, f"create {d} (owner postgres)"):
                h.sudo(f"install -d -o postgres -g postgres -m 2775 {d}")
    for n in cl.nodes:
        pid = facts.slon_running(h, cl, n.instance)
        if pid:
            run.say(h.name, step, f"slon for {n.instance} running (watchdog pid {pid})")
            continue
        conf = f"{cl.confdir}/{n.instance}/slon.conf"
        if run.change(h.name, step, f"start slon for {n.instance} with watchdog "
                      f"(log {cl.logdir}/slon-{n.instance}.log)", f"{WATCHDOG} {n.instance}  # slon -f {conf}"):
            h.sudo(f"setsid -f {WATCHDOG} {n.instance} </dev/null >/dev/null 2>&1", user="postgres")
            wait_until(lambda: facts.slon_running(h, cl, n.instance), 15, h.name,
                       f"slon watchdog for {n.instance} did not start",
                       f"read {cl.logdir}/slon-{n.instance}.log")


def wait_until(predicate, timeout: float, host: str, message: str, fix: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StepError(host, f"{message} after {timeout:.0f} s", fix)
        time.sleep(every)


def uninstall(run: Run) -> None:
    """Remove the cluster from both nodes (stop slons, UNINSTALL NODE); tables and data stay."""
    step, cl = "uninstall", run.cluster
    slons(run, stop=True)
    present = [n.id for n, h in zip(cl.nodes, run.node_hosts()) if facts.schema_exists(h, cl.database, cl.schema)]
    if not present:
        run.say(run.master.name, step, f"no {cl.schema} schema on either node; nothing to remove")
        return
    run.slonik(step, render.slonik_uninstall(cl, present), f"uninstall node {', '.join(map(str, present))}")
    if not run.dry_run:
        left = [h.name for h in run.node_hosts() if facts.schema_exists(h, cl.database, cl.schema)]
        if left:
            raise StepError(", ".join(left), f"schema {cl.schema} still present after uninstall",
                            "read slonik's output")


# --- 12-14: set, subscription, logs ---------------------------------------------------------------

def create_set(run: Run) -> None:
    """Create the set with every table and sequence of the application's schemas (keyless: refuse)."""
    step, cl = "create-set", run.cluster
    tables, sequences = facts.replicable(run.master, cl)
    state = facts.slony_state(run.master, cl)
    if not state["schema"] and not run.dry_run:
        raise StepError(run.master.name, f"cluster {cl.name} is not initialised", "run the init step first")
    missing_t = [t for t in tables if t.name not in state["tables"]]
    missing_s = [q for q in sequences if q not in state["sequences"]]
    if state["set"] and not missing_t and not missing_s:
        run.say(run.master.name, step, f"set {cl.set_id} holds all {len(tables)} tables and "
                f"{len(sequences)} sequences")
        return
    if state["subscribed"] is not None and (missing_t or missing_s):
        names = ", ".join([t.name for t in missing_t] + missing_s)
        raise StepError(run.master.name, f"set {cl.set_id} is subscribed and lacks {names}",
                        "add them through a second set and MERGE SET (not automated yet)")
    used_t, used_s = set(state["tables"].values()), set(state["sequences"].values())
    t_ids = allocate([tables.index(t) + 1 for t in missing_t], used_t)
    s_ids = allocate([sequences.index(q) + 1 for q in missing_s], used_s)
    script = render.slonik_create_set(cl, list(zip(t_ids, missing_t)), list(zip(s_ids, missing_s)),
                                      create=not state["set"])
    run.slonik(step, script, f"create set {cl.set_id}: add {len(missing_t)} tables, {len(missing_s)} sequences")


def allocate(wanted: list[int], used: set[int]) -> list[int]:
    """Keep each wanted id unless taken; give taken ones fresh ids above every used one."""
    out, taken = [], set(used)
    for i in wanted:
        if i in taken:
            i = max(taken | set(wanted)) + 1
        taken.add(i)
        out.append(i)
    return out


def subscribe(run: Run, wait: bool = True, timeout: int = 3600) -> None:
    """Subscribe the slave to the set (forward = yes); refuse a receiver whose tables hold rows."""
    step, cl = "subscribe", run.cluster
    state = facts.slony_state(run.master, cl)
    if not state["set"] and not run.dry_run:
        raise StepError(run.master.name, f"set {cl.set_id} does not exist", "run the set step first")
    if state["subscribed"] is None:
        full = facts.tables_with_rows(run.slave, cl.database, list(state["tables"]))
        if full:
            raise StepError(run.slave.name, f"receiver tables hold rows: {', '.join(full[:5])}"
                            + (" ..." if len(full) > 5 else ""),
                            "subscribing would empty them; check --master/--slave, or empty them on purpose")
        for n in cl.nodes:
            if not facts.slon_running(run.slon, cl, n.instance) and not run.dry_run:
                raise StepError(run.slon.name, f"slon for {n.instance} is not running", "run the slons step first")
        run.slonik(step, render.slonik_subscribe(cl), f"subscribe {run.slave.name} to set {cl.set_id}")
    if wait and not run.dry_run:
        wait_copied(run, timeout)
    elif state["subscribed"] is not None:
        run.say(run.slave.name, step, f"subscribed to set {cl.set_id} "
                f"({'copy done' if receiver_active(run) else 'initial copy running'})")


def receiver_active(run: Run) -> bool:
    cl = run.cluster
    if not facts.schema_exists(run.slave, cl.database, cl.schema):
        return False
    # Whichever node is the receiver now (after a switchover it is the master), its copy is done.
    return run.slave.value(f"SELECT bool_and(sub_active) FROM {cl.schema}.sl_subscribe "
                           f"WHERE sub_set = {cl.set_id}", cl.database) == "t"


def wait_copied(run: Run, timeout: int) -> None:
    """Wait for the initial copy to finish on the receiver, printing progress every few seconds."""
    step, cl = "subscribe", run.cluster
    start = time.monotonic()
    last = -5.0
    while not receiver_active(run):
        now = time.monotonic() - start
        if now > timeout:
            raise StepError(run.slave.name, f"initial copy of set {cl.set_id} not finished after {timeout} s",
                            f"inv status / inv logs --node {cl.slave.id}; run subscribe --wait again")
        if now - last >= 5:
            progress = facts.copy_progress(run.master, run.slave, run.slon, cl)
            run.say(run.slave.name, step, f"initial copy: {progress['line']}")
            last = now
        time.sleep(1)
    run.say(run.slave.name, step, f"initial copy of set {cl.set_id} done ({time.monotonic() - start:.0f} s "
            "of waiting); the slave replicates")


def logs(run: Run, node: int = 0, lines: int = 50, follow: bool = False) -> None:
    """Show (or follow) the slon logs on the slon host."""
    cl = run.cluster
    nodes = [cl.node(node)] if node else list(cl.nodes)
    files = " ".join(f"{cl.logdir}/slon-{n.instance}.log" for n in nodes)
    if follow:
        run.slon.conn.run(f"sudo -n tail -n {lines} -F {files}", pty=True, in_stream=False)
    else:
        print(run.slon.sudo(f"tail -n {lines} {files}", what="tail").stdout, end="")


STEPS = [install, users, hba, appdb, plpgsql, schema, config, init, slons, create_set, subscribe]
# The names the tasks and the log lines use: create_set -> create-set.
STEP_NAMES = [fn.__name__.replace("_", "-") for fn in STEPS]
