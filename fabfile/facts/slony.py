"""Facts of Slony's catalog (`_<cluster>`) and of the replication it runs: state,
lag, events, copy."""

from __future__ import annotations

import json

from .. import settings
from ..errors import StepError
from ..model import Cluster, Node, SlonyState
from ..remote import Host
from ..render import parse
from ..render.sql import GUARD, INTEGER_KEYS, literal, read_tables, registry_key
from .catalog import client_sessions, cluster_exists
from .system import epoch_now, slon_log

__all__ = [
    "slony_state",
    "set_table_lockers",
    "unpinned_definers",
    "local_node_id",
    "subscription_active",
    "lag",
    "max_event",
    "confirmed_since",
    "table_keys",
    "key_maxima",
    "checksums",
    "set_sequences",
    "owned_sequences",
    "sequence_heads",
    "sequence_value",
    "copy_progress",
    "guarded_tables",
    "slonik_running",
    "server_now",
    "server_time",
    "transactions_before",
    "received_from",
    "slony_ids",
    "setsync",
    "failover_record",
    "lost_rows",
    "lost_count",
    "last_event_at",
    "guard_installed",
]


def slony_state(host: Host, cluster: Cluster) -> SlonyState:
    """What of the cluster exists in this node's database: schema, nodes, paths, set,
    tables, subscription."""
    state = SlonyState()
    if not cluster_exists(host, cluster):
        return state
    s, sid = cluster.schema, cluster.set_id
    state.schema = True
    rows = host.psql(
        f"""
SELECT 'node', no_id::text, '' FROM {s}.sl_node
UNION ALL SELECT 'path', pa_server::text, pa_client::text FROM {s}.sl_path
UNION ALL SELECT 'set', (set_locked IS NOT NULL)::text, set_origin::text
            FROM {s}.sl_set WHERE set_id = {sid}
UNION ALL SELECT 'table', tab_id::text, quote_ident(tab_nspname) || '.' || quote_ident(tab_relname)
            FROM {s}.sl_table WHERE tab_set = {sid}
UNION ALL SELECT 'sequence', seq_id::text,
                 quote_ident(seq_nspname) || '.' || quote_ident(seq_relname)
            FROM {s}.sl_sequence WHERE seq_set = {sid}
UNION ALL SELECT 'subscribe', sub_receiver::text, sub_active::text FROM {s}.sl_subscribe
            WHERE sub_set = {sid}""",
        cluster.database,
    )
    for kind, a, b in rows:
        if kind == "node":
            state.nodes.add(int(a))
        elif kind == "path":
            state.paths.add((int(a), int(b)))
        elif kind == "set":
            state.has_set = True
            state.origin = int(b)
            state.locked = a == "true"
        elif kind == "table":
            state.tables[b] = int(a)
        elif kind == "sequence":
            state.sequences[b] = int(a)
        elif (
            kind == "subscribe"
        ):  # two nodes: one subscription, whichever way the set goes now
            state.subscribed = b == "true"
    return state


def unpinned_definers(host: Host, cluster: Cluster) -> list[str]:
    """The SECURITY DEFINER functions of the cluster's schema without search_path
    pg_catalog (regprocedure, qualified: our sessions see pg_catalog only)."""
    if not cluster_exists(host, cluster):
        return []
    rows = host.psql(
        f"""
SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = {literal(cluster.schema)} AND p.prosecdef
   AND NOT coalesce('search_path=pg_catalog' = ANY (p.proconfig), false)
 ORDER BY 1""",
        cluster.database,
    )
    return [r[0] for r in rows]


