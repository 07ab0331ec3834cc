"""The task layer: one Invoke task per step and operation. Tasks parse arguments and
call steps.

`operation` declares a task once: the step's own flags from its signature, plus the
common flags (--master, --slave, --slon-host, --cluster, --database, --user), and where
they apply --dry-run, --prompt-password and --yes. A flag wins over the configuration
(fabfile.settings.DEFAULTS, invoke.yaml, INVOKE_SLONY_* variables). A StepError becomes
one line on stderr and exit code 1.

`namespace()` is the same collection for `inv` in a checkout (tasks.py) and for the
`slony-migrate` command of an installed package (`main`).
"""

from __future__ import annotations

import inspect
import json
import math
import sys
from importlib import metadata
from inspect import Parameter

from invoke import Collection, Exit, Program, task

from . import clusters, endgame, runbook, settings, steps
from .errors import StepError
from .model import make_cluster
from .remote import Hosts
from .render.move import Switch
from .session import Session, ask_terminal


def version() -> str:
    """The installed package's version (pyproject.toml is the one place it is
    written)."""
    try:
        return metadata.version("slony-migrate")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


COMMON = {
    "master": "SSH name of the old server (the set's origin)",
    "slave": "SSH name of the new server",
    "slon_host": "SSH name of the host that runs slon and slonik (default: the slave)",
    "cluster": f"Slony cluster name (default: {settings.DEFAULTS['slony']['cluster']})",
    "database": f"database to move (default: {settings.DEFAULTS['slony']['database']})",
    "user": f"replication superuser (default: {settings.DEFAULTS['slony']['user']})",
}
DRY_RUN = (
    "show what would be done (scripts, SQL, diffs; passwords masked) and change nothing"
)
UPDATE_ROLES = (
    "make the application's roles the new server has with other attributes, another"
    " password, other memberships or settings as on the master (never SUPERUSER or"
    " REPLICATION); without it they are named and left alone"
)
PROMPT_PASSWORD = (
    "ask for the replication password instead of reading it from the environment or"
    " file"
)


def open_session(c, opts: dict, needs_pair: bool) -> Session:
    """The Session for one task: each setting from its flag, else the configuration.

    needs_pair: False for tasks that name their hosts themselves (build) and need no
    master and slave.
    """
    conf = c.config.slony
    pick = lambda key: opts.get(key) or conf.get(key)  # noqa: E731
    cl = None
    if needs_pair or pick("master") or pick("slave"):
        cl = make_cluster(
            pick("master"),
            pick("slave"),
            slon_host=pick("slon_host") or "",
            name=pick("cluster"),
            database=pick("database"),
            user=pick("user"),
            port=int(conf.port),
            ssl_ca=conf.get("ssl_ca", ""),
        )
    return Session(
        Hosts(conf.ssh_config, conf.strict_host_keys),
        cl,
        dry_run=bool(opts.get("dry_run")),
        prompt_password=bool(opts.get("prompt_password")),
    )


def number(flag: str, value, kind: type, positive: bool):
    """A numeric flag's value, parsed here (not by Invoke) so that a bad one is one
    line naming the flag."""
    try:
        n = kind(value)
    except (TypeError, ValueError):
        n = None
    if n is None or n < 0 or (positive and n == 0) or not math.isfinite(n):
        what = "a positive" if positive else "a"
        raise StepError(
            "input",
            f"--{flag.replace('_', '-')} {value!r} is not {what} "
            f"{'whole number' if kind is int else 'number'}"
            + ("" if positive else " (0 or more)"),
            f"give for example --{flag.replace('_', '-')}"
            f" {kind(1) if positive else kind(0)}",
        )
    return n


