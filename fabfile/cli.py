"""The task layer: one Invoke task per step and operation. Tasks parse arguments and call steps.

`operation` declares a task once: the step's own flags from its signature, plus the common flags
(--master, --slave, --slon-host, --cluster, --database, --user), and where they apply --dry-run,
--prompt-password and --yes. A flag wins over the configuration (fabfile.settings.DEFAULTS,
invoke.yaml, INVOKE_SLONY_* variables). A StepError becomes one line on stderr and exit code 1.

`namespace()` is the same collection for `inv` in a checkout (tasks.py) and for the
`slony-migrate` command of an installed package (`main`).
"""
from __future__ import annotations

import inspect
import sys
from inspect import Parameter

from invoke import Collection, Exit, Program, task

from . import settings
from .endgame import failover as failover_
from .endgame import finish as finish_
from .endgame import status as status_
from .endgame import switchover as switchover_
from .endgame import verify as verify_
from .errors import StepError
from .migrate import check, migrate as migrate_
from .model import make_cluster
from .remote import Hosts
from .session import Session, ask_terminal
from .steps import access, cluster, database, software
from .steps import ddl as ddl_

VERSION = "0.2.0"

COMMON = {
    "master": "SSH name of the old server (the set's origin)",
    "slave": "SSH name of the new server",
    "slon_host": "SSH name of the host that runs slon and slonik (default: the slave)",
    "cluster": f"Slony cluster name (default: {settings.DEFAULTS['slony']['cluster']})",
    "database": f"database to move (default: {settings.DEFAULTS['slony']['database']})",
    "user": f"replication superuser (default: {settings.DEFAULTS['slony']['user']})",
}
DRY_RUN = "show what would be done (scripts, SQL, diffs; passwords masked) and change nothing"
PROMPT_PASSWORD = "ask for the replication password instead of reading it from the environment or file"


def open_session(c, opts: dict, needs_pair: bool) -> Session:
    """The Session for one task: each setting from its flag, else the configuration.

    needs_pair: False for tasks that name their hosts themselves (build) and need no master and slave.
    """
    conf = c.config.slony
    pick = lambda key: opts.get(key) or conf.get(key)  # noqa: E731
    cl = None
    if needs_pair or pick("master") or pick("slave"):
        cl = make_cluster(pick("master"), pick("slave"), slon_host=pick("slon_host") or "", name=pick("cluster"),
                          database=pick("database"), user=pick("user"), port=int(conf.port),
                          ssl_ca=conf.get("ssl_ca", ""))
    return Session(Hosts(conf.ssh_config, conf.strict_host_keys), cl, dry_run=bool(opts.get("dry_run")),
                   prompt_password=bool(opts.get("prompt_password")))


def number(flag: str, value, kind: type, positive: bool):
    """A numeric flag's value, parsed here (not by Invoke) so that a bad one is one line naming the flag."""
    try:
        n = kind(value)
    except (TypeError, ValueError):
        n = None
    if n is None or n < 0 or (positive and n == 0) or n != n:
        what = "a positive" if positive else "a"
        raise StepError("input", f"--{flag.replace('_', '-')} {value!r} is not {what} "
                        f"{'whole number' if kind is int else 'number'}" + ("" if positive else " (0 or more)"),
                        f"give for example --{flag.replace('_', '-')} {kind(1) if positive else kind(0)}")
    return n


def operation(name: str = "", *, dry_run: bool = True, prompt_password: bool = False, confirm: str = "",
              needs_pair: bool = True, help: dict[str, str] | None = None, positive: tuple[str, ...] = ()):
    """Make `fn(s, **own flags)` a task with the common flags; see the module's docstring.

    Numeric flags (an int or float default) are parsed here: never negative, and > 0 when named in
    `positive`.
    """
    def wrap(fn):
        own = list(inspect.signature(fn).parameters.values())[1:]
        numeric = {p.name: type(p.default) for p in own if type(p.default) in (int, float)}
        extra = {"dry_run": dry_run, "prompt_password": prompt_password, "yes": bool(confirm)}
        flags = [Parameter(k, Parameter.KEYWORD_ONLY, default=None) for k in COMMON]
        flags += [Parameter(k, Parameter.KEYWORD_ONLY, default=False) for k, on in extra.items() if on]
        task_name = name or fn.__name__.rstrip("_").replace("_", "-")

        def body(c, *args, **opts):
            if confirm and not opts.get("yes") and not opts.get("dry_run") and not ask_terminal(confirm):
                raise Exit(f"{task_name}: not confirmed; nothing changed", code=1)
            mine = {p.name: opts.pop(p.name) for p in own if p.name in opts}
            try:
                for k, kind in numeric.items():
                    if k in mine:
                        mine[k] = number(k, mine[k], kind, k in positive)
                s = open_session(c, opts, needs_pair)
                with s.hosts:
                    fn(s, *args, **mine)
                    if s.dry_run:
                        s.out.line(f"dry run: {len(s.changes)} change(s) would be made; nothing was changed")
            except StepError as e:
                print(f"error: {e.line()}", file=sys.stderr, flush=True)
                raise Exit(code=1) from None
        body.__signature__ = inspect.Signature(
            [Parameter("c", Parameter.POSITIONAL_OR_KEYWORD),
             *[p.replace(kind=Parameter.POSITIONAL_OR_KEYWORD,
                         default=str(p.default) if p.name in numeric else p.default) for p in own],
             *[p.replace(kind=Parameter.POSITIONAL_OR_KEYWORD) for p in flags]])
        body.__doc__, body.__name__ = fn.__doc__, fn.__name__
        helps = {**COMMON, **(help or {})}
        if dry_run:
            helps["dry_run"] = DRY_RUN
        if prompt_password:
            helps["prompt_password"] = PROMPT_PASSWORD
        if confirm:
            helps["yes"] = "do not ask for confirmation"
        return task(body, name=task_name, help={k.replace("_", "-"): v for k, v in helps.items()})
    return wrap


