"""The task layer: every task declared once (`operation`), run by one function (`run`)
for both front ends, `inv` in a checkout (Invoke: `namespace`) and the installed
`slony-migrate` command (fabfile.command). Tasks parse arguments and call steps.

A task's flags are its step's own (from the function's signature: name, default, type)
and the common ones (COMMON, EXTRAS). The settings come from settings.DEFAULTS, a
configuration file (--config), the environment, then the flags (fabfile.config). `run`
returns the exit code: 0 success, 1 the operation failed or found a difference, 2 usage
or configuration (a StepError on host "input", "config" or "local": nothing ran).
"""

from __future__ import annotations

import inspect
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import metadata
from inspect import Parameter

from invoke import Collection, Exit
from invoke import task as invoke_task

from . import clusters, config, endgame, log, runbook, settings, steps
from .checks.findings import as_document
from .checks.preflight import preflight as preflight_findings
from .errors import StepError
from .model import make_cluster
from .remote import Hosts
from .render.move import Switch
from .session import Output, Session, ask_terminal

USAGE = ("input", "config", "local")  # a StepError there: exit code 2


def version() -> str:
    """The installed package's version (pyproject.toml is the one place it is
    written)."""
    try:
        return metadata.version("slony-migrate")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


@dataclass(frozen=True)
class Flag:
    """One flag of a task. `default` gives its type (bool: a switch; int, float: a
    number, checked by `number`); Parameter.empty: required. A setting's default is
    None: the configuration's value applies."""

    name: str  # the flag: --name (underscores as dashes)
    help: str
    default: object = None
    param: str = ""  # the step's parameter, where it differs from the name
    metavar: str = ""
    positive: bool = False  # a number that must be > 0 (else >= 0)
    aliases: tuple[str, ...] = ()  # other names the installed command accepts

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def kind(self) -> type:
        return str if self.default is None or self.required else type(self.default)

    @property
    def required(self) -> bool:
        return self.default is Parameter.empty

    def text(self) -> str:
        """Its help with its default (or that it is required)."""
        if self.required:
            return f"{self.help} (required)"
        if self.default in (None, "", False):
            return self.help
        shown = f"{self.default:g}" if isinstance(self.default, float) else self.default
        return f"{self.help} (default: {shown})"


# One metavar per flag name, the same in every task.
METAVARS = {
    **dict.fromkeys(("master", "slave", "slon_host", "host", "pooler"), "HOST"),
    **dict.fromkeys(("cluster", "database", "user"), "NAME"),
    **dict.fromkeys(("config", "file"), "FILE"),
    **dict.fromkeys(
        (
            "timeout",
            "lock_timeout",
            "max_lag",
            "wait_lag",
            "xact_age",
            "wait_xacts",
            "watch",
            "lag_warning",
            "lag_critical",
        ),
        "SECONDS",
    ),
    "copy_retries": "N",
    "lines": "N",
    "node": "ID",
    "tarball": "PATH|URL",
    "sha256": "HEX",
    "deps": "PACKAGES",
    "pooler_config": "PATH",
}

SLONY = settings.DEFAULTS["slony"]
COMMON = tuple(
    replace(f, metavar=METAVARS.get(f.name, ""))
    for f in (
        Flag(
            "master",
            "SSH name of the old server (the set's origin); required unless the"
            " configuration names it",
            aliases=("--source",),
        ),
        Flag(
            "slave",
            "SSH name of the new server; required unless the configuration names it",
            aliases=("--target",),
        ),
        Flag(
            "slon_host",
            "SSH name of the host that runs slon and slonik (default: the slave)",
        ),
        Flag("cluster", f"Slony cluster name (default: {SLONY['cluster']})"),
        Flag(
            "database",
            "the database to move; required unless the configuration names it",
        ),
        Flag("user", f"the replication superuser (default: {SLONY['user']})"),
        Flag(
            "config",
            "a configuration file (TOML) with settings by name: "
            + ", ".join(SLONY)
            + " (a flag wins over it, SLONY_MIGRATE_<NAME> in the environment too)",
        ),
        Flag(
            "verbose", "show the SQL and commands sent, too (passwords masked)", False
        ),
        Flag(
            "quiet",
            "show only warnings and errors (the log file gets everything)",
            False,
        ),
    )
)
SETTINGS = ("master", "slave", "slon_host", "cluster", "database", "user")
EXTRAS = {
    "dry_run": Flag(
        "dry_run",
        "show what would be done (scripts, SQL, diffs; passwords masked) and change"
        " nothing",
        False,
    ),
    "prompt_password": Flag(
        "prompt_password",
        "ask for the replication password instead of reading it from the environment"
        " or file",
        False,
    ),
    "yes": Flag("yes", "do not ask for confirmation", False),
}


