"""The Table-1 ablation (paper section 4.3) on one dataset, reusing work between rows.

Rows, all scored on the same target-validation scans with ``cosmos evaluate``'s metrics:

* ``source-only``          nnU-Net trained on ceT1 + labels, applied to hrT2 (no adaptation)
* ``DA w/o Seg.``          pure CycleGAN (``translator.segmentor=False``), nnU-Net on its pseudo-hrT2, no ST
* ``DA w/ Seg., w/o ST``   the target-aware translator; nnU-Net teacher = COSMOS round 0
* ``COSMOS (ST iter k)``   self-training students k = 1..K (the same run as the row above)
* ``oracle``               nnU-Net on labelled real hrT2 (only when target-training labels are given):
                           the supervised upper bound

and the gap closure ``(COSMOS - source-only) / (oracle - source-only)`` on mean Dice.

Every row is one call of the self-training loop (``rounds=0`` for the single-model rows) on a
different labelled "pseudo" folder, so the nnU-Net recipe is identical across rows. The
translator with segmentor is trained once and shared by the "DA w/ Seg." and COSMOS rows; the
COSMOS teacher *is* the "DA w/ Seg., w/o ST" model. Each row lives in its own folder under
``OUT`` and every stage below is resumable, so a killed benchmark re-run continues where it
stopped.

Models go to a separate MLflow experiment and registry names (``<name>-benchmark-<row>``) so a
benchmark never moves the ``champion`` alias of the production ``cosmos-segmenter``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from cosmos.config import CosmosConfig
from cosmos.data import layout
from cosmos.errors import CosmosError

log = logging.getLogger(__name__)

ROW_SOURCE_ONLY = "source-only"
ROW_DA_NO_SEG = "DA w/o Seg."
ROW_DA_SEG = "DA w/ Seg., w/o ST"
ROW_ORACLE = "oracle (supervised upper bound)"
TARGET_LABELS_DIR = "target_training_labels"


def cosmos_row(k: int) -> str:
    return f"COSMOS (ST iter{k})"


def _link_as_pseudo(images: list[layout.Case], labels_dir: Path | None, out: Path) -> Path:
    """A flat 'pseudo' folder whose images are ``images`` (symlinked): lets any labelled set train a row."""
    out.mkdir(parents=True, exist_ok=True)
    for case in images:
        label = case.label if case.label is not None else (labels_dir / layout.label_name(case.case_id)
                                                           if labels_dir else None)
        if label is None or not Path(label).is_file():
            raise CosmosError(f"{case.image}: no label for case {case.case_id} (needed for this benchmark row)")
        for src, name in ((case.image, layout.image_name(case.case_id, "hrT2pseudo")),
                          (Path(label), layout.label_name(case.case_id))):
            dst = out / name
            if dst.is_symlink() or dst.exists():
                if dst.resolve() == Path(src).resolve():
                    continue
                dst.unlink()
            os.symlink(Path(src).resolve(), dst)
    return out


def _row_cfg(cfg: CosmosConfig, row_key: str, rounds: int) -> CosmosConfig:
    t = cfg.tracking
    return cfg.with_overrides({
        "selftraining.rounds": rounds,
        "tracking.experiment": f"{t.experiment}-benchmark",
        "tracking.segmenter_model_name": f"{t.segmenter_model_name}-benchmark-{row_key}",
        "tracking.translator_model_name": f"{t.translator_model_name}-benchmark",
    })


def _summary_metrics(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if metrics is None else metrics.get("summary")


def run_benchmark(data_dir: str | Path, val_labels_dir: str | Path | None, out_dir: str | Path, cfg: CosmosConfig,
                  target_labels_dir: str | Path | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Run every ablation row (resumable) and write ``benchmark.{json,md,png}`` into ``out_dir``."""
    from cosmos.selftraining.loop import run_selftraining
    from cosmos.tracking import resolve_tracking_uri
    from cosmos.translation.conversion import convert_source
    from cosmos.translation.training import train_translator

    data = Path(data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = layout.discover(data, val_labels_dir)
    if not ds.source or not ds.target:
        raise CosmosError(f"{data}: the benchmark needs source_training/ and target_training/ cases")
    if not ds.validation or not ds.has_validation_labels:
        raise CosmosError(f"{data}: the benchmark needs target_validation/ images with labels "
                          "(target_validation_labels/ or --val-labels)")
    val_labels = Path(val_labels_dir) if val_labels_dir else data / layout.VALIDATION_LABELS_DIR
    tl = Path(target_labels_dir) if target_labels_dir else data / TARGET_LABELS_DIR
    uri = resolve_tracking_uri(tracking_uri or cfg.tracking.tracking_uri or None, out)
    K = cfg.selftraining.rounds
    timings: dict[str, float] = {}
    rows: list[dict[str, Any]] = []

    def selftrain(row_key: str, pseudo: Path, rounds: int):
        t0 = time.perf_counter()
        res = run_selftraining(pseudo, data / layout.TARGET_DIR, out / row_key, _row_cfg(cfg, row_key, rounds),
                               val_dir=data / layout.VALIDATION_DIR, val_labels_dir=val_labels, tracking_uri=uri)
        timings[row_key] = round(time.perf_counter() - t0, 1)
        return res

    # 1. source-only: nnU-Net on ceT1 itself
    src_pseudo = _link_as_pseudo(ds.source, None, out / "source_only_inputs")
    res = selftrain("source_only", src_pseudo, 0)
    rows.append({"name": ROW_SOURCE_ONLY, "metrics": res.rounds[0]["metrics"]})

    # 2. DA w/o Seg.: pure CycleGAN
    for key, segmentor in (("translator_noseg", False), ("translator_seg", True)):
        t0 = time.perf_counter()
        tcfg = _row_cfg(cfg, key, 0).with_overrides({"translator.segmentor": segmentor})
        tr = train_translator(data, out / key, tcfg, tracking_uri=uri, register=False)
        convert_source(tr.model_dir, data, out / key / "pseudo", tcfg)
        timings[key] = round(time.perf_counter() - t0, 1)
    res = selftrain("da_noseg", out / "translator_noseg" / "pseudo", 0)
    rows.append({"name": ROW_DA_NO_SEG, "metrics": res.rounds[0]["metrics"]})

    # 3. DA w/ Seg. (round 0) + COSMOS ST iterations 1..K: one self-training run
    res = selftrain("cosmos", out / "translator_seg" / "pseudo", K)
    rows.append({"name": ROW_DA_SEG, "metrics": res.rounds[0]["metrics"],
                 "kept": len(res.rounds[0]["kept"]), "dropped": len(res.rounds[0]["dropped"])})
    for entry in res.rounds[1:]:
        rows.append({"name": cosmos_row(entry["index"]), "metrics": entry["metrics"],
                     "kept": len(entry["kept"]), "dropped": len(entry["dropped"])})

    # 4. oracle: labelled real hrT2
    oracle = None
    if tl.is_dir():
        o_pseudo = _link_as_pseudo(ds.target, tl, out / "oracle_inputs")
        res = selftrain("oracle", o_pseudo, 0)
        oracle = {"name": ROW_ORACLE, "metrics": res.rounds[0]["metrics"]}
        rows.append(oracle)
    else:
        log.warning("no target-training labels in %s: the oracle row and the gap closure are skipped", tl)

    result = {"profile": cfg.profile, "data_dir": str(data.resolve()), "rounds": K, "folds": cfg.segmentation.folds,
              "rows": [{"name": r["name"], "summary": _summary_metrics(r["metrics"]),
                        **{k: v for k, v in r.items() if k in ("kept", "dropped")}} for r in rows],
              "closure": gap_closure(rows), "ordering": ordering_check(rows), "seconds": timings,
              "machine": machine_description(), "tracking_uri": uri}
    write_outputs(result, out)
    return result


def _mean_dice(row: dict[str, Any]) -> float | None:
    summary = row.get("summary") if "summary" in row else _summary_metrics(row.get("metrics"))
    if not summary or not summary.get("mean"):
        return None
    return summary["mean"].get("dice_mean")


def gap_closure(rows: list[dict[str, Any]]) -> float | None:
    """(final COSMOS - source-only) / (oracle - source-only) on mean Dice; None without an oracle."""
    by = {r["name"]: _mean_dice(r) for r in rows}
    cosmos_rows = [r["name"] for r in rows if r["name"].startswith("COSMOS")] or [ROW_DA_SEG]
    final, src, orc = by.get(cosmos_rows[-1]), by.get(ROW_SOURCE_ONLY), by.get(ROW_ORACLE)
    if None in (final, src, orc) or orc == src:
        return None
    return (final - src) / (orc - src)


def ordering_check(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Does the paper's ordering hold? source-only < DA w/o Seg < DA w/ Seg < ST1 <= ST2 <= ... (mean Dice)."""
    chain = [r for r in rows if not r["name"].startswith("oracle")]
    values = [(r["name"], _mean_dice(r)) for r in chain]
    pairs = []
    for (a, va), (b, vb) in zip(values, values[1:]):
        strict = not (a.startswith("COSMOS") and b.startswith("COSMOS"))
        ok = va is not None and vb is not None and (vb > va if strict else vb >= va)
        pairs.append({"lower": a, "higher": b, "relation": "<" if strict else "<=", "holds": bool(ok)})
    return {"holds": all(p["holds"] for p in pairs), "pairs": pairs}


def machine_description() -> str:
    import platform

    cpus = os.cpu_count() or 0
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # pragma: no cover
        gpu = "unknown GPU"
    return f"{platform.machine()} {cpus} CPU cores, {gpu}, Python {platform.python_version()}"


def _fmt(summary: dict[str, Any] | None, struct: str, metric: str) -> str:
    from cosmos.evaluation.metrics import format_pm

    if not summary or not summary.get(struct):
        return "n/a"
    block = summary[struct]
    return format_pm(block.get(f"{metric}_mean"), block.get(f"{metric}_std"))


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# COSMOS ablation (profile `{result['profile']}`, K={result['rounds']}, folds {result['folds']})",
        "",
        f"Data: `{result['data_dir']}`  ",
        f"Machine: {result['machine']}",
        "",
        "| Method | Dice mean | Dice VS | Dice cochlea | ASSD mean (mm) | ASSD VS | ASSD cochlea | kept/dropped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        s = r["summary"]
        kd = f"{r['kept']}/{r['dropped']}" if "kept" in r else ""
        lines.append(f"| {r['name']} | " + " | ".join(_fmt(s, st, m) for m in ("dice", "assd")
                                                    for st in ("mean", "VS", "cochlea")) + f" | {kd} |")
    c = result["closure"]
    lines += ["", f"Gap closure (mean Dice): {'n/a (no oracle)' if c is None else f'{100 * c:.1f}%'}  ",
              f"Paper ordering holds: {'yes' if result['ordering']['holds'] else 'no'}"]
    for p in result["ordering"]["pairs"]:
        if not p["holds"]:
            lines.append(f"- violated: {p['lower']} {p['relation']} {p['higher']}")
    lines += ["", "Wall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in result["seconds"].items())]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=110)
    FigureCanvasAgg(fig)
    names = [r["name"] for r in result["rows"]]
    for i, metric in enumerate(("dice", "assd")):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, struct in enumerate(("VS", "cochlea", "mean")):
            vals = [((r["summary"] or {}).get(struct) or {}).get(f"{metric}_mean") for r in result["rows"]]
            xs = [x + (j - 1) * 0.25 for x in range(len(names))]
            ax.bar(xs, [v if v is not None else 0 for v in vals], width=0.25, label=struct)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=7)
        ax.set_ylabel("Dice" if metric == "dice" else "ASSD (mm)")
        if metric == "assd":
            ax.set_yscale("symlog", linthresh=1.0)
        ax.legend(fontsize=7)
    fig.suptitle("COSMOS ablation (Table 1 rows)")
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_outputs(result: dict[str, Any], out: Path) -> None:
    (out / "benchmark.json").write_text(json.dumps(result, indent=2))
    (out / "benchmark.md").write_text(to_markdown(result))
    plot(result, out / "benchmark.png")
    log.info("benchmark written to %s (benchmark.md, benchmark.json, benchmark.png)", out)