def step(fn, name: str = ""):
    """A task for a runbook step that takes the common flags only."""
    return operation(name, prompt_password=True)(fn)


# --- the runbook's steps ------------------------------------------------------------------------------

install = step(software.install)
users = step(access.users)
hba = step(access.hba)
appdb = step(database.appdb)
plpgsql = step(database.plpgsql)
schema = step(database.schema)
config = step(cluster.config)
init = step(cluster.init)
create_set = step(cluster.create_set, "create-set")


@operation(needs_pair=False, help={
    "host": "SSH name of the host to build on", "tarball": "URL or local path of slony1-VERSION.tar.bz2",
    "sha256": "expected SHA-256 of the tarball", "deps": "build dependencies ({major}: PostgreSQL major)"})
def build(s, host, tarball, sha256="", deps=software.BUILD_DEPS):
    """Build and install Slony from a source tarball on one host; no-op when that version is there."""
    software.build(s, host, tarball, sha256, deps)


@operation(help={"stop": "stop the slons and their watchdogs instead"})
def slons(s, stop=False):
    """Start slon with a watchdog for both nodes on the slon host (never a second one); --stop stops them."""
    cluster.slons(s, stop=stop)


COPY_RETRIES = f"failed attempts of the initial copy before giving up (default {settings.COPY_RETRIES})"


@operation(positive=("timeout", "copy_retries"), help={"wait": "wait until the initial copy is done",
                                                       "timeout": "seconds to wait at most",
                                                       "copy_retries": COPY_RETRIES})
def subscribe(s, wait=False, timeout=settings.COPY_WAIT, copy_retries=settings.COPY_RETRIES):
    """Subscribe the slave to the set; with --wait, return when the initial copy is done."""
    cluster.subscribe(s, wait=wait, timeout=timeout, copy_retries=copy_retries)


@operation(confirm="This stops replication and removes the Slony cluster from both nodes.")
def uninstall(s):
    """Remove a previous attempt: stop slons, uninstall the cluster on both nodes; data stays."""
    cluster.uninstall(s)


@operation(dry_run=False)
def show_config(s):
    """Show the Slony configuration as the altperl tools read it (slony_show_configuration)."""
    cluster.show_config(s)


@operation(help={"file": "the SQL file with the schema change (run on both nodes, the origin first)"})
def ddl(s, file):
    """Change the schema while replicating (EXECUTE SCRIPT); tables and sequences it creates are replicated too."""
    ddl_.ddl(s, file)


@operation(dry_run=False, positive=("lines",), help={"node": "node id (default: both)", "lines": "lines to show",
                                                     "follow": "follow the logs"})
def logs(s, node=0, lines=50, follow=False):
    """Show or follow the slon logs on the slon host."""
    cluster.logs(s, node=node, lines=lines, follow=follow)


# --- migrate and the end-game ----------------------------------------------------------------------------

@operation(dry_run=False)
def preflight(s):
    """Check both servers before a migration: ok / warn / fail per check, with host, object and fix."""
    check(s)


@operation(prompt_password=True, positive=("timeout", "copy_retries"), help={
    "tarball": "build Slony from this tarball instead of installing packages",
    "sha256": "expected SHA-256 of the tarball", "timeout": "seconds to wait for the initial copy",
    "copy_retries": COPY_RETRIES, "add_keys": "give every table without a key a primary key (a new "
    "identity column) on the master first; preflight names them and their sizes"})
def migrate(s, tarball="", sha256="", timeout=settings.COPY_WAIT, copy_retries=settings.COPY_RETRIES,
            add_keys=False):
    """Run every step in order; return when the slave is subscribed and the initial copy is done."""
    migrate_(s, tarball, sha256, timeout, copy_retries, add_keys)


