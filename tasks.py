"""Invoke tasks: parse arguments, build the cluster, call the steps. No logic of their own.

Every runbook step is a task with the same name as its function in fabfile/steps.py
(`inv users --master db01 --slave db02`); `inv migrate` runs them all in order.
"""
from __future__ import annotations

import json
import sys
import time

from invoke import Collection, Exit, task

from fabfile import endgame, steps, testbed
from fabfile import migrate as migration
from fabfile.model import StepError, make_cluster
from fabfile.remote import Hosts

DEFAULTS = {
    "slony": {
        "master": "",
        "slave": "",
        "slon_host": "",
        "cluster": "replication",
        "database": "shotserver04",
        "user": "slony",
        "port": 5432,
        "ssh_config": "",
        "strict_host_keys": True,
    }
}

HELP = {
    "master": "SSH name of the old server (the set's origin)",
    "slave": "SSH name of the new server",
    "slon-host": "SSH name of the host that runs slon and slonik (default: the slave)",
    "cluster": "Slony cluster name (default: replication)",
    "database": "database to move (default: shotserver04)",
    "user": "replication superuser (default: slony)",
    "dry-run": "show what would be done (scripts, SQL, diffs; passwords masked) and change nothing",
    "prompt-password": "ask for the replication password instead of reading it from the environment or file",
}


COMMON = ("master", "slave", "slon-host", "cluster", "database", "user")


def helps(*names: str, **more: str) -> dict:
    """Help texts for the common arguments plus the named ones and task-specific ones."""
    return {**{k: HELP[k] for k in (*COMMON, *names)}, **{k.replace("_", "-"): v for k, v in more.items()}}


def open_run(c, opts: dict, hosts_only: bool = False):
    """Build the Run for one task from CLI flags, else invoke config, else defaults.

    hosts_only: the task works on hosts it names itself (build) and needs no master and slave.
    """
    conf = c.config.slony
    pick = lambda key: opts.get(key) or conf.get(key)  # noqa: E731
    cluster = None
    if not hosts_only or pick("master") or pick("slave"):
        cluster = make_cluster(
            pick("master"), pick("slave"), slon_host=pick("slon_host") or "", name=pick("cluster"),
            database=pick("database"), user=pick("user"), port=int(conf.port),
        )
    hosts = Hosts(conf.ssh_config, conf.strict_host_keys)
    return steps.Run(hosts, cluster, dry_run=bool(opts.get("dry_run")),
                     prompt_password=bool(opts.get("prompt_password")))


def execute(c, opts: dict, body, hosts_only: bool = False) -> None:
    """Run body(run), turning a StepError into one line on stderr and exit code 1."""
    try:
        run = open_run(c, opts, hosts_only)
        with run.hosts:
            body(run)
            if run.dry_run:
                print(f"dry run: {len(run.changed)} change(s) would be made; nothing was changed", flush=True)
    except StepError as e:
        print(f"error: {e.line()}", file=sys.stderr, flush=True)
        raise Exit(code=1)


def step_task(fn, name: str):
    """A task for one step that takes the common arguments only."""
    def body(c, master=None, slave=None, slon_host=None, cluster=None, database=None, user=None,
             dry_run=False, prompt_password=False):
        execute(c, locals(), fn)
    body.__doc__ = fn.__doc__
    return task(body, name=name, help=helps("dry-run", "prompt-password"))


install = step_task(steps.install, "install")
users = step_task(steps.users, "users")
hba = step_task(steps.hba, "hba")
appdb = step_task(steps.appdb, "appdb")
plpgsql = step_task(steps.plpgsql, "plpgsql")
schema = step_task(steps.schema, "schema")
config = step_task(steps.config, "config")
init = step_task(steps.init, "init")
create_set = step_task(steps.create_set, "create-set")


