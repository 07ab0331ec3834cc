"""Pure parts of the end-game: the slon log parser, the progress line, verify's
checksum SQL."""

from fabfile.render.parse import parse_copy_log, progress_line
from fabfile.render.sql import checksum_sql

# Lines as Slony-I 2.2.11's slon writes them (log_level=0, log_timestamp=true), from the
# testbed.
LOG = """\
2026-11-25 23:07:59 UTC INFO   remoteWorkerThread_1: SYNC 5000000030 done in 0.010 seconds
2026-11-25 23:08:05 UTC INFO   copy_set 1 - omit=f - bool=0
2026-11-25 23:08:05 UTC CONFIG remoteWorkerThread_1: prepare to copy table "public"."auth_group"
2026-11-25 23:08:05 UTC CONFIG remoteWorkerThread_1: copy table "public"."auth_group"
2026-11-25 23:08:05 UTC CONFIG remoteWorkerThread_1: Begin COPY of table "public"."auth_group"
2026-11-25 23:08:05 UTC CONFIG remoteWorkerThread_1: 202 bytes copied for table "public"."auth_group"
2026-11-25 23:08:05 UTC CONFIG remoteWorkerThread_1: 0.026 seconds to copy table "public"."auth_group"
2026-11-25 23:08:05 UTC CONFIG remoteWorkerThread_1: copy table "public"."auth_message"
2026-11-25 23:08:05 UTC CONFIG remoteWorkerThread_1: Begin COPY of table "public"."auth_message"
"""
DONE = """\
2026-11-25 23:08:05 UTC CONFIG remoteWorkerThread_1: 10620048 bytes copied for table "public"."auth_message"
2026-11-25 23:08:06 UTC CONFIG remoteWorkerThread_1: 0.524 seconds to copy table "public"."auth_message"
2026-11-25 23:08:06 UTC INFO   remoteWorkerThread_1: copy_set SYNC found, use event seqno 5000000038.
2026-11-25 23:08:06 UTC INFO   copy_set 1 done in 0.844 seconds
"""


def test_parse_copy_log_during_the_copy():
    log = parse_copy_log(LOG)
    assert log["started"] == "2026-11-25 23:08:05"
    assert log["done"] == {"public.auth_group": 202}
    assert log["current"] == "public.auth_message"
    assert log["finished"] is False and log["retries"] == 0


def test_parse_copy_log_after_the_copy():
    log = parse_copy_log(LOG + DONE)
    assert log["done"] == {"public.auth_group": 202, "public.auth_message": 10620048}
    assert log["current"] is None and log["finished"] is True


def test_parse_copy_log_reads_only_the_latest_attempt():
    retry = (
        "2026-11-25 23:09:00 UTC WARN   remoteWorkerThread_1: data copy for set 1"
        " failed 1 times - sleep 15 seconds\n2026-11-25 23:09:15 UTC INFO   copy_set 1"
        " - omit=f - bool=0\n"
    )
    log = parse_copy_log(LOG + retry)
    assert (
        log["started"] == "2026-11-25 23:09:15"
        and log["done"] == {}
        and log["retries"] == 1
    )


def test_parse_copy_log_without_a_copy():
    assert parse_copy_log("")["started"] is None


def test_progress_line_counts_done_tables_and_the_running_copy():
    sizes = {"public.auth_group": 8_000_000, "public.auth_message": 92_000_000}
    line = progress_line(sizes, parse_copy_log(LOG), 46_000_000, 10)
    assert line.startswith("[##########..........]  54% 54/100 MB, 1/2 tables, ETA 9 s")
    assert line.endswith("copying public.auth_message")


def test_checksum_sql_chunks_integer_keys_and_cuts_off_new_rows():
    sql = checksum_sql(
        {
            "public.t": [("id", "integer")],
            "public.alias": [("a", "integer"), ("b", "text")],
        },
        {"public.t": "41"},
        10000,
    )
    assert (
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;" in sql
        and sql.rstrip().endswith("COMMIT;")
    )
    assert "FROM public.t t WHERE id <= 41 GROUP BY 2" in sql
    assert "(id / 10000)::text" in sql
    assert (
        "'public.alias', 'all', pg_catalog.count(*)" in sql and "ORDER BY a, b" in sql
    )


def test_checksum_sql_reads_rows_by_built_in_functions_only_after_the_guard():
    """No cast of a row (the owner of its type may define one), no bare `t` (a column
    may have that name), and the tables locked and checked to be tables first."""
    sql = checksum_sql({'public."t"': [("t", "integer")]}, {}, 10000)
    assert "::text)" not in sql.replace("(t / 10000)::text", "")
    assert "md5(t::text)" not in sql and "record_out(ROW(t.*))" in sql
    lock = sql.index('LOCK TABLE public."t" IN ACCESS SHARE MODE;')
    guard = sql.index("is not a table: its rows are not read")
    assert sql.index("BEGIN ISOLATION") < lock < guard < sql.index('FROM public."t" t')
