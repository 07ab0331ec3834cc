"""The benchmark's parsers on real output (slon 2.2.11, pg_restore 17, pgbench 15).
Part of `make test` (tests/unit)."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import parse  # noqa: E402

SLON_LOG = """\
2026-11-25 22:18:52 UTC CONFIG main: Integer option sync_interval = 2000
2026-11-25 22:18:52 UTC CONFIG main: Integer option sync_interval_timeout = 10000
2026-11-25 22:18:57 UTC CONFIG storeSubscribe: sub_set=1 sub_provider=1 sub_forward='t'
2026-11-25 22:18:57 UTC INFO   copy_set 1 - omit=f - bool=0
2026-11-25 22:18:57 UTC CONFIG remoteWorkerThread_1: prepare to copy table "public"."auth_message"
2026-11-25 22:18:57 UTC CONFIG remoteWorkerThread_1: copy table "public"."auth_message"
2026-11-25 22:18:57 UTC CONFIG remoteWorkerThread_1: Begin COPY of table "public"."auth_message"
NOTICE:  truncate of "public"."auth_message" succeeded
2026-11-25 22:18:59 UTC CONFIG remoteWorkerThread_1: 26780051 bytes copied for table "public"."auth_message"
2026-11-25 22:19:01 UTC CONFIG remoteWorkerThread_1: 3.982 seconds to copy table "public"."auth_message"
2026-11-25 22:19:01 UTC CONFIG remoteWorkerThread_1: Begin COPY of table "public"."auth_user"
NOTICE:  truncate of "public"."auth_user" failed - doing delete
2026-11-25 22:19:02 UTC CONFIG remoteWorkerThread_1: 3566682 bytes copied for table "public"."auth_user"
2026-11-25 22:19:02 UTC CONFIG remoteWorkerThread_1: 0.654 seconds to copy table "public"."auth_user"
2026-11-25 22:19:02 UTC INFO   remoteWorkerThread_1: 0.005 seconds to copy sequences
2026-11-25 22:19:02 UTC INFO   remoteWorkerThread_1: 0.003 seconds to build initial setsync status
2026-11-25 22:19:02 UTC INFO   copy_set 1 done in 5.067 seconds
2026-11-25 22:19:05 UTC INFO   remoteWorkerThread_1: SYNC 5000000041 done in 0.350 seconds
"""


def test_slon_copy():
    c = parse.slon_copy(SLON_LOG)
    assert c["seconds"] == 5.067
    assert c["done"] - c["start"] == 5
    assert c["subscribe_seen"] == c["start"]
    msg = c["tables"]["public.auth_message"]
    assert msg["bytes"] == 26780051 and msg["seconds"] == 3.982
    assert msg["index"] == 2.0 and abs(msg["data"] - 1.982) < 1e-9
    assert c["tables"]["public.auth_user"]["index"] == 0.0
    assert abs(c["other"] - (5.067 - 3.982 - 0.654)) < 1e-9
    assert c["bytes"] == 26780051 + 3566682


def test_slon_copy_unfinished_or_absent():
    assert parse.slon_copy("") is None
    assert parse.slon_copy(SLON_LOG.split("copy_set 1 done")[0]) is None


def test_slon_options():
    assert parse.slon_options(SLON_LOG + SLON_LOG.replace("= 2000", "= 500")) == {
        "sync_interval": 500,
        "sync_interval_timeout": 10000,
    }


def test_restore_phases():
    lines = [
        (0.5, "pg_restore: connecting to database for restore"),
        (1.0, 'pg_restore: creating TABLE "public.auth_message"'),
        (1.5, 'pg_restore: processing data for table "public.auth_message"'),
        (
            9.5,
            'pg_restore: creating CONSTRAINT "public.auth_message auth_message_pkey"',
        ),
        (11.0, 'pg_restore: creating INDEX "public.auth_message_user_id"'),
        (
            12.0,
            (
                'pg_restore: creating FK CONSTRAINT "public.auth_message'
                ' auth_message_user_id_fkey"'
            ),
        ),
    ]
    p = parse.restore_phases(lines, 13.0)
    assert p == {"start": 1.0, "schema": 0.5, "data": 8.0, "index": 2.5, "fk": 1.0}
    assert sum(p.values()) == 13.0


def test_pgbench():
    out = """number of transactions actually processed: 19958
