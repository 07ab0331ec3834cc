#!/usr/bin/env python3
"""`make bench` (second part): the switchover's window over many moves, as a
distribution (issue 23).

On the bench's own testbed (bench/run.py's: TESTBED_PROJECT slonybench), after `inv
migrate`, with autovacuum made eager on both servers (naptime 1 s, thresholds and
scale factors 0) and a writer running, --moves moves in each mode, alternating
switchover and switchback:
  direct: testbed.writer.Writer (one insert per SSH command, --writer-rate/s) into the
          origin; the window as the tool reports it and as the writer saw it;
  pooler: testbed/appwriter.py on app through PgBouncer (--app-rate/s), `--pooler app`;
          the application's longest wait and its errors.
Every move's phases come from `inv switchover --json`. Writes docs/window.md and
docs/window.json: p50, p95, p99 and the maximum of each figure, the slowest move's
phases, and what the slon logs say of deadlocks and worker restarts meanwhile.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402  (the bench's testbed, its helpers and its environment)
from parse import spread  # noqa: E402

from testbed.bed import CLUSTER  # noqa: E402
from testbed.writer import AppWriter, Writer  # noqa: E402

EAGER = {
    "autovacuum_naptime": "1",
    "autovacuum_vacuum_threshold": "0",
    "autovacuum_analyze_threshold": "0",
    "autovacuum_vacuum_scale_factor": "0",
    "autovacuum_analyze_scale_factor": "0",
    "autovacuum_vacuum_insert_threshold": "0",
    "autovacuum_vacuum_insert_scale_factor": "0",
}
PHASES = ("lock", "sync", "move", "takeover", "pause", "resume")


def eager_autovacuum(bed) -> None:
    for name in ("db01", "db02"):
        sql = "".join(f"ALTER SYSTEM SET {k} = {v};\n" for k, v in EAGER.items())
        bed[name].psql(sql + "SELECT pg_reload_conf();")
    run.say(
        "autovacuum eager on both servers: "
        + ", ".join(f"{k}={v}" for k, v in EAGER.items())
    )


def slon_events(bed, since_lines: dict[str, int]) -> dict:
    """Deadlocks and worker restarts the slon logs on db02 wrote after `since_lines`."""
    out = {"deadlocks": 0, "restarts": 0}
    for log, start in since_lines.items():
        text = bed["db02"].sudo(f"tail -n +{start + 1} {log}", check=False).stdout
        out["deadlocks"] += text.count("deadlock detected")
        out["restarts"] += text.count("restart of worker")
    return out


def log_lines(bed) -> dict[str, int]:
    return {
        log: int(bed["db02"].sudo(f"wc -l < {log}", check=False).stdout.strip() or 0)
        for log in (CLUSTER.slon_log(n) for n in CLUSTER.nodes)
    }


def moves(bed, args, mode: str) -> dict:
    """--moves moves in one mode; every move's figures, and the writer's."""
    tag = f"win{mode}{time.strftime('%H%M%S')}"
    if mode == "pooler":
        bed.reset_pooler()
        writer = AppWriter(
            str(run.tb.current().ssh_config),
            tag=tag,
            rate=args.app_rate,
            max_seconds=3600,
            max_count=int(args.app_rate * 3600),
        )
    else:
        writer = Writer(
            str(run.tb.current().ssh_config),
            tag=tag,
            rate=args.writer_rate,
            max_seconds=3600,
            max_count=int(args.writer_rate * 3600),
        )
    before = log_lines(bed)
    out: list[dict] = []
    run.settle(bed)
    writer.start()
    try:
        time.sleep(5)
        for i in range(args.moves):
            name, origin, receiver = run.MOVES[i % 2]
            run.settle(bed, max_lag=8, origin=origin, receiver=receiver, rows=False)
            since = time.monotonic()
            extra = ("--pooler", "app") if mode == "pooler" else ()
            done = run.inv(
                bed, name, *run.PAIR, *extra, "--json", timeout=900, echo=False
            )
            result = json.loads(
                next(l for _, l in reversed(done["lines"]) if l.startswith("{"))
            )
            time.sleep(3)
            move = {
                "name": name,
                "tool": result.get("blocked_seconds"),
                **result.get("phases", {}),
                "autovacuum_cancelled": sum(
                    "autovacuum worker(s)" in line for _, line in done["lines"]
                ),
                "woken": sum("woke it now" in line for _, line in done["lines"]),
                "polled": sum(
                    "not the set's origin yet" in line for _, line in done["lines"]
                ),
            }
            if mode == "pooler":
                writer.fetch()
                move["seen"] = writer.longest_stall(since)
                move["errors"] = sum(
                    1 for a in writer.attempts if a.start >= since and not a.ok
                )
            else:
                move["seen"] = writer.blocked_window(since)
            out.append(move)
            run.say(
                f"  {mode} move {i + 1}/{args.moves} {name}: tool {move['tool']} s, seen"
                f" {move['seen']} s; "
                + ", ".join(f"{p} {move[p]}" for p in PHASES if p in move)
            )
    finally:
        writer.stop()
    writer.check_acknowledged(bed["db01"], timeout=30)  # each acknowledged write once
    return {
        "moves": out,
        "acknowledged": len(writer.acknowledged()),
        "errors": sum(1 for a in writer.attempts if not a.ok)
        if mode == "pooler"
        else None,
        **slon_events(bed, before),
    }


def summary(mode: dict) -> dict:
    ms = mode["moves"]
    figures = {
        k: spread([m[k] for m in ms if m.get(k) is not None])
        for k in ("seen", "tool", *PHASES)
    }
    slowest = max(ms, key=lambda m: m.get("seen") or 0)
    return {"figures": figures, "slowest": slowest}


def fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def markdown(results: dict) -> str:
    lines = [
        "# The switchover's window over many moves",
        "",
        f"`bench/window.py` on {results['meta']['date']}: {results['meta']['machine']};"
        f" {results['meta']['size_mb']} MB; autovacuum eager on both servers"
        " (naptime 1 s, thresholds and scale factors 0); a writer throughout;"
        f" {results['meta']['moves']} moves per mode, switchover and switchback"
        " alternating. Seconds.",
        "",
    ]
    for mode, title, seen in (
        ("direct", "Without a pooler (writes refused, as the writer saw it)", "writer"),
        ("pooler", "Through PgBouncer (the application's longest wait)", "application"),
    ):
        if mode not in results:
            continue
        r = results[mode]
        s = summary(r)
        lines += [
            f"## {title}",
            "",
            "| figure | n | p50 | p95 | p99 | max |",
            "|---|---|---|---|---|---|",
        ]
        for key, label in (
            ("seen", f"window ({seen})"),
            ("tool", "window (tool)"),
            *((p, f"phase: {p}") for p in PHASES),
        ):
            f = s["figures"][key]
            if f["n"]:
                lines.append(
                    f"| {label} | {f['n']} | {fmt(f['p50'])} | {fmt(f['p95'])} |"
                    f" {fmt(f['p99'])} | {fmt(f['max'])} |"
                )
        slow = s["slowest"]
        lines += [
            "",
            f"Slowest move: {slow['name']}, {fmt(slow.get('seen'))} s ("
            + ", ".join(f"{p} {fmt(slow[p])}" for p in PHASES if p in slow)
            + f"). Acknowledged writes {r['acknowledged']}, each on db01 once"
            + (f"; errors {r['errors']}" if r.get("errors") is not None else "")
            + f". slon logs: {r['deadlocks']} deadlock(s), {r['restarts']} worker"
            " restart(s); the tool cancelled autovacuum in"
            f" {sum(1 for m in r['moves'] if m['autovacuum_cancelled'])} move(s), woke"
            f" slon in {sum(m['woken'] for m in r['moves'])}; the slon host's watch"
            " saw the takeover in"
            f" {sum(1 for m in r['moves'] if not m.get('polled', 1))} move(s).",
            "",
        ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--size-mb", type=int, default=200, help="database size (default 200)"
    )
    p.add_argument("--moves", type=int, default=32, help="moves per mode (default 32)")
    p.add_argument(
        "--writer-rate",
        type=float,
        default=10.0,
        help="the SSH writer's inserts/s without a pooler (default 10)",
    )
    p.add_argument(
        "--app-rate",
        type=float,
        default=100.0,
        help="the application's inserts/s through PgBouncer (default 100)",
    )
    p.add_argument(
        "--modes", default="direct,pooler", help="direct,pooler (default both)"
    )
    p.add_argument(
        "--reuse", action="store_true", help="the running bench testbed as it is"
    )
    p.add_argument("--keep", action="store_true", help="leave the testbed running")
    p.add_argument(
        "--out", default=str(run.ROOT / "docs"), help="where window.md/.json go"
    )
    return p.parse_args()


def main() -> int:
    args = parse_args()
    out = Path(args.out)
    results: dict = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": ", ".join(f"{k} {v}" for k, v in run.machine().items()),
            "size_mb": args.size_mb,
            "moves": args.moves,
        }
    }
    started = time.monotonic()
    try:
        if not args.reuse:
            run.fresh_testbed(args.size_mb)
        bed = run.open_bed()
        run.inv(bed, "migrate", *run.PAIR, timeout=3600, echo=False)
        eager_autovacuum(bed)
        for mode in args.modes.split(","):
            run.say(f"=== {mode}: {args.moves} moves")
            results[mode] = moves(bed, args, mode)
            (out / "window.json").write_text(json.dumps(results, indent=1))
    finally:
        results["meta"]["elapsed_s"] = round(time.monotonic() - started)
        if not args.keep and not args.reuse:
            run.tb.compose("down", "-v", "--remove-orphans", check=False)
    (out / "window.json").write_text(json.dumps(results, indent=1))
    (out / "window.md").write_text(markdown(results) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
