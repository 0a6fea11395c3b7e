"""COSMOS self-training (paper 3.3, Algorithm 1) in local form: a teacher and K students.

Round 0, the teacher, trains on labelled pseudo-hrT2 alone. Every round then predicts the real
target-training hrT2 scans (pseudo-labels), drops the cases whose prediction lacks VS or cochlea,
and the next round, a student, trains FROM SCRATCH on the pseudo-hrT2 plus the kept
pseudo-labelled real hrT2 -- and becomes the next teacher. K = ``cfg.selftraining.rounds``.

This is the same sequence of library calls the Kubeflow pipeline runs as separate tasks
(prepare_round -> train_fold per fold -> predict -> filter -> evaluate -> register), so the local
form and the cluster form cannot drift apart.

Output layout (everything resumable; a re-run skips folds with ``checkpoint_final.pth`` and
rounds with ``DONE``)::

    OUT/summary.json                       the write_report "rounds" summary, rewritten after each round
    OUT/mlflow/                            the embedded tracking store (unless a tracking URI is given)
    OUT/round_{k}/prepared/                nnU-Net raw + plans + preprocessed (prepare_round)
                  folds/fold_{f}/          trained fold (checkpoint_final.pth, progress.png, ...)
                  pseudo_labels/           this round's predictions on target_training
                  pseudo_labels_kept/      those that contain VS and cochlea (+ filter_summary.json)
                  val_predictions/         predictions on target_validation (if given)
                  metrics.json             evaluate_folder result (if validation labels are given)
                  round.json               this round's summary entry
                  DONE                     written last

MLflow: one run per round ("round_0-teacher", "round_1-student_1", ...) with the folds as nested
runs; each round's ensemble becomes a new ``cosmos-segmenter`` version; ``champion`` = final round.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmos.config import CosmosConfig
from cosmos.data import layout
from cosmos.errors import CosmosError
from cosmos.selftraining.filtering import filter_pseudo_labels

log = logging.getLogger(__name__)

DONE = "DONE"
ROUND_FILE = "round.json"
RUN_ID_FILE = "mlflow_run_id"
VERSION_FILE = "model_version"
SUMMARY_FILE = "summary.json"
STRUCTURES = ("VS", "cochlea", "mean")


def round_name(index: int) -> str:
    return "teacher" if index == 0 else f"student {index}"


@dataclass
class SelfTrainingResult:
    """What :func:`run_selftraining` produced. ``rounds`` are write_report "rounds" entries."""

    out_dir: Path
    rounds: list[dict[str, Any]] = field(default_factory=list)
    champion_version: str | None = None
    tracking_uri: str | None = None
    summary_path: Path | None = None

    @property
    def final_fold_dirs(self) -> list[Path]:
        return [Path(p) for p in self.rounds[-1]["fold_model_dirs"]] if self.rounds else []

    def to_summary(self, **extra: Any) -> dict[str, Any]:
        """The dict ``cosmos.evaluation.report.write_report`` takes (extra keys: title, data_dir ...)."""
        summary = {"title": "COSMOS self-training", "rounds": self.rounds, "champion_version": self.champion_version,
                   "tracking_uri": self.tracking_uri}
        summary.update(extra)
        return summary


# ------------------------------------------------------------------------------------ inputs
def _images(folder: str | Path, nested: str, what: str) -> tuple[Path, list[Path]]:
    """hrT2 images of a flat folder, or of ``root/nested`` for a crossMoDA root."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CosmosError(f"{folder}: {what} folder not found")
    cases = layout.list_cases(folder, "hrT2")
    if not cases and (folder / nested).is_dir():
        folder = folder / nested
        cases = layout.list_cases(folder, "hrT2")
    if not cases:
        raise CosmosError(f"{folder}: no crossmoda_*_hrT2.nii.gz images ({what})")
    return folder, [c.image for c in cases]


def _expected_labels(images: list[Path]) -> list[str]:
    return [layout.label_name(layout.parse_name(p.name)[0]) for p in images]  # type: ignore[index]


def _predict_once(fold_dirs: list[Path], images: list[Path], out_dir: Path, cfg: CosmosConfig, what: str) -> Path:
    """Predict unless every expected label is already there (a resumed round)."""
    from cosmos.segmentation.inference import predict

    expected = _expected_labels(images)
    if out_dir.is_dir() and all((out_dir / n).is_file() for n in expected):
        log.info("%s: all %d predictions present in %s; skipping", what, len(expected), out_dir)
        return out_dir
    t0 = time.perf_counter()
    predict(fold_dirs, images, out_dir, cfg)
    log.info("%s: %d cases predicted in %.1f s", what, len(images), time.perf_counter() - t0)
    return out_dir


