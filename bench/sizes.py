#!/usr/bin/env python3
"""`make bench-sizes`: the migration's cost as the database grows (issue 23).

For each size (--sizes, MB; 0.2 and 1 GB by default, --big adds 5 GB), on a fresh
bench testbed: `inv migrate` end to end while a writer inserts into the origin
(--writer-rate/s) and an updater rewrites 200 rows of websites_domain every 2 s
there (dead rows for autovacuum); meanwhile the origin is sampled every 2 s: the age of
its oldest snapshot (the copy's transaction holds one for as long as it runs) and the
updated table's dead rows (autovacuum cannot remove what that snapshot may still see).
Then: the copy's time (slon log), the tool's overhead (migrate minus the copy), and the
data lag after the copy (until the subscriber has every acknowledged row). Writes
docs/sizes.md and docs/sizes.json. Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402  (the bench's testbed, its helpers and its environment)

from testbed.writer import Writer  # noqa: E402

SAMPLE = """SELECT coalesce(max(extract(epoch FROM now() - xact_start))
                      FILTER (WHERE backend_xmin IS NOT NULL), 0),
       (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'websites_domain')
  FROM pg_stat_activity"""
UPDATE = (
    "UPDATE websites_domain SET name = name WHERE id IN"
    " (SELECT id FROM websites_domain ORDER BY random() LIMIT 200)"
)


class Origin(threading.Thread):
    """Updates and samples db01 every second or two until stopped (at most an hour)."""

    def __init__(self, bed):
        super().__init__(daemon=True)
        self.bed, self.stop, self.samples = bed, threading.Event(), []

    def run(self) -> None:
        end, t0 = time.monotonic() + 3600, time.monotonic()
        while not self.stop.is_set() and time.monotonic() < end:
            db01 = self.bed["db01"]
            db01.try_psql(UPDATE, run.DB, timeout=30, app=True)
            row = db01.psql(SAMPLE, run.DB)[0]
            self.samples.append(
                (time.monotonic() - t0, float(row[0]), int(row[1] or 0))
            )
            self.stop.wait(2)


def one_size(size_mb: int, args) -> dict:
    run.fresh_testbed(size_mb)
    bed = run.open_bed()
    db_bytes = int(bed["db01"].value(f"SELECT pg_database_size('{run.DB}')"))
    writer = Writer(
        str(run.tb.current().ssh_config),
        tag=f"size{size_mb}",
        rate=args.writer_rate,
        max_seconds=4 * 3600,
        max_count=int(args.writer_rate * 4 * 3600),
    )
    origin = Origin(bed)
    writer.start()
    origin.start()
    try:
        migrated = run.migrate(bed)
        done = time.monotonic()
        caught = None
        top = int(bed["db01"].value(run.TOP_SQL, run.DB))
        while time.monotonic() - done < 600:
            if int(bed["db02"].value(run.TOP_SQL, run.DB)) >= top:
                caught = time.monotonic() - done
                break
            time.sleep(0.5)
    finally:
        origin.stop.set()
        writer.stop()
        origin.join(30)
    writer.check_acknowledged(bed["db02"], timeout=60)
    snapshots = [s[1] for s in origin.samples]
    dead = [s[2] for s in origin.samples]
    result = {
        "size_mb": size_mb,
        "bytes": db_bytes,
        "migrate": migrated["wall"],
        "copy": migrated["copy"]["seconds"],
        "copy_data": migrated["copy"]["data"],
        "copy_index": migrated["copy"]["index"],
        "overhead": migrated["overhead"],
        "data_lag_after_copy": caught,
        "oldest_snapshot_max": max(snapshots) if snapshots else None,
        "dead_rows_max": max(dead) if dead else None,
        "dead_rows_end": dead[-1] if dead else None,
        "acknowledged": len(writer.acknowledged()),
        "samples": origin.samples,
    }
    bed.hosts.__exit__()
    return result


def markdown(results: dict) -> str:
    lines = [
        "# The migration as the database grows",
        "",
        f"`bench/sizes.py` on {results['meta']['date']}: {results['meta']['machine']};"
        f" a writer at {results['meta']['writer_rate']:g} inserts/s and 200 rows of"
        " websites_domain updated every 2 s on db01 throughout. Seconds. Each size on a"
        " fresh testbed: migrate installs Slony's packages too (about 5 s of the tool's"
        " overhead; bench/run.py measures it with them installed).",
        "",
        "| database | migrate | Slony's copy (COPY, indexes) | tool overhead | data lag"
        " after the copy | origin's oldest snapshot held | dead rows not removable"
        " (max) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["sizes"]:
        lag = r["data_lag_after_copy"]
        lines.append(
            f"| {r['bytes'] / 1e9:.2f} GB | {r['migrate']:.1f} | {r['copy']:.1f}"
            f" ({r['copy_data']:.0f}, {r['copy_index']:.0f}) | {r['overhead']:.1f} |"
            f" {f'{lag:.1f}' if lag is not None else 'not caught up'} |"
            f" {r['oldest_snapshot_max']:.0f} | {r['dead_rows_max']} |"
        )
    lines += [
        "",
        "The copy holds one snapshot on the origin for as long as it runs: the oldest"
        " snapshot's age is the copy's time, and the updated table's dead rows"
        " (`n_dead_tup`) grow until it ends; autovacuum removes them afterwards.",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="200,1000", help="sizes in MB (default 200,1000)")
    p.add_argument("--big", action="store_true", help="add 5000 MB (takes long)")
    p.add_argument(
        "--writer-rate", type=float, default=5.0, help="inserts/s (default 5)"
    )
    p.add_argument(
        "--out", default=str(run.ROOT / "docs"), help="where sizes.md/.json go"
    )
    args = p.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x] + ([5000] if args.big else [])
    results: dict = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": ", ".join(f"{k} {v}" for k, v in run.machine().items()),
            "writer_rate": args.writer_rate,
        },
        "sizes": [],
    }
    out = Path(args.out)
    try:
        for size in sizes:
            run.say(f"=== {size} MB")
            results["sizes"].append(one_size(size, args))
            (out / "sizes.json").write_text(json.dumps(results, indent=1))
    finally:
        run.tb.compose("down", "-v", "--remove-orphans", check=False)
    (out / "sizes.json").write_text(json.dumps(results, indent=1))
    (out / "sizes.md").write_text(markdown(results) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