def set_table_lockers(host: Host, cluster: Cluster) -> list[tuple[str, str, str, str]]:
    """(pid, user, mode, table) of the sessions on this node that hold a lock on a set
    table which MOVE SET's ALTER TABLE (SHARE ROW EXCLUSIVE) would wait for: a VACUUM
    or ANALYZE by hand, a CREATE INDEX, a report in a long transaction that wrote.
    Autovacuum (the move cancels it) and the replication role's own sessions are left
    out."""
    if not cluster_exists(host, cluster):
        return []
    rows = host.psql(
        f"""
SELECT DISTINCT a.pid::text, coalesce(a.usename, ''), l.mode, l.relation::regclass::text
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.granted AND l.database = (SELECT oid FROM pg_database
                                    WHERE datname = current_database())
   AND l.relation IN (SELECT tab_reloid FROM {cluster.schema}.sl_table
                       WHERE tab_set = {cluster.set_id})
   AND l.mode NOT IN ('AccessShareLock', 'RowShareLock')
   AND a.pid <> pg_backend_pid() AND coalesce(a.usename, '') <> {literal(cluster.user)}
   AND coalesce(a.query, '') NOT LIKE 'autovacuum: %'
 ORDER BY 1""",
        cluster.database,
    )
    return [tuple(r) for r in rows]


def local_node_id(host: Host, cluster: Cluster) -> int | None:
    """The Slony node id this database holds for the cluster, or None without the
    cluster's schema."""
    if not cluster_exists(host, cluster):
        return None
    value = host.value(
        f"SELECT last_value FROM {cluster.schema}.sl_local_node_id", cluster.database
    )
    return int(value) if value and int(value) > 0 else None


def subscription_active(
    host: Host, cluster: Cluster, subscriber: Node | None = None
) -> bool:
    """Whether this node's sl_subscribe says the set's subscription (of `subscriber`,
    else any) is active: on the subscriber that means its initial copy is done."""
    if not cluster_exists(host, cluster):
        return False
    only = f" AND sub_receiver = {subscriber.id}" if subscriber else ""
    return (
        host.value(
            f"SELECT bool_and(sub_active) FROM {cluster.schema}.sl_subscribe "
            f"WHERE sub_set = {cluster.set_id}{only}",
            cluster.database,
        )
        == "t"
    )


def lag(origin: Host, cluster: Cluster) -> list[tuple[int, int, float]]:
    """(subscriber node id, events behind, seconds behind) per subscriber, from
    sl_status on the origin."""
    rows = origin.psql(
        "SELECT st_received, st_lag_num_events, coalesce(extract(epoch FROM"
        f" st_lag_time), 0) FROM {cluster.schema}.sl_status",
        cluster.database,
    )
    return [(int(r[0]), int(r[1]), float(r[2])) for r in rows]


def max_event(host: Host, cluster: Cluster, origin: Node) -> int:
    """The newest event number from `origin` that this node knows."""
    return int(
        host.value(
            f"SELECT coalesce(max(ev_seqno), 0) FROM {cluster.schema}.sl_event "
            f"WHERE ev_origin = {origin.id}",
            cluster.database,
        )
    )


def confirmed_since(
    host: Host, cluster: Cluster, origin: Node, subscriber: Node, seqno: int
) -> bool:
    """Whether `subscriber` has confirmed an event of `origin` newer than `seqno` (as
    this node knows)."""
    return bool(
        host.value(
            f"SELECT 1 FROM {cluster.schema}.sl_confirm WHERE con_origin = {origin.id} "
            f"AND con_received = {subscriber.id} AND con_seqno > {int(seqno)} LIMIT 1",
            cluster.database,
        )
    )


def table_keys(host: Host, cluster: Cluster) -> dict[str, list[tuple[str, str]]]:
    """Each replicated table's key columns (quoted name, type) in index order, from
    sl_table's index."""
    rows = host.psql(
        f"""
SELECT quote_ident(t.tab_nspname) || '.' || quote_ident(t.tab_relname), quote_ident(a.attname),
       format_type(a.atttypid, a.atttypmod)
  FROM {cluster.schema}.sl_table t
  JOIN pg_index i
    ON i.indexrelid = (quote_ident(t.tab_nspname) || '.' || quote_ident(t.tab_idxname))::regclass
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
 WHERE t.tab_set = {cluster.set_id}
 ORDER BY 1, (SELECT k.n FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n)
               WHERE k.attnum = a.attnum)""",
        cluster.database,
    )
    keys: dict[str, list[tuple[str, str]]] = {}
    for table, col, typ in rows:
        keys.setdefault(table, []).append((col, typ))
    return keys


