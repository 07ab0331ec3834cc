"""The docker-compose testbed: db01 (Debian 12, PostgreSQL 15), db02 (Debian 13,
PostgreSQL 17), and app (Debian 13: PgBouncer in front of the origin, and the
application's writer).

Which testbed is read from the environment when asked (`current()`), so a second one can
run beside the first: TESTBED_PROJECT (default slonytb), DB01_SSH_PORT / DB02_SSH_PORT /
APP_SSH_PORT (2221/2222/ 2223), TESTBED_NET. Nothing here is used by the migration: it
reaches the testbed by ssh config alone.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fabfile.errors import StepError
from fabfile.remote import Hosts
from fabfile.render.sql import QUIET, literal, scram_verifier

from . import DATABASE

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
PG_MAJORS = {
    "bullseye": 13,
    "bookworm": 15,
    "trixie": 17,
}  # Debian release: its PostgreSQL
HEALTHY = 180  # seconds for the containers to become healthy


@dataclass(frozen=True)
class Testbed:
    project: str
    ports: dict[str, int]
    net: str
    suites: dict[str, str]  # db01/db02/app: Debian release

    @property
    def state(self) -> Path:
        """Keys, ssh config and known_hosts of this testbed (git-ignored)."""
        return DOCKER / (
            ".testbed" if self.project == "slonytb" else f".testbed-{self.project}"
        )

    @property
    def ssh_config(self) -> Path:
        return self.state / "ssh_config"

    @property
    def ca(self) -> Path:
        """The testbed's own CA certificate: it signed db01's and db02's server
        certificates."""
        return self.state / "ca.crt"

    def operator_env(self) -> dict[str, str]:
        """What an operator exports to reach this testbed: its ssh config and its CA
        (sslmode=verify-full)."""
        return {
            "INVOKE_SLONY_SSH_CONFIG": str(self.ssh_config),
            "INVOKE_SLONY_SSL_CA": str(self.ca),
        }

    def env(self) -> dict[str, str]:
        """The environment docker-compose.yml reads."""
        env = {"TESTBED_STATE": str(self.state), "TESTBED_NET": self.net}
        for name in self.ports:
            env[f"{name.upper()}_SSH_PORT"] = str(self.ports[name])
            env[f"{name.upper()}_SUITE"] = self.suites[name]
            env[f"{name.upper()}_PG_MAJOR"] = str(PG_MAJORS[self.suites[name]])
        return env


def current() -> Testbed:
    """The testbed the environment names."""
    db01 = int(os.environ.get("DB01_SSH_PORT", 2221))
    ports = {
        "db01": db01,
        "db02": int(os.environ.get("DB02_SSH_PORT", db01 + 1)),
        "app": int(os.environ.get("APP_SSH_PORT", db01 + 2)),
    }
    # A fixed /24 per testbed, derived from its SSH port so testbeds side by side don't
    # collide.
    net = os.environ.get("TESTBED_NET") or f"172.30.{ports['db01'] % 256}"
    suites = {
        "db01": os.environ.get("DB01_SUITE", "bookworm"),
        "db02": os.environ.get("DB02_SUITE", "trixie"),
    }
    suites["app"] = suites[
        "db02"
    ]  # the app host is the new server's image with PgBouncer on top
    for name, suite in suites.items():
        if suite not in PG_MAJORS:
            raise StepError(
                "testbed",
                f"{name.upper()}_SUITE={suite} is not a Debian release the testbed"
                " knows",
                f"use one of {', '.join(PG_MAJORS)}",
            )
    return Testbed(os.environ.get("TESTBED_PROJECT", "slonytb"), ports, net, suites)


def compose_command() -> list[str]:
    """`docker compose` (v2) when the plugin is there, else `docker-compose` (v1)."""
    if (
        subprocess.run(["docker", "compose", "version"], capture_output=True).returncode
        == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise StepError(
        "testbed",
        "neither `docker compose` nor `docker-compose` found",
        "run `make setup`",
    )


def compose(
    *args: str, check: bool = True, capture: bool = False
) -> subprocess.CompletedProcess:
    tb = current()
    cmd = [
        *compose_command(),
        "-p",
        tb.project,
        "-f",
        str(DOCKER / "docker-compose.yml"),
        *args,
    ]
    result = subprocess.run(
        cmd, env={**os.environ, **tb.env()}, capture_output=capture, text=True
    )
    if check and result.returncode:
        raise StepError(
            "testbed",
            f"{' '.join(cmd)} failed ({result.returncode})",
            "read docker's output above",
        )
    return result


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def certificates(tb: Testbed) -> None:
    """A CA made for this testbed, and a server certificate it signed for each server
    (its name as SAN)."""
    key, ca = tb.state / "ca.key", tb.ca
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    if not ca.exists():
        openssl(
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(key),
            "-out",
            str(ca),
            "-days",
            "3650",
            "-subj",
            f"/CN=slony-migrate testbed {tb.project} CA",
        )
    for name in tb.ports:
        d = tb.state / name
        if (d / "server.crt").exists():
            continue
        ext = d / "san.cnf"
        ext.write_text(f"subjectAltName=DNS:{name}\n")
        openssl(
            "req",
            "-new",
            *ec,
            "-keyout",
            str(d / "server.key"),
            "-out",
            str(d / "server.csr"),
            "-subj",
            f"/CN={name}",
        )
        openssl(
            "x509",
            "-req",
            "-in",
            str(d / "server.csr"),
            "-CA",
            str(ca),
            "-CAkey",
            str(key),
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            str(ext),
            "-out",
            str(d / "server.crt"),
        )


def keys() -> None:
    """The admin key and a pinned host key per server, then the ssh config and
    known_hosts for them; the CA and the servers' certificates."""
    tb = current()
    tb.state.mkdir(exist_ok=True)
    admin = tb.state / "id_ed25519"
    if not admin.exists():
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "testbed-admin",
                "-f",
                str(admin),
            ],
            check=True,
        )
    known, config = [], []
    for name, port in tb.ports.items():
        d = tb.state / name
        d.mkdir(exist_ok=True)
        hostkey = d / "ssh_host_ed25519_key"
        if not hostkey.exists():
            subprocess.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    name,
                    "-f",
                    str(hostkey),
                ],
                check=True,
            )
        shutil.copy(f"{admin}.pub", d / "admin.pub")
        pub = " ".join(Path(f"{hostkey}.pub").read_text().split()[:2])
        known.append(f"[127.0.0.1]:{port} {pub}")
        config += [
            f"Host {name}",
            "  HostName 127.0.0.1",
            f"  Port {port}",
            "  User admin",
            f"  IdentityFile {admin}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {tb.state / 'known_hosts'}",
            "  StrictHostKeyChecking yes",
            "",
        ]
    (tb.state / "known_hosts").write_text("\n".join(known) + "\n")
    tb.ssh_config.write_text("\n".join(config))
    certificates(tb)
    # the application's login, through PgBouncer
    password = tb.state / "app" / "johann.password"
    if not password.exists():
        password.touch(mode=0o600)
        password.write_text(secrets.token_urlsafe(18) + "\n")


