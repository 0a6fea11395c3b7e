"""Translation fidelity per translator profile: does the pseudo-hrT2 look like hrT2? (no target labels)

    python benchmarks/translator_fidelity.py [--data DIR] [--out DIR] [--profiles tiny,small]
                                             [--set translator.KEY=VALUE ...]

For each profile: train the translator on a phantom (made with the profile's phantom sizes when
``--data`` is not given), convert the source ceT1, and print the wall time and the label-free
fidelity figures of the converted cases (``cosmos.translation.fidelity``; ``OUT/PROFILE/pseudo/
fidelity.json``). Two reference rows frame the numbers:

* ``ceT1 (untranslated)``  - the ceT1 inputs scored as if they were pseudo-hrT2: what no translation gives;
* ``real hrT2 (labelled)`` - the phantom's target_validation hrT2 with its labels (only a phantom has
  them): what a perfect translation gives.

``--set`` overrides apply to every profile (e.g. compare ``translator.loss_preset=paper``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

KEYS = ("w1", "vs_darker_than_fluid", "vs_fluid_contrast", "cochlea_bright")


def _row(name: str, fid: dict, seconds: float | None = None) -> str:
    vals = " ".join(f"{fid.get(k):>8.3f}" if isinstance(fid.get(k), (int, float)) else f"{'n/a':>8}" for k in KEYS)
    return f"{name:<28} {vals} {'' if seconds is None else f'{seconds:8.0f}'}"


def references(data: Path) -> list[str]:
    """Rows for the untranslated ceT1 and the labelled real hrT2 (when the phantom has labels)."""
    from cosmos.data import nifti
    from cosmos.data.layout import discover
    from cosmos.translation import fidelity
    from cosmos.translation.slices import to_slices_last

    ds = discover(data)

    def vol(path, label=False):
        img = nifti.load(path, label=label)
        return to_slices_last(img.data, img.affine)[0]

    real = [vol(c.image) for c in ds.target]
    ref_q = fidelity.reference_quantiles(real)
    rows = [
        _row(
            "ceT1 (untranslated)",
            fidelity.summarise(
                [fidelity.case_figures(vol(c.image), vol(c.label, True), ref_q) for c in ds.source], len(real)
            ).to_dict(),
        )
    ]
    val = [c for c in ds.validation if c.label is not None]
    if val:
        rows.append(
            _row(
                "real hrT2 (labelled)",
                fidelity.summarise(
                    [fidelity.case_figures(vol(c.image), vol(c.label, True), ref_q) for c in val], len(real)
                ).to_dict(),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="crossMoDA root (default: a phantom per profile under --out)")
    ap.add_argument("--out", default="/tmp/cosmos-translator-fidelity")
    ap.add_argument("--profiles", default="tiny,small")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)

    from cosmos.config import load_config
    from cosmos.data.phantom import make_phantom
    from cosmos.translation.conversion import convert_source
    from cosmos.translation.training import train_translator

    out = Path(args.out)
    print(f"{'':<28} {'W1':>8} {'VS<fluid':>8} {'VScontr':>8} {'coch.br':>8} {'train s':>8}")
    for profile in [p for p in args.profiles.split(",") if p]:
        cfg = load_config(profile, overrides=args.overrides)
        data = (
            Path(args.data)
            if args.data
            else make_phantom(
                out / f"phantom-{profile}",
                n_source=cfg.phantom.n_source,
                n_target=cfg.phantom.n_target,
                n_val=cfg.phantom.n_val,
                seed=cfg.phantom.seed,
                scale=cfg.phantom.scale,
                preview=False,
            )
        )
        for line in references(data):
            print(f"{line}   [{profile} data]")
        run = out / profile
        t0 = time.time()
        res = train_translator(data, run, cfg, tracking_uri=f"sqlite:///{out / 'mlflow.db'}", register=False)
        secs = time.time() - t0
        convert_source(res.model_dir, data, run / "pseudo", cfg)
        fid = json.loads((run / "pseudo" / "fidelity.json").read_text())
        print(_row(f"{profile} translator", fid, secs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
