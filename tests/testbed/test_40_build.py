"""The build step, with a tarball of Slony's shape (no Slony source can be downloaded
here)."""

import hashlib
import io
import tarfile

import pytest

from fabfile import facts

CONFIGURE = """#!/bin/sh
# Stand-in for Slony's configure: honours --with-pgconfigdir like the real one.
for arg in "$@"; do
  case "$arg" in --with-pgconfigdir=*) pgconfigdir="${arg#*=}" ;; esac
done
[ -x "$pgconfigdir/pg_config" ] || { echo "configure: no pg_config in $pgconfigdir" >&2; exit 1; }
echo "PKGLIBDIR=$($pgconfigdir/pg_config --pkglibdir)" > Makefile.config
"""
MAKEFILE = """include Makefile.config
all: slony1_funcs.$(VERSION).so
slony1_funcs.$(VERSION).so:
\techo built > $@
install: all
\tinstall -m 755 slony1_funcs.$(VERSION).so $(PKGLIBDIR)/
"""


def fixture_tarball(directory, version: str):
    path = directory / f"slony1-{version}.tar.bz2"
    with tarfile.open(path, "w:bz2") as tar:
        for name, text, mode in (
            ("configure", CONFIGURE, 0o755),
            ("Makefile", f"VERSION={version}\n" + MAKEFILE, 0o644),
        ):
            info = tarfile.TarInfo(f"slony1-{version}/{name}")
            data = text.encode()
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db01_clean(bed):
    yield bed
    libdir = facts.pg_dir(bed["db01"], "PKGLIBDIR")
    bed["db01"].run(
        f"sudo -n rm -f {libdir}/slony1_funcs.2.2.98.so {libdir}/slony1_funcs.2.2.99.so"
    )


def test_build_installs_then_is_a_no_op(db01_clean, tmp_path):
    bed = db01_clean
    tarball, digest = fixture_tarball(tmp_path, "2.2.99")
    out = bed.inv(
        "build",
        "--host",
        "db01",
        "--tarball",
        str(tarball),
        "--sha256",
        digest,
        "--deps",
        "make",
    ).stdout
    assert (
        "checksum verified" in out and "Slony 2.2.99 installed for PostgreSQL 15" in out
    )
    assert "2.2.99" in facts.slony_modules(bed["db01"])
    again = bed.inv(
        "build", "--host", "db01", "--tarball", str(tarball), "--deps", "make"
    ).stdout
    assert "already installed" in again


def test_build_refuses_a_checksum_mismatch_and_installs_nothing(db01_clean, tmp_path):
    bed = db01_clean
    tarball, _ = fixture_tarball(tmp_path, "2.2.98")
    result = bed.inv(
        "build",
        "--host",
        "db01",
        "--tarball",
        str(tarball),
        "--sha256",
        "0" * 64,
        "--deps",
        "make",
        check=False,
    )
    assert result.returncode == 1
    assert "db01: checksum mismatch for slony1-2.2.98.tar.bz2" in result.stderr
    assert "2.2.98" not in facts.slony_modules(bed["db01"])
