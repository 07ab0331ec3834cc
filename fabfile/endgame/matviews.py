"""Materialized views: Slony does not replicate their contents; the new origin
refreshes them."""

from __future__ import annotations

from .. import facts, settings
from ..errors import StepError
from ..model import Node
from ..plan import Change, Sql, apply
from ..render.sql import ident
from ..session import Session


def refresh(s: Session, step: str, node: Node) -> list[Change]:
    """Changes refreshing every materialized view on `node`, each as its owner (never
    as a superuser: its query is the application's code; REFRESH runs it as a
    security-restricted operation), each bounded by settings.MATVIEW_REFRESH."""
    h, cl = s.node_host(node), s.cluster
    limit = int(settings.MATVIEW_REFRESH * 1000)
    return [
        Change(
            node.host,
            step,
            f"refresh materialized view {name} (as {owner}, at most"
            f" {settings.MATVIEW_REFRESH:g} s): Slony does not replicate its rows",
            Sql(
                f"SET ROLE {ident(owner)}; SET statement_timeout = {limit};\n"
                f"REFRESH MATERIALIZED VIEW {name};",
                cl.database,
                timeout=settings.MATVIEW_REFRESH + settings.SSH_GRACE,
            ),
        )
        for name, owner, _ in facts.materialized_views(h, cl)
    ]


def refresh_all(s: Session, step: str, node: Node) -> None:
    """Refresh every materialized view on `node`, one at a time: one that fails or
    takes too long (the owner's query may never end) is a warning naming it and how
    to refresh it by hand, never the operation's failure (the move is done)."""
    for change in refresh(s, step, node):
        try:
            apply(s, [change])
        except StepError as e:
            s.out.error(
                f"warning: {e.line()}; its rows on {node.host} are stale: refresh it by"
                f" hand ({change.op.text.splitlines()[-1]})"
            )
