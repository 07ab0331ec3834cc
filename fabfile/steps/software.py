"""Runbook steps 1 and 2: Slony from the distribution's packages (install), or built
from source (build)."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from pathlib import PurePosixPath

from .. import facts, settings
from ..errors import StepError
from ..plan import Action, Change, Command, apply
from ..remote import Host
from ..render import debian
from ..render.parse import upstream
from ..session import Session

BUILD_DEPS = "build-essential flex bison postgresql-server-dev-{major}"
APT_INSTALL = (
    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
)


def install_hosts(s: Session) -> list[str]:
    cl = s.cluster
    return list(dict.fromkeys([cl.master.host, cl.slave.host, cl.slon_name]))


def differing(versions: dict[str, str]) -> str:
    """'' when all Slony versions agree, else each listed: 'db01 2.2.99, db02
    2.2.11'."""
    return (
        ", ".join(f"{k} {v}" for k, v in versions.items())
        if len(set(versions.values())) > 1
        else ""
    )


def check_versions(versions: dict[str, str]) -> None:
    """StepError when the Slony versions (installed or to be installed) differ
    between hosts."""
    listed = differing(versions)
    if listed:
        raise StepError(
            ", ".join(versions),
            f"Slony versions differ ({listed})",
            "use the same Slony version everywhere: build the matching version with inv"
            " build",
        )


def install(s: Session) -> None:
    """Install Slony from the distribution: the module on each node, the tools on the
    slon host."""
    step, cl = "install", s.cluster
    wanted: dict[str, list[str]] = {}
    versions: dict[str, str] = {}
    for name in install_hosts(s):
        h = s.host(name)
        packages = []
        if name in (cl.master.host, cl.slave.host):
            major = facts.pg_major(h)
            modules = facts.slony_modules(h)
            if modules:
                versions[name] = modules[-1]
                s.say(
                    name,
                    step,
                    f"Slony module {modules[-1]} present for PostgreSQL {major}",
                )
            else:
                packages.append(debian.slony_module(major))
        if name == cl.slave.host:
            packages += extension_packages(s)
        if name == cl.slon_name:
            have = facts.slonik_version(h)
            if have:
                s.say(name, step, f"slonik {have} present")
                versions.setdefault(name, have)
                if versions[name] != have:
                    raise StepError(
                        name,
                        f"slonik {have} differs from the Slony module {versions[name]}",
                        "install one Slony version on this host",
                    )
            else:
                packages += debian.SLONY_TOOLS
        if packages:
            wanted[name] = packages
    candidates = {
        name: facts.package_versions(s.host(name), pkgs)
        for name, pkgs in wanted.items()
    }
    stale = [
        name
        for name, pkgs in candidates.items()
        if any(not cand for _, cand in pkgs.values())
    ]
    apply(
        s,
        [
            Change(
                name,
                step,
                "refresh the package lists (apt-get update)",
                Command(
                    "apt-get update -q",
                    timeout=settings.APT_UPDATE,
                    label="apt-get update",
                ),
            )
            for name in stale
        ],
    )
    for name in stale:
        candidates[name] = facts.package_versions(s.host(name), wanted[name])
        missing = [p for p, (_, cand) in candidates[name].items() if not cand]
        if missing and not s.dry_run:
            release = facts.os_release(s.host(name)).get(
                "PRETTY_NAME", "this distribution"
            )
            raise StepError(
                name,
                f"no package {', '.join(missing)} in {release}",
                f"build Slony from source: inv build --host {name} --tarball"
                " slony1-VERSION.tar.bz2",
            )
    for name, pkgs in wanted.items():
        slony = next((p for p in pkgs if debian.is_slony(p)), None)
        if slony and candidates[name][slony][1]:
            versions.setdefault(name, upstream(candidates[name][slony][1]))
    check_versions(versions)
    apply(
        s,
        [
            install_change(s, step, name, pkgs, versions.get(name, "?"))
            for name, pkgs in wanted.items()
        ],
    )


def extension_packages(s: Session) -> list[str]:
    """Packages the slave needs for the master's extensions that it cannot create yet
    (where the distribution has them; preflight names the others)."""
    cl = s.cluster
    if not facts.database_exists(s.master_host, cl.database):
        return []
    available = facts.available_extensions(s.slave_host)
    major = facts.pg_major(s.slave_host)
    wanted = [
        debian.extension_package(major, name)
        for name in facts.extensions(s.master_host, cl.database)
        if name not in available
    ]
    wanted = [p for p in wanted if p]  # a name no package can have: preflight names it
    found = facts.package_versions(s.slave_host, wanted) if wanted else {}
    return [p for p in wanted if found[p][1]]