def operation(
    name: str = "",
    *,
    dry_run: bool = True,
    prompt_password: bool = False,
    confirm: str = "",
    needs_pair: bool = True,
    help: dict[str, str] | None = None,
    positive: tuple[str, ...] = (),
    flags: dict[str, str] | None = None,
    fence_to: str = "stdout",
):
    """Make `fn(s, **own flags)` a task with the common flags; see the module's
    docstring.

    Before `fn` runs, a node a failover dropped that is back and open to the
    applications is fenced (endgame.returned.first_contact), its lines on `fence_to`
    (stdout, or stderr where stdout is for scripts; "" where `fn` does it itself).
    `fn` may return an exit code.

    Numeric flags (an int or float default) are parsed here, once: finite, never
    negative, and > 0 when named in `positive`; a flag not given keeps fn's own default.
    `flags`: a parameter's flag name where it differs (as_json: json).
    """
    renamed = flags or {}

    def wrap(fn):
        own = list(inspect.signature(fn).parameters.values())[1:]
        numeric = {
            p.name: type(p.default) for p in own if type(p.default) in (int, float)
        }
        extra = {
            "dry_run": dry_run,
            "prompt_password": prompt_password,
            "yes": bool(confirm),
        }
        flags = [Parameter(k, Parameter.KEYWORD_ONLY, default=None) for k in COMMON]
        flags += [
            Parameter(k, Parameter.KEYWORD_ONLY, default=False)
            for k, on in extra.items()
            if on
        ]
        task_name = name or fn.__name__.rstrip("_").replace("_", "-")

        def body(c, *args, **opts):
            if (
                confirm
                and not opts.get("yes")
                and not opts.get("dry_run")
                and not ask_terminal(confirm)
            ):
                raise Exit(f"{task_name}: not confirmed; nothing changed", code=1)
            mine = {
                p.name: opts.pop(renamed.get(p.name, p.name))
                for p in own
                if renamed.get(p.name, p.name) in opts
            }
            mine = {
                k: v for k, v in mine.items() if not (k in numeric and v is None)
            }  # not given: fn's default
            try:
                for k, kind in numeric.items():
                    if k in mine:
                        mine[k] = number(
                            renamed.get(k, k), mine[k], kind, k in positive
                        )
                s = open_session(c, opts, needs_pair)
                with s.hosts:
                    s.cluster = clusters.resolve(s)  # an earlier version's files
                    if s.cluster is not None and fence_to:
                        s.fenced_now = endgame.returned.first_contact(
                            s, to_stderr=fence_to == "stderr"
                        )
                    code = fn(s, *args, **mine)
                    if s.dry_run:
                        s.out.line(
                            f"dry run: {len(s.changes)} change(s) would be made;"
                            " nothing was changed"
                        )
            except StepError as e:
                print(f"error: {e.line()}", file=sys.stderr, flush=True)
                raise Exit(code=1) from None
            if isinstance(code, int) and not isinstance(code, bool) and code:
                raise Exit(code=code)

        body.__signature__ = inspect.Signature(
            [
                Parameter("c", Parameter.POSITIONAL_OR_KEYWORD),
                *[
                    p.replace(
                        name=renamed.get(p.name, p.name),
                        kind=Parameter.POSITIONAL_OR_KEYWORD,
                        default=None if p.name in numeric else p.default,
                    )
                    for p in own
                ],
                *[p.replace(kind=Parameter.POSITIONAL_OR_KEYWORD) for p in flags],
            ]
        )
        body.__doc__, body.__name__ = fn.__doc__, fn.__name__
        helps = {**COMMON, **{renamed.get(k, k): v for k, v in (help or {}).items()}}
        if dry_run:
            helps["dry_run"] = DRY_RUN
        if prompt_password:
            helps["prompt_password"] = PROMPT_PASSWORD
        if confirm:
            helps["yes"] = "do not ask for confirmation"
        return task(
            body,
            name=task_name,
            help={k.replace("_", "-"): v for k, v in helps.items()},
        )

    return wrap


def step(fn, name: str = ""):
    """A task for a runbook step that takes the common flags only."""
    return operation(name, prompt_password=True)(fn)


# --- the runbook's steps --------------------------------------------------------------

install = step(steps.software.install)
users = step(steps.access.users)
hba = step(steps.access.hba)
appdb = operation(prompt_password=True, help={"update_roles": UPDATE_ROLES})(
    steps.database.appdb
)
plpgsql = step(steps.database.plpgsql)
schema = step(steps.database.schema)
config = step(steps.cluster.config)
init = step(steps.cluster.init)
create_set = step(steps.cluster.create_set, "create-set")


@operation(
    needs_pair=False,
    help={
        "host": "SSH name of the host to build on",
        "tarball": "URL or local path of slony1-VERSION.tar.bz2",
        "sha256": "expected SHA-256 of the tarball",
        "deps": "build dependencies ({major}: PostgreSQL major)",
    },
)
def build(s, host, tarball, sha256="", deps=steps.software.BUILD_DEPS):
    """Build and install Slony from a source tarball on one host; no-op when that
    version is there."""
    steps.software.build(s, host, tarball, sha256, deps)


