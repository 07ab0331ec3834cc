"""Who is who now: the set's origin and its subscriber, as the nodes' own catalogs say.
Read-only.

The one place that decides the origin: every step and operation asks here (`origin`, or
`states` and `origin_in` when it must see each node's answer itself).
"""

from __future__ import annotations

from . import facts
from .errors import StepError
from .model import Node, SlonyState
from .session import Session


def states(s: Session) -> tuple[dict[int, SlonyState], dict[int, StepError]]:
    """Each node's Slony state, and the error of each node that could not be read."""
    found, errors = {}, {}
    for node in s.cluster.nodes:
        try:
            found[node.id] = facts.slony_state(s.node_host(node), s.cluster)
        except StepError as e:
            errors[node.id] = e
    return found, errors


def dropped(found: dict[int, SlonyState]) -> set[int]:
    """Nodes dropped from the cluster by a failover: a node that answered is the set's
    origin and no longer counts them among its nodes (whether they answer or not).
    Whatever such a node says of the set is stale."""
    out: set[int] = set()
    for n, st in found.items():
        if st.schema and st.has_set and st.origin == n and st.nodes:
            out |= {m for m in (1, 2) if m != n and m not in st.nodes}
    return out


def live(found: dict[int, SlonyState]) -> dict[int, SlonyState]:
    """The states of the nodes that answered and are in the cluster (not dropped)."""
    gone = dropped(found)
    return {n: st for n, st in found.items() if n not in gone}


def origin_in(found: dict[int, SlonyState]) -> int | None:
    """The set's origin as the nodes that answered know it (while they disagree, the
    first one's); a node dropped by a failover has no say."""
    return next((st.origin for st in live(found).values() if st.origin), None)


def disagreement(s: Session, found: dict[int, SlonyState]) -> dict[str, str]:
    """{host: origin host it names} when the nodes name different origins (a MOVE SET
    in flight), else {}. A node dropped by a failover is no move in flight."""
    named = {n: st.origin for n, st in live(found).items() if st.origin}
    if len(set(named.values())) < 2:
        return {}
    return {s.cluster.node(n).host: s.cluster.node(o).host for n, o in named.items()}


def origin(s: Session) -> Node | None:
    """The set's origin, read from the nodes that answer; None when there is no set.

    A node that cannot be read is an error only when no other node knows the origin;
    nodes that name different origins (a move in flight) are an error.
    """
    found, errors = states(s)
    node_id = origin_in(found)
    if node_id is None and errors:
        raise next(iter(errors.values()))
    split = disagreement(s, found)
    if split:
        raise StepError(
            ", ".join(split),
            f"the nodes disagree about the origin of set {s.cluster.set_id} ("
            + ", ".join(f"{h} says {o}" for h, o in split.items())
            + "): a move is in flight",
            "wait a few seconds; if it stays so, inv switchover (or switchback)"
            " finishes it",
        )
    return s.cluster.node(node_id) if node_id else None


def require_origin(s: Session) -> Node:
    """The set's origin; StepError when there is no set yet."""
    node = origin(s)
    if node is None:
        raise StepError(
            s.master_host.name,
            f"set {s.cluster.set_id} does not exist",
            "run inv migrate first",
        )
    return node
