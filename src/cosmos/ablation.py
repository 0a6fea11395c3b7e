"""The Table-1 ablation (paper section 4.3): its rows, the gap closure, the table.

The benchmark runs as one DAG, ``cosmos-benchmark`` (``pipelines/benchmark_pipeline.py``), through
kfp.local here and Kubeflow on a cluster: each row is the same self-training rounds as
``cosmos-pipeline`` on another labelled "pseudo" folder, so the nnU-Net recipe is identical across
rows and the COSMOS rows are exactly what ``cosmos run`` trains. Rows, all scored on the same
target-validation scans with ``cosmos evaluate``'s metrics:

* ``source-only``          nnU-Net trained on ceT1 + labels, applied to hrT2 (no adaptation)
* ``DA w/o Seg.``          pure CycleGAN (``translator.segmentor=False``), nnU-Net on its pseudo-hrT2, no ST
* ``DA w/ Seg., w/o ST``   the target-aware translator; nnU-Net teacher = COSMOS round 0
* ``COSMOS (ST iter k)``   self-training students k = 1..K (the same run as the row above)
* ``oracle``               nnU-Net on labelled real hrT2 (only when target-training labels are given):
                           the supervised upper bound

and the gap closure ``(COSMOS - source-only) / (oracle - source-only)`` on mean Dice.

This module holds the row-specific library steps (:func:`labelled_as_pseudo`, :func:`import_pseudo`,
:func:`row_overrides`) and the table (:func:`benchmark_table`); it orchestrates nothing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from cosmos.config import CosmosConfig, RoiConfig
from cosmos.data import layout
from cosmos.errors import CosmosError

log = logging.getLogger(__name__)

ROW_SOURCE_ONLY = "source-only"
ROW_DA_NO_SEG = "DA w/o Seg."
ROW_DA_SEG = "DA w/ Seg., w/o ST"
ROW_ORACLE = "oracle (supervised upper bound)"
TARGET_LABELS_DIR = "target_training_labels"
TIE_TOLERANCE = 0.005  # Dice: ST rounds within this of each other count as ties (ordering check)


def cosmos_row(k: int) -> str:
    return f"COSMOS (ST iter{k})"


def row_overrides(row: str, experiment: str = "cosmos", rounds: int = 0) -> str:
    """The compile-time config layer of a benchmark row (YAML): its own experiment and registry
    names (a benchmark never moves the production ``champion``); the pure-CycleGAN row also turns
    the translator's segmentor off, and the oracle row trains ``rounds + 1`` times the planned epochs
    (``segmentation.epochs_multiplier``): at least the cumulative budget of the final student, which
    is a warm-started chain of a teacher and ``rounds`` students (a student from scratch has less), so
    the upper bound is not an under-trained one. The ``cosmos`` row is untouched: it trains exactly
    what ``cosmos run`` trains."""
    import yaml

    data: dict[str, Any] = {
        "tracking": {
            "experiment": f"{experiment}-benchmark",
            "segmenter_model_name": f"cosmos-segmenter-benchmark-{row}",
            "translator_model_name": f"cosmos-translator-benchmark-{row}",
        }
    }
    if row == "da_noseg":
        data["translator"] = {"segmentor": False}
    if row == "oracle" and rounds > 0:
        data["segmentation"] = {"epochs_multiplier": int(rounds) + 1}
    return yaml.safe_dump(data, default_flow_style=True, width=1 << 20).strip()


def _place(src: Path, dst: Path) -> None:
    """Hard-link (same filesystem) or copy: the output artifact must hold real files on a cluster."""
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src.resolve(), dst)
    except OSError:
        shutil.copy2(src.resolve(), dst)


def labelled_as_pseudo(data_dir: str | Path, which: str, out_dir: str | Path) -> int:
    """A flat "pseudo" folder from labelled scans, so any labelled set trains a row like pseudo-hrT2.

    ``which``: ``source`` (ceT1 + labels: the source-only row) or ``target`` (real hrT2 +
    ``target_training_labels/``: the oracle row). Returns the number of cases.
    """
    data, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if which == "source":
        cases = layout.list_cases(data / layout.SOURCE_DIR, "ceT1")
        labels_dir = None
    elif which == "target":
        labels_dir = data / TARGET_LABELS_DIR
        if not labels_dir.is_dir():
            raise CosmosError(
                f"{labels_dir}: the oracle row needs labels of target_training ({TARGET_LABELS_DIR}/ in the data)"
            )
        cases = layout.list_cases(data / layout.TARGET_DIR, "hrT2")
    else:
        raise CosmosError(f"labelled_as_pseudo: which must be source or target, got {which!r}")
    if not cases:
        raise CosmosError(f"{data}: no {which} cases to train on")
    for case in cases:
        label = (
            case.label
            if case.label is not None
            else (labels_dir / layout.label_name(case.case_id) if labels_dir else None)
        )
        if label is None or not Path(label).is_file():
            raise CosmosError(f"{case.image}: no label for case {case.case_id} (needed for this benchmark row)")
        _place(Path(case.image), out / layout.image_name(case.case_id, "hrT2pseudo"))
        _place(Path(label), out / layout.label_name(case.case_id))
    return len(cases)


def import_pseudo(pseudo_uri: str | Path, out_dir: str | Path, roi: RoiConfig | None = None) -> int:
    """Bring an existing labelled pseudo-hrT2 folder (``cosmos translator convert``'s output) into a
    run: every ``crossmoda_{i}_hrT2pseudo`` needs its ``_Label``. Returns the number of cases.

    With ``roi.enabled``, the inner-ear region is learnt from the folder's own labels and every scan is
    written cropped to it (``roi.json`` beside them: the crop of the target scans uses the same model);
    the user's folder is only read."""
    from cosmos.data.roi import crop_labelled_folder
    from cosmos.segmentation.export import collect_pseudo_cases

    src = Path(pseudo_uri)
    if not src.is_dir():
        raise CosmosError(f"{src}: pseudo-hrT2 folder not found (the output of `cosmos translator convert`)")
    cases = collect_pseudo_cases(src)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cropping = roi is not None and roi.enabled
    if cropping:
        crop_labelled_folder(src, out, "hrT2pseudo", margin_mm=roi.margin_mm, min_size_mm=roi.min_size_mm)  # type: ignore[union-attr]
    for p in sorted(src.iterdir()):
        if p.is_file() and (p.name.endswith(".json") or (not cropping and p.name.endswith((".nii.gz", ".nii")))):
            _place(p, out / p.name)
    return len(cases)


def benchmark_table(summaries: Mapping[str, str | Path], out_dir: str | Path, cfg: CosmosConfig) -> dict[str, Any]:
    """Table 1 from each row's round summary (``source_only``, ``da_noseg``, ``cosmos``, ``oracle``);
    writes ``benchmark.{json,md,png}`` into ``out_dir`` and returns the result dict. Each row states its
    cumulative training iterations (``train_iterations``) and its per-case mean Dice (``cases``, for the
    paired differences of a multi-seed benchmark)."""
    from cosmos.selftraining.rounds import load_summary

    rows: list[dict[str, Any]] = []

    def first(row_key: str) -> dict[str, Any] | None:
        if row_key not in summaries:
            return None
        return load_summary(summaries[row_key])[0]

    def row(name: str, entry: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "metrics": entry["metrics"],
            "train_iterations": entry.get("cumulative_iterations"),
            "checks_passed": entry.get("checks_passed"),
            **extra,
        }

    if (r := first("source_only")) is not None:
        rows.append(row(ROW_SOURCE_ONLY, r))
    if (r := first("da_noseg")) is not None:
        rows.append(row(ROW_DA_NO_SEG, r))
    cosmos = load_summary(summaries["cosmos"])
    for entry in cosmos:
        name = ROW_DA_SEG if entry["index"] == 0 else cosmos_row(entry["index"])
        rows.append(row(name, entry, kept=len(entry.get("kept") or []), dropped=len(entry.get("dropped") or [])))
    if (r := first("oracle")) is not None:
        rows.append(row(ROW_ORACLE, r))
    result = {
        "profile": cfg.profile,
        "rounds": len(cosmos) - 1,
        "folds": cfg.segmentation.folds,
        "rows": [
            {
                "name": r["name"],
                "summary": _summary_metrics(r["metrics"]),
                "cases": case_dice(r["metrics"]),
                **{k: v for k, v in r.items() if k in ("kept", "dropped", "train_iterations", "checks_passed")},
            }
            for r in rows
        ],
        "closure": gap_closure(rows),
        "ordering": ordering_check(rows),
        "machine": machine_description(),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(result, out)
    return result


def case_dice(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Per scored case, the mean of its VS and cochlea Dice."""
    out = {}
    for case, per in ((metrics or {}).get("cases") or {}).items():
        values = [float(v["dice"]) for v in per.values() if isinstance(v, Mapping) and v.get("dice") is not None]
        if values:
            out[case] = sum(values) / len(values)
    return out


def _summary_metrics(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if metrics is None else metrics.get("summary")


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
    if final is None or src is None or orc is None or orc == src:
        return None
    return (final - src) / (orc - src)


def ordering_check(rows: list[dict[str, Any]], tie: float = TIE_TOLERANCE) -> dict[str, Any]:
    """Does the paper's ordering hold? source-only < DA w/o Seg < DA w/ Seg <= ST1 <= ST2 <= ... (mean Dice).

    ``<=`` steps (from the teacher on) allow ties within ``tie`` Dice: CPU budgets leave that much noise.
    """
    chain = [r for r in rows if not r["name"].startswith("oracle")]
    values = [(r["name"], _mean_dice(r)) for r in chain]
    pairs = []
    for (a, va), (b, vb) in zip(values, values[1:]):
        strict = not b.startswith("COSMOS")
        if va is None or vb is None:
            ok = False
        else:
            ok = vb > va if strict else vb >= va - tie
        pairs.append({"lower": a, "higher": b, "relation": "<" if strict else "<=", "holds": bool(ok)})
    return {"holds": all(p["holds"] for p in pairs), "pairs": pairs, "tie_tolerance": tie}


def machine_description() -> str:
    import platform

    cpus = os.cpu_count() or 0
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # pragma: no cover
        gpu = "unknown GPU"
    return f"{platform.machine()} {cpus} CPU cores, {gpu}, Python {platform.python_version()}"


def to_markdown(result: dict[str, Any]) -> str:
    from cosmos.evaluation.metrics import format_table1

    lines = [
        f"# COSMOS ablation (profile `{result['profile']}`, K={result['rounds']}, folds {result['folds']})",
        "",
        f"Machine: {result['machine']}",
        "",
        format_table1(
            [
                (
                    r["name"],
                    r["summary"],
                    [f"{r['kept']}/{r['dropped']}" if "kept" in r else "", r.get("train_iterations") or "-"],
                )
                for r in result["rows"]
            ],
            extra_header=["kept/dropped", "train iterations"],
        ),
    ]
    c = result["closure"]
    lines += [
        "",
        f"Gap closure (mean Dice): {'n/a (no oracle)' if c is None else f'{100 * c:.1f}%'}  ",
        f"Paper ordering holds: {'yes' if result['ordering']['holds'] else 'no'} "
        f"(ST ties within {result['ordering'].get('tie_tolerance', TIE_TOLERANCE)} Dice allowed)",
    ]
    for p in result["ordering"]["pairs"]:
        if not p["holds"]:
            lines.append(f"- violated: {p['lower']} {p['relation']} {p['higher']}")
    if result.get("seconds"):
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
