"""Pure: the names of Debian's packages the tool installs, each written once. No I/O.

A name derived from the catalog (an extension's) is checked against what a Debian
package name can be (policy 5.6.1: lower-case letters, digits, `+`, `-` and `.`,
starting with a letter or digit) before any command is built from it: a name read from a
server never reaches a shell unchecked.
"""

from __future__ import annotations

import re

PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
SLONY_TOOLS = [
    "slony1-2-bin",
    "libswitch-perl",
]  # slon, slonik, the altperl tools (and what one needs)


def slony_module(major: str) -> str:
    """The package with Slony's server module for one PostgreSQL major."""
    return f"postgresql-{major}-slony1-2"


def is_slony(package: str) -> bool:
    return package.endswith("-slony1-2") or package == SLONY_TOOLS[0]


def extension_package(major: str, extension: str) -> str | None:
    """Debian's package of an extension for one PostgreSQL major (postgresql-17-pg-trgm
    for pg_trgm); None when the extension's name cannot be part of a package name (then
    no command is built from it).
    """
    name = f"postgresql-{major}-{extension.replace('_', '-')}"
    return name if PACKAGE_NAME.fullmatch(name) else None


def valid(package: str) -> bool:
    return bool(PACKAGE_NAME.fullmatch(package))
