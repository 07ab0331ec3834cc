"""Materialized views: Slony does not replicate their contents; the new origin refreshes them."""
from __future__ import annotations

import time

from .. import facts
from ..model import Node
from ..plan import Change
from ..render.sql import ident
from ..session import Session


def refresh(s: Session, step: str, node: Node) -> list[Change]:
    """Changes refreshing every materialized view on `node`, each as its owner (never as a superuser:
    its query is the application's code)."""
    h, cl = s.node_host(node), s.cluster
    changes = []
    for name, owner, _ in facts.materialized_views(h, cl):
        statement = f"SET ROLE {ident(owner)}; REFRESH MATERIALIZED VIEW {name};"

        def action(statement=statement, name=name):
            t0 = time.monotonic()
            h.psql(statement, cl.database, timeout=None)
            s.say(node.host, step, f"{name} refreshed in {time.monotonic() - t0:.1f} s")
        changes.append(Change(node.host, step, f"refresh materialized view {name} (as {owner}): Slony does not "
                              "replicate its rows", action, statement))
    return changes
