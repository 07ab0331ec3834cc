"""docs/benchmarks.md, docs/benchmarks.json and docs/lag.png from the benchmark's
results (medians of the reps)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from parse import median

from fabfile.runbook import STEP_NAMES
from fabfile.settings import MAX_LAG
from testbed import DATABASE, WRITER_TABLE

MIGRATE_STEPS = ["preflight", *STEP_NAMES]


def get(d, *path):
    for p in path:
        if d is None:
            return None
        d = d.get(p) if isinstance(d, dict) else None
    return d


def values(reps, *path):
    return [v for r in reps if (v := get(r, *path)) is not None]


def fmt(vals, digits: int = 1, unit: str = "") -> str:
    """Median, with min–max when there is more than one value."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    m = median(vals)
    text = f"{m:.{digits}f}{unit}"
    lo, hi = f"{min(vals):.{digits}f}", f"{max(vals):.{digits}f}"
    if len(vals) > 1 and lo != hi:
        text += f" ({lo}–{hi})"
    return text


def ratio(reps, num_path, den_path):
    out = []
    for r in reps:
        a, b = get(r, *num_path), get(r, *den_path)
        if a is not None and b:
            out.append(a / b)
    return out


def settings_of(reps) -> list[str]:
    labels: list[str] = []
    for r in reps:
        for s in r.get("settings", []):
            if s["label"] not in labels:
                labels.append(s["label"])
    return labels


def setting(r, label):
    return next((s for s in r.get("settings", []) if s["label"] == label), None)


def lag_stats(reps, label, rate):
    """Per-rep stats of one (setting, rate)."""
    out = []
    for r in reps:
        s = setting(r, label)
        for run in (s or {}).get("lag", []):
            if run["rate"] == rate:
                out.append(run["stats"])
    return out


GROWTH_SLACK = 2.0  # seconds at least: the data lag's resolution plus a sync_interval


def slack_of(reps, label) -> float:
    """How much the data lag may vary without growing: slon picks up new events
    within one sync_interval_timeout (its listener's longest poll), so at least that."""
    s = next((setting(r, label) for r in reps if setting(r, label)), {}) or {}
    return max(GROWTH_SLACK, (s.get("sync_interval_timeout") or 0) / 1000)


def growth_of(s: dict) -> float | None:
    if s.get("data_max_2nd") is None or s.get("data_max_1st") is None:
        return None
    return s["data_max_2nd"] - s["data_max_1st"]


def verdict(
    stats: list[dict], bound: float, slack: float = GROWTH_SLACK
) -> tuple[bool, bool, str]:
    """(keeps up, bounded, why) from the medians of the reps.

    Keeps up: the rate was delivered (≥ 90 %), the data lag in the second half of the
    load is no higher than in the first plus `slack` and db02 caught up after it.
    Bounded: keeps up, sl_status p95 < bound.
    """
    tps = median([s["tps"] for s in stats])
    p95 = median([s["lag_p95"] for s in stats])
    growth = median([growth_of(s) for s in stats])
    target = stats[0]["target"]
    if tps is None or tps < 0.9 * target:
        return False, False, "rate not reached on db01"
    if (growth is not None and growth > slack) or any(
        s["catch_up"] is None for s in stats
    ):
        return False, False, "no: data lag grows"
    if p95 is None or p95 >= bound:
        return True, False, f"keeps up; p95 ≥ {bound:g} s"
    return True, True, "yes"


def worst(reps, label, key) -> list[float]:
    """Per rep, the highest value of a lag statistic over the rates."""
    out = []
    for r in reps:
        runs = (setting(r, label) or {}).get("lag", [])
        vals = [run["stats"][key] for run in runs if run["stats"].get(key) is not None]
        if vals:
            out.append(max(vals))
    return out


def highest(res, label, which: int):
    """Highest rate that keeps up (which=0) or is bounded (which=1), from the
    medians."""
    best = None
    for rate in res["meta"]["rates"]:
        st = lag_stats(res["reps"], label, rate)
        if (
            st
            and verdict(st, res["meta"]["lag_bound"], slack_of(res["reps"], label))[
                which
            ]
        ):
            best = rate
    return best