def key_maxima(
    host: Host, cluster: Cluster, keys: dict[str, list[tuple[str, str]]]
) -> dict[str, str | None]:
    """The largest key of each table with a one-column integer key (None for an empty
    table): where verify stops reading."""
    single = {
        t: cols[0][0]
        for t, cols in keys.items()
        if len(cols) == 1 and cols[0][1] in INTEGER_KEYS
    }
    if not single:
        return {}
    sql = " UNION ALL ".join(
        f"SELECT {literal(t)}, pg_catalog.max({col})::text FROM {t}"
        for t, col in single.items()
    )
    rows = host.psql(
        f"BEGIN;\n{read_tables(list(single))}{sql};\nCOMMIT;", cluster.database
    )
    return {r[0]: r[1] or None for r in rows}


def checksums(
    host: Host, cluster: Cluster, sql: str
) -> dict[tuple[str, str], tuple[str, str]]:
    """{(table, chunk): (rows, md5)} from verify's checksum query
    (render.sql.checksum_sql)."""
    rows = host.psql(sql, cluster.database, timeout=settings.CHECKSUMS)
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


def set_sequences(host: Host, cluster: Cluster) -> dict[str, int]:
    """{sequence: last value} of every sequence in the set (read from each sequence
    before 10, where pg_sequences is missing)."""
    if host.version_num < 100000:
        names = [
            r[0]
            for r in host.psql(
                "SELECT quote_ident(seq_nspname) || '.' || quote_ident(seq_relname) "
                f"FROM {cluster.schema}.sl_sequence WHERE seq_set = {cluster.set_id} "
                "ORDER BY 1",
                cluster.database,
            )
        ]
        if not names:
            return {}
        rows = host.psql(
            " UNION ALL ".join(
                f"SELECT {literal(n)}, CASE WHEN is_called THEN last_value END FROM {n}"
                for n in names
            ),
            cluster.database,
        )
        return {r[0]: int(r[1] or 0) for r in rows}
    rows = host.psql(
        "SELECT quote_ident(seq_nspname) || '.' || quote_ident(seq_relname), "
        "(SELECT last_value FROM pg_sequences WHERE schemaname = seq_nspname "
        "AND sequencename = seq_relname) "
        f"FROM {cluster.schema}.sl_sequence WHERE seq_set = {cluster.set_id} ORDER"
        " BY 1",
        cluster.database,
    )
    return {r[0]: int(r[1] or 0) for r in rows}


def owned_sequences(host: Host, cluster: Cluster) -> list[tuple[str, str, str]]:
    """(sequence, table, column) for each set sequence owned by a column."""
    return [
        tuple(r)
        for r in host.psql(
            f"""
SELECT quote_ident(s.seq_nspname) || '.' || quote_ident(s.seq_relname), d.refobjid::regclass::text,
       quote_ident(a.attname)
  FROM {cluster.schema}.sl_sequence s
  JOIN pg_depend d ON d.objid = s.seq_reloid AND d.classid = 'pg_class'::regclass
                  AND d.deptype IN ('a', 'i')
                  AND d.refclassid = 'pg_class'::regclass
  JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
 WHERE s.seq_set = {cluster.set_id}""",
            cluster.database,
        )
    ]


def sequence_heads(
    host: Host, cluster: Cluster, owned: list[tuple[str, str, str]]
) -> list[tuple[int, int]]:
    """(last value, largest value in its column) for each (sequence, table, column)."""
    out = []
    for seq, table, col in owned:
        top = host.psql(
            f"BEGIN;\n{read_tables([table])}SELECT coalesce(pg_catalog.max({col}), 0)"
            f" FROM {table};\nCOMMIT;",
            cluster.database,
        )[0][0]
        out.append((sequence_value(host, cluster, seq), int(top or 0)))
    return out


def sequence_value(host: Host, cluster: Cluster, sequence: str) -> int:
    """A sequence's last value, read by its oid where PostgreSQL can (10 and newer): a
    view put in its place cannot be read by name."""
    if host.version_num >= 100000:
        return int(
            host.value(
                f"SELECT coalesce(pg_catalog.pg_sequence_last_value(q.seqrelid),"
                f" q.seqstart) FROM pg_catalog.pg_sequence q"
                f" WHERE q.seqrelid = {literal(sequence)}::pg_catalog.regclass",
                cluster.database,
            )
        )
    kind = host.value(
        f"SELECT relkind FROM pg_class WHERE oid = {literal(sequence)}::regclass",
        cluster.database,
    )
    if kind != "S":
        raise StepError(host.name, f"{sequence} is not a sequence (relkind {kind})")
    return int(host.value(f"SELECT last_value FROM {sequence}", cluster.database))