def base_images() -> None:
    """Make sure each base image exists: present, pulled, or built with debootstrap
    (in parallel)."""
    suites = set(current().suites.values())
    procs = [
        subprocess.Popen([str(DOCKER / "base-image.sh"), f"debian:{suite}", suite])
        for suite in suites
    ]
    if any(p.wait() for p in procs):
        raise StepError(
            "testbed",
            "a base image could not be made",
            "read base-image.sh's output above",
        )


def healthy() -> bool:
    ids = compose("ps", "-q", capture=True).stdout.split()
    if len(ids) < len(current().ports):
        return False
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Health.Status}}", *ids],
        capture_output=True,
        text=True,
    ).stdout.split()
    return out == ["healthy"] * len(ids)


def wait_healthy(timeout: float = HEALTHY) -> None:
    deadline = time.monotonic() + timeout
    while not healthy():
        if time.monotonic() > deadline:
            compose("ps", check=False)
            raise StepError(
                "testbed",
                f"containers not healthy after {timeout:.0f} s",
                "read `docker logs` of the containers",
            )
        time.sleep(1)


def hosts() -> Hosts:
    return Hosts(str(current().ssh_config))


def seed(size_mb: int) -> bool:
    """Create the demo database on db01 (via SSH, as postgres) unless it exists; True
    when seeded now. johann gets the password the app host logs in with (its SCRAM
    verifier: never the password itself).
    """
    password = (current().state / "app" / "johann.password").read_text().strip()
    with hosts() as h:
        db01 = h["db01"]
        seeded = not db01.psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
        )
        if seeded:
            error = db01.try_psql(
                (DOCKER / "seed.sql").read_text(),
                timeout=3600,
                variables={"size_mb": int(size_mb)},
                app=True,
            )
            if error:
                raise StepError(
                    "db01",
                    f"seeding {DATABASE} failed: {error}",
                    "read docker/seed.sql",
                )
        db01.psql(
            QUIET + f"ALTER ROLE johann PASSWORD {literal(scram_verifier(password))}"
        )
        return seeded


def up(size_mb: int, rebuild: bool = False) -> dict[str, float]:
    """Keys, base images, images, containers up and healthy, the demo database;
    seconds per phase."""
    times = {}
    t = time.monotonic()
    keys()
    base_images()
    times["base images"] = time.monotonic() - t
    t = time.monotonic()
    compose("build", *(["--no-cache"] if rebuild else []))
    times["image build"] = time.monotonic() - t
    t = time.monotonic()
    compose("up", "-d")
    wait_healthy()
    times["up"] = time.monotonic() - t
    t = time.monotonic()
    seeded = seed(size_mb)
    times["seed" if seeded else "seed (already there)"] = time.monotonic() - t
    return times
