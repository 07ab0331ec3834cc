"""The connection pooler in front of the application (PgBouncer): PAUSE it around a
switchover, point its database entry at the new origin, RELOAD, RESUME. The
application's queries wait in PgBouncer meanwhile instead of failing.

PgBouncer's admin console is reached as the postgres user over PgBouncer's unix socket
(in its pgbouncer.ini: `admin_users = postgres`, postgres listed in the auth_file, and
peer authentication for local connections, e.g. with `auth_type = hba` and `local
pgbouncer postgres peer`). The database's entry must pool by transaction: in session
pooling PAUSE waits for every client to disconnect.
"""

from __future__ import annotations

import shlex
import threading
import time
from dataclasses import dataclass

from .. import facts, settings
from ..errors import StepError
from ..model import Node
from ..plan import Action, Change, diff
from ..remote import Host, error_line
from ..render.files import PoolerConfigError, ini_sections, point_pooler, pooler_entry
from ..session import Session


@dataclass
class Pooler:
    host: Host
    config: str  # pgbouncer.ini's path on host
    database: str  # the entry in [databases] (the application's database)
    port: int = 0  # PgBouncer's listen_port
    socket_dir: str = ""  # PgBouncer's unix_socket_dir
    text: str = ""  # pgbouncer.ini as the file holds it now
    loaded: str = ""  # ... and as PgBouncer last loaded it
    owner: (
        str
        # its owner:group and mode, and who may write it (the directory's owner if root)
    ) = ""
    mode: str = ""
    writer: str = ""


def read(h: Host, config: str) -> str:
    text = h.read_file(config, user="postgres")
    if text is None:
        raise StepError(
            h.name,
            f"{config} does not exist",
            "install PgBouncer there, or give --pooler-config "
            "the path of its pgbouncer.ini",
        )
    return text


def admin(
    p: Pooler,
    *commands: str,
    timeout: float = settings.POOLER_ADMIN,
    check: bool = True,
):
    """Commands on PgBouncer's admin console (remote.Host.console), bounded by
    `timeout`. The result; a timeout is exit code 124."""
    result = p.host.console(commands, p.socket_dir, p.port, timeout)
    if check and result.failed:
        why = (
            "timed out"
            if result.exited == 124
            else (result.stderr.strip().splitlines() or ["failed"])[-1]
        )
        raise StepError(
            p.host.name,
            f"PgBouncer: {'; '.join(commands)} {why}",
            "check that postgres reaches PgBouncer's admin console (admin_users ="
            " postgres, postgres in the auth_file, peer authentication on its unix"
            " socket)",
        )
    return result


def describe(s: Session, name: str, config: str) -> tuple[Pooler, dict[str, str]]:
    """The pooler on host `name` as its pgbouncer.ini says, and the application
    database's entry there."""
    h = s.host(name)
    text = read(h, config)
    ini = ini_sections(text).get("pgbouncer", {})
    entry = pooler_entry(text, s.cluster.database)
    if entry is None:
        raise StepError(
            name,
            f"{config} has no entry for database {s.cluster.database} under"
            " [databases]",
            f"add one: {s.cluster.database} = host=<origin>"
            f" dbname={s.cluster.database}",
        )
    owner, file_mode = facts.file_stat(h, config)
    # Debian's /etc/pgbouncer is root's (the file postgres'): root writes there, nobody
    # else can.
    directory = facts.file_stat(h, config.rsplit("/", 1)[0] or "/")[0].split(":")[0]
    p = Pooler(
        h,
        config,
        s.cluster.database,
        int(ini.get("listen_port", 6432)),
        ini.get("unix_socket_dir", "/tmp") or "/tmp",
        text,
        text,
        owner,
        file_mode,
        "root" if directory == "root" else "",
    )
    return p, {"pool_mode": ini.get("pool_mode", "session"), **entry}


