"""Issue 20, the class 'a value read from a server reaches a shell': every command the
tool builds from such a value (a path from the host, a name from the catalog) holds it
as one shell word, or leaves it out. The values are generated from every character a
shell treats specially, not picked by hand. No I/O: fake hosts record the commands."""

from __future__ import annotations

import shlex
from types import SimpleNamespace

import pytest

from fabfile import facts
from fabfile.checks import database as db_checks
from fabfile.errors import StepError
from fabfile.render import debian
from fabfile.steps import database, software
from tests.unit.fakes import FakeHost, canned, session

SPECIAL = ";|&$`()<>'\"\\ \t\n*?[]{}!#~="
PAYLOADS = [f"x{ch}touch /tmp/pwned{ch}y" for ch in SPECIAL] + [
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "-rf /",
]


def words(command: str) -> list[str]:
    """The words a POSIX shell splits `command` into (quotes removed)."""
    return shlex.split(command, posix=True)


def one_word_or_absent(command: str, payload: str) -> bool:
    """Whether `payload` stands in `command` only as (part of) one shell word, or not
    at all: never split into several, never able to end a quote."""
    if payload not in command and shlex.quote(payload) not in command:
        return True
    try:
        return any(payload in w for w in words(command))
    except ValueError:  # an unbalanced quote: the payload broke out of one
        return False


class Recording(FakeHost):
    """A host whose commands answer with `answer(command)` and are recorded."""

    def __init__(self, name: str, answer):
        super().__init__(name)
        self.answer = answer

    def run(self, command: str, **kw):
        self.commands.append(command)
        return SimpleNamespace(
            ok=True, failed=False, exited=0, stdout=self.answer(command), stderr=""
        )

    sudo = run


def assert_quoted(host: Recording, payload: str) -> None:
    assert host.commands, "nothing was run"
    for command in host.commands:
        assert one_word_or_absent(command, payload), (payload, command)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_package_name_from_the_catalog_never_reaches_apt(payload):
    assert debian.extension_package("17", payload) is None or debian.valid(
        debian.extension_package("17", payload)
    )
    h = Recording("db02", lambda c: "")
    found = facts.package_versions(h, [f"postgresql-17-{payload}", "slony1-2-bin"])
    assert found[f"postgresql-17-{payload}"] == ("", "")
    assert all(payload not in c for c in h.commands)
    assert not facts.packages_installed(h, f"postgresql-17-{payload}")


@pytest.mark.parametrize("payload", PAYLOADS)
def test_tool_and_client_paths_from_the_host_are_one_word(payload):
    h = Recording(
        "db02", lambda c: f"/usr/bin/{payload}\n" if "command -v" in c else ""
    )
    facts.slonik_version(h)
    facts.client_version(h, f"/usr/lib/postgresql/17/bin/{payload}")
    assert_quoted(h, payload)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_data_directory_or_file_from_the_host_is_one_word(payload):
    h = Recording(
        "db02", lambda c: "Avail\n1\n" if "df" in c else "postgres:postgres 600"
    )
    facts.disk_free(h, f"/var/lib/{payload}")
    facts.file_stat(h, f"/etc/{payload}")
    facts.postgres_writable(h, f"/var/run/{payload}")
    with pytest.raises(
        StepError
    ):  # the fake host has no route: the command is what counts
        facts.source_address(h, payload)
    assert_quoted(h, payload)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_schema_copy_quotes_the_pg_dump_it_found(payload):
    s = session()
    assert one_word_or_absent(
        database.schema_pipeline(s, f"/usr/lib/postgresql/17/bin/{payload}"), payload
    )


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_build_quotes_every_path_the_host_gives(monkeypatch, payload, tmp_path):
    """mktemp's directory and pg_config's bindir come from the host."""
    s = session()
    h = Recording("db01", lambda c: f"/tmp/{payload}\n" if "mktemp" in c else "")
    h.put = lambda local, remote: h.commands.append(f"put {shlex.quote(remote)}")
    canned(monkeypatch, packages_installed=True, slony_modules=["2.2.11"])
    tarball = tmp_path / "slony1-2.2.11.tar.bz2"
    tarball.write_bytes(b"not really")
    software.build_on(
        s, h, "build", str(tarball), "", "2.2.11", "15", f"/usr/lib/{payload}", ""
    )
    assert_quoted(h, payload)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_an_extension_renamed_to_shell_syntax_is_named_and_never_installed(
    monkeypatch, payload
):
    """db01's postgres account can UPDATE pg_extension SET extname: the name is the
    catalog's, not a package's. install leaves it out; preflight names it."""
    s = session()
    canned(
        monkeypatch,
        database_exists=True,
        extensions={payload: "1.0", "citext": "1.6"},
        available_extensions={},
        pg_major="17",
    )
    asked = []
    monkeypatch.setattr(
        facts,
        "package_versions",
        lambda host, pkgs: asked.extend(pkgs) or {p: ("", "1.0") for p in pkgs},
    )
    assert software.extension_packages(s) == ["postgresql-17-citext"]
    assert all(payload not in p for p in asked)
    findings = list(db_checks.extensions(s))
    named = [f for f in findings if f.level == "FAIL"]
    assert named and repr(payload) in named[0].object, findings
    assert "cannot be part of a Debian package name" in named[0].message