def copy_progress(
    master: Host, slave: Host, slon: Host, cl: Cluster, receiver: Node | None = None
) -> dict:
    """The initial copy as the subscriber shows it: slon log, pg_stat_progress_copy
    (from 14: before, tables done only), origin table sizes. `master`: the origin's
    host, `slave`: the receiver's (`receiver`, the slave unless a node rejoins)."""
    sizes = {
        parse.plain(r[0]): int(r[1])
        for r in master.psql(
            "SELECT quote_ident(tab_nspname) || '.' || quote_ident(tab_relname),"
            f" pg_table_size(tab_reloid) FROM {cl.schema}.sl_table WHERE tab_set ="
            f" {cl.set_id}",
            cl.database,
        )
    }
    log = parse.parse_copy_log(slon_log(slon, cl, receiver or cl.slave))
    rows = (
        slave.psql(
            "SELECT p.relid::regclass::text, p.bytes_processed FROM"
            " pg_stat_progress_copy p JOIN pg_database d ON d.oid = p.datid WHERE"
            f" d.datname = {literal(cl.database)}",
            cl.database,
        )
        if slave.version_num >= 140000
        else []
    )  # the view is there from 14
    current = sum(int(r[1]) for r in rows)
    if rows and not log["current"]:
        log["current"] = parse.plain(rows[0][0])
    elapsed = epoch_now(slon) - parse.epoch(log["started"]) if log["started"] else 0.0
    return {
        "tables": len(sizes),
        "bytes_total": sum(sizes.values()),
        "tables_done": sorted(log["done"]),
        "current": log["current"],
        "current_bytes": current,
        "elapsed": elapsed,
        "retries": log["retries"],
        "error": log["error"],
        "fraction": round(parse.copied_fraction(sizes, log, current), 4),
        "line": parse.progress_line(sizes, log, current, elapsed),
    }


def slonik_running(host: Host, cluster: Cluster) -> int | None:
    """The process group of a slonik (or the move's psql) this tool started on the
    slon host, while it runs; else None."""
    r = host.run(
        f"p=$(cat {cluster.slonik_pidfile} 2>/dev/null) && grep -qa -e slonik -e psql"
        " /proc/$p/cmdline && echo $p",
        check=False,
    )
    return int(r.stdout.strip()) if r.ok and r.stdout.strip() else None


def server_now(host: Host) -> str:
    """The server's clock, as PostgreSQL prints a timestamptz."""
    return host.value("SELECT clock_timestamp()")


def server_time(host: Host) -> tuple[str, float]:
    """The server's clock, as PostgreSQL prints a timestamptz and in seconds since the
    epoch."""
    row = host.psql("SELECT c::text, extract(epoch FROM c) FROM clock_timestamp() c")[0]
    return row[0], float(row[1])


def transactions_before(host: Host, since: str) -> list[tuple[str, str, str, int, str]]:
    """(pid, user, application, age in s, query start) of every client session, in
    any database of this server, whose transaction began before `since` (a server
    timestamp) and is still open, oldest first: what LOCK SET waits for. slonik's own
    sessions are left out."""
    rows = host.psql(f"""
SELECT pid, coalesce(usename, ''), coalesce(application_name, ''),
       extract(epoch FROM now() - xact_start)::bigint,
       coalesce(to_char(query_start, 'HH24:MI:SS'), '')
  FROM pg_stat_activity
 WHERE pid <> pg_backend_pid() AND {client_sessions(host)}
   AND xact_start < {literal(since)}::timestamptz
   AND application_name <> 'slonik'
 ORDER BY xact_start""")
    return [(pid, user, app, int(age), start) for pid, user, app, age, start in rows]