def open_pooler(s: Session, name: str, config: str, origin: Node) -> Pooler:
    """The pooler on host `name`, checked before anything changes: its admin console
    answers, the application's database pools by transaction and points at the current
    origin. What the switchover will write is read now, so that the application waits
    for as few round trips as possible.
    """
    p, entry = describe(s, name, config)
    if entry["pool_mode"] != "transaction":
        raise StepError(
            name,
            f"PgBouncer pools {p.database} by {entry['pool_mode']}: PAUSE would wait"
            " for every client to disconnect",
            f"set pool_mode = transaction in {config}, or switch over without --pooler",
        )
    if entry.get("host") != origin.dbhost:
        raise StepError(
            name,
            f"PgBouncer sends {p.database} to {entry.get('host') or 'a local socket'}, "
            f"not to the origin {origin.dbhost}",
            f"correct [databases] in {config} (then RELOAD), then run again",
        )
    version = admin(p, "SHOW VERSION").stdout.strip()
    s.say(
        name,
        "pooler",
        f"{version or 'PgBouncer'}: {p.database} pools by transaction, points at "
        f"{origin.host}",
    )
    return p


def points_at(entry: dict[str, str], origin: Node) -> bool:
    """Whether a [databases] entry sends its clients to the origin's address and
    port."""
    return entry.get("host") == origin.dbhost and entry.get(
        "port", str(origin.port)
    ) == str(origin.port)


def repoint(
    s: Session, step: str, name: str, config: str, origin: Node
) -> list[Change]:
    """When the set is where it should be already: the change that points PgBouncer's
    entry at the origin and RELOADs, if a failed RELOAD after an earlier move left it
    at the other node (whose writes Slony refuses); none when it points at the
    origin."""
    p, entry = describe(s, name, config)
    if points_at(entry, origin):
        s.say(name, step, f"PgBouncer sends {p.database} to the origin {origin.host}")
        return []
    new = point_pooler(p.text, p.database, origin.dbhost, origin.port)

    def action() -> None:
        point(p, origin, new)
        admin(p, "RELOAD")

    return [
        Change(
            name,
            step,
            f"point PgBouncer's {p.database} at the origin {origin.host}"
            f" ({origin.dbhost}), then RELOAD: it sends it to"
            f" {entry.get('host') or 'a local socket'}",
            Action(action, diff(p.text, new, p.config)),
        )
    ]


def cut(s: Session, step: str, name: str, config: str, origin: Node) -> list[Change]:
    """In a failover, before FAILOVER: the change that points PgBouncer's entry at the
    node to promote (`origin`), RELOADs, then drops every connection of the database
    (KILL: a server connection to a dead origin hangs for minutes, its client with it)
    and lets new ones in again (RESUME): the application reconnects, to `origin`, and
    never reaches the old origin again through PgBouncer."""
    p, entry = describe(s, name, config)
    new = (
        p.text
        if points_at(entry, origin)
        else point_pooler(p.text, p.database, origin.dbhost, origin.port)
    )

    def action() -> None:
        if new != p.text:
            point(p, origin, new)
        admin(p, "RELOAD", f"KILL {p.database}")
        admin(p, f"RESUME {p.database}", check=False)  # KILL pauses new connections

    return [
        Change(
            name,
            step,
            f"point PgBouncer's {p.database} at {origin.host} ({origin.dbhost}), RELOAD,"
            f" drop its connections (KILL {p.database}, RESUME): the application"
            f" reconnects to {origin.host}",
            Action(action, diff(p.text, new, p.config)),
        )
    ]


def paused_marker(s: Session) -> str:
    """A file on the slon host while a switchover has (or may have) PgBouncer paused:
    PgBouncer's host and pgbouncer.ini, so that the next switchover resumes it when this
    one was killed (resume_left).
    """
    return s.cluster.pooler_mark


def mark_paused(s: Session, p: Pooler) -> None:
    s.slon_host.write_file(paused_marker(s), f"{p.host.name}\n{p.config}\n")


def unmark_paused(s: Session) -> None:
    """Never an error: a mark left behind only makes the next switchover RESUME once
    more (harmless)."""
    try:
        s.slon_host.sudo(f"rm -f {shlex.quote(paused_marker(s))}", check=False)
    except StepError:
        pass