@dataclass(frozen=True)
class Task:
    """A task as both front ends see it: its name, its step and its flags."""

    name: str
    fn: Callable
    flags: tuple[Flag, ...]
    pair: bool = True  # needs --master and --slave (build names its host itself)
    confirm: str = ""  # the question asked before it runs, unless --yes
    fence_to: str = "stdout"  # see `operation`
    keeps_log: bool = True  # writes a log file (not the tasks a monitor polls)

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.fn) or ""

    @property
    def summary(self) -> str:
        """The docstring's first sentence, on one line."""
        return " ".join(self.doc.split("\n\n")[0].split())

    def flag(self, name: str) -> Flag:
        return next(f for f in self.flags if f.name == name)


TASKS: list[Task] = []


def operation(
    name: str = "",
    *,
    dry_run: bool = True,
    prompt_password: bool = False,
    confirm: str = "",
    pair: bool = True,
    help: dict[str, str] | None = None,
    positive: tuple[str, ...] = (),
    flags: dict[str, str] | None = None,
    fence_to: str = "stdout",
    keeps_log: bool = True,
):
    """Declare `fn(s, **own flags)` as a task (appended to TASKS) with the common
    flags; `fn` may return an exit code.

    Before `fn` runs, a node a failover dropped that is back and open to the
    applications is fenced (endgame.returned.first_contact), its lines on `fence_to`
    (stdout, or stderr where stdout is for scripts; "" where `fn` does it itself).
    Numeric flags (an int or float default) are finite, never negative, and > 0 when
    named in `positive`. `flags`: a parameter's flag name where it differs (as_json:
    json).
    """
    renamed = flags or {}
    helps = help or {}

    def wrap(fn) -> Task:
        own = []
        for p in list(inspect.signature(fn).parameters.values())[1:]:
            flag = renamed.get(p.name, p.name)
            own.append(
                Flag(
                    flag,
                    helps.get(p.name, ""),
                    p.default,
                    param=p.name if flag != p.name else "",
                    metavar=METAVARS.get(flag, ""),
                    positive=p.name in positive,
                )
            )
        extras = [
            EXTRAS[k]
            for k, on in (
                ("dry_run", dry_run),
                ("prompt_password", prompt_password),
                ("yes", bool(confirm)),
            )
            if on
        ]
        t = Task(
            name or fn.__name__.rstrip("_").replace("_", "-"),
            fn,
            (*own, *extras, *COMMON),
            pair,
            confirm,
            fence_to,
            keeps_log,
        )
        TASKS.append(t)
        return t

    return wrap


def number(flag: str, value, kind: type, positive: bool):
    """A numeric flag's value, parsed here (not by a front end) so that a bad one is
    one line naming the flag."""
    try:
        n = kind(value)
    except (TypeError, ValueError):
        n = None
    if n is None or not math.isfinite(n) or n < 0 or (positive and n == 0):
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


def own_values(t: Task, given: dict) -> dict:
    """The step's arguments: the flags given (numbers parsed), by parameter name; a
    flag not given keeps the step's default."""
    out = {}
    for f in t.flags:
        if f in COMMON or f in EXTRAS.values():
            continue
        value = given.get(f.name)
        if value is None:
            if f.required:
                raise StepError(
                    "input", f"{f.option} is required", f"give {f.option} {f.metavar}"
                )
            continue
        if f.kind in (int, float):
            value = number(f.name, value, f.kind, f.positive)
        out[f.param or f.name] = value
    return out


def settings_of(given: dict, configured: dict | None) -> dict:
    """The settings for this run: the configuration (fabfile.config), then the
    flags given; an empty flag is an error, not the default."""
    conf = config.load(given.get("config") or "", configured=configured)
    for key in SETTINGS:
        value = given.get(key)
        if value is None:
            continue
        if not str(value).strip():
            option = "--" + key.replace("_", "-")
            raise StepError(
                "input",
                f"{option} is empty",
                f"give {option} {METAVARS[key]}, or leave it out for the configured"
                " value",
            )
        conf[key] = value
    return conf