def received_from(host: Host, cluster: Cluster, origin: Node) -> dict:
    """What this node has of `origin`'s events: the newest received and the newest SYNC
    applied (their times and ages in s, as this node's clock tells), and how many
    received are not applied yet.
    """
    s, me = (
        cluster.schema,
        f"(SELECT last_value FROM {cluster.schema}.sl_local_node_id)",
    )
    row = host.psql(
        f"""
WITH got AS (SELECT max(ev_seqno) AS seqno, max(ev_timestamp) AS at
              FROM {s}.sl_event WHERE ev_origin = {origin.id}),
done AS (SELECT max(con_seqno) AS seqno FROM {s}.sl_confirm
          WHERE con_origin = {origin.id} AND con_received = {me}),
sync AS (SELECT max(e.ev_timestamp) AS at FROM {s}.sl_event e, done
          WHERE e.ev_origin = {origin.id} AND e.ev_type = 'SYNC' AND e.ev_seqno <= done.seqno)
SELECT coalesce(got.at::text, ''), coalesce(extract(epoch FROM now() - got.at)::int, -1),
       coalesce(sync.at::text, ''), coalesce(extract(epoch FROM now() - sync.at)::int, -1),
       (SELECT count(*) FROM {s}.sl_event e
         WHERE e.ev_origin = {origin.id} AND e.ev_seqno > coalesce(done.seqno, 0))
  FROM got, done, sync""",
        cluster.database,
    )[0]
    return {
        "event_at": row[0],
        "event_age": int(row[1]),
        "sync_at": row[2],
        "sync_age": int(row[3]),
        "pending": int(row[4]),
    }


def guarded_tables(host: Host, cluster: Cluster) -> tuple[int, int, int]:
    """(tables in the set, configured as on an origin, configured as on a subscriber) on
    this node, from pg_trigger: an origin logs writes (logtrigger enabled) and lets them
    in (denyaccess disabled); a subscriber refuses them (denyaccess enabled, logtrigger
    disabled). Runs no application code.
    """
    s = cluster.schema
    row = host.psql(
        f"""
SELECT count(*),
       count(*) FILTER (WHERE lt.tgenabled = 'O' AND da.tgenabled = 'D'),
       count(*) FILTER (WHERE lt.tgenabled = 'D' AND da.tgenabled = 'O')
  FROM {s}.sl_table t
  LEFT JOIN pg_trigger lt ON lt.tgrelid = t.tab_reloid AND lt.tgname = {literal(s + "_logtrigger")}
  LEFT JOIN pg_trigger da ON da.tgrelid = t.tab_reloid AND da.tgname = {literal(s + "_denyaccess")}
 WHERE t.tab_set = {cluster.set_id}""",
        cluster.database,
    )[0]
    return int(row[0]), int(row[1]), int(row[2])


def slony_ids(host: Host, cluster: Cluster) -> tuple[set[int], set[int], set[int]]:
    """(set ids, table ids, sequence ids) used anywhere in the cluster, as this node
    knows them."""
    s = cluster.schema
    rows = host.psql(
        f"SELECT 'set', set_id FROM {s}.sl_set UNION ALL SELECT 'table', tab_id FROM"
        f" {s}.sl_table UNION ALL SELECT 'sequence', seq_id FROM {s}.sl_sequence",
        cluster.database,
    )
    ids: dict[str, set[int]] = {"set": set(), "table": set(), "sequence": set()}
    for kind, i in rows:
        ids[kind].add(int(i))
    return ids["set"], ids["table"], ids["sequence"]


def setsync(host: Host, cluster: Cluster) -> dict | None:
    """The last SYNC of the set's origin this subscriber applied (sl_setsync): its
    number, its snapshot and its time on the origin's clock; None on the origin."""
    s = cluster.schema
    rows = host.psql(
        f"""
SELECT y.ssy_origin, y.ssy_seqno, y.ssy_snapshot::text,
       coalesce((SELECT e.ev_timestamp::text FROM {s}.sl_event e
                  WHERE e.ev_origin = y.ssy_origin AND e.ev_seqno = y.ssy_seqno), '')
  FROM {s}.sl_setsync y WHERE y.ssy_setid = {cluster.set_id}""",
        cluster.database,
    )
    if not rows:
        return None
    origin, seqno, snapshot, at = rows[0]
    return {
        "origin": int(origin),
        "seqno": int(seqno),
        "snapshot": snapshot,
        "at": at,
    }