@operation(help={"stop": "stop the slons and their watchdogs instead"})
def slons(s, stop=False):
    """Start slon with a watchdog for both nodes on the slon host (never a second
    one); --stop stops them."""
    steps.cluster.slons(s, stop=stop)


COPY_RETRIES = (
    "failed attempts of the initial copy before giving up (default"
    f" {settings.COPY_RETRIES})"
)


@operation(
    positive=("timeout", "copy_retries"),
    help={
        "wait": "wait until the initial copy is done",
        "timeout": "seconds to wait at most",
        "copy_retries": COPY_RETRIES,
    },
)
def subscribe(
    s, wait=False, timeout=settings.COPY_WAIT, copy_retries=settings.COPY_RETRIES
):
    """Subscribe the slave to the set; with --wait, return when the initial copy is
    done."""
    steps.cluster.subscribe(s, wait=wait, timeout=timeout, copy_retries=copy_retries)


@operation(
    confirm="This stops replication and removes the Slony cluster from both nodes."
)
def uninstall(s):
    """Remove a previous attempt: stop slons, uninstall the cluster on both nodes;
    data stays."""
    steps.cluster.uninstall(s)


@operation(dry_run=False)
def show_config(s):
    """Show the Slony configuration as the altperl tools read it
    (slony_show_configuration)."""
    steps.cluster.show_config(s)


@operation(
    help={
        "file": (
            "the SQL file with the schema change (run on both nodes, the origin first)"
        )
    }
)
def ddl(s, file):
    """Change the schema while replicating (EXECUTE SCRIPT); tables and sequences it
    creates are replicated too."""
    steps.ddl.ddl(s, file)


@operation(
    dry_run=False,
    positive=("lines",),
    help={
        "node": "node id (default: both)",
        "lines": "lines to show",
        "follow": "follow the logs",
    },
)
def logs(s, node=0, lines=50, follow=False):
    """Show or follow the slon logs on the slon host."""
    steps.cluster.logs(s, node=node, lines=lines, follow=follow)


# --- migrate and the end-game ---------------------------------------------------------

ALL_DATABASES = (
    "every database of the master but templates and postgres, each as its own cluster"
    " (named after it, or the cluster that replicates it already); --cluster and"
    " --database are not used"
)
ALL_CLUSTERS = (
    "every cluster on these servers (their pg_hba.conf blocks), one after the other;"
    " the first that fails stops the rest; --cluster and --database are not used"
)


@operation(dry_run=False, help={"update_roles": UPDATE_ROLES})
def preflight(s, update_roles=False):
    """Check both servers before a migration: ok / warn / fail per check, with host,
    object and fix; the roles the new server gets, and why."""
    runbook.check(s, update_roles=update_roles)


@operation(
    prompt_password=True,
    positive=("timeout", "copy_retries"),
    help={
        "tarball": "build Slony from this tarball instead of installing packages",
        "sha256": "expected SHA-256 of the tarball",
        "timeout": "seconds to wait for the initial copy",
        "copy_retries": COPY_RETRIES,
        "add_keys": (
            "give every table without a key a primary key (a new "
            "identity column) on the master first; preflight names them and their sizes"
        ),
        "all_databases": ALL_DATABASES,
        "update_roles": UPDATE_ROLES,
    },
)
def migrate(
    s,
    tarball="",
    sha256="",
    timeout=settings.COPY_WAIT,
    copy_retries=settings.COPY_RETRIES,
    add_keys=False,
    all_databases=False,
    update_roles=False,
):
    """Run every step in order; return when the slave is subscribed and the initial
    copy is done. --all-databases: every database, each as its own cluster."""
    if all_databases:
        runbook.migrate_all(
            s, tarball, sha256, timeout, copy_retries, add_keys, update_roles
        )
    else:
        runbook.migrate(
            s,
            tarball,
            sha256,
            timeout,
            copy_retries,
            add_keys,
            update_roles=update_roles,
        )


