"""The docker-compose testbed: db01 (Debian 12, PostgreSQL 15) and db02 (Debian 13, PostgreSQL 17).

Tasks: testbed.up, testbed.down, testbed.status, testbed.ssh. Also imported by the tests.
Nothing here is used by the migration steps: they reach the testbed by ssh config alone.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from invoke import Exit, task

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
PROJECT = os.environ.get("TESTBED_PROJECT", "slonytb")
STATE = DOCKER / (".testbed" if PROJECT == "slonytb" else f".testbed-{PROJECT}")
SSH_CONFIG = STATE / "ssh_config"
HOSTS = {
    "db01": {"suite": "bookworm", "image": "debian:bookworm", "port": int(os.environ.get("DB01_SSH_PORT", 2221))},
    "db02": {"suite": "trixie", "image": "debian:trixie", "port": int(os.environ.get("DB02_SSH_PORT", 2222))},
}
# A fixed /24 per testbed, derived from its SSH port so testbeds side by side don't collide.
NET = os.environ.get("TESTBED_NET") or f"172.30.{HOSTS['db01']['port'] % 256}"


def compose_command() -> list[str]:
    """`docker compose` (v2) when the plugin is there, else `docker-compose` (v1)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise Exit("testbed: neither `docker compose` nor `docker-compose` found; run `make setup`", code=1)


def compose(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "DB01_SSH_PORT": str(HOSTS["db01"]["port"]), "DB02_SSH_PORT": str(HOSTS["db02"]["port"]),
           "TESTBED_STATE": str(STATE), "TESTBED_NET": NET}
    cmd = [*compose_command(), "-p", PROJECT, "-f", str(DOCKER / "docker-compose.yml"), *args]
    result = subprocess.run(cmd, env=env, capture_output=capture, text=True)
    if check and result.returncode:
        raise Exit(f"testbed: {' '.join(cmd)} failed ({result.returncode})", code=1)
    return result


def keys() -> None:
    """The admin key and a pinned host key per server, then the ssh config and known_hosts for them."""
    STATE.mkdir(exist_ok=True)
    admin = STATE / "id_ed25519"
    if not admin.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "testbed-admin", "-f", str(admin)],
                       check=True)
    known, config = [], []
    for name, spec in HOSTS.items():
        d = STATE / name
        d.mkdir(exist_ok=True)
        hostkey = d / "ssh_host_ed25519_key"
        if not hostkey.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(hostkey)],
                           check=True)
        shutil.copy(f"{admin}.pub", d / "admin.pub")
        pub = " ".join(Path(f"{hostkey}.pub").read_text().split()[:2])
        known.append(f"[127.0.0.1]:{spec['port']} {pub}")
        config += [f"Host {name}", "  HostName 127.0.0.1", f"  Port {spec['port']}", "  User admin",
                   f"  IdentityFile {admin}", "  IdentitiesOnly yes", f"  UserKnownHostsFile {STATE / 'known_hosts'}",
                   "  StrictHostKeyChecking yes", ""]
    (STATE / "known_hosts").write_text("\n".join(known) + "\n")
    SSH_CONFIG.write_text("\n".join(config))


def base_images() -> None:
    """Make sure each base image exists: present, pulled, or built with debootstrap (in parallel)."""
    procs = [subprocess.Popen([str(DOCKER / "base-image.sh"), spec["image"], spec["suite"]])
             for spec in HOSTS.values()]
    if any(p.wait() for p in procs):
        raise Exit("testbed: a base image could not be made (see above)", code=1)


def healthy() -> bool:
    ids = compose("ps", "-q", capture=True).stdout.split()
    if len(ids) < len(HOSTS):
        return False
    out = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", *ids],
                         capture_output=True, text=True).stdout.split()
    return out == ["healthy"] * len(HOSTS)