def open_session(t: Task, conf: dict, given: dict, out: Output) -> Session:
    """The Session for one task; its cluster from the settings (None for a task
    that names its hosts itself and was given no pair)."""
    cl = None
    if t.pair or conf["master"] or conf["slave"]:
        for key, what in (("master", "the old server"), ("slave", "the new server")):
            if not conf[key]:
                raise StepError(
                    "input",
                    f"--{key} is required: the SSH name of {what}",
                    f"give --{key} HOST (or {key} in the configuration file)",
                )
        cl = make_cluster(
            conf["master"],
            conf["slave"],
            slon_host=conf["slon_host"],
            name=conf["cluster"],
            database=conf["database"],
            user=conf["user"],
            port=conf["port"],
            ssl_ca=conf["ssl_ca"],
            any_database=bool(given.get("all_databases") or given.get("all")),
        )
    return Session(
        Hosts(conf["ssh_config"], conf["strict_host_keys"]),
        cl,
        dry_run=bool(given.get("dry_run")),
        prompt_password=bool(given.get("prompt_password")),
        out=out,
    )


def run(
    t: Task, given: dict, program: str = "slony-migrate", configured: dict | None = None
) -> int:
    """Run a task with the flags given (by flag name; None: not given) and return its
    exit code. Errors are one line on stderr (with --json, also {"ok": false,
    "errors": [...]} on stdout; with --check, the plugin's UNKNOWN line instead).
    `configured`: the settings Invoke read (invoke.yaml)."""
    as_json = bool(given.get("json"))
    out = Output(
        sys.stderr if as_json else None,
        program=program,
        quiet=bool(given.get("quiet")),
        results=sys.stdout,
    )
    try:
        conf = settings_of(given, configured)
        own = own_values(t, given)
        if (
            t.confirm
            and not given.get("yes")
            and not given.get("dry_run")
            and not ask_terminal(t.confirm)
        ):
            out.error(f"{t.name}: not confirmed; nothing changed")
            return 1
        s = open_session(t, conf, given, out)
        log.start(
            log.log_dir(conf["log_dir"], conf["cluster"]) if t.keeps_log else None,
            t.name,
            bool(given.get("verbose")),
        )
        with s.hosts:
            if s.cluster is not None:
                cl = s.cluster
                s.hosts.connect([cl.master.host, cl.slave.host, cl.slon_name])
                s.cluster = clusters.resolve(s)  # an earlier version's files
            if s.cluster is not None and t.fence_to:
                s.fenced_now = endgame.returned.first_contact(
                    s, to_stderr=t.fence_to == "stderr"
                )
            code = t.fn(s, **own)
            if s.dry_run:
                out.line(
                    f"dry run: {len(s.changes)} change(s) would be made; nothing was"
                    " changed"
                )
        return code if isinstance(code, int) and not isinstance(code, bool) else 0
    except StepError as e:
        if given.get("check"):  # a monitoring plugin: UNKNOWN, whatever went wrong
            out.result(f"SLONY UNKNOWN - {e.line()}")
            return endgame.status.UNKNOWN
        if as_json:
            out.result(json.dumps({"ok": False, "errors": [e.line()]}))
        out.error(f"error: {e.line()}")
        return 2 if e.host in USAGE else 1
    except KeyboardInterrupt:
        out.error(f"error: {t.name} interrupted")
        return 130
    finally:
        log.stop()


def step(fn, name: str = "") -> Task:
    """A task for a runbook step that takes the common flags only (its other
    parameters are migrate's)."""

    def only_common(s):
        return fn(s)

    only_common.__doc__ = fn.__doc__
    return operation(name or fn.__name__, prompt_password=True)(only_common)


# --- the runbook's steps --------------------------------------------------------------

install = step(steps.software.install)
users = step(steps.access.users)
hba = step(steps.access.hba)
UPDATE_ROLES = (
    "make the application's roles the new server has with other attributes, another"
    " password, other memberships or settings as on the master (never SUPERUSER or"
    " REPLICATION); without it they are named and left alone"
)
appdb = operation(prompt_password=True, help={"update_roles": UPDATE_ROLES})(
    steps.database.appdb
)
plpgsql = step(steps.database.plpgsql)
schema = step(steps.database.schema)
config_ = step(steps.cluster.config)
init = step(steps.cluster.init)
create_set = step(steps.cluster.create_set, "create-set")


