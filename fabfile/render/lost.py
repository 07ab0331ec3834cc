"""Pure: the rows a node dropped by a failover still holds in Slony's log that the new
origin never received, read into values and written out as SQL for the operator to
review and apply by hand. No I/O.

Slony's log trigger keeps each write as (table, 'I'/'U'/'D'/'T', number of changed
columns, arguments): an INSERT's arguments are every column's (name, value); an
UPDATE's are first the changed columns' (name, new value), then the key's (name, old
value); a DELETE's are the key's; a TRUNCATE has none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .sql import ident, literal

OPERATIONS = {"I": "INSERT", "U": "UPDATE", "D": "DELETE", "T": "TRUNCATE"}
SHOWN = 20  # rows listed on the screen; the file has them all


@dataclass(frozen=True)
class LostRow:
    """One write committed on the dropped node that the new origin does not have."""

    seq: int  # log_actionseq: the order the node wrote them in
    txid: int
    table: str  # quoted, qualified
    op: str  # INSERT, UPDATE, DELETE or TRUNCATE
    values: tuple[tuple[str, str | None], ...]  # the columns an INSERT or UPDATE sets
    key: tuple[tuple[str, str | None], ...]  # the row's key
    committed_by: str  # the first SYNC of the node after its commit ('' : none came)

    def key_text(self) -> str:
        return ", ".join(f"{c}={'NULL' if v is None else v}" for c, v in self.key) or (
            "(all rows)" if self.op == "TRUNCATE" else "(no key)"
        )


def pairs(args: list[str | None]) -> list[tuple[str, str | None]]:
    return [(args[i], args[i + 1]) for i in range(0, len(args) - 1, 2)]


def parse_row(row: list[str]) -> LostRow:
    """A row of facts.lost_rows: (actionseq, txid, table, cmdtype, changed columns,
    arguments as JSON, key columns as JSON, first SYNC after it)."""
    seq, txid, table, cmdtype, updncols, args, keycols, committed_by = row
    op = OPERATIONS.get(cmdtype)
    if op is None:
        raise ValueError(f"unknown Slony log command type {cmdtype!r} in {table}")
    cols = pairs(json.loads(args) or [])
    if op == "INSERT":
        names = json.loads(keycols) or []
        found = dict(cols)
        values, key = cols, [(c, found.get(c)) for c in names if c in found]
    elif op == "UPDATE":
        n = int(updncols or 0)
        values, key = cols[:n], cols[n:]
    else:  # DELETE: the key; TRUNCATE: nothing
        values, key = [], cols
    return LostRow(
        int(seq), int(txid), table, op, tuple(values), tuple(key), committed_by
    )


def value(v: str | None) -> str:
    return "NULL" if v is None else literal(v)


def where(key: tuple[tuple[str, str | None], ...]) -> str:
    return " AND ".join(
        f"{ident(c)} IS NULL" if v is None else f"{ident(c)} = {literal(v)}"
        for c, v in key
    )


def statement(r: LostRow) -> str:
    """The statement that makes the same change on the new origin (text literals: the
    server converts them to each column's type)."""
    if r.op == "INSERT":
        return (
            f"INSERT INTO {r.table} ({', '.join(ident(c) for c, _ in r.values)})"
            f" VALUES ({', '.join(value(v) for _, v in r.values)});"
        )
    if r.op == "UPDATE":
        sets = ", ".join(f"{ident(c)} = {value(v)}" for c, v in r.values)
        return f"UPDATE {r.table} SET {sets} WHERE {where(r.key)};"
    if r.op == "DELETE":
        return f"DELETE FROM {r.table} WHERE {where(r.key)};"
    return f"TRUNCATE {r.table};"


def when(r: LostRow, last_event: str) -> str:
    return (
        f"committed before {r.committed_by}"
        if r.committed_by
        else f"committed after {last_event or 'its last event'}"
    )


def summary(r: LostRow, last_event: str = "") -> str:
    """One line for the screen: table, key, operation, time."""
    return f"{r.table} {r.key_text()} {r.op}, {when(r, last_event)}"


def render_file(
    rows: list[LostRow],
    *,
    host: str,
    database: str,
    origin: str,
    since: str,
    last_event: str,
    exact: bool,
    written: str,
) -> str:
    """The lost-rows file: what it is, then each row (a comment: table, key, operation,
    time; then its statement), in the order the node wrote them. Nothing in it runs by
    itself: a transaction the operator has to COMMIT."""
    scope = (
        f"committed on {host} after the last SYNC {origin} applied ({since})"
        if exact
        else f"still in {host}'s log: no record says which SYNC {origin} applied last,"
        f" so some of these may be on {origin} already"
    )
    head = [
        f"-- slony-migrate lost-rows: {len(rows)} write(s) {scope}.",
        f"-- Read from {host}, database {database}, at {written}; {host}'s last event:"
        f" {last_event or 'none'}.",
        f"-- Nothing was applied. Review each statement, then apply it on {origin} by"
        " hand, e.g.",
        f"--   psql -d {database} -f THIS_FILE   (it ends in ROLLBACK: change it to"
        " COMMIT)",
        "-- A row may conflict with what the application wrote on"
        f" {origin} since: decide per row.",
        "BEGIN;",
    ]
    body = []
    for r in rows:
        body.append(
            f"-- {r.table} key {r.key_text()}: {r.op}, {when(r, last_event)}"
            f" (transaction {r.txid}, action {r.seq})"
        )
        body.append(statement(r))
    return "\n".join(head + body + ["ROLLBACK;", ""])