@task(help=helps("dry-run", host="SSH name of the host to build on",
                  tarball="URL or local path of slony1-VERSION.tar.bz2", sha256="expected SHA-256 of the tarball",
                  deps="build dependencies ({major}: PostgreSQL major)"))
def build(c, host, tarball, sha256="", deps="build-essential flex bison postgresql-server-dev-{major}",
          master=None, slave=None, slon_host=None, cluster=None, database=None, user=None, dry_run=False):
    """Build and install Slony from a source tarball on one host; no-op when that version is there."""
    execute(c, locals(), lambda run: steps.build(run, host, tarball, sha256, deps), hosts_only=True)


@task(help=helps("dry-run", stop="stop the slons and their watchdogs instead"))
def slons(c, stop=False, master=None, slave=None, slon_host=None, cluster=None, database=None, user=None,
          dry_run=False):
    """Start slon with a watchdog for both nodes on the slon host (never a second one); --stop stops them."""
    execute(c, locals(), lambda run: steps.slons(run, stop=stop))


@task(help=helps("dry-run", wait="wait until the initial copy is done", timeout="seconds to wait at most"))
def subscribe(c, wait=False, timeout=3600, master=None, slave=None, slon_host=None, cluster=None, database=None,
              user=None, dry_run=False):
    """Subscribe the slave to the set; with --wait, return when the initial copy is done."""
    execute(c, locals(), lambda run: steps.subscribe(run, wait=wait, timeout=timeout))


@task(help=helps("dry-run", yes="do not ask for confirmation"))
def uninstall(c, yes=False, master=None, slave=None, slon_host=None, cluster=None, database=None, user=None,
              dry_run=False):
    """Remove a previous attempt: stop slons, uninstall the cluster on both nodes; data stays."""
    if not yes and not dry_run:
        answer = input("This stops replication and removes the Slony cluster from both nodes. Type yes: ")
        if answer.strip() != "yes":
            raise Exit("uninstall: not confirmed; nothing changed", code=1)
    execute(c, locals(), steps.uninstall)


@task(name="show-config", help=helps())
def show_config(c, master=None, slave=None, slon_host=None, cluster=None, database=None, user=None):
    """Show the Slony configuration as the altperl tools read it (slony_show_configuration)."""
    execute(c, locals(), lambda run: print(steps.show_config(run), end=""))


@task(help=helps(node="node id (default: both)", lines="lines to show", follow="follow the logs"))
def logs(c, node=0, lines=50, follow=False, master=None, slave=None, slon_host=None, cluster=None,
         database=None, user=None):
    """Show or follow the slon logs on the slon host."""
    execute(c, locals(), lambda run: steps.logs(run, node=node, lines=lines, follow=follow))


@task(help=helps())
def preflight(c, master=None, slave=None, slon_host=None, cluster=None, database=None, user=None):
    """Check both servers before a migration: ok / warn / fail per check, with host, object and fix."""
    execute(c, locals(), migration.check)


@task(help=helps("dry-run", "prompt-password", tarball="build Slony from this tarball instead of installing packages",
                  sha256="expected SHA-256 of the tarball", timeout="seconds to wait for the initial copy"))
def migrate(c, master=None, slave=None, slon_host=None, cluster=None, database=None, user=None, dry_run=False,
            prompt_password=False, tarball="", sha256="", timeout=3600):
    """Run every step in order; return when the slave is subscribed and the initial copy is done."""
    execute(c, locals(), lambda run: migration.migrate(run, tarball, sha256, timeout))


@task(help=helps(watch="refresh every N seconds until interrupted", json="print JSON for scripts and monitoring"))
def status(c, watch=0, json_=False, master=None, slave=None, slon_host=None, cluster=None, database=None, user=None):
    """Nodes, set origin, subscription, slons, lag; during the initial copy, progress and ETA."""
    def body(run):
        while True:
            report = endgame.status(run)
            print(json.dumps(report, indent=2) if json_ else endgame.format_status(report), flush=True)
            if not watch:
                return
            time.sleep(int(watch))
            print()
    execute(c, locals(), body)


