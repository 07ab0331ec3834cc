"""The replication password: from the environment, a prompt, or generated once into a
0600 file.

It is never put on a command line, in a log, or in any file but that one and the .pgpass
files. It is the replication role's: every cluster that logs in as that role uses it
(the file is named by the role). An earlier version named the file by its cluster: such
a file is read, and moved to the role's name by the users step (`adopt`).
"""

from __future__ import annotations

import getpass
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from .model import StepError

ENV = "SLONY_MIGRATE_PASSWORD"


def home() -> Path:
    """The operator's directory for slony-migrate's files ($SLONY_MIGRATE_HOME)."""
    base = os.environ.get("SLONY_MIGRATE_HOME") or "~/.config/slony-migrate"
    return Path(base).expanduser()


def password_file(user: str) -> Path:
    """The replication role's password file."""
    return home() / f"role-{user}.password"


def legacy_password_file(cluster_name: str) -> Path:
    """Where an earlier version kept the password of its cluster's role."""
    return home() / f"{cluster_name}.password"


def legacy_password_files() -> list[Path]:
    """Every password file of an earlier version (named by its cluster), sorted."""
    if not home().is_dir():
        return []
    return sorted(
        p for p in home().glob("*.password") if not p.name.startswith(("role-", "."))
    )


def read_private(path: Path) -> str:
    """A password file's password; StepError when others may read it or it is
    unusable."""
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise StepError("local", f"{path} is readable by others", f"chmod 600 {path}")
    return check_password(path.read_text().strip(), str(path))


def adopt(
    user: str,
    cluster_name: str,
    matches: Callable[[str], bool] | None = None,
    dry_run: bool = False,
) -> str:
    """Move an earlier version's password file to the role's name, when the role has
    none: this cluster's, else another cluster's whose password `matches` the role's
    verifier on the servers (a new cluster beside an earlier one). What was done ('':
    nothing; in a dry run, what would be)."""
    target = password_file(user)
    if target.exists() or os.environ.get(ENV):
        return ""
    own = legacy_password_file(cluster_name)
    source = (
        own
        if own.exists()
        else next(
            (p for p in legacy_password_files() if matches(read_private(p))), None
        )
        if matches
        else None
    )
    if source is None:
        return ""
    if not dry_run:
        os.replace(source, target)
    return (
        f"{'would move' if dry_run else 'moved'} the replication password file of an"
        f" earlier version, {source}, to {target} (one file per replication role: every"
        f" cluster that logs in as {user} uses it)"
    )


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (0600, in a 0700 directory when it makes
    one), replacing it atomically: it holds data or secrets."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_password(password: str, source: str) -> str:
    if len(password) < 12 or not all(33 <= ord(ch) < 127 for ch in password):
        raise StepError(
            "local",
            f"replication password from {source} is unusable",
            "use at least 12 printable ASCII characters without spaces",
        )
    return password


def replication_password(
    user: str, cluster_name: str, *, prompt: bool = False, dry_run: bool = False
) -> str:
    """Return the replication role's password: from the environment, a prompt, its
    file (an earlier version's, named by the cluster, until adopt moves it); generate
    and store it on first use (not in a dry run)."""
    if os.environ.get(ENV):
        return check_password(os.environ[ENV], f"${ENV}")
    if prompt:
        first = getpass.getpass("replication password: ")
        if first != getpass.getpass("again: "):
            raise StepError(
                "local", "the two passwords differ", "type the same password twice"
            )
        return check_password(first, "the prompt")
    path = password_file(user)
    for existing in (path, legacy_password_file(cluster_name)):
        if existing.exists():
            return read_private(existing)
    password = secrets.token_urlsafe(24)
    if dry_run:
        return password
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    print(
        f"[local] users: generated the replication password into {path} (mode 0600)",
        flush=True,
    )
    return password
