"""The replication password: from the environment, a prompt, or generated once into a
0600 file.

It is never put on a command line, in a log, or in any file but that one and the .pgpass
files.
"""

from __future__ import annotations

import getpass
import os
import secrets
import stat
from pathlib import Path

from .model import StepError

ENV = "SLONY_MIGRATE_PASSWORD"


def home() -> Path:
    """The operator's directory for slony-migrate's files ($SLONY_MIGRATE_HOME)."""
    base = os.environ.get("SLONY_MIGRATE_HOME") or "~/.config/slony-migrate"
    return Path(base).expanduser()


def password_file(cluster_name: str) -> Path:
    return home() / f"{cluster_name}.password"


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
    cluster_name: str, *, prompt: bool = False, dry_run: bool = False
) -> str:
    """Return the password; generate and store it on first use (not in a dry run)."""
    if os.environ.get(ENV):
        return check_password(os.environ[ENV], f"${ENV}")
    if prompt:
        first = getpass.getpass("replication password: ")
        if first != getpass.getpass("again: "):
            raise StepError(
                "local", "the two passwords differ", "type the same password twice"
            )
        return check_password(first, "the prompt")
    path = password_file(cluster_name)
    if path.exists():
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            raise StepError(
                "local", f"{path} is readable by others", f"chmod 600 {path}"
            )
        return check_password(path.read_text().strip(), str(path))
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