@task(help=helps())
def verify(c, master=None, slave=None, slon_host=None, cluster=None, database=None, user=None):
    """Compare origin and subscriber: rows and checksums per table, sequences, schema; non-zero on a difference."""
    def body(run):
        differences = endgame.verify(run)
        if differences:
            for d in differences:
                print(f"[verify] DIFFERS {d}", file=sys.stderr, flush=True)
            raise StepError(run.cluster.slave.host, f"{len(differences)} difference(s): {differences[0]}",
                            "find out what wrote behind Slony's back; resubscribe if needed")
    execute(c, locals(), body)


SWITCH_HELP = dict(max_lag="refuse when events older than this many seconds wait (default 30)",
                   wait_lag="wait this long for the lag to drop below --max-lag (default 60)",
                   xact_age="a transaction older than this many seconds blocks the switchover (default 60)",
                   wait_xacts="wait this long for such transactions to end before giving up (default 30)",
                   timeout="seconds slonik waits for each event (default 120)")


def switch(c, to: str, opts: dict) -> None:
    """Switchover and switchback: move the set's origin to the cluster's `to` node (slave or master)."""
    keys = ("max_lag", "wait_lag", "xact_age", "wait_xacts", "timeout")
    execute(c, opts, lambda run: endgame.switchover(run, getattr(run.cluster, to), **{k: opts[k] for k in keys}))


@task(help=helps("dry-run", **SWITCH_HELP))
def switchover(c, max_lag=30.0, wait_lag=60.0, xact_age=60.0, wait_xacts=30.0, timeout=120, master=None, slave=None,
               slon_host=None, cluster=None, database=None, user=None, dry_run=False):
    """Make the slave the origin (LOCK SET, MOVE SET), then prove it; reports the blocked-write window."""
    switch(c, "slave", locals())


@task(help=helps("dry-run", **SWITCH_HELP))
def switchback(c, max_lag=30.0, wait_lag=60.0, xact_age=60.0, wait_xacts=30.0, timeout=120, master=None, slave=None,
               slon_host=None, cluster=None, database=None, user=None, dry_run=False):
    """Roll back: make the master the origin again, with the same checks and proofs."""
    switch(c, "master", locals())


@task(help=helps("dry-run", yes="do not ask for confirmation"))
def failover(c, yes=False, master=None, slave=None, slon_host=None, cluster=None, database=None, user=None,
             dry_run=False):
    """The master is dead: promote the slave (FAILOVER, DROP NODE); says what may be lost."""
    if not yes and not dry_run:
        answer = input("FAILOVER loses what the slave has not received and drops the master from the cluster. "
                       "Type yes: ")
        if answer.strip() != "yes":
            raise Exit("failover: not confirmed; nothing changed", code=1)
    execute(c, locals(), endgame.failover)


@task(help=helps("dry-run", drop_role="also drop the replication role", force="finish although the master is "
                 "still the origin", yes="do not ask for confirmation"))
def finish(c, drop_role=False, force=False, yes=False, master=None, slave=None, slon_host=None, cluster=None,
           database=None, user=None, dry_run=False):
    """After an accepted switchover: remove Slony from both nodes, stop slons, remove access and .pgpass."""
    if not yes and not dry_run:
        answer = input("This ends replication for good (no switchback afterwards). Type yes: ")
        if answer.strip() != "yes":
            raise Exit("finish: not confirmed; nothing changed", code=1)
    execute(c, locals(), lambda run: endgame.finish(run, drop_role=drop_role, force=force))


ns = Collection(preflight, install, build, users, hba, appdb, plpgsql, schema, config, show_config, uninstall, init,
                slons, create_set, subscribe, logs, migrate, status, verify, switchover,
                switchback, failover, finish, Collection.from_module(testbed, name="testbed"))
ns.configure(DEFAULTS)