def _trained_fold_dir(fold_out: Path) -> Path | None:
    """The fold model dir under ``fold_out`` if it holds a final checkpoint."""
    if (fold_out / "checkpoint_final.pth").is_file():
        return fold_out
    hits = sorted(fold_out.rglob("checkpoint_final.pth")) if fold_out.is_dir() else []
    return hits[0].parent if hits else None


def _metric_values(metrics: dict[str, Any] | None) -> dict[str, float]:
    """evaluate_folder summary -> flat MLflow metrics (val_dice_VS, val_assd_mean_std, ...)."""
    out: dict[str, float] = {}
    if not metrics:
        return out
    for struct in STRUCTURES:
        block = (metrics.get("summary") or {}).get(struct) or {}
        for key in ("dice_mean", "dice_std", "assd_mean", "assd_std"):
            val = block.get(key)
            if val is not None:
                metric, stat = key.split("_")
                out[f"val_{metric}_{struct}" + ("" if stat == "mean" else "_std")] = float(val)
    if "n_cases" in metrics:
        out["val_cases_scored"] = float(metrics["n_cases"])
    if metrics.get("errors"):
        out["val_case_errors"] = float(len(metrics["errors"]))
    return out


def _evaluate(pred_dir: Path, labels_dir: Path) -> dict[str, Any] | None:
    try:
        from cosmos.evaluation.metrics import evaluate_folder
    except ImportError as exc:
        log.warning("cosmos.evaluation.metrics is not available (%s); validation metrics are skipped", exc)
        return None
    return evaluate_folder(pred_dir, labels_dir)


def _raw_training_files(prepared: Path) -> list[Path]:
    raw = prepared / "nnUNet_raw"
    return sorted(p for sub in ("imagesTr", "labelsTr") for p in raw.glob(f"*/{sub}/*.nii.gz"))


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


