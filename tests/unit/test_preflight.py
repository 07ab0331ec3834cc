"""Unit tests for preflight's pure helpers and the parsers it adds to fabfile.facts.
No I/O."""

from __future__ import annotations

import pytest

from fabfile.checks.findings import FAIL, OK, Finding, guarded, report
from fabfile.errors import StepError
from fabfile.render.parse import normal_locale, parse_df_available, size
from fabfile.session import Output
from fabfile.settings import LONG_TRANSACTION


def test_line_with_fix():
    assert (
        Finding(
            "db01", "FAIL", "database x", "does not exist", "check --database"
        ).line()
        == "[db01] preflight: FAIL database x: does not exist; fix: check --database"
    )


def test_line_without_fix():
    assert (
        Finding("db02", "ok", "disk", "83 GB free").line()
        == "[db02] preflight: ok disk: 83 GB free"
    )


@pytest.mark.parametrize(
    "n, expected",
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (20_400_000, "20 MB"),
        (1_500_000_000, "1.5 GB"),
        (83_732_357_120, "84 GB"),
        (5e12, "5.0 TB"),
        (5e15, "5000 TB"),
    ],
)
def test_size(n, expected):
    assert size(n) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("       Avail\n83732357120\n", 83732357120),
        ("Avail\n0\n", 0),
    ],
)
def test_parse_df_available(text, expected):
    assert parse_df_available(text) == expected


@pytest.mark.parametrize(
    "a, b",
    [
        ("C.UTF-8", "C.utf8"),
        ("en_US.UTF-8", "en_US.utf8"),
        ("de_DE.ISO-8859-1", "de_DE.iso88591"),
        ("de_DE.UTF-8@euro", "de_DE.utf8@euro"),
        ("C", "C"),
    ],
)
def test_normal_locale_equal(a, b):
    assert normal_locale(a) == normal_locale(b)


@pytest.mark.parametrize(
    "a, b",
    [
        ("en_US.UTF-8", "en_GB.UTF-8"),
        ("C", "C.UTF-8"),
        ("de_DE.utf8", "de_DE.utf8@euro"),
    ],
)
def test_normal_locale_different(a, b):
    assert normal_locale(a) != normal_locale(b)


def test_long_transaction_threshold_is_five_minutes():
    assert LONG_TRANSACTION == 300


def test_report_sends_failures_to_stderr_and_counts_them(capsys):
    def broken():
        yield Finding("db02", OK, "disk", "looked")
        raise StepError("db02", "psql on database postgres: connection refused")

    def checks():
        yield Finding("db01", OK, "ssh", "connected as admin; sudo works")
        value = yield from guarded("db02", "disk", broken)
        assert value is None
        yield Finding("db01", FAIL, "table public.t", "no key", "add a primary key")

    assert report(Output(), checks()) == 2
    out, err = capsys.readouterr()
    assert (
        out
        == "[db01] preflight: ok ssh: connected as admin; sudo works\n[db02] preflight:"
        " ok disk: looked\n"
    )
    assert (
        err == "[db02] preflight: FAIL disk: psql on database postgres: connection"
        " refused; "
        "fix: run the check by hand on that host\n"
        "[db01] preflight: FAIL table public.t: no key; fix: add a primary key\n"
    )


def test_checks_are_findings_without_output():
    """A check is a generator of Findings: testable by collecting them, no output
    captured."""
    import pytest as _pytest

    from fabfile.checks import database
    from tests.unit.fakes import canned, session

    mp = _pytest.MonkeyPatch()
    try:
        canned(
            mp,
            long_transactions=[("4242", "shop", "johann", "idle in transaction", 400)],
            prepared_transactions=[],
        )
        s = session()
        found = list(database.transactions(s.master_host))
    finally:
        mp.undo()
    assert found == [
        Finding(
            "db01",
            "warn",
            "session pid 4242",
            "database shop, user johann, idle in transaction, transaction open 400 s:"
            " the initial copy retries and LOCK SET waits until it ends",
            "commit it in the application, or SELECT pg_terminate_backend(4242)",
        )
    ]
