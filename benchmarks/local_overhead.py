"""Orchestration overhead of ``cosmos run`` (kfp.local) against the compute of its components.

Runs the whole pipeline locally into a fresh output folder and compares
  * wall   = the run's wall-clock time, with
  * compute = the sum of every stage's own compute seconds (each component appends them to
    ``OUT/work/timings.jsonl``: the time inside the component function, from its first line to
    its last, i.e. the library work plus imports).
overhead = wall - compute: kfp.local's process starts, executor set-up, artifact bookkeeping and
scheduling gaps. Target: overhead <= 5% of wall.

Fold tasks of a round run two at a time, so on a multi-core machine "compute" (a sum) can exceed
"wall"; the script therefore also reports the critical path (the longest fold per round counted
once), which is the fair figure when folds overlap.

    python benchmarks/local_overhead.py [--out DIR] [--profile tiny] [--set KEY=VALUE ...] [--keep]

Prints a table per stage and the totals. Not a test.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def critical_path_seconds(rows: list[dict]) -> float:
    """Sum of stage times with each round's parallel folds counted as their maximum."""
    total = 0.0
    folds: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        m = re.fullmatch(r"train_fold(\d+)_(\d+)", r["stage"])
        if m:
            folds[m.group(1)].append(r["seconds"])
        else:
            total += r["seconds"]
    return total + sum(max(v) for v in folds.values())


def run_fresh(out: Path, profile: str, overrides: list[str], data: str | None = None):
    """Run ``cosmos run``'s pipeline into a fresh ``out`` (on ``data``; None = the built-in phantom);
    (cfg, wall seconds, stage rows) or None if not fresh."""
    from cosmos.config import load_config
    from cosmos.logs import setup_logging
    from pipelines.local_run import run_local

    setup_logging("WARNING")
    cfg = load_config(profile, overrides=overrides)
    if (out / "work").exists():
        print(f"{out} already holds a run; stages would be reused. Use a fresh --out.", file=sys.stderr)
        return None
    t0 = time.perf_counter()
    result = run_local(cfg, out, data=data, profile=profile)
    wall = time.perf_counter() - t0
    return cfg, wall, [r for r in result.stage_seconds if not r.get("reused")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a fresh temporary folder)")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keep", action="store_true", help="keep the temporary output folder")
    args = parser.parse_args(argv)

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="cosmos-overhead-"))
    run = run_fresh(out, args.profile, args.overrides)
    if run is None:
        return 2
    cfg, wall, rows = run
    compute = sum(r["seconds"] for r in rows)
    critical = critical_path_seconds(rows)

    print(f"\n{'stage':<30} {'compute s':>10}")
    for r in rows:
        print(f"{r['stage']:<30} {r['seconds']:>10.1f}")
    print(
        f"\nprofile {args.profile}, {len(rows)} tasks, folds {cfg.segmentation.folds}, "
        f"rounds 1+{cfg.selftraining.rounds}"
    )
    print(f"wall time                      {wall:10.1f} s")
    print(
        f"summed component compute       {compute:10.1f} s   overhead {wall - compute:+8.1f} s "
        f"({(wall - compute) / wall:+.1%} of wall)"
    )
    print(
        f"critical-path compute          {critical:10.1f} s   overhead {wall - critical:+8.1f} s "
        f"({(wall - critical) / wall:+.1%} of wall; target <= 5%)"
    )
    print(
        json.dumps(
            {
                "wall_s": round(wall, 2),
                "compute_sum_s": round(compute, 2),
                "compute_critical_path_s": round(critical, 2),
                "tasks": len(rows),
            }
        )
    )
    if not args.out and not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