@operation(dry_run=False, help={"watch": "refresh every N seconds until interrupted",
                                "json": "print JSON for scripts and monitoring"})
def status(s, watch=0, json_=False):
    """Nodes, set origin, subscription, slons, lag; during the initial copy, progress and ETA."""
    status_.show_status(s, watch, json_)


@operation(dry_run=False)
def verify(s):
    """Compare origin and subscriber: rows and checksums per table, sequences, schema; exit 1 on a difference."""
    verify_.check(s)

SWITCH_HELP = {
    "lock_timeout": f"LOCK SET (and PgBouncer's PAUSE) must succeed within this many seconds, else it is "
                    f"undone (default {settings.LOCK_TIMEOUT:g})",
    "max_lag": f"refuse when events older than this many seconds wait (default {settings.MAX_LAG:.0f})",
    "wait_lag": f"wait this long for the lag to drop below --max-lag (default {settings.WAIT_LAG:.0f})",
    "xact_age": f"a transaction older than this many seconds blocks the switchover (default {settings.XACT_AGE:.0f})",
    "wait_xacts": f"wait this long for such transactions to end before giving up (default {settings.WAIT_XACTS:.0f})",
    "timeout": f"seconds to wait for each event of the move: the new origin's confirmation of the last "
               f"SYNC, then its taking over (default {settings.MOVE_EVENT})",
    "pooler": "SSH name of the host whose PgBouncer the application goes through: PAUSE it around the move, "
              "then point it at the new origin and RESUME (the application waits, sees no error)",
    "pooler_config": f"PgBouncer's configuration on that host (default {settings.POOLER_CONFIG})",
}


@operation(help=SWITCH_HELP, positive=("timeout", "lock_timeout"))
def switchover(s, max_lag=settings.MAX_LAG, wait_lag=settings.WAIT_LAG, xact_age=settings.XACT_AGE,
               wait_xacts=settings.WAIT_XACTS, timeout=settings.MOVE_EVENT, lock_timeout=settings.LOCK_TIMEOUT,
               pooler="", pooler_config=settings.POOLER_CONFIG):
    """Make the slave the origin (LOCK SET, MOVE SET), then prove it; reports the blocked-write window."""
    switchover_.switchover(s, s.cluster.slave, max_lag=max_lag, wait_lag=wait_lag, xact_age=xact_age,
                           wait_xacts=wait_xacts, timeout=timeout, lock_timeout=lock_timeout, pooler=pooler,
                           pooler_config=pooler_config)


@operation(help=SWITCH_HELP, positive=("timeout", "lock_timeout"))
def switchback(s, max_lag=settings.MAX_LAG, wait_lag=settings.WAIT_LAG, xact_age=settings.XACT_AGE,
               wait_xacts=settings.WAIT_XACTS, timeout=settings.MOVE_EVENT, lock_timeout=settings.LOCK_TIMEOUT,
               pooler="", pooler_config=settings.POOLER_CONFIG):
    """Roll back: make the master the origin again, with the same checks and proofs."""
    switchover_.switchover(s, s.cluster.master, max_lag=max_lag, wait_lag=wait_lag, xact_age=xact_age,
                           wait_xacts=wait_xacts, timeout=timeout, lock_timeout=lock_timeout, pooler=pooler,
                           pooler_config=pooler_config)


@operation(help={"fenced": "the origin still answers but is fenced: no application can write there",
                 "fence": "the origin still answers: take CONNECT from its applications first (reversible)",
                 "yes": "do not ask for confirmation (what may be lost is still shown first)"})
def failover(s, fenced=False, fence=False, yes=False):
    """The origin is dead: promote the other node (FAILOVER, DROP NODE); says first what may be lost."""
    failover_.failover(s, fenced=fenced, fence_it=fence, yes=yes)


@operation(confirm="This ends replication for good (no switchback afterwards) and fences the old server.", help={
    "keep_role": "keep the replication role and its password file", "force": "finish although the master is "
    "still the origin (the slave is fenced then)"})
def finish(s, keep_role=False, force=False):
    """After an accepted switchover: fence the old server, remove Slony from both nodes, drop access and secrets."""
    finish_.finish(s, keep_role=keep_role, force=force)


TASKS = [preflight, install, build, users, hba, appdb, plpgsql, schema, config, show_config, uninstall, init,
         slons, create_set, subscribe, logs, ddl, migrate, status, verify, switchover, switchback, failover,
         finish]


def namespace() -> Collection:
    """The tasks, configured with the defaults (a new Collection each call)."""
    ns = Collection(*TASKS)
    ns.configure(settings.DEFAULTS)
    return ns


def main() -> None:
    """The `slony-migrate` command: the same tasks and help as `inv` in the checkout."""
    Program(namespace=namespace(), name="slony-migrate", binary="slony-migrate", version=VERSION).run()