def wait_healthy(timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not healthy():
        if time.monotonic() > deadline:
            compose("ps", check=False)
            raise Exit(f"testbed: containers not healthy after {timeout:.0f} s", code=1)
        time.sleep(1)


def hosts():
    from .remote import Hosts
    return Hosts(str(SSH_CONFIG))


def seed(size_mb: int) -> bool:
    """Create shotserver04 on db01 (via SSH, as postgres) unless it exists; True when seeded now."""
    with hosts() as h:
        db01 = h["db01"]
        if db01.psql("SELECT 1 FROM pg_database WHERE datname = 'shotserver04'"):
            return False
        db01.sudo(f"psql -X -q -v size_mb={int(size_mb)} -f - -o /dev/null", user="postgres",
                  stdin=(DOCKER / "seed.sql").read_text(), timeout=3600, what="seeding shotserver04")
        return True


def export_line() -> str:
    return f"export INVOKE_SLONY_SSH_CONFIG={SSH_CONFIG}"


@task(help={"size_mb": "size of the demo database on db01 in MB (default 200)",
            "rebuild": "rebuild the images even when they exist"})
def up(c, size_mb=200, rebuild=False):
    """Build the images (base images via debootstrap when no registry), start, wait healthy, seed."""
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
    print("testbed: up; " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    print(f"testbed: reach the servers with ssh -F {SSH_CONFIG} db01, or: {export_line()}")


@task
def down(c):
    """Remove the testbed's containers, network and volumes (images stay)."""
    compose("down", "-v", "--remove-orphans")


@task
def status(c):
    """Show the testbed's containers and their health."""
    compose("ps")


@task(help={"host": "db01 or db02"})
def ssh(c, host="db01"):
    """Open an interactive shell on a testbed server as admin."""
    keys()
    os.execvp("ssh", ["ssh", "-F", str(SSH_CONFIG), host])


@task(help={"rate": "writer inserts per second"})
def rehearse(c, rate=5):
    """The whole lifecycle on the running, seeded testbed with a writer throughout; prints a summary."""
    import re
    import sys

    from .writer import Writer

    env = {**os.environ, "INVOKE_SLONY_SSH_CONFIG": str(SSH_CONFIG),
           "SLONY_MIGRATE_HOME": os.environ.get("SLONY_MIGRATE_HOME", str(STATE / "secrets"))}
    args = ["--master", "db01", "--slave", "db02"]
    phases, checks, blocked = [], [], []

    def inv(*argv: str) -> str:
        print(f"\n$ inv {' '.join(argv)}", flush=True)
        t = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "invoke", *argv], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        print(proc.stdout, end="", flush=True)
        phases.append((" ".join(argv[:1]), time.monotonic() - t))
        if proc.returncode:
            writer.stop()
            raise Exit(f"rehearsal: inv {' '.join(argv)} failed", code=1)
        return proc.stdout

    writer = Writer(str(SSH_CONFIG), rate=float(rate), max_seconds=3600, max_count=50_000).start()
    inv("migrate", *args)
    inv("verify", *args)
    checks.append("verify after migrate")
    for task_name in ("switchover", "switchback", "switchover"):
        since = time.monotonic()
        out = inv(task_name, *args)
        time.sleep(3)
        tool = re.search(r"blocked for at most ([\d.]+) s", out)
        seen = writer.blocked_window(since)
        blocked.append((task_name, float(tool.group(1)) if tool else None, seen))
        inv("verify", *args)
        checks.append(f"verify after {task_name}")
    writer.stop()
    with hosts() as h:
        rows = dict((int(n), int(k)) for n, k in h["db02"].psql(writer.count_sql(), "shotserver04"))
    acked = writer.acknowledged()
    lost = [n for n in acked if rows.get(n) != 1]
    if lost:
        raise Exit(f"rehearsal: {len(lost)} acknowledged writes missing or doubled on db02: {lost[:10]}", code=1)
    checks.append(f"all {len(acked)} acknowledged writes on db02 exactly once")
    inv("finish", *args, "--yes")
    checks.append("finish: Slony removed from both nodes")
    print("\nrehearsal summary")
    for name, seconds in phases:
        print(f"  {name:<12} {seconds:6.1f} s")
    for name, tool, seen in blocked:
        print(f"  {name:<12} writes blocked: {tool if tool is not None else '?'} s (tool), "
              f"{f'{seen:.1f}' if seen is not None else 'none seen'} s (writer at {rate}/s)")
    failed = sum(1 for a in writer.attempts if not a.ok)
    print(f"  writer: {len(writer.attempts)} attempts, {len(acked)} acknowledged, {failed} refused during locks")
    for check in checks:
        print(f"  ok  {check}")