number of failed transactions: 0 (0.000%)
latency average = 50.337 ms
rate limit schedule lag: avg 48.650 (max 279.647) ms
tps = 2004.425041 (without initial connection time)"""
    b = parse.pgbench(out)
    assert (
        b["tps"] == 2004.425041
        and b["transactions"] == 19958
        and b["schedule_lag_ms"] == 48.65
    )


def test_migrate_steps():
    lines = [
        (0.0, "== preflight"),
        (2.0, "[db01] preflight: ok"),
        (3.0, "== 1/11 install"),
        (4.0, "== 11/11 subscribe"),
        (10.0, "migrate: done"),
    ]
    assert parse.migrate_steps(lines, 12.0) == {
        "preflight": 3.0,
        "install": 1.0,
        "subscribe": 8.0,
    }
    assert parse.step_start(lines, "subscribe") == 4.0


def test_data_lag():
    history = [(0.0, 100), (1.0, 150), (2.0, 200)]
    assert parse.data_lag(history, 200, 2.0) == 0.0
    assert parse.data_lag(history, 120, 2.0) == 1.0  # row 121..150 appeared by t=1
    assert parse.data_lag(history, 90, 2.5) == 2.5


def test_stats():
    assert parse.pct(list(range(1, 101)), 95) == 95
    assert parse.pct([3.0], 95) == 3.0
    assert parse.median([1, None, 3]) == 2
    assert abs(parse.slope([(0, 0), (1, 2), (2, 4)]) - 2) < 1e-9


def test_verdict():
    import report

    base = {
        "target": 800,
        "tps": 801.0,
        "lag_p95": 4.0,
        "data_max_1st": 9.0,
        "data_max_2nd": 2.0,
        "catch_up": 1.0,
        "data_slope": 0.0,
    }
    assert report.verdict([base], 10) == (True, True, "yes")
    assert report.verdict([{**base, "lag_p95": 12.0}], 10)[:2] == (True, False)
    assert report.verdict([{**base, "data_max_2nd": 14.0}], 10)[:2] == (False, False)
    assert report.verdict([{**base, "catch_up": None}], 10)[:2] == (False, False)
    assert report.verdict([{**base, "tps": 500.0}], 10)[2] == "rate not reached on db01"


def test_report_of_the_published_run():
    import report

    from fabfile.settings import MAX_LAG

    md = report.markdown(json.loads((ROOT / "docs" / "benchmarks.json").read_text()))
    for heading in (
        "# Benchmarks",
        "## Summary",
        "## Initial copy and tool overhead",
        "## Lag under load",
        "## Switchover under load",
        "## How to read and rerun",
    ):
        assert f"\n{heading}\n" in f"\n{md}\n"
    assert "| run | preflight | install | users |" in md
    assert "`testbed.writer.Writer`" in md and f"`--max-lag`, {MAX_LAG:g} s" in md


def test_report_of_issue_14_figures():
    """The pooler phase and the stronger copy peers: a section, and a target table
    with the measured figures."""
    import report

    res = json.loads((ROOT / "docs" / "benchmarks.json").read_text())
    for i, r in enumerate(res["reps"]):
        r["dump_parallel"] = {"wall": 20.0 + i, "dump": 8.0, "restore": 12.0 + i}
        r["logical"] = {"wall": 30.0, "tables": 13}
        r["altperl"] = {
            "switchover": {"wall": 3.0, "writer": 1.5 + i},
            "switchback": {"wall": 3.0, "writer": 1.2},
        }
        r["pooler"] = {
            "switchover": {
                "wall": 9.0,
                "stall": 0.4 + i / 10,
                "errors": 0,
                "settle": 2,
            },
            "switchback": {"wall": 8.0, "stall": 0.3, "errors": 0, "settle": 2},
            "writer_stats": {
                "attempts": 900,
                "acknowledged": 900,
                "errors": 0,
                "achieved_rate": 99.0,
                "lost_or_doubled": 0,
            },
        }
    md = report.markdown(res)
    assert "\n## Switchover through PgBouncer\n" in md
    assert (
        "| application errors during switchover/switchback through PgBouncer | 0 | 0 |"
        in md
    )
    assert (
        "| the application's longest wait per move through PgBouncer (s) | 0.35"
        " (0.30–0.60), longest 0.60 |" in md
    )
    assert (
        "| **`pg_dump -Fd -j 2 -Z 0`, then `pg_restore -j 2`** (directory on db02) |"
        " **21.0 (20.0–22.0)** |" in md
    )
    noop = report.fmt([r["noop"]["wall"] for r in res["reps"]])
    assert f"| no-op re-run of `inv migrate` (s) | {noop} | ≤ 5 |" in md
    assert (
        "by hand, writes refused or stalled per move (s) | 1.4 (1.2–3.5) | baseline |"
        in md
    )


def test_the_plot_shows_the_application_through_pgbouncer_and_its_worst_move():
    import report

    res = json.loads((ROOT / "docs" / "benchmarks.json").read_text())
    reps = res["reps"]
    assert (
        report.pooled_run(reps) is reps[-1]["pooler"] and reps[-1]["pooler"]["attempts"]
    )
    kept = reps[0]["pooler"]
    for r in reps[1:]:
        r["pooler"].pop("attempts")
    assert report.pooled_run(reps) is kept  # the last repetition that kept its attempts
    kept.pop("attempts")
    assert report.pooled_run(reps) is None  # no row for it then
    moves, worst = report.pooled_moves(
        {"switchover": {"stall": 0.28}, "switchback": {"stall": 0.35}}
    )
    assert [name for name, _ in moves] == ["switchover", "switchback"] and worst[
        0
    ] == "switchback"
    assert report.pooled_moves({"switchover": {"stall": 0.4}})[1][0] == "switchover"


def test_window_spread_is_nearest_rank():
    values = [0.2] * 30 + [0.9, 12.7]
    s = parse.spread(values)
    assert s == {"n": 32, "p50": 0.2, "p95": 0.9, "p99": 12.7, "max": 12.7}
    assert parse.spread([]) == {
        "n": 0,
        "p50": None,
        "p95": None,
        "p99": None,
        "max": None,
    }