def failover_record(host: Host, cluster: Cluster, node: Node) -> dict | None:
    """What the failover that dropped `node` recorded on the node that took over (its
    sl_registry): when, the last SYNC of `node` applied there, and how the node was
    fenced; None without a record."""
    text = host.value(
        f"SELECT reg_text FROM {cluster.schema}.sl_registry WHERE reg_key ="
        f" {literal(registry_key(node.id))}",
        cluster.database,
    )
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def lost_where(cluster: Cluster, node: Node, snapshot: str | None) -> str:
    """The rows of `node` in its own log (sl_log_1, sl_log_2) that a SYNC with
    `snapshot` did not carry (every row of `node` when None)."""
    visible = (
        f" AND NOT txid_visible_in_snapshot(l.log_txid, {literal(snapshot)}::txid_snapshot)"
        if snapshot
        else ""
    )
    return f"l.log_origin = {node.id}{visible}"


def lost_log(cluster: Cluster) -> str:
    s = cluster.schema
    return f"(SELECT * FROM {s}.sl_log_1 UNION ALL SELECT * FROM {s}.sl_log_2) l"


def lost_rows(
    host: Host, cluster: Cluster, node: Node, snapshot: str | None
) -> list[list[str]]:
    """The writes `node` still holds in its log that a SYNC with `snapshot` did not
    carry, in the order it made them: (action seq, txid, table, command type, changed
    columns, arguments as JSON, the table's key columns as JSON, the time of the first
    SYNC of `node` after the write or ''). For render.lost.parse_row."""
    s = cluster.schema
    return host.psql(
        f"""
WITH keys AS (
  SELECT t.tab_id, json_agg(a.attname::text ORDER BY k.n) AS cols
    FROM {s}.sl_table t
    JOIN pg_index i
      ON i.indexrelid = (quote_ident(t.tab_nspname) || '.' || quote_ident(t.tab_idxname))::regclass
    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
   GROUP BY t.tab_id)
SELECT l.log_actionseq, l.log_txid,
       quote_ident(l.log_tablenspname) || '.' || quote_ident(l.log_tablerelname),
       l.log_cmdtype, coalesce(l.log_cmdupdncols, 0), array_to_json(l.log_cmdargs),
       coalesce(k.cols, '[]'::json),
       coalesce((SELECT min(e.ev_timestamp)::text FROM {s}.sl_event e
                  WHERE e.ev_origin = {node.id} AND e.ev_type = 'SYNC'
                    AND txid_visible_in_snapshot(l.log_txid, e.ev_snapshot)), '')
  FROM {lost_log(cluster)} LEFT JOIN keys k ON k.tab_id = l.log_tableid
 WHERE {lost_where(cluster, node, snapshot)}
 ORDER BY l.log_actionseq""",
        cluster.database,
        timeout=settings.CHECKSUMS,
    )


def lost_count(host: Host, cluster: Cluster, node: Node, snapshot: str | None) -> int:
    """How many writes lost_rows would list."""
    return int(
        host.value(
            f"SELECT count(*) FROM {lost_log(cluster)} WHERE"
            f" {lost_where(cluster, node, snapshot)}",
            cluster.database,
        )
        or 0
    )


def last_event_at(host: Host, cluster: Cluster, node: Node) -> str:
    """When `node` made its newest event that this node knows ('' for none)."""
    return (
        host.value(
            f"SELECT coalesce(max(ev_timestamp)::text, '') FROM {cluster.schema}.sl_event"
            f" WHERE ev_origin = {node.id}",
            cluster.database,
        )
        or ""
    )


def guard_installed(host: Host, cluster: Cluster) -> bool:
    """Whether render.sql.guard is on both of this node's log tables."""
    return (
        host.value(
            f"SELECT count(*) FROM pg_trigger WHERE tgname = {literal(GUARD)} AND tgrelid"
            f" IN ('{cluster.schema}.sl_log_1'::regclass,"
            f" '{cluster.schema}.sl_log_2'::regclass)",
            cluster.database,
        )
        == "2"
    )
