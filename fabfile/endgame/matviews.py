"""Materialized views: Slony does not replicate their contents; the new origin
refreshes them."""

from __future__ import annotations

from .. import facts
from ..model import Node
from ..plan import Change, Sql
from ..render.sql import ident
from ..session import Session


def refresh(s: Session, step: str, node: Node) -> list[Change]:
    """Changes refreshing every materialized view on `node`, each as its owner (never
    as a superuser: its query is the application's code)."""
    h, cl = s.node_host(node), s.cluster
    return [
        Change(
            node.host,
            step,
            f"refresh materialized view {name} (as {owner}): Slony does not replicate "
            "its rows",
            Sql(
                f"SET ROLE {ident(owner)}; REFRESH MATERIALIZED VIEW {name};",
                cl.database,
                timeout=None,
            ),
        )
        for name, owner, _ in facts.materialized_views(h, cl)
    ]
