"""The installed `slony-migrate` command: the tasks of fabfile.cli behind an argparse
front end (typed flags, every default in the help, required ones marked, usage errors
exit 2), run by cli.run."""

from __future__ import annotations

import argparse
import sys

from . import cli


def add_flag(group, f: cli.Flag) -> None:
    text = f.text().replace("%", "%%")
    if f.kind is bool:
        group.add_argument(f.option, dest=f.name, action="store_true", help=text)
        return
    group.add_argument(
        f.option,
        *f.aliases,
        dest=f.name,
        metavar=f.metavar or f.name.upper(),
        default=None,
        required=f.required,
        help=text,
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="slony-migrate",
        description=(
            "Move a live PostgreSQL database to another server with Slony-I, step by"
            " step over SSH. The runbook: preflight, migrate, status, verify,"
            " switchover, verify, finish (switchback, failover: the way back)."
        ),
        epilog="slony-migrate TASK --help shows a task's flags.",
    )
    top.add_argument("--version", action="version", version=cli.version())
    tasks = top.add_subparsers(dest="task", metavar="TASK", required=True)
    for t in cli.TASKS:
        p = tasks.add_parser(
            t.name,
            help=t.summary,
            description=t.doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        own = p.add_argument_group(f"options of {t.name}")
        common = p.add_argument_group("servers, configuration and output")
        for f in t.flags:
            add_flag(common if f in cli.COMMON else own, f)
    return top


def main(argv: list[str] | None = None) -> None:
    args = vars(parser().parse_args(argv))
    name = args.pop("task")
    task = next(t for t in cli.TASKS if t.name == name)
    sys.exit(cli.run(task, args, "slony-migrate"))
