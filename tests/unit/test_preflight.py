"""Unit tests for preflight's pure helpers and the parsers it adds to fabfile.facts. No I/O."""
from __future__ import annotations

import pytest

from fabfile.endgame.preflight import line
from fabfile.render.parse import normal_locale, parse_df_available, size
from fabfile.settings import LONG_TRANSACTION


def test_line_with_fix():
    assert line("db01", "FAIL", "database x", "does not exist", "check --database") == \
        "[db01] preflight: FAIL database x: does not exist; fix: check --database"


def test_line_without_fix():
    assert line("db02", "ok", "disk", "83 GB free") == "[db02] preflight: ok disk: 83 GB free"


@pytest.mark.parametrize("n, expected", [
    (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (20_400_000, "20 MB"), (1_500_000_000, "1.5 GB"),
    (83_732_357_120, "84 GB"), (5e12, "5.0 TB"), (5e15, "5000 TB"),
])
def test_size(n, expected):
    assert size(n) == expected


@pytest.mark.parametrize("text, expected", [
    ("       Avail\n83732357120\n", 83732357120),
    ("Avail\n0\n", 0),
])
def test_parse_df_available(text, expected):
    assert parse_df_available(text) == expected


@pytest.mark.parametrize("a, b", [
    ("C.UTF-8", "C.utf8"), ("en_US.UTF-8", "en_US.utf8"), ("de_DE.ISO-8859-1", "de_DE.iso88591"),
    ("de_DE.UTF-8@euro", "de_DE.utf8@euro"), ("C", "C"),
])
def test_normal_locale_equal(a, b):
    assert normal_locale(a) == normal_locale(b)


@pytest.mark.parametrize("a, b", [("en_US.UTF-8", "en_GB.UTF-8"), ("C", "C.UTF-8"), ("de_DE.utf8", "de_DE.utf8@euro")])
def test_normal_locale_different(a, b):
    assert normal_locale(a) != normal_locale(b)


def test_long_transaction_threshold_is_five_minutes():
    assert LONG_TRANSACTION == 300


def test_report_sends_failures_to_stderr_and_counts_them(capsys):
    from fabfile.endgame.preflight import FAIL, OK, Report
    from fabfile.errors import StepError

    report = Report()
    report("db01", OK, "ssh", "connected as admin; sudo works")

    def broken(report):
        raise StepError("db02", "psql on database postgres: connection refused")

    assert report.guard("db02", "disk", broken) is None
    out, err = capsys.readouterr()
    assert out == "[db01] preflight: ok ssh: connected as admin; sudo works\n"
    assert err == ("[db02] preflight: FAIL disk: psql on database postgres: connection refused; "
                   "fix: run the check by hand on that host\n")
    assert report.failed == 1
    report("db01", FAIL, "table public.t", "no key", "add a primary key")
    assert report.failed == 2
