"""How well a teacher trained on pseudo-hrT2 segments REAL hrT2, under several recipe settings.

For each setting, trains the round-0 teacher (``cosmos selftrain --rounds 0``: the pipeline's own
path) on the same labelled pseudo-hrT2 and scores it on labelled real hrT2 validation scans, then
prints one row per setting: mean, VS and cochlea Dice, and the wall time. This is the transfer
question self-training depends on: the teacher is only as useful as what it finds on real hrT2.
Not a test: the figures depend on the data and the translation.

    python benchmarks/teacher_transfer.py --pseudo DIR --target DIR --val DIR --val-labels DIR \
        --out DIR [--profile tiny] [--set KEY=VALUE ...] \
        [--setting NAME=KEY=VALUE[,KEY=VALUE...] ...]

Default settings: ``none`` (structure intensity augmentation off) and ``structure`` (on, p=1).
``--set`` applies to every setting (e.g. ``--set segmentation.epochs=24``). A setting already
scored in ``--out`` is not retrained (``cosmos selftrain`` resumes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_SETTINGS = {
    "none": ["segmentation.structure_intensity_p=0.0"],
    "structure": ["segmentation.structure_intensity_p=1.0"],
}


def parse_setting(text: str) -> tuple[str, list[str]]:
    """``NAME=KEY=VALUE[,KEY=VALUE...]`` -> (NAME, [KEY=VALUE, ...])."""
    name, sep, rest = text.partition("=")
    if not sep or not name or "=" not in rest:
        raise SystemExit(f"--setting {text!r}: expected NAME=KEY=VALUE[,KEY=VALUE...]")
    return name, [kv for kv in rest.split(",") if kv]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pseudo", required=True, help="labelled pseudo-hrT2 (cosmos translator convert)")
    ap.add_argument("--target", required=True, help="real hrT2 training images (unused by a teacher; required)")
    ap.add_argument("--val", required=True, help="real hrT2 validation images")
    ap.add_argument("--val-labels", required=True, help="their labels")
    ap.add_argument("--out", required=True, help="one sub-folder per setting")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--set", action="append", default=[], help="override for every setting (repeatable)")
    ap.add_argument("--setting", action="append", default=[], help="NAME=KEY=VALUE[,KEY=VALUE...] (repeatable)")
    args = ap.parse_args(argv)

    settings = dict(parse_setting(s) for s in args.setting) if args.setting else DEFAULT_SETTINGS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, overrides in settings.items():
        run_dir = out / name
        cmd = [
            sys.executable, "-c", "import sys; from cosmos.cli import main; sys.exit(main())", "selftrain",
            "--pseudo", args.pseudo, "--target", args.target,
            "--val", args.val, "--val-labels", args.val_labels,
            "--out", str(run_dir), "--rounds", "0", "--profile", args.profile,
        ]  # fmt: skip
        for kv in [*args.set, *overrides]:
            cmd += ["--set", kv]
        print(f"[{name}] {' '.join(overrides) or '(profile as is)'}", flush=True)
        t0 = time.monotonic()
        with open(out / f"{name}.log", "a") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        wall = time.monotonic() - t0
        metrics_file = run_dir / "metrics.json"
        if rc != 0 or not metrics_file.is_file():
            print(f"[{name}] failed (rc {rc}); see {out / f'{name}.log'}", flush=True)
            continue
        summary = json.loads(metrics_file.read_text())["summary"]
        row = {
            "setting": name,
            "overrides": [*args.set, *overrides],
            "mean": summary["mean"]["dice_mean"],
            "VS": summary["VS"]["dice_mean"],
            "cochlea": summary["cochlea"]["dice_mean"],
            "wall_s": round(wall, 1),
        }
        rows.append(row)
        print(f"[{name}] mean {row['mean']:.3f}  VS {row['VS']:.3f}  cochlea {row['cochlea']:.3f}  ({wall:.0f} s)")
    (out / "teacher_transfer.json").write_text(json.dumps(rows, indent=1))
    print(f"{'setting':<14}{'mean':>8}{'VS':>8}{'cochlea':>9}{'wall s':>9}")
    for r in rows:
        print(f"{r['setting']:<14}{r['mean']:>8.3f}{r['VS']:>8.3f}{r['cochlea']:>9.3f}{r['wall_s']:>9.0f}")
    return 0 if len(rows) == len(settings) else 1


if __name__ == "__main__":
    sys.exit(main())