def resume_left(s: Session, step: str, origin: Node) -> list[Change]:
    """After a switchover killed while PgBouncer was paused (its queries wait until
    query_wait_timeout, then fail): the change that points PgBouncer at the origin,
    RELOADs and RESUMEs; none when no run left one paused."""
    text = s.slon_host.read_file(paused_marker(s))
    if text is None:
        return []
    name, config = (text.splitlines() + ["", ""])[:2]

    def action() -> None:
        p, _ = describe(s, name, config)
        # the killed run may have written pgbouncer.ini (stage) without a RELOAD: always
        # RELOAD
        p.loaded = ""
        release(s, step, p, origin)
        unmark_paused(s)

    return [
        Change(
            name,
            step,
            f"RESUME {s.cluster.database} on PgBouncer ({config}), left paused by an "
            f"interrupted switchover, pointed at the origin {origin.host}",
            Action(action),
        )
    ]


def pause(s: Session, step: str, p: Pooler, timeout: float) -> float:
    """PAUSE the database: PgBouncer lets running transactions finish and holds new
    queries. Bounded by `timeout`; when it cannot complete, RESUME and StepError
    (nothing else changed). The time it took.
    """
    t0 = time.monotonic()
    result = admin(p, f"PAUSE {p.database}", timeout=timeout, check=False)
    if result.failed:
        resume(s, step, p)
        if result.exited == 124:
            raise StepError(
                p.host.name,
                f"PAUSE {p.database} did not complete within {timeout:g} s: a "
                "transaction through PgBouncer stays open; resumed, nothing changed",
                "end long transactions of the application (or raise --lock-timeout),"
                " then run again",
            )
        raise StepError(
            p.host.name,
            f"PAUSE {p.database} failed: {error_line(result.stderr)}; resumed, nothing "
            "changed",
            "check PgBouncer's log, then run again",
        )
    took = time.monotonic() - t0
    s.say(
        p.host.name,
        step,
        f"PgBouncer paused {p.database} in {took:.2f} s: queries wait there",
    )
    return took


def resume(s: Session, step: str, p: Pooler) -> None:
    admin(p, f"RESUME {p.database}", check=False)  # "is not paused" is fine
    s.say(p.host.name, step, f"PgBouncer resumed {p.database}")


def point(p: Pooler, origin: Node, new: str = "") -> None:
    """Write pgbouncer.ini with the database's entry pointing at `origin` (`new`,
    when already rendered); PgBouncer reads it at the next RELOAD."""
    new = new or point_pooler(p.text, p.database, origin.dbhost, origin.port)
    p.host.write_file(p.config, new, owner=p.owner, mode=p.mode, writer=p.writer)
    p.text = new


def stage(p: Pooler, origin: Node) -> threading.Thread:
    """While PgBouncer is paused and the set moves: write the database's entry pointing
    at `origin` into pgbouncer.ini, in a thread of its own (PgBouncer does not read it
    before release's RELOAD), so that release has only RELOAD and RESUME left. release
    waits for it; a failed write leaves it to release.
    """

    def write() -> None:
        try:
            point(p, origin)
        except Exception:  # noqa: BLE001 - release writes it then, and says why if it fails again
            pass

    thread = threading.Thread(target=write, name="pooler-stage", daemon=True)
    thread.start()
    return thread


def release(
    s: Session,
    step: str,
    p: Pooler,
    origin: Node,
    staged: threading.Thread | None = None,
) -> None:
    """Point the database's entry at `origin` (the set's origin now, whatever happened),
    then RELOAD and RESUME in one call. RESUME is tried even when pointing fails;
    StepError names what is left to do.
    """
    if staged:
        staged.join()
    try:
        if not points_at(pooler_entry(p.text, p.database) or {}, origin):
            point(p, origin)
        if p.text == p.loaded:
            resume(s, step, p)
            return
        admin(p, "RELOAD", f"RESUME {p.database}")
    except (StepError, PoolerConfigError) as e:
        resume(s, step, p)
        what = (
            e.line() if isinstance(e, StepError) else f"{p.host.name}: {p.config}: {e}"
        )
        raise StepError(
            p.host.name,
            f"{what}; PgBouncer resumed but may still send {p.database} to the old "
            "origin, whose writes Slony refuses",
            f"point [databases] {p.database} at "
            f"{origin.dbhost} in {p.config}, then RELOAD on PgBouncer's console",
        ) from None
    p.loaded = p.text
    s.say(
        p.host.name,
        step,
        f"PgBouncer points {p.database} at {origin.host} ({origin.dbhost}), reloaded, "
        f"resumed {p.database}",
    )
