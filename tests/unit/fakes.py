"""A fake host and session for unit tests of decisions: canned facts in, planned
changes out. No I/O."""

from __future__ import annotations

import io
from types import SimpleNamespace

from fabfile import facts
from fabfile.model import make_cluster
from fabfile.session import Output, Session


class FakeHost:
    """A host whose files are a dict and whose commands are recorded, never run."""

    def __init__(self, name: str, files: dict[str, str] | None = None):
        self.name, self.user = name, "admin"
        self.version_num = 170000 if name == "db02" else 150000
        self.files = dict(files or {})
        self.commands: list[str] = []

    def read_file(self, path: str, *, user: str = "root") -> str | None:
        return self.files.get(path)

    def write_file(
        self,
        path: str,
        text: str,
        *,
        owner: str = "root:root",
        mode: str = "644",
        writer: str = "",
    ) -> None:
        self.commands.append(f"write {path} {owner} {mode}")
        self.files[path] = text

    def psql(self, sql: str, database: str = "postgres", **kw) -> list[list[str]]:
        self.commands.append(f"psql {database}: {sql}")
        return []

    def value(self, sql: str, database: str = "postgres"):
        self.psql(sql, database)
        return None

    def sudo(self, command: str, **kw):
        self.commands.append(f"sudo {kw.get('user', 'root')}: {command}")
        return SimpleNamespace(ok=True, failed=False, stdout="", stderr="")

    run = sudo


class FakeHosts(dict):
    def __missing__(self, name: str) -> FakeHost:
        self[name] = FakeHost(name)
        return self[name]

    def retry(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def session(dry_run: bool = False, **kw) -> Session:
    """A Session over fake hosts db01 and db02 (slon on db02); its output in
    `s.out.stream`."""
    return Session(
        FakeHosts(),
        make_cluster("db01", "db02", **{"database": "shotserver04", **kw}),
        dry_run=dry_run,
        out=Output(io.StringIO(), tty=False),
    )


def output(s: Session) -> str:
    return s.out.stream.getvalue()


def canned(monkeypatch, **answers) -> None:
    """Make facts.NAME answer from canned values: a value for every host, or a dict
    by host name."""
    for name, value in answers.items():

        def fact(host, *args, _value=value, **kw):
            if isinstance(_value, dict) and host.name in _value:
                return _value[host.name]
            return _value

        monkeypatch.setattr(facts, name, fact)
