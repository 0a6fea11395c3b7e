"""Wall time of the README demo (``cosmos run`` with no arguments: phantom, tiny profile) per stage.

Target (issue: the product end to end): <= 10 minutes wall on 2 CPU cores from a fresh output
folder. Prints one line per pipeline stage (its own compute seconds, as the component recorded
them in ``OUT/work/timings.jsonl``), the stages grouped as the paper's phases, and the total wall
time against the target. Not a test.

    python benchmarks/demo_time.py [--out DIR] [--data DIR] [--profile tiny] [--set KEY=VALUE ...]

``--data``: a crossMoDA folder instead of the built-in phantom (with ``target_validation_labels/``
for the accuracy lines), e.g. ``cosmos phantom DIR --scale full`` for life-sized heads.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

TARGET_S = 600.0
PHASES = (
    ("ingest / phantom / ROI crop", r"ingest.*|crop_roi.*"),
    ("stage 1: translator", r"train_translator.*|translate.*"),
    ("stages 2-4: nnU-Net rounds", r"prepare_round.*|train_fold.*|predict.*|start_round.*"),
    ("evaluation, registry, report", r"evaluate.*|register.*|report.*"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a fresh temporary folder, removed)")
    parser.add_argument("--data", default=None, help="crossMoDA folder (default: the built-in phantom)")
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from local_overhead import run_fresh

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="cosmos-demo-"))
    run = run_fresh(out, args.profile, args.overrides, data=args.data)
    if run is None:
        return 2
    _cfg, wall, rows = run
    print(f"\n{'stage':<32} {'compute s':>10}")
    for r in rows:
        print(f"{r['stage']:<32} {r['seconds']:>10.1f}")
    phases: dict[str, float] = defaultdict(float)
    for r in rows:
        for name, pattern in PHASES:
            if re.fullmatch(pattern, r["stage"]):
                phases[name] += r["seconds"]
                break
        else:
            phases["other"] += r["seconds"]
    print("\nper phase (compute s; parallel folds summed):")
    for name, secs in phases.items():
        print(f"  {name:<30} {secs:8.1f}")
    summary_file = out / "summary.json"
    if summary_file.is_file():  # the accuracy targets of the demo: final >= 0.75 (VS >= 0.80, cochlea >= 0.65)
        import json

        summary = json.loads(summary_file.read_text())
        rounds = summary["rounds"]
        print("\nper round (target_validation, mean ± std):")
        for r in rounds:
            s = ((r.get("metrics") or {}).get("summary")) or {}
            cells = "  ".join(f"{k} {s[k]['dice_mean']:.3f}" for k in ("VS", "cochlea", "mean") if k in s)
            print(
                f"  {r['name']:<10} Dice {cells}  kept {len(r.get('kept') or [])}"
                f"{'  <- champion' if r.get('champion') else ''}"
            )
        dice = [((r.get("metrics") or {}).get("summary") or {}).get("mean", {}).get("dice_mean") for r in rounds]
        if len(dice) > 1 and None not in (dice[0], dice[-1]):
            print(f"  last student - teacher: {dice[-1] - dice[0]:+.3f} mean Dice")
        if (summary.get("verdict") or {}).get("line"):  # the run's own label-free verdict (no labels read)
            print(f"  {summary['verdict']['line']}")
    verdict = "meets" if wall <= TARGET_S else "MISSES"
    print(
        f"\nprofile {args.profile}: wall {wall:.1f} s ({wall / 60:.1f} min) -- {verdict} the "
        f"{TARGET_S / 60:.0f}-minute target"
    )
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
