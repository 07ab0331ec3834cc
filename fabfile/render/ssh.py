"""What OpenSSH says of a host (`ssh -G NAME` prints its effective settings as `key
value` lines, after Include, Match and every default), as the values a connection is
built from. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Hop:
    """One hop of a ProxyJump list: [user@]host[:port]."""

    host: str
    user: str = ""
    port: int | None = None


@dataclass(frozen=True)
class Target:
    """Where and how to connect to one SSH name."""

    name: str  # the SSH name asked for
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...]  # tokens expanded; ~ is the caller's
    identities_only: bool
    known_hosts: tuple[str, ...]
    global_known_hosts: tuple[str, ...]
    connect_timeout: int | None  # None: not set
    jumps: tuple[Hop, ...]  # ProxyJump, in the order they are passed through
    proxy_command: str  # tokens expanded; "" when none


def parse_g(text: str) -> dict[str, list[str]]:
    """`ssh -G`'s lines as key (lower case): its values in order (IdentityFile and a
    few others repeat)."""
    options: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            options.setdefault(key.lower(), []).append(value.strip())
    return options


def hops(value: str) -> tuple[Hop, ...]:
    """A ProxyJump value as hops: `[user@]host[:port]` (`ssh -G` prints an ssh:// URI
    that way), `[v6 address]:port`, comma-separated; `none` is none."""
    if value.strip().lower() in ("", "none"):
        return ()
    out = []
    for part in value.split(","):
        part = part.strip().removeprefix("ssh://")
        user, _, host = part.rpartition("@")
        port = None
        v6 = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", host)
        if v6:
            host, port = v6[1], v6[2]
        elif host.count(":") == 1:
            host, port = host.split(":")
        out.append(Hop(host, user, int(port) if port else None))
    return tuple(out)


def expand(value: str, tokens: dict[str, str]) -> str:
    """OpenSSH's %-tokens replaced (`%%` is `%`); an unknown token stays as it is."""
    return re.sub(r"%(.)", lambda m: {**tokens, "%": "%"}.get(m[1], m[0]), value)


def target(name: str, options: dict[str, list[str]], local_user: str, home: str):
    """The Target `ssh -G`'s options (parse_g) describe for `name`."""

    def one(key: str, default: str = "") -> str:
        return options.get(key, [default])[0]

    hostname, user, port = one("hostname", name), one("user", local_user), one("port")
    tokens = {
        "h": hostname,
        "n": name,
        "p": port or "22",
        "r": user,
        "u": local_user,
        "d": home,
    }
    timeout = one("connecttimeout", "none")
    proxy = one("proxycommand", "none")
    return Target(
        name=name,
        hostname=hostname,
        port=int(port or 22),
        user=user,
        identity_files=tuple(
            expand(f, tokens) for f in options.get("identityfile", [])
        ),
        identities_only=one("identitiesonly", "no") == "yes",
        known_hosts=tuple(" ".join(options.get("userknownhostsfile", [])).split()),
        global_known_hosts=tuple(
            " ".join(options.get("globalknownhostsfile", [])).split()
        ),
        connect_timeout=None if timeout == "none" else int(timeout),
        jumps=hops(one("proxyjump", "none")),
        proxy_command="" if proxy == "none" else expand(proxy, tokens),
    )