@operation(
    pair=False,
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


COPY_RETRIES = "failed attempts of the initial copy before giving up"


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


@operation(dry_run=False, keeps_log=False)
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
    keeps_log=False,
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

JSON = (
    "print one JSON object on stdout: ok (true or false), errors (a list), then the"
    " details; the other lines go to stderr"
)


ALL_DATABASES = (
    "every database of the master but templates and postgres, each as its own cluster"
    " (named after it, or the cluster that replicates it already); --cluster and"
    " --database are not used"
)
ALL_CLUSTERS = (
    "every cluster on these servers (their pg_hba.conf blocks), one after the other;"
    " the first that fails stops the rest; --cluster and --database are not used"
)


@operation(
    dry_run=False,
    flags={"as_json": "json"},
    help={"as_json": JSON, "update_roles": UPDATE_ROLES},
)
def preflight(s, as_json=False, update_roles=False):
    """Check both servers before a migration: ok / warn / fail per check, with host,
    object and fix; the roles the new server gets, and why. Exit 1 when a check
    fails."""
    if not as_json:
        runbook.check(s, update_roles=update_roles)
        return 0
    found = as_document(preflight_findings(s, update_roles=update_roles))
    s.out.result(json.dumps(found))
    return 0 if found["ok"] else 1


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
    keeps_log=False,
    flags={"as_json": "json", "every": "all"},
    fence_to="stderr",
    positive=("lag_critical",),
    help={
        "every": (
            "every cluster on these servers at once (a table; --json: one object with"
            " a list; --check: the worst)"
        ),
        "watch": "print the status again every this many seconds until interrupted",
        "as_json": JSON + "; with --watch one object per line",
        "check": (
            "one line with perfdata and the exit code of a monitoring plugin: 0 OK,"
            " 1 WARNING, 2 CRITICAL, 3 UNKNOWN"
        ),
        "prometheus": (
            "the figures in Prometheus' text format (for node_exporter's textfile"
            " collector)"
        ),
        "lag_warning": "lag over this many seconds is a warning",
        "lag_critical": "lag over this many seconds is critical",
    },
)
def status(
    s,
    watch=0,
    as_json=False,
    check=False,
    prometheus=False,
    lag_warning=settings.LAG_WARNING,
    lag_critical=settings.LAG_CRITICAL,
    every=False,
):
    """Nodes, set origin, subscription, slons, lag; during the initial copy, progress
    and ETA; a node a failover dropped. Fences such a node first if it is open to the
    applications. Exit 0 when all is well, 1 when something named is wrong (--check:
    the monitoring plugin's codes)."""
    forms = [
        form
        for form, on in (
            ("json", as_json),
            ("check", check),
            ("prometheus", prometheus),
        )
        if on
    ]
    if len(forms) > 1:
        raise StepError(
            "input",
            f"--{forms[0]} and --{forms[1]} exclude each other",
            "give one of --json, --check, --prometheus",
        )
    if watch and (check or prometheus):
        raise StepError(
            "input",
            f"--{forms[0]} prints once: not with --watch",
            "leave out --watch (the monitor runs the command again)",
        )
    if lag_critical < lag_warning:
        raise StepError(
            "input",
            f"--lag-critical {lag_critical:g} is below --lag-warning {lag_warning:g}",
            "give a critical threshold at or above the warning one",
        )
    show = endgame.status.show_all if every else endgame.status.show_status
    return show(
        s,
        watch,
        forms[0] if forms else "text",
        endgame.status.Thresholds(lag_warning, lag_critical),
    )


@operation(dry_run=False, flags={"as_json": "json"}, help={"as_json": JSON})
def verify(s, as_json=False):
    """Compare origin and subscriber: rows and checksums per table, sequences,
    schema; exit 1 on a difference."""
    if not as_json:
        endgame.verify.check(s)
        return 0
    differences = endgame.verify.verify(s)
    s.out.result(json.dumps({"ok": not differences, "errors": differences}))
    return 1 if differences else 0