# ------------------------------------------------------------------------------------ one round
def _run_round(k: int, rdir: Path, *, pseudo_dir: Path, target_dir: Path, target_images: list[Path],
               prev_kept: Path | None, val_images: list[Path] | None, val_labels_dir: Path | None,
               cfg: CosmosConfig, uri: str, parent_run_id: str | None, is_final: bool) -> dict[str, Any]:
    from cosmos.segmentation.mlflow_logging import start_round_run
    from cosmos.segmentation.prepare import load_prepared, prepare_round
    from cosmos.segmentation.registry import register_round
    from cosmos.segmentation.training import train_fold
    from cosmos.tracking import dataset_digest, git_commit

    t_round = time.perf_counter()
    rdir.mkdir(parents=True, exist_ok=True)
    saved_run = (rdir / RUN_ID_FILE).read_text().strip() if (rdir / RUN_ID_FILE).is_file() else None
    params = {"round": k, "profile": cfg.profile, "seed": cfg.seed, **cfg.flat("segmentation"),
              **cfg.flat("selftraining")}
    run = start_round_run(k, cfg.tracking.experiment, uri, parent_run_id=parent_run_id,
                          params=None if saved_run else params, resume_run_id=saved_run,
                          tags={"cosmos.round_name": round_name(k), "cosmos.git_commit": git_commit()})
    if run.run_id and not saved_run:
        (rdir / RUN_ID_FILE).write_text(run.run_id)
    status = "FAILED"
    try:
        # 1. nnU-Net dataset: pseudo-hrT2 (+ kept pseudo-labelled real hrT2 for a student)
        prepared = prepare_round(pseudo_dir, rdir / "prepared", cfg, round_index=k,
                                 target_images_dir=target_dir if k > 0 else None,
                                 pseudo_labels_dir=prev_kept if k > 0 else None)
        manifest = load_prepared(prepared)
        run.log_metrics({"train_cases": manifest.num_cases, "train_cases_pseudo": manifest.num_pseudo,
                         "train_cases_real": manifest.num_real})
        # 2. folds, from scratch (each fold depends on no other: a ParallelFor on Kubeflow)
        fold_dirs: list[Path] = []
        for fold in cfg.segmentation.folds:
            fold_out = rdir / "folds" / f"fold_{fold}"
            done = _trained_fold_dir(fold_out)
            if done is not None:
                log.info("round %d fold %d already trained (%s); skipping", k, fold, done)
                fold_dirs.append(done)
                continue
            log.info("round %d (%s): training fold %d on %d cases", k, round_name(k), fold, manifest.num_cases)
            fold_dirs.append(Path(train_fold(prepared, fold, fold_out, cfg, parent_run_id=run.run_id,
                                             tracking_uri=uri)))
        # 3. pseudo-labels on the real target scans, then the VS+cochlea filter
        pseudo_labels = _predict_once(fold_dirs, target_images, rdir / "pseudo_labels", cfg,
                                      f"round {k} pseudo-labels")
        filt = filter_pseudo_labels(pseudo_labels, rdir / "pseudo_labels_kept", cfg.selftraining.required_labels)
        run.log_metrics({"pseudo_labels_kept": len(filt.kept), "pseudo_labels_dropped": len(filt.dropped)})
        run.set_tags({"cosmos.pseudo_labels_kept": ",".join(filt.kept) or "-",
                      "cosmos.pseudo_labels_dropped": ",".join(filt.dropped) or "-"})
        if filt.alert:
            run.set_tags({"cosmos.filter_alert": filt.alert})
        # 4. validation predictions + metrics
        metrics = None
        val_pred_dir = None
        if val_images:
            val_pred_dir = _predict_once(fold_dirs, val_images, rdir / "val_predictions", cfg,
                                         f"round {k} validation")
            if val_labels_dir is not None:
                metrics = _evaluate(val_pred_dir, val_labels_dir)
                if metrics is not None:
                    _write_json(rdir / "metrics.json", metrics)
                    run.log_metrics(_metric_values(metrics), step=k)
                    run.log_artifact(rdir / "metrics.json")
        # 5. registry: this round's ensemble as a new cosmos-segmenter version
        if (rdir / VERSION_FILE).is_file():
            version = (rdir / VERSION_FILE).read_text().strip()
        else:
            digest = dataset_digest(_raw_training_files(prepared)) if _raw_training_files(prepared) else "unknown"
            version = register_round(fold_dirs, k, cfg, tags={"dataset_digest": digest, "round_name": round_name(k),
                                                                "pseudo_labels_kept": len(filt.kept)},
                                     alias=cfg.tracking.champion_alias if is_final else None,
                                     tracking_uri=uri, run_id=run.run_id)
            (rdir / VERSION_FILE).write_text(version)
        seconds = time.perf_counter() - t_round
        run.log_metrics({"round_seconds": seconds})
        entry = {
            "index": k, "name": round_name(k), "metrics": metrics,
            "kept": filt.kept, "dropped": filt.dropped, "filter_alert": filt.alert,
            "pseudo_labels_dir": str(pseudo_labels.resolve()),
            "pseudo_labels_kept_dir": str((rdir / "pseudo_labels_kept").resolve()),
            "predictions_dir": str(val_pred_dir.resolve()) if val_pred_dir else None,
            "model_version": version, "run_id": run.run_id,
            "fold_model_dirs": [str(d.resolve()) for d in fold_dirs],
            "prepared_dir": str(Path(prepared).resolve()),
            "train_cases_pseudo": manifest.num_pseudo, "train_cases_real": manifest.num_real,
            "seconds": round(seconds, 1),
        }
        _write_json(rdir / ROUND_FILE, entry)
        (rdir / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
        status = "FINISHED"
        return entry
    finally:
        run.end(status)


# ------------------------------------------------------------------------------------ the loop
def run_selftraining(pseudo_dir: str | Path, target_dir: str | Path, out_dir: str | Path, cfg: CosmosConfig,
                     val_dir: str | Path | None = None, val_labels_dir: str | Path | None = None,
                     tracking_uri: str | None = None, parent_run_id: str | None = None) -> SelfTrainingResult:
    """Teacher + ``cfg.selftraining.rounds`` students; returns per-round summaries (see module doc).

    ``pseudo_dir``: translator output (``crossmoda_{i}_hrT2pseudo`` + ``_Label``).
    ``target_dir``: real hrT2 images (``DATA/target_training``, or the crossMoDA root).
    ``val_dir`` / ``val_labels_dir``: optional validation images / labels; with both, each round
    is scored with ``cosmos evaluate``'s metrics, logged to its MLflow run and saved as metrics.json.
    ``tracking_uri``: default ``cfg.tracking.tracking_uri``, then $MLFLOW_TRACKING_URI, then
    SQLite under ``OUT/mlflow``. ``parent_run_id`` nests the round runs under a pipeline run.
    """
    from cosmos.segmentation.mlflow_logging import RunLogger
    from cosmos.tracking import resolve_tracking_uri, set_alias, setup

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pseudo_dir = Path(pseudo_dir)
    if not pseudo_dir.is_dir():
        raise CosmosError(f"{pseudo_dir}: pseudo-hrT2 folder not found (the output of `cosmos translator convert`)")
    target_dir, target_images = _images(target_dir, layout.TARGET_DIR, "target-training hrT2")
    val_images = None
    vl = None
    if val_dir is not None:
        val_dir, val_images = _images(val_dir, layout.VALIDATION_DIR, "validation hrT2")
    if val_labels_dir is not None:
        vl = Path(val_labels_dir)
        if not vl.is_dir():
            raise CosmosError(f"{vl}: validation label folder not found")
        if val_images is None:
            raise CosmosError("validation labels were given without validation images (--val)")
    uri = resolve_tracking_uri(tracking_uri or cfg.tracking.tracking_uri or None, out)
    setup(uri, cfg.tracking.experiment)
    K = cfg.selftraining.rounds
    log.info("self-training: teacher + %d student round(s), folds %s, %d target scans%s; tracking %s", K,
             cfg.segmentation.folds, len(target_images),
             f", {len(val_images)} validation scans" if val_images else "", uri)

    result = SelfTrainingResult(out_dir=out, tracking_uri=uri, summary_path=out / SUMMARY_FILE)
    prev_kept: Path | None = None
    for k in range(K + 1):
        rdir = out / f"round_{k}"
        if (rdir / DONE).is_file() and (rdir / ROUND_FILE).is_file():
            entry = json.loads((rdir / ROUND_FILE).read_text())
            log.info("round %d (%s) already complete; skipping", k, round_name(k))
        else:
            entry = _run_round(k, rdir, pseudo_dir=pseudo_dir, target_dir=target_dir, target_images=target_images,
                               prev_kept=prev_kept, val_images=val_images, val_labels_dir=vl, cfg=cfg, uri=uri,
                               parent_run_id=parent_run_id, is_final=k == K)
        result.rounds.append(entry)
        prev_kept = Path(entry["pseudo_labels_kept_dir"])
        if parent_run_id:  # a Fig.-5 curve (metric vs. iteration) on the pipeline-level run
            RunLogger(_client_for(uri), parent_run_id, "pipeline run").log_metrics(
                _metric_values(entry.get("metrics")), step=k)
        _write_json(out / SUMMARY_FILE, result.to_summary(pseudo_dir=str(pseudo_dir.resolve()),
                                                          profile=cfg.profile,
                                                          data_dir=_data_root(target_dir)))
        _log_round(entry)

    final = result.rounds[-1]
    result.champion_version = final["model_version"]
    if result.champion_version:  # idempotent; also right when a resumed run added rounds
        set_alias(cfg.tracking.segmenter_model_name, cfg.tracking.champion_alias, result.champion_version)
    _write_json(out / SUMMARY_FILE, result.to_summary(pseudo_dir=str(pseudo_dir.resolve()), profile=cfg.profile,
                                                      data_dir=_data_root(target_dir)))
    log.info("self-training done: %s version %s is @%s; summary in %s", cfg.tracking.segmenter_model_name,
             result.champion_version, cfg.tracking.champion_alias, out / SUMMARY_FILE)
    return result


def _client_for(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _data_root(target_dir: Path) -> str | None:
    """The crossMoDA root when the target folder is its ``target_training`` (the report reads it)."""
    return str(target_dir.parent.resolve()) if target_dir.name == layout.TARGET_DIR else None


def _log_round(entry: dict[str, Any]) -> None:
    m = _metric_values(entry.get("metrics"))
    scores = (f"Dice VS {m['val_dice_VS']:.3f} cochlea {m['val_dice_cochlea']:.3f}; "
              f"ASSD VS {m['val_assd_VS']:.2f} cochlea {m['val_assd_cochlea']:.2f} mm"
              if {"val_dice_VS", "val_dice_cochlea", "val_assd_VS", "val_assd_cochlea"} <= set(m) else "no validation metrics")
    log.info("round %d (%s): kept %d / dropped %d pseudo-labels; %s; %s version %s", entry["index"], entry["name"],
             len(entry["kept"]), len(entry["dropped"]), scores, "cosmos-segmenter", entry["model_version"])


def format_rounds_table(rounds: list[dict[str, Any]]) -> str:
    """Per-round Dice / ASSD (mean ± std) as a plain-text table for the CLI."""
    header = f"{'round':<12}{'kept':>6}{'Dice mean':>17}{'Dice VS':>17}{'Dice cochlea':>17}" \
             f"{'ASSD mean':>17}{'ASSD VS':>17}{'ASSD cochlea':>17}  version"
    lines = [header, "-" * len(header)]
    for e in rounds:
        summary = (e.get("metrics") or {}).get("summary") or {}
        cells = []
        for metric in ("dice", "assd"):
            for struct in ("mean", "VS", "cochlea"):  # the header's (Table 1's) column order
                b = summary.get(struct) or {}
                mean, std = b.get(f"{metric}_mean"), b.get(f"{metric}_std")
                cells.append("n/a" if mean is None else f"{mean:.3f} ± {std or 0:.3f}")
        lines.append(f"{e['name']:<12}{len(e['kept']):>6}" + "".join(f"{c:>17}" for c in cells)
                     + f"  {e.get('model_version') or '-'}")
    return "\n".join(lines)