@operation(
    dry_run=False,
    flags={"as_json": "json", "every": "all"},
    fence_to="stderr",
    help={
        "every": (
            "every cluster on these servers in one table (--json: a list, --check: the"
            " worst)"
        ),
        "watch": "refresh every N seconds until interrupted",
        "as_json": "print JSON for scripts and monitoring",
        "check": (
            "one line and the exit code of a monitoring plugin: 0 OK, 1 WARNING,"
            " 2 CRITICAL (e.g. a node a failover dropped is back and was open to the"
            " applications), 3 UNKNOWN"
        ),
    },
)
def status(s, watch=0, as_json=False, check=False, every=False):
    """Nodes, set origin, subscription, slons, lag; during the initial copy, progress
    and ETA; a node a failover dropped. Fences such a node first if it is open to the
    applications. --all: every cluster on the pair, one line each."""
    if check and (watch or as_json):
        raise StepError(
            "input",
            "--check prints one line once: not with --watch or --json",
            "leave out --watch and --json",
        )
    show = endgame.status.show_all if every else endgame.status.show_status
    code = show(s, watch, as_json, check_only=check)
    return code if check else None


@operation(dry_run=False)
def verify(s):
    """Compare origin and subscriber: rows and checksums per table, sequences,
    schema; exit 1 on a difference."""
    endgame.verify.check(s)


SWITCH_HELP = {
    "as_json": (
        "print the result as one JSON object at the end: whether it moved, the window"
        " and each phase's seconds (lock, sync, move, takeover; pause and resume through"
        " PgBouncer)"
    ),
    "lock_timeout": (
        "LOCK SET (and PgBouncer's PAUSE) must succeed within this many seconds, else"
        f" it is undone (default {settings.LOCK_TIMEOUT:g})"
    ),
    "max_lag": (
        "refuse when events older than this many seconds wait (default"
        f" {settings.MAX_LAG:.0f})"
    ),
    "wait_lag": (
        "wait this long for the lag to drop below --max-lag (default"
        f" {settings.WAIT_LAG:.0f})"
    ),
    "xact_age": (
        "a transaction older than this many seconds blocks the switchover (default"
        f" {settings.XACT_AGE:.0f})"
    ),
    "wait_xacts": (
        "wait this long for such transactions to end before giving up (default"
        f" {settings.WAIT_XACTS:.0f})"
    ),
    "timeout": (
        "seconds to wait for each event of the move: the new origin's confirmation of"
        f" the last SYNC, then its taking over (default {settings.MOVE_EVENT})"
    ),
    "pooler": (
        "SSH name of the host whose PgBouncer the application goes through: PAUSE it"
        " around the move, then point it at the new origin and RESUME (the application"
        " waits, sees no error)"
    ),
    "pooler_config": (
        f"PgBouncer's configuration on that host (default {settings.POOLER_CONFIG})"
    ),
    "all_databases": ALL_CLUSTERS,
}


def switch(s, to: str, flags: Switch, all_databases: bool, as_json: bool) -> None:
    """switchover (to the slave) or switchback (to the master), of one cluster or, with
    all_databases, of every cluster on the pair."""

    def one(x):
        node = x.cluster.slave if to == "slave" else x.cluster.master
        return endgame.switchover.switchover(x, node, flags)

    step = "switchover" if to == "slave" else "switchback"
    if all_databases:
        results = endgame.each.each_cluster(s, step, one)
        if as_json:
            s.out.line(json.dumps(results))
    else:
        result = one(s)
        if as_json:
            s.out.line(json.dumps(result))


@operation(
    help=SWITCH_HELP, flags={"as_json": "json"}, positive=("timeout", "lock_timeout")
)
def switchover(
    s,
    max_lag=settings.MAX_LAG,
    wait_lag=settings.WAIT_LAG,
    xact_age=settings.XACT_AGE,
    wait_xacts=settings.WAIT_XACTS,
    timeout=settings.MOVE_EVENT,
    lock_timeout=settings.LOCK_TIMEOUT,
    pooler="",
    pooler_config=settings.POOLER_CONFIG,
    as_json=False,
    all_databases=False,
):
    """Make the slave the origin (LOCK SET, MOVE SET), then prove it; reports the
    blocked-write window."""
    flags = Switch(
        max_lag,
        wait_lag,
        xact_age,
        wait_xacts,
        timeout,
        lock_timeout,
        pooler,
        pooler_config,
    )
    switch(s, "slave", flags, all_databases, as_json)