def install_change(
    s: Session, step: str, name: str, packages: list[str], version: str
) -> Change:
    cl, h = s.cluster, s.host(name)
    bad = [p for p in packages if not debian.valid(p)]
    if (
        bad
        # never reached with names from render.debian: the last guard before a root shell
    ):
        raise StepError(
            name,
            f"not a Debian package name: {', '.join(map(repr, bad))}",
            "report this as a bug",
        )

    def check():
        if name in (cl.master.host, cl.slave.host) and not facts.slony_modules(h):
            raise StepError(
                name,
                "the Slony module is still missing after apt-get install",
                "check the package's contents (dpkg -L)",
            )

    slony = any(debian.is_slony(p) for p in packages)
    return Change(
        name,
        step,
        f"install {' '.join(packages)}" + (f" ({version})" if slony else ""),
        Command(
            APT_INSTALL + " ".join(packages),
            timeout=settings.APT_INSTALL,
            label="apt-get install",
        ),
        check,
    )


# --- build from source ----------------------------------------------------------------


def build_deps(deps: str, major: str) -> str:
    """The build dependencies to install: package names, {major} standing for the
    PostgreSQL major."""
    try:
        packages = deps.format(major=major)
    except (KeyError, IndexError, ValueError):
        packages = ""
    if not packages.strip() or not re.fullmatch(
        r"[a-z0-9][a-z0-9.+-]*( +[a-z0-9][a-z0-9.+-]*)*", packages.strip()
    ):
        raise StepError(
            "input",
            f"--deps {deps!r} is not a list of package names",
            "give package names separated by spaces; {major} stands for the PostgreSQL"
            " major",
        )
    return packages.strip()


def tarball_version(host: str, tarball: str, sha256: str) -> str:
    """The Slony version a release tarball's name gives; StepError for a bad name,
    path or checksum."""
    m = re.match(
        r"^slony1-(\d+\.\d+\.\d+)\.tar\.(bz2|gz)$", PurePosixPath(tarball).name
    )
    if not m:
        raise StepError(
            host,
            f"tarball {tarball!r} is not named slony1-VERSION.tar.bz2 or .tar.gz",
            "give Slony's release tarball",
        )
    if re.match(r"^[a-z]+://", tarball) and not is_url(tarball):
        raise StepError(
            "input",
            f"--tarball {tarball}: only https:// downloads are accepted (the build runs"
            " make install as root)",
            "give an https:// URL with --sha256, or a local file",
        )
    if is_url(tarball) and not sha256:
        raise StepError(
            "input",
            f"--tarball {tarball} is downloaded without --sha256: nothing proves what "
            "would be built and installed as root",
            "give the release's SHA-256 with --sha256",
        )
    if not is_url(tarball) and not os.path.isfile(tarball):
        raise StepError(
            "local", f"tarball {tarball} not found", "give an existing path or a URL"
        )
    if sha256 and not re.match(r"^[0-9a-f]{64}$", sha256):
        raise StepError(
            "input",
            f"--sha256 {sha256!r} is not a SHA-256 hex digest",
            "give 64 hex digits",
        )
    return m.group(1)


def is_url(tarball: str) -> bool:
    return tarball.startswith("https://")


def build(
    s: Session, host_name: str, tarball: str, sha256: str = "", deps: str = BUILD_DEPS
) -> None:
    """Build and install Slony from a source tarball (URL or local path) on one host."""
    step = "build"
    version = tarball_version(host_name, tarball, sha256)
    build_deps(deps, 0)  # refuse a bad --deps before anything touches the host
    h = s.host(host_name)
    major = facts.pg_major(h)
    if version in facts.slony_modules(h):
        s.say(
            host_name,
            step,
            f"Slony {version} already installed for PostgreSQL {major}; nothing to do",
        )
        return
    bindir = facts.pg_dir(h, "BINDIR")
    # Unpacking a .bz2 needs bzip2 on top of the build dependencies.
    packages = " ".join(
        [build_deps(deps, major), *(["bzip2"] if tarball.endswith(".bz2") else [])]
    )
    plan = (
        f"apt-get install {packages}\nfetch {tarball}"
        + (f"\nverify sha256 {sha256}" if sha256 else "")
        + f"\n./configure --with-pgconfigdir={bindir}\nmake\nsudo make install"
    )
    apply(
        s,
        [
            Change(
                host_name,
                step,
                f"build Slony {version} for PostgreSQL {major} from {tarball}",
                Action(
                    lambda: build_on(
                        s, h, step, tarball, sha256, version, major, bindir, packages
                    ),
                    plan,
                ),
            )
        ],
    )


