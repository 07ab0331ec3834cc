"""`inv verify`: origin and subscriber compared table by table, sequence by sequence,
and their schemas."""

from __future__ import annotations

from .. import facts, replication, settings
from ..errors import StepError
from ..remote import Host
from ..render.parse import float_digits
from ..render.sql import checksum_sql
from ..replication import require_origin
from ..session import Session
from .status import wait_for_sync


def schema_diff(s: Session, a: Host, b: Host) -> list[str]:
    """The columns and indexes that differ between two nodes, each naming the node
    that has it."""
    sa, sb = facts.schema_objects(a, s.cluster), facts.schema_objects(b, s.cluster)
    return [
        f"{kind} {name} only on {a.name}: {d}" for kind, name, d in sorted(sa - sb)
    ] + [f"{kind} {name} only on {b.name}: {d}" for kind, name, d in sorted(sb - sa)]


def missing_from_set(s: Session, h: Host) -> list[str]:
    """The application's tables and sequences on `h` that the set does not hold (not
    replicated)."""
    cl = s.cluster
    state = facts.slony_state(h, cl)
    tables = [name for _, name in facts.app_tables(h, cl) if name not in state.tables]
    return [f"table {t}" for t in tables] + [
        f"sequence {q}" for q in facts.app_sequences(h, cl) if q not in state.sequences
    ]


def table_differences(a: dict, b: dict, origin: str, subscriber: str) -> list[str]:
    """One line per table whose chunks differ between two checksum results ({(table,
    chunk): (rows, md5)})."""
    out = []
    for t in sorted({k[0] for k in set(a) | set(b) if a.get(k) != b.get(k)}):
        rows_a = sum(int(v[0]) for k, v in a.items() if k[0] == t)
        rows_b = sum(int(v[0]) for k, v in b.items() if k[0] == t)
        chunks = sum(1 for k in set(a) | set(b) if k[0] == t and a.get(k) != b.get(k))
        out.append(
            f"table {t}: {rows_a} rows on {origin}, {rows_b} on {subscriber}, {chunks}"
            " chunk(s) differ"
        )
    return out


def sequence_differences(
    origin_values: dict[str, int],
    subscriber_values: dict[str, int],
    origin: str,
    subscriber: str,
) -> list[str]:
    """One line per sequence that is behind on the subscriber (arguments: host
    names)."""
    return [
        f"sequence {q}: {v} on {origin}, {subscriber_values.get(q)} on {subscriber}"
        for q, v in origin_values.items()
        if subscriber_values.get(q, -1) < v
    ]


def verify(s: Session, rounds: int = settings.VERIFY_ROUNDS) -> list[str]:
    """Compare origin and subscriber table by table, sequence by sequence, and their
    schemas.

    Rows committed after verify starts are left out (integer keys up to the origin's max
    at the start); a difference is reported only if it survives `rounds` SYNCs. Returns
    the differences.
    """
    step, cl = "verify", s.cluster
    gone = replication.dropped(replication.states(s)[0])
    if gone:
        node = cl.node(min(gone))
        raise StepError(
            node.host,
            f"{node.host} was dropped from the cluster by a failover: there is no"
            " subscriber to compare the origin with",
            "inv status; inv rejoin --yes rebuilds it as a subscriber",
        )
    origin = require_origin(s)
    subscriber = cl.other(origin)
    origin_host, subscriber_host = s.node_host(origin), s.node_host(subscriber)
    keys = facts.table_keys(origin_host, cl)
    sql = checksum_sql(
        keys,
        facts.key_maxima(origin_host, cl, keys),
        settings.CHECKSUM_CHUNK,
        float_digits(origin_host.version_num, subscriber_host.version_num),
    )
    seq_origin = facts.set_sequences(origin_host, cl)
    differences: list[str] = []
    for attempt in range(1, rounds + 1):
        wait_for_sync(s, origin, subscriber)
        a, b = (
            facts.checksums(origin_host, cl, sql),
            facts.checksums(subscriber_host, cl, sql),
        )
        differences = table_differences(
            a, b, origin.host, subscriber.host
        ) + sequence_differences(
            seq_origin,
            facts.set_sequences(subscriber_host, cl),
            origin.host,
            subscriber.host,
        )
        if not differences:
            break
        s.say(
            subscriber.host,
            step,
            f"round {attempt}: {len(differences)} difference(s), waiting for a SYNC",
        )
    differences += [
        f"{name} is not in set {cl.set_id}: not replicated to {subscriber.host}"
        for name in missing_from_set(s, origin_host)
    ]
    differences += schema_diff(s, origin_host, subscriber_host)
    if not differences:
        total = sum(int(v[0]) for v in a.values())
        s.say(
            subscriber.host,
            step,
            f"{len(keys)} tables ({total} rows), {len(seq_origin)} sequences and the "
            f"schema match {origin.host}",
        )
    return differences


def check(s: Session) -> None:
    """verify as a task: StepError naming the first difference, each difference on
    stderr first."""
    differences = verify(s)
    for d in differences:
        s.out.error(f"[verify] DIFFERS {d}")
    if differences:
        raise StepError(
            s.cluster.slave.host,
            f"{len(differences)} difference(s): {differences[0]}",
            "find out what wrote behind Slony's back; resubscribe if needed",
        )