def summary(res: dict) -> list[str]:
    """The headline figures: copy against dump/restore, and each slon setting side by
    side (before/after)."""
    reps = res["reps"]
    L = ["## Summary", ""]
    if any("migrate" in r for r in reps):
        L += [
            "| initial copy | seconds |",
            "|---|---:|",
            (
                "| Slony initial copy (copy_set) |"
                f" {fmt(values(reps, 'migrate', 'copy', 'seconds'))} |"
            ),
            f"| `pg_dump -Fc \\| pg_restore` | {fmt(values(reps, 'dump', 'wall'))} |",
            (
                "| ratio dump/restore ÷ Slony copy |"
                f" {fmt(ratio(reps, ('dump', 'wall'), ('migrate', 'copy', 'seconds')), 2)} |"
            ),
            f"| `inv migrate` end to end | {fmt(values(reps, 'migrate', 'wall'))} |",
            (
                "| tool overhead (migrate − copy) |"
                f" {fmt(values(reps, 'migrate', 'overhead'))} |"
            ),
            f"| no-op `inv migrate` | {fmt(values(reps, 'noop', 'wall'))} |",
            "",
        ]
    L += targets(res)
    labels = settings_of(reps)
    if labels:

        def cell(vals, digits=1):
            return fmt(vals, digits)

        rows = [
            (
                "sl_status lag p95, worst rate (s)",
                lambda l: cell(worst(reps, l, "lag_p95")),
            ),
            (
                "data lag p95, worst rate (s)",
                lambda l: cell(worst(reps, l, "data_p95")),
            ),
            (
                "highest rate with bounded lag (tps)",
                lambda l: str(highest(res, l, 1) or "none"),
            ),
            (
                "highest rate db02 keeps up with (tps)",
                lambda l: str(highest(res, l, 0) or "none"),
            ),
        ]
        for name in ("switchover", "switchback"):
            rows += [
                (
                    f"{name}: writes blocked, writer (s)",
                    lambda l, n=name: cell(
                        [get(setting(r, l), "switch", n, "writer") for r in reps]
                    ),
                ),
                (
                    f"{name}: writes blocked, tool (s)",
                    lambda l, n=name: cell(
                        [get(setting(r, l), "switch", n, "tool") for r in reps]
                    ),
                ),
                (
                    f"{name}: end to end (s)",
                    lambda l, n=name: cell(
                        [get(setting(r, l), "switch", n, "wall") for r in reps]
                    ),
                ),
            ]
        L += [
            "| slon sync setting → | " + " | ".join(f"`{l}`" for l in labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        L += [
            f"| {name} | " + " | ".join(f(l) for l in labels) + " |" for name, f in rows
        ]
        L += [
            "",
            "Settings: "
            + "; ".join(f"`{l}` = " + describe_setting(reps, l) for l in labels)
            + ".",
            "",
        ]
    return L


def pooled(reps, name: str, key: str) -> list:
    return values(reps, "pooler", name, key)


def targets(res: dict) -> list[str]:
    """Issue 14's figures against their targets, where this run measured them."""
    reps = res["reps"]
    L = []
    if any("pooler" in r for r in reps):
        both = pooled(reps, "switchover", "stall") + pooled(reps, "switchback", "stall")
        errors = sum(
            pooled(reps, "switchover", "errors") + pooled(reps, "switchback", "errors")
        )
        L += [
            (
                "| application errors during switchover/switchback through PgBouncer |"
                f" {errors} | 0 |"
            ),
            (
                "| the application's longest wait per move through PgBouncer (s) |"
                f" {fmt(both, 2)}, longest {max(both):.2f} | median ≤ 0.5, longest"
                " ≤ 1 |"
                if both
                else ""
            ),
        ]
    labels = settings_of(reps)
    if "default" in labels:
        blocked = [
            get(setting(r, "default"), "switch", n, "writer")
            for r in reps
            for n in ("switchover", "switchback")
        ]
        L.append(
            "| writes refused or stalled per move, without a pooler (s) |"
            f" {fmt(blocked)} | median ≤ 1 |"
        )
    if any("altperl" in r for r in reps):
        runbook = [
            get(r, "altperl", n, "writer")
            for r in reps
            for n in ("switchover", "switchback")
        ]
        L.append(
            "| the runbook's way: altperl `slonik_move_set` by hand, writes refused or"
            f" stalled per move (s) | {fmt(runbook)} | baseline |"
        )
    if any("noop" in r for r in reps):
        L += [
            (
                "| no-op re-run of `inv migrate` (s) |"
                f" {fmt(values(reps, 'noop', 'wall'))} | ≤ 5 |"
            ),
            (
                "| `inv migrate` minus Slony's copy time (s) |"
                f" {fmt(values(reps, 'migrate', 'overhead'))} | ≤ 5 |"
            ),
        ]
    if any("dump_parallel" in r for r in reps):
        L += [
            (
                "| Slony's copy ÷ `pg_dump -Fd -j 2 -Z 0` + `pg_restore -j 2` |"
                f" {fmt(ratio(reps, ('migrate', 'copy', 'seconds'), ('dump_parallel', 'wall')), 2)}"
                " | compared |"
            ),
            (
                "| Slony's copy ÷ logical replication's initial sync |"
                f" {fmt(ratio(reps, ('migrate', 'copy', 'seconds'), ('logical', 'wall')), 2)}"
                " | compared |"
            ),
        ]
    L = [line for line in L if line]
    return (
        ["| figure (issue 14) | measured | target |", "|---|---:|---|", *L, ""]
        if L
        else []
    )


def pooler_section(res: dict) -> list[str]:
    """Switchover and switchback through PgBouncer with the application writing."""
    meta, reps = res["meta"], res["reps"]
    runs = values(reps, "pooler")
    quick = "/".join(
        map(str, meta.get("quick_sync", (100, 500)))
    )  # runs before it was kept: 100/500
    L = [
        "## Switchover through PgBouncer",
        "",
        (
            "`testbed/appwriter.py` on the `app` host: one psycopg2 connection to"
            f" PgBouncer (transaction pooling), {meta.get('app_rate', 100):g}"
            " inserts/s, each attempt logged with its start and end. `inv switchover"
            " --pooler app`, then `inv switchback --pooler app`: PAUSE, LOCK SET, MOVE"
            " SET, PgBouncer pointed at the new origin, RELOAD and RESUME; both slons"
            f" at sync_interval/sync_interval_timeout {quick} ms for the move. The"
            " stall is the longest time one insert took from the start of the move:"
            " what the application waited."
        ),
        "",
        "| direction | end to end (s) | the application's longest wait (s) | errors |",
        "|---|---:|---:|---:|",
    ]
    for name in ("switchover", "switchback"):
        L.append(
            f"| {name} | {fmt(pooled(reps, name, 'wall'))} |"
            f" **{fmt(pooled(reps, name, 'stall'), 2)}** |"
            f" {sum(pooled(reps, name, 'errors'))} |"
        )
    stats = [r["writer_stats"] for r in runs]
    return L + [
        "",
        (
            f"Application: {fmt([w['achieved_rate'] for w in stats], 0)} inserts/s"
            f" achieved, {sum(w['acknowledged'] for w in stats)} acknowledged,"
            f" {sum(w['errors'] for w in stats)} errors,"
            f" {sum(w['lost_or_doubled'] for w in stats)} acknowledged rows lost or"
            " doubled (checked on db01 after the switchback)."
        ),
        "",
    ]


def describe_setting(reps, label) -> str:
    s = next((setting(r, label) for r in reps if setting(r, label)), {})
    txt = (
        f"sync_interval {s.get('sync_interval')} ms, sync_interval_timeout"
        f" {s.get('sync_interval_timeout')} ms"
    )
    return txt + (" (as `inv config` writes them)" if label == "default" else "")


def markdown(res: dict) -> str:
    """docs/benchmarks.md: a section for each phase that was measured."""
    reps = res["reps"]
    labels = settings_of(reps)
    L = header(res) + setup_section(res) + summary(res)
    if any("migrate" in r for r in reps):
        L += copy_section(res) + steps_section(reps) + tables_section(reps)
    if labels and any(get(setting(r, l), "lag") for r in reps for l in labels):
        L += lag_section(res, labels)
    if labels and any(get(setting(r, l), "switch") for r in reps for l in labels):
        L += switch_section(res, labels)
    if any("pooler" in r for r in reps):
        L += pooler_section(res)
    return "\n".join(L + footer(res, labels))


def header(res: dict) -> list[str]:
    """The title, and a warning when the run was small or failed."""
    meta = res["meta"]
    db = meta.get("database", {})
    small = meta["size_mb"] < 1000 or meta["reps"] < 3 or meta["load_seconds"] < 30
    L = ["# Benchmarks", ""]
    if small:
        size = f"{db['bytes'] / 1e6:.0f} MB" if db else f"{meta['size_mb']} MB"
        L += [
            f"> **Development run**: a {size} database, {meta['reps']} repetition(s)"
            + (
                f", {meta['load_seconds']} s of load per rate"
                if "lag" in meta.get("phases", ["lag"])
                else ""
            )
            + ". The figures show the method and the shape, not the numbers of the full"
            " run (`make bench`: 1000 MB, 3 repetitions, 30 s per rate).",
            "",
        ]
    if meta.get("failed"):
        L += [
            (
                f"> **The run failed**: {meta['failed'].splitlines()[0]} — figures"
                " below are what was measured before."
            ),
            "",
        ]
    return L


def setup_section(res: dict) -> list[str]:
    """What was measured on: versions, machine, database, repetitions."""
    meta, reps = res["meta"], res["reps"]
    m, v = meta["machine"], res.get("versions", {})
    n = len(reps)
    db = meta.get("database", {})
    return [
        f"Measured {meta['date']} with `{meta['command']}` on the docker testbed"
        f" (`{meta['testbed']}`): db01 {get(v, 'db01', 'os') or 'Debian 12'} with"
        f" PostgreSQL {get(v, 'db01', 'postgresql') or '15'}, db02"
        f" {get(v, 'db02', 'os') or 'Debian 13'} with PostgreSQL"
        f" {get(v, 'db02', 'postgresql') or '17'}, {v.get('slony') or 'Slony-I 2.2.11'}"
        " (packages"
        + (f", db01 module {v['slony_db01']}" if v.get("slony_db01") else "")
        + f"), docker {m['docker']}"
        + (f", compose {m['compose']}" if m.get("compose") else "")
        + ".",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB memory, kernel"
        f" {m['kernel']}; "
        f"load average {m['loadavg_start'][0]:.1f} at the start,"
        f" {meta.get('loadavg_end', [0])[0]:.1f} at "
        f"the end (the machine is shared: other testbeds may run beside this one). Both"
        f" servers run on it, "
        f'so their "network" is a docker bridge and they compete for the same CPUs.',
        "",
        f"Database: `{DATABASE}` seeded with `--size-mb {meta['size_mb']}`: "
        + (
            f"{db['bytes'] / 1e6:.0f} MB on disk on db01, {db['auth_message_rows']:,}"
            f" rows in {WRITER_TABLE}. "
            if db
            else ""
        )
        + f"Every figure is the median of {n} repetition(s)"
        + (" (min–max in brackets)" if n > 1 else "")
        + f"; the whole run took {meta['elapsed_s'] / 60:.0f} min.",
        "",
    ]


def copy_section(res: dict) -> list[str]:
    """Slony's initial copy against pg_dump | pg_restore, and the tool's overhead
    around the copy."""
    reps = res["reps"]
    L = [
        "## Initial copy and tool overhead",
        "",
        "| figure | seconds |",
        "|---|---:|",
        (
            "| **Slony initial copy** (`copy_set 1 done in N seconds`, receiver's slon"
            f" log) | **{fmt(values(reps, 'migrate', 'copy', 'seconds'))}** |"
        ),
        (
            "| &nbsp;&nbsp;COPY of the rows (per table, from the log's timestamps, ±1"
            f" s) | {fmt(values(reps, 'migrate', 'copy', 'data'))} |"
        ),
        (
            "| &nbsp;&nbsp;index rebuild after each table's COPY (±1 s) | "
            f"{fmt(values(reps, 'migrate', 'copy', 'index'))} |"
        ),
        (
            "| &nbsp;&nbsp;rest: prepare, truncate, sequences, setsync | "
            f"{fmt(values(reps, 'migrate', 'copy', 'other'))} |"
        ),
        (
            "| **`pg_dump -Fc \\| pg_restore`**, db01 to a new database on db02 | "
            f"**{fmt(values(reps, 'dump', 'wall'))}** |"
        ),
        (
            "| &nbsp;&nbsp;until pg_restore's first item (connect, pg_dump's catalog"
            f" reads) | {fmt(values(reps, 'dump', 'phases', 'start'))} |"
        ),
        f"| &nbsp;&nbsp;schema | {fmt(values(reps, 'dump', 'phases', 'schema'))} |",
        f"| &nbsp;&nbsp;data (COPY) | {fmt(values(reps, 'dump', 'phases', 'data'))} |",
        (
            "| &nbsp;&nbsp;indexes, primary and unique keys |"
            f" {fmt(values(reps, 'dump', 'phases', 'index'))} |"
        ),
        (
            "| &nbsp;&nbsp;foreign keys (validated) |"
            f" {fmt(values(reps, 'dump', 'phases', 'fk'))} |"
        ),
        (
            "| **ratio** dump/restore ÷ Slony copy |"
            f" **{fmt(ratio(reps, ('dump', 'wall'), ('migrate', 'copy', 'seconds')), 2)}** |"
        ),
        (
            "| ratio dump/restore ÷ `inv migrate` end to end | "
            f"{fmt(ratio(reps, ('dump', 'wall'), ('migrate', 'wall')), 2)} |"
        ),
        (
            "| **`pg_dump -Fd -j 2 -Z 0`, then `pg_restore -j 2`** (directory on db02)"
            f" | **{fmt(values(reps, 'dump_parallel', 'wall'))}** |"
        ),
        f"| &nbsp;&nbsp;pg_dump | {fmt(values(reps, 'dump_parallel', 'dump'))} |",
        f"| &nbsp;&nbsp;pg_restore | {fmt(values(reps, 'dump_parallel', 'restore'))} |",
        (
            "| **logical replication's initial sync** (PUBLICATION FOR ALL TABLES,"
            " SUBSCRIPTION, 2 sync workers; schema loaded beforehand, not counted) |"
            f" **{fmt(values(reps, 'logical', 'wall'))}** |"
        ),
        (
            "| **`inv migrate` end to end** |"
            f" **{fmt(values(reps, 'migrate', 'wall'))}** |"
        ),
        (
            "| **tool overhead** (`inv migrate` minus the copy) |"
            f" **{fmt(values(reps, 'migrate', 'overhead'))}** |"
        ),
        (
            "| &nbsp;&nbsp;preflight and the steps before subscribe | "
            f"{fmt(values(reps, 'migrate', 'before_subscribe'))} |"
        ),
        (
            "| &nbsp;&nbsp;subscribe: until slon began the copy (slonik, event, ±1 s)"
            f" | {fmt(values(reps, 'migrate', 'before_copy'))} |"
        ),
        (
            "| &nbsp;&nbsp;subscribe: after the copy until migrate returned (polling)"
            f" | {fmt(values(reps, 'migrate', 'after_copy'))} |"
        ),
        (
            "| **no-op re-run** of `inv migrate` |"
            f" **{fmt(values(reps, 'noop', 'wall'))}** |"
        ),
    ]
    if res.get("install") is not None:
        L.append(
            "| Slony packages, `inv install` (once, before the repetitions; not in the"
            f" figures above) | {res['install']:.1f} |"
        )
    return L


def steps_section(reps) -> list[str]:
    """`inv migrate` and its no-op re-run, step by step."""
    return [
        "",
        (
            "`inv migrate` step by step (seconds, from the arrival time of its `== N/M"
            " step` lines):"
        ),
        "",
        "| run | " + " | ".join(MIGRATE_STEPS) + " |",
        "|---|" + "---:|" * len(MIGRATE_STEPS),
        "| migrate | "
        + " | ".join(fmt(values(reps, "migrate", "steps", s)) for s in MIGRATE_STEPS)
        + " |",
        "| no-op re-run | "
        + " | ".join(fmt(values(reps, "noop", "steps", s)) for s in MIGRATE_STEPS)
        + " |",
        "",
    ]


def tables_section(reps) -> list[str]:
    """Slony's copy per table, the largest first."""
    tables = sorted(
        {t for r in reps for t in get(r, "migrate", "copy", "tables") or {}},
        key=lambda t: (
            -(median(values(reps, "migrate", "copy", "tables", t, "bytes")) or 0)
        ),
    )
    L = [
        (
            "Slony's copy per table (receiver's slon log; COPY/index split from"
            " whole-second timestamps):"
        ),
        "",
        "| table | MB copied | seconds | COPY | index rebuild |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in tables:
        b = median(values(reps, "migrate", "copy", "tables", t, "bytes")) or 0
        L.append(
            f"| {t} | {b / 1e6:.1f} |"
            f" {fmt(values(reps, 'migrate', 'copy', 'tables', t, 'seconds'), 2)} |"
            f" {fmt(values(reps, 'migrate', 'copy', 'tables', t, 'data'), 0)} |"
            f" {fmt(values(reps, 'migrate', 'copy', 'tables', t, 'index'), 0)} |"
        )
    L.append("")
    return L


def lag_section(res: dict, labels: list[str]) -> list[str]:
    """How the method works, then one table per slon setting."""
    meta = res["meta"]
    L = [
        "## Lag under load",
        "",
        (
            f"pgbench on db01 (local socket, `-c {meta['clients']} -j {meta['threads']}"
            f" -T {meta['load_seconds']} -R rate`, one `INSERT INTO {WRITER_TABLE}` per"
            " transaction) with db02 subscribed. Sampled every second: **sl_status**"
            " lag (`st_lag_time` on db01: age of the newest event db02 has confirmed,"
            " as far as db01 knows) and **data lag** (age of the oldest row on db01"
            f" not yet on db02, from the newest `{WRITER_TABLE}.id` on each side, ±1"
            " s). Catch-up: seconds after the load until db02 had every row. *Keeps"
            " up*: the rate was delivered (≥ 90 % of the target), the data lag does"
            " not grow in the second half of the load (its maximum at most the larger"
            f" of {GROWTH_SLACK:g} s and sync_interval_timeout above the first half's:"
            " slon's listener polls for new events at up to that interval) and db02"
            " caught up afterwards. *Bounded*: keeps up and sl_status p95 <"
            f" {meta['lag_bound']:g} s."
        ),
        "",
    ]
    for label in labels:
        L += lag_table(res, label)
    return L


def lag_title(reps, label) -> str:
    """A slon setting as the lag tables name it."""
    s = next((setting(r, label) for r in reps if setting(r, label)), {})
    txt = (
        f"sync_interval={s.get('sync_interval')} ms,"
        f" sync_interval_timeout={s.get('sync_interval_timeout')} ms"
    )
    return (
        f"`{label}` ({txt})"
        if label != "default"
        else f"default ({txt}, as `inv config` writes them)"
    )


def lag_table(res: dict, label: str) -> list[str]:
    """One slon setting: a row per rate, then the highest rates that are bounded and
    that keep up."""
    meta, reps = res["meta"], res["reps"]
    L = [
        f"Slon setting {lag_title(reps, label)}:",
        "",
        (
            "| target tps | achieved tps | sl_status lag median / p95 (s) | max events"
            " behind | data lag median / p95 (s) | data lag max, 1st / 2nd half (s) |"
            " catch-up (s) | bounded |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    best = keeps = None
    for rate in meta["rates"]:
        st = lag_stats(reps, label, rate)
        if not st:
            continue
        up, ok, why = verdict(st, meta["lag_bound"], slack_of(reps, label))
        if ok:
            best = rate if best is None or rate > best else best
        if up:
            keeps = rate if keeps is None or rate > keeps else keeps
        L.append(
            f"| {rate} | {fmt([s['tps'] for s in st], 0)} |"
            f" {fmt([s['lag_median'] for s in st])} / {fmt([s['lag_p95'] for s in st])}"
            f" | {fmt([s['events_max'] for s in st], 0)} |"
            f" {fmt([s['data_median'] for s in st])} /"
            f" {fmt([s['data_p95'] for s in st])} |"
            f" {fmt([s.get('data_max_1st') for s in st])} /"
            f" {fmt([s.get('data_max_2nd') for s in st])} |"
            f" {fmt([s['catch_up'] for s in st], 0)} | {why} |"
        )
    return L + [
        "",
        (
            "Highest rate with bounded lag:"
            f" **{f'{best} tps' if best is not None else 'none'}**; highest rate db02"
            f" keeps up with: **{f'{keeps} tps' if keeps is not None else 'none'}** (of"
            f" the rates tried: {', '.join(map(str, meta['rates']))})."
        ),
        "",
    ]


def switch_section(res: dict, labels: list[str]) -> list[str]:
    """Switchover and switchback with the writer running: a row per setting and
    direction."""
    meta, reps = res["meta"], res["reps"]
    L = [
        "## Switchover under load",
        "",
        f"`testbed.writer.Writer` inserting into {WRITER_TABLE} at"
        f" {meta['writer_rate']:g}/s (one psql over SSH "
        f"per insert, so the achieved rate is lower) while `inv switchover` and then"
        f" `inv switchback` run. "
        f'Blocked writes: as the tool reports it ("blocked for at most N s": the slonik'
        f" script from LOCK "
        f"SET to the confirmed MOVE SET) and as the writer saw it (first refused or"
        f" stalled write to the "
        f"first accepted one on the new origin). Before each, the bench waits until"
        f" sl_status on the "
        f"origin shows no backlog older than 8 s (stricter than `inv switchover`, which"
        f" refuses more than "
        f"one unconfirmed event older than `--max-lag`, {MAX_LAG:g} s): that wait is"
        " shown too. Every "
        f"acknowledged write was checked to be on db01 exactly once.",
        "",
        (
            "| slon setting | direction | wait for the lag check (s) | end to end (s) |"
            " blocked, tool (s) | blocked, writer (s) |"
        ),
        "|---|---|---:|---:|---:|---:|",
    ]
    writer_lines = []
    for label in labels:
        sw = [s for r in reps if (s := get(setting(r, label), "switch"))]
        if not sw:
            continue
        for name in ("switchover", "switchback"):
            L.append(
                f"| `{label}` | {name} | {fmt([get(s, name, 'settle') for s in sw], 0)}"
                f" | {fmt([get(s, name, 'wall') for s in sw])} |"
                f" {fmt([get(s, name, 'tool') for s in sw])} |"
                f" **{fmt([get(s, name, 'writer') for s in sw])}** |"
            )
        writer_lines.append(
            f"`{label}`: {fmt([get(s, 'writer_stats', 'achieved_rate') for s in sw])}"
            " writes/s achieved,"
            f" {sum(get(s, 'writer_stats', 'refused') or 0 for s in sw)} refused while"
            " locked,"
            f" {sum(get(s, 'writer_stats', 'lost_or_doubled') or 0 for s in sw)}"
            " acknowledged writes lost or doubled"
        )
    return L + ["", "Writer: " + "; ".join(writer_lines) + ".", ""]


def footer(res: dict, labels: list[str]) -> list[str]:
    """How the settings were applied, the plot, and how to read and rerun."""
    L = []
    if labels:
        L += [
            (
                "Settings other than the default are applied after `inv migrate` by"
                " editing `/etc/slony1/node*/slon.conf` on db02 and restarting the"
                " slons (`inv slons --stop`, `inv slons`). Tool defaults:"
                f" {res.get('defaults', {})}."
            ),
            "",
        ]
    return L + [
        (
            "![lag over time per rate, and the writer during switchover and"
            " switchback](lag.png)"
        ),
        "",
        "## How to read and rerun",
        "",
        (
            "- `make bench` (or `.venv/bin/python bench/run.py --help`) brings up its"
            " own testbed, measures, writes this file, `benchmarks.json` (every sample)"
            " and `lag.png`, then removes the testbed. `bench/run.py --render"
            " docs/benchmarks.json` rewrites the report from the JSON."
        ),
        (
            "- Slony's copy time is slon's own figure; the COPY/index split and the"
            " waits come from whole-second log timestamps. The dump/restore phases come"
            " from the arrival times of `pg_restore -v` lines."
        ),
        (
            "- `pg_dump -Fc` compresses (CPU on db02, where both pg_dump and pg_restore"
            " run), and pg_restore validates foreign keys; Slony's copy does neither"
            " (the schema step created the keys beforehand and slon loads in replica"
            " mode)."
        ),
        (
            "- sl_status lag includes how long db01 takes to learn of db02's"
            " confirmation: slon's listener on db01 polls db02 at up to"
            " `sync_interval_timeout`, so an idle or lightly loaded pair shows a"
            " sawtooth up to about twice that, although the rows are there; the data"
            " lag shows the rows."
        ),
        "",
    ]


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reps = res["reps"]
    labels = settings_of(reps)
    rep = next((r for r in reversed(reps) if r.get("settings")), None)
    if rep is None:
        return
    pooled = pooled_run(reps)
    rows = len(labels) + (1 if pooled else 0)
    fig, axes = plt.subplots(rows, 2, figsize=(14, 4.2 * rows), squeeze=False)
    top = max(
        (
            x[2]
            for label in labels
            for run in (setting(rep, label) or {}).get("lag", [])
            for x in run["samples"]
        ),
        default=1,
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, label in enumerate(labels):
        s = setting(rep, label) or {}
        ax = axes[row][0]
        for i, run in enumerate(s.get("lag", [])):
            c = colors[i % len(colors)]
            t = [x[0] - run["start"] for x in run["samples"]]
            ax.plot(
                t,
                [x[2] for x in run["samples"]],
                color=c,
                label=f"{run['rate']} tps: sl_status",
            )
            ax.plot(
                t,
                [x[3] for x in run["samples"]],
                color=c,
                linestyle="--",
                label=f"{run['rate']} tps: data",
            )
        if s.get("lag"):
            ax.axvspan(
                0,
                s["lag"][0]["end"] - s["lag"][0]["start"],
                color="grey",
                alpha=0.12,
                label="pgbench",
            )
        ax.set_ylim(
            0, top * 1.05
        )  # the same scale in every row: before and after compare at a glance
        ax.set_title(f"lag under load, slon setting {label} (rep {rep['rep']})")
        ax.set_xlabel("seconds since pgbench started")
        ax.set_ylabel("lag (s)")
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
        ax = axes[row][1]
        sw = s.get("switch")
        if sw:
            ok = [a for a in sw["attempts"] if a[2]]
            bad = [a for a in sw["attempts"] if not a[2]]
            ax.scatter(
                [a[0] for a in ok],
                [a[1] for a in ok],
                s=6,
                color="tab:green",
                label="write accepted",
            )
            ax.scatter(
                [a[0] for a in bad],
                [a[1] for a in bad],
                s=14,
                marker="x",
                color="tab:red",
                label="write refused",
            )
            for name, c in (("switchover", "tab:blue"), ("switchback", "tab:purple")):
                if sw.get(name):
                    ax.axvspan(
                        sw[name]["start"],
                        sw[name]["end"],
                        color=c,
                        alpha=0.12,
                        label=f"inv {name} ({sw[name]['wall']:.0f} s)",
                    )
                    if sw[name].get("writer") is not None:
                        first = next(
                            (
                                a
                                for a in sw["attempts"]
                                if a[0] >= sw[name]["start"] and (not a[2] or a[1] > 2)
                            ),
                            None,
                        )
                        if first:
                            ax.axvspan(
                                first[0],
                                first[0] + sw[name]["writer"],
                                color=c,
                                alpha=0.35,
                                label=(
                                    f"{name}: writes blocked {sw[name]['writer']:.1f} s"
                                ),
                            )
            ax.set_title(f"writer during switchover and switchback, setting {label}")
            ax.set_xlabel("seconds since the writer started")
            ax.set_ylabel("insert latency over SSH (s)")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        else:
            ax.set_axis_off()
    if pooled:
        plot_pooled(axes[-1], pooled)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def pooled_run(reps: list[dict]) -> dict | None:
    """The PgBouncer phase the plot shows: the last repetition's that kept the
    application's attempts."""
    return next(
        (
            r["pooler"]
            for r in reversed(reps)
            if (r.get("pooler") or {}).get("attempts")
        ),
        None,
    )


def pooled_moves(
    pooled: dict,
) -> tuple[list[tuple[str, dict]], tuple[str, dict] | None]:
    """The moves of a PgBouncer phase (name, figures), and the one where the
    application waited longest."""
    moves = [
        (name, pooled[name])
        for name in ("switchover", "switchback")
        if pooled.get(name)
    ]
    return moves, max(moves, key=lambda m: m[1].get("stall") or 0, default=None)


def plot_pooled(axes, pooled: dict) -> None:
    """The application through PgBouncer: each insert's latency over the whole run
    (left), and around the move where it waited longest (right)."""
    ok = [a for a in pooled["attempts"] if a[2]]
    bad = [a for a in pooled["attempts"] if not a[2]]
    moves, worst = pooled_moves(pooled)
    for ax, zoom in ((axes[0], None), (axes[1], worst)):
        shown = (
            ok
            if zoom is None
            else [a for a in ok if zoom[1]["start"] - 1 <= a[0] <= zoom[1]["end"] + 1]
        )
        ax.scatter(
            [a[0] for a in shown],
            [a[1] for a in shown],
            s=4,
            color="tab:green",
            label="insert acknowledged",
        )
        if bad:
            ax.scatter(
                [a[0] for a in bad],
                [a[1] for a in bad],
                s=14,
                marker="x",
                color="tab:red",
                label="error",
            )
        for name, m in moves:
            if zoom is None or name == zoom[0]:
                ax.axvspan(
                    m["start"],
                    m["end"],
                    color="tab:blue" if name == "switchover" else "tab:purple",
                    alpha=0.12,
                    label=(
                        f"inv {name} --pooler app ({m['wall']:.1f} s); longest wait "
                        f"{m['stall']:.2f} s"
                    ),
                )
        if zoom is not None:
            ax.set_xlim(zoom[1]["start"] - 1, zoom[1]["end"] + 1)
        ax.set_title(
            f"the application through PgBouncer at {pooled['rate']:g} inserts/s"
            + ("" if zoom is None else f": {zoom[0]}, close up")
        )
        ax.set_xlabel("seconds since the application started")
        ax.set_ylabel("insert latency (s)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)


def rounded(x, digits: int = 3):
    if isinstance(x, float):
        return round(x, digits)
    if isinstance(x, dict):
        return {k: rounded(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [rounded(v, digits) for v in x]
    return x


def write(res: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # one line per sample or attempt would make a long file: nested lists stay on one
    # line
    text = json.dumps(rounded(res), indent=1, default=str)
    text = re.sub(
        r"\[\s+([^\[\]{}]*?)\s+\]",
        lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]",
        text,
    )
    (out / "benchmarks.json").write_text(text + "\n")
    (out / "benchmarks.md").write_text(markdown(res) + "\n")
    plot(res, out / "lag.png")