SWITCH_HELP = {
    "as_json": (
        "print the result as one JSON object on stdout at the end: whether it moved,"
        " the window and each phase's seconds (lock, sync, move, takeover; pause and"
        " resume through PgBouncer); the other lines go to stderr"
    ),
    "lock_timeout": (
        "LOCK SET (and PgBouncer's PAUSE) must succeed within this many seconds, else"
        " it is undone"
    ),
    "max_lag": "refuse when events older than this many seconds wait",
    "wait_lag": "wait this long for the lag to drop below --max-lag",
    "xact_age": "a transaction older than this many seconds blocks the switchover",
    "wait_xacts": "wait this long for such transactions to end before giving up",
    "timeout": (
        "seconds to wait for each event of the move: the new origin's confirmation of"
        " the last SYNC, then its taking over"
    ),
    "pooler": (
        "SSH name of the host whose PgBouncer the application goes through: PAUSE it"
        " around the move, then point it at the new origin and RESUME (the application"
        " waits, sees no error)"
    ),
    "pooler_config": "PgBouncer's configuration on that host",
    "all_databases": ALL_CLUSTERS,
}


def switch(s, to: str, switch_: Switch, all_databases: bool, as_json: bool) -> int:
    """switchover (to the slave) or switchback (to the master) of one cluster or,
    with all_databases, of every cluster on the pair; the result as JSON when asked
    (ok and errors first, as every --json; dry_run: nothing was moved)."""

    def one(x):
        node = x.cluster.slave if to == "slave" else x.cluster.master
        return {
            "cluster": x.cluster.name,
            "database": x.cluster.database,
            **endgame.switchover.switchover(x, node, switch_),
        }

    step = "switchover" if to == "slave" else "switchback"
    if all_databases:
        result = {"clusters": endgame.each.each_cluster(s, step, one)}
    else:
        result = one(s)
    if as_json:
        s.out.result(
            json.dumps({"ok": True, "errors": [], "dry_run": s.dry_run, **result})
        )
    return 0


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
    return switch(
        s,
        "slave",
        Switch(
            max_lag,
            wait_lag,
            xact_age,
            wait_xacts,
            timeout,
            lock_timeout,
            pooler,
            pooler_config,
        ),
        all_databases,
        as_json,
    )


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
    return switch(
        s,
        "master",
        Switch(
            max_lag,
            wait_lag,
            xact_age,
            wait_xacts,
            timeout,
            lock_timeout,
            pooler,
            pooler_config,
        ),
        all_databases,
        as_json,
    )


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
        "pooler_config": "PgBouncer's configuration on that host",
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


# The order `--help` lists them in: the runbook, then the end-game.
ORDER = [
    "preflight",
    "migrate",
    "status",
    "verify",
    "switchover",
    "switchback",
    "finish",
    "failover",
    "lost-rows",
    "rejoin",
    "logs",
    "ddl",
    "install",
    "build",
    "users",
    "hba",
    "appdb",
    "plpgsql",
    "schema",
    "config",
    "show-config",
    "init",
    "slons",
    "create-set",
    "subscribe",
    "uninstall",
]
TASKS.sort(key=lambda t: ORDER.index(t.name) if t.name in ORDER else len(ORDER))


# --- Invoke: `inv` in a checkout ------------------------------------------------------


def as_invoke(t: Task):
    """The task for Invoke: the same flags (numbers as text, parsed by `run`), no
    short flags; a non-zero exit code as invoke.Exit."""

    def body(c, **given):
        code = run(t, given, "inv", c.config.get("slony"))
        if code:
            raise Exit(code=code)

    body.__signature__ = inspect.Signature(
        [Parameter("c", Parameter.POSITIONAL_OR_KEYWORD)]
        + [
            Parameter(
                f.name,
                Parameter.POSITIONAL_OR_KEYWORD,
                default=False if f.kind is bool else None,
            )
            for f in t.flags
        ]
    )
    body.__doc__, body.__name__ = t.doc, t.fn.__name__
    return invoke_task(
        body,
        name=t.name,
        auto_shortflags=False,
        help={
            f.name.replace("_", "-"): f.text()
            + (f" [{f.metavar}]" if f.metavar else "")
            for f in t.flags
        },
    )


def namespace() -> Collection:
    """The tasks for Invoke (a new Collection each call)."""
    return Collection(*[as_invoke(t) for t in TASKS])