def build_on(
    s: Session,
    h: Host,
    step: str,
    tarball: str,
    sha256: str,
    version: str,
    major: str,
    bindir: str,
    packages: str,
) -> None:
    """Fetch, verify, unpack, configure, make and make install; the build tree stays
    when a command fails."""
    if sha256 and not is_url(tarball):  # before anything touches the host
        with open(tarball, "rb") as f:
            check_sha256(h, tarball, sha256, hashlib.sha256(f.read()).hexdigest())
    # Every path below comes from the host (mktemp, pg_config): quoted as one word.
    work = h.run("mktemp -d /tmp/slony-build.XXXXXX").stdout.strip()
    q = shlex.quote
    try:
        archive = fetch(h, tarball, sha256, work)
        if sha256:
            s.say(h.name, step, "checksum verified")
        if not facts.packages_installed(h, packages):
            s.say(h.name, step, f"installing build dependencies: {packages}")
            h.sudo(
                "apt-get update -q && " + APT_INSTALL + packages,
                timeout=settings.BUILD_DEPS,
                what="apt-get install (build dependencies)",
            )
        h.run(f"tar -xf {q(archive)} -C {q(work)}", what="tar")
        src = q(f"{work}/slony1-{version}")
        s.say(h.name, step, f"configure --with-pgconfigdir={bindir}")
        logged(
            h,
            f"cd {src} && ./configure --with-pgconfigdir={q(bindir)}",
            f"{work}/configure.log",
            "configure",
            settings.CONFIGURE,
        )
        s.say(h.name, step, "make (serial: the flex scanner is not parallel-safe)")
        logged(h, f"cd {src} && make", f"{work}/make.log", "make", settings.MAKE)
        logged(
            h,
            f"cd {src} && make install",
            f"{work}/install.log",
            "make install",
            settings.MAKE_INSTALL,
            root=True,
        )
    finally:  # no build tree stays behind in /tmp; a failure quotes its log instead
        h.sudo(f"rm -rf {q(work)}", check=False)
    if version not in facts.slony_modules(h):
        raise StepError(
            h.name,
            f"make install left no slony1_funcs.{version}.so in the pkglibdir",
            "read make install's output: inv build again shows it",
        )
    s.say(h.name, step, f"Slony {version} installed for PostgreSQL {major}")


def logged(
    h: Host, command: str, log: str, what: str, timeout: int, root: bool = False
) -> None:
    """Run a build command with its output in `log`; on failure, StepError quoting
    the log's last lines."""
    full = f"{command} > {shlex.quote(log)} 2>&1"
    result = (
        h.sudo(full, timeout=timeout, check=False, what=what)
        if root
        else h.run(full, timeout=timeout, check=False, what=what)
    )
    if result.failed:
        tail = (
            h.run(f"tail -n 5 {shlex.quote(log)}", check=False)
            .stdout.strip()
            .replace("\n", " | ")
        )
        raise StepError(
            h.name,
            f"{what} failed: {tail}",
            "install what it names (inv build --deps ...), then run again",
        )


def check_sha256(h: Host, tarball: str, sha256: str, got: str) -> None:
    if got != sha256:
        raise StepError(
            h.name,
            f"checksum mismatch for {PurePosixPath(tarball).name}: expected {sha256},"
            f" got {got}",
            "check the tarball and --sha256; nothing was installed",
        )


def fetch(h: Host, tarball: str, sha256: str, work: str) -> str:
    """The tarball in `work` on the host (uploaded, or downloaded there and its
    checksum verified when given)."""
    archive = f"{work}/{PurePosixPath(tarball).name}"
    if not is_url(tarball):
        h.put(tarball, archive)
        return archive
    if h.run("command -v curl", check=False).failed:
        h.sudo(
            "apt-get update -q && " + APT_INSTALL + "curl ca-certificates",
            timeout=settings.APT_INSTALL,
            what="apt-get install curl",
        )
    h.run(
        f"curl -fsSL -o {shlex.quote(archive)} {shlex.quote(tarball)}",
        timeout=settings.DOWNLOAD,
        what=f"download {tarball}",
    )
    if sha256:
        check_sha256(
            h,
            tarball,
            sha256,
            h.run(f"sha256sum {shlex.quote(archive)}").stdout.split()[0],
        )
    return archive