@operation(
    help=SWITCH_HELP, flags={"as_json": "json"}, positive=("timeout", "lock_timeout")
)
def switchback(
    s,
    max_lag=settings.MAX_LAG,
    wait_lag=settings.WAIT_LAG,
    xact_age=settings.XACT_AGE,
    wait_xacts=settings.WAIT_XACTS,
    timeout=settings.MOVE_EVENT,
    lock_timeout=settings.LOCK_TIMEOUT,
    pooler="",
    pooler_config=settings.POOLER_CONFIG,
    as_json=False,
    all_databases=False,
):
    """Roll back: make the master the origin again, with the same checks and proofs."""
    flags = Switch(
        max_lag,
        wait_lag,
        xact_age,
        wait_xacts,
        timeout,
        lock_timeout,
        pooler,
        pooler_config,
    )
    switch(s, "master", flags, all_databases, as_json)


@operation(
    fence_to="",  # failover does it itself, while it probes the origin
    help={
        "fenced": (
            "the origin is fenced: powered off or cut off the network for good, or it"
            " answers but no application can write there"
        ),
        "fence": (
            "the origin still answers: take CONNECT from its applications first"
            " (reversible)"
        ),
        "pooler": (
            "SSH name of the host whose PgBouncer the application goes through: it is"
            " pointed at the new origin first, so that the application never reaches"
            " the old one again"
        ),
        "pooler_config": (
            f"PgBouncer's configuration on that host (default {settings.POOLER_CONFIG})"
        ),
        "yes": "do not ask for confirmation (what may be lost is still shown first)",
    },
)
def failover(
    s,
    fenced=False,
    fence=False,
    yes=False,
    pooler="",
    pooler_config=settings.POOLER_CONFIG,
):
    """The origin is dead: promote the other node (FAILOVER, DROP NODE); says first
    what may be lost. Needs --fenced or --pooler (--fence while it answers)."""
    endgame.failover.failover(
        s,
        fenced=fenced,
        fence_it=fence,
        yes=yes,
        pooler_host=pooler,
        pooler_config=pooler_config,
    )


@operation(dry_run=False, name="lost-rows")
def lost_rows(s):
    """List the writes a node dropped by a failover holds that the new origin never
    got (table, key, operation, time) and write them as SQL to a file (0600) in
    $SLONY_MIGRATE_HOME; nothing is applied."""
    endgame.returned.lost_rows(s)


@operation(
    positive=("timeout", "copy_retries"),
    help={
        "yes": "do not ask (the database, host and rows it empties are still shown)",
        "timeout": "seconds to wait for the initial copy",
        "copy_retries": COPY_RETRIES,
    },
)
def rejoin(
    s, yes=False, timeout=settings.COPY_WAIT, copy_retries=settings.COPY_RETRIES
):
    """Rebuild a node dropped by a failover as a subscriber of the new origin: fenced,
    lost rows to a file, old Slony state removed, tables emptied, stored, subscribed,
    copied; safe to run again after an interruption."""
    endgame.returned.rejoin(s, yes=yes, timeout=timeout, copy_retries=copy_retries)


@operation(
    confirm=(
        "This ends replication for good (no switchback afterwards) and fences the old"
        " server."
    ),
    help={
        "keep_role": "keep the replication role and its password file",
        "force": (
            "finish although the master is still the origin (the slave is fenced then)"
        ),
        "all_databases": ALL_CLUSTERS,
    },
)
def finish(s, keep_role=False, force=False, all_databases=False):
    """After an accepted switchover: fence the old server, remove Slony from both
    nodes, drop access and secrets (the replication role stays while another cluster
    logs in as it)."""

    def one(x):
        endgame.finish.finish(x, keep_role=keep_role, force=force)

    if all_databases:
        endgame.each.each_cluster(s, "finish", one)
    else:
        one(s)


TASKS = [
    preflight,
    install,
    build,
    users,
    hba,
    appdb,
    plpgsql,
    schema,
    config,
    show_config,
    uninstall,
    init,
    slons,
    create_set,
    subscribe,
    logs,
    ddl,
    migrate,
    status,
    verify,
    switchover,
    switchback,
    failover,
    lost_rows,
    rejoin,
    finish,
]


def namespace() -> Collection:
    """The tasks, configured with the defaults (a new Collection each call)."""
    ns = Collection(*TASKS)
    ns.configure(settings.DEFAULTS)
    return ns


def main() -> None:
    """The `slony-migrate` command: the same tasks and help as `inv` in the checkout."""
    Program(
        namespace=namespace(),
        name="slony-migrate",
        binary="slony-migrate",
        version=version(),
    ).run()
