"""Issue 13: the old server is Debian 11 / PostgreSQL 13, whose own Slony (2.2.10)
differs from the new server's (2.2.11): Slony 2.2.11 is built there from its real
source, then migrate, verify, switchover.

Run by `make test-old` (a testbed of its own: TESTBED_PROJECT=slonyold,
DB01_SUITE=bullseye).
"""

from __future__ import annotations

from pathlib import Path

from fabfile import facts
from testbed.compose import ROOT, current

ARGS = ("--master", "db01", "--slave", "db02")
VENDOR = ROOT.parent / "shared" / "vendor"
TARBALL = VENDOR / "slony1-2.2.11.tar.bz2"


def test_the_testbed_is_the_old_server_profile(bed):
    assert current().suites["db01"] == "bullseye", (
        "run this with DB01_SUITE=bullseye (make test-old)"
    )
    assert facts.pg_major(bed["db01"]) == "13" and facts.pg_major(bed["db02"]) == "17"


def test_build_from_the_vendored_source_then_migrate_verify_switchover(bed):
    digest = next(
        l.split()[0]
        for l in (VENDOR / "SHA256SUMS").read_text().splitlines()
        if TARBALL.name in l
    )
    refused = bed.inv(
        "install", *ARGS, check=False, timeout=900
    )  # Debian 11 ships 2.2.10, Debian 13 2.2.11
    assert (
        refused.returncode == 1
        and "Slony versions differ (db01 2.2.10" in refused.stderr
    ), refused.stderr
    assert facts.slony_modules(bed["db01"]) == []
    out = bed.inv(
        "build",
        "--host",
        "db01",
        "--tarball",
        str(TARBALL),
        "--sha256",
        digest,
        timeout=1800,
    ).stdout
    assert (
        "checksum verified" in out and "Slony 2.2.11 installed for PostgreSQL 13" in out
    ), out
    assert "2.2.11" in facts.slony_modules(bed["db01"])
    out = bed.inv("migrate", *ARGS, timeout=1800).stdout
    assert (
        "Slony module 2.2.11 present for PostgreSQL 13" in out
        and "initial copy of set 1 done" in out
    ), out
    bed.wait_same(timeout=60)
    bed.sql(
        "db01",
        "INSERT INTO websites_domain (name) VALUES ('from-postgresql-13.example')",
    )
    bed.wait_same(timeout=60)
    bed.inv("verify", *ARGS)
    out = bed.inv("switchover", *ARGS, timeout=600).stdout
    assert "set 1 moved to db02" in out
    bed.sql(
        "db02",
        "INSERT INTO websites_domain (name) VALUES ('from-postgresql-17.example')",
    )
    bed.wait_same(timeout=60)
    bed.inv("verify", *ARGS)
    assert Path(TARBALL).exists()
