"""The steps of one self-training round (COSMOS paper 3.3, Algorithm 1): one function per DAG task.

Round 0, the teacher, trains on labelled pseudo-hrT2 alone; round k > 0, a student, trains on the
pseudo-hrT2 plus the real hrT2 scans whose pseudo-label the filter accepted. Every entry point
(``cosmos run``, ``cosmos selftrain``, ``cosmos benchmark``, a Kubeflow cluster) runs these steps
through the same DAG (``pipelines/cosmos_pipeline.py``), so they happen in one order, with one set of
MLflow names, whoever started them:

=================  ===========================================================================
step               bookkeeping it owns
=================  ===========================================================================
prepare            the round's nnU-Net dataset; refuses to let a student replay its teacher silently
open_round         the round's MLflow run: params (:func:`round_params`), tags (:func:`round_tags`),
                   training-case counts
train              one fold (nested MLflow run), optionally warm-started from the teacher's fold
pseudo_label       predict real hrT2 (mirroring on) + filter; kept/dropped/carried counts, label
                   change vs the previous round, the filter alert
predict_validation predictions on target_validation
score              Dice/ASSD on target_validation (:func:`metric_values` names, ``step`` = round)
register           a ``cosmos-segmenter`` version (registry tags), the promotion gate for the
                   ``champion`` alias, the round's summary entry; closes the round run
=================  ===========================================================================

The steps up to ``score`` live here. What they share lives in modules below this one, which never
import it: :mod:`cosmos.selftraining.naming` (round and MLflow names, params, tags, the files one step
hands the next), :mod:`cosmos.selftraining.gate` (``register``: the registry version and the promotion
gate) and :mod:`cosmos.selftraining.summary` (the cumulative summary, the run's bundle and report).
Their names are re-exported here, so ``cosmos.selftraining.rounds`` stays the one address of every
step and name (the components, the DAG, the tests).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any, Sequence

from cosmos.config import PREDICTION_ONLY, ROUND_COUNT, CosmosConfig  # noqa: F401 (re-exported)
from cosmos.data import layout, roi
from cosmos.errors import CosmosError
from cosmos.resume import KEY_FILE, copy_tree, read_pointer, write_json, write_pointer  # noqa: F401 (re-exported)
from cosmos.selftraining import plausibility, verdict
from cosmos.selftraining.gate import (  # noqa: F401 (re-exported)
    _brief_plausibility,
    _champion_figure,
    _round_iterations,
    gate_figure,
    promotion_decision,
    register,
)
from cosmos.selftraining.naming import (  # noqa: F401 (re-exported)
    CHANGE_FILE,
    FULL_PREDICTIONS,
    REPLAY_FILE,
    ROUNDS_FILE,
    RUN_INFO_FILE,
    SELECTION_METRICS,
    STRUCTURES,
    TAG_ALERT,
    TAG_CHECKS,
    TAG_COMMIT,
    TAG_DROPPED,
    TAG_GATE,
    TAG_KEPT,
    TAG_PROFILE,
    TAG_REPLAY,
    TAG_ROUND_NAME,
    VERSION_TAG_CHECKS,
    VERSION_TAG_METRIC,
    VERSION_TAG_SCORE,
    _brief_change,
    _round_run,
    check_compiled_shape,
    metric_values,
    read_label_change,
    read_run_id,
    replay_message,
    round_name,
    round_params,
    round_run_name,
    round_tags,
    write_run_info,
)
from cosmos.selftraining.summary import (  # noqa: F401 (re-exported)
    _mean_dice,
    attach_report,
    build_bundle,
    champion_entry,
    load_summary,
    report,
    summarize,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ steps
def prepare(
    index: int,
    cfg: CosmosConfig,
    *,
    pseudo_dir: str | Path,
    data_dir: str | Path,
    kept_dir: str | Path | None,
    out_dir: str | Path,
    previous_prepared_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The round's nnU-Net dataset: pseudo-hrT2 (+ the accepted pseudo-labelled real hrT2 for a student).

    A warm-started student (``selftraining.student_init: teacher``) keeps its teacher's nnU-Net plan,
    so the network it inherits fits. A student whose training set equals its teacher's exactly
    (nothing ever accepted) is never silent: it still trains (its seed differs, so it is no
    bit-for-bit replay), the result says so and :func:`open_round` tags the round with the alert.
    """
    from cosmos.segmentation.prepare import load_prepared, prepare_round
    from cosmos.selftraining.labels import compare_training_sets

    target = Path(data_dir) / layout.TARGET_DIR if (index > 0 and kept_dir is not None) else None
    plans_from = previous_prepared_dir if (index > 0 and cfg.selftraining.student_init == "teacher") else None
    prepare_round(
        pseudo_dir,
        out_dir,
        cfg,
        round_index=index,
        target_images_dir=target,
        pseudo_labels_dir=kept_dir if index > 0 else None,
        plans_from=plans_from,
    )
    manifest = load_prepared(out_dir)
    roi.write_model(roi.model_of(data_dir), out_dir)  # travels with the fold models into the registry
    verdict.write_lineage(out_dir, pseudo_dir)  # the translation's checks travel with the fold models too
    replay = None
    if index > 0 and previous_prepared_dir is not None:
        same = compare_training_sets(out_dir, previous_prepared_dir)
        if same.identical:
            replay = f"{replay_message(index)} ({same.message})"
    elif index > 0 and manifest.num_real == 0:
        replay = replay_message(index)
    if replay:
        log.error(replay)
        write_json(Path(out_dir) / REPLAY_FILE, {"alert": replay})
    return {
        "n_cases": manifest.num_cases,
        "n_pseudo": manifest.num_pseudo,
        "n_real": manifest.num_real,
        "replay_alert": replay,
    }


def open_round(
    index: int, cfg: CosmosConfig, *, prepared_dir: str | Path, out_dir: str | Path, tracking_uri: str
) -> dict[str, Any]:
    """Open the round's MLflow run (folds nest under it through ``mlflow.parentRunId``)."""
    from cosmos.segmentation.mlflow_logging import start_round_run
    from cosmos.segmentation.prepare import load_prepared

    manifest = load_prepared(prepared_dir)
    tags = round_tags(index, cfg)
    if (Path(prepared_dir) / REPLAY_FILE).is_file():
        tags[TAG_REPLAY] = json.loads((Path(prepared_dir) / REPLAY_FILE).read_text())["alert"]
    run = start_round_run(
        index,
        experiment=cfg.tracking.experiment,
        tracking_uri=tracking_uri,
        run_name=round_run_name(index),
        params=round_params(index, cfg),
        tags=tags,
    )
    run.log_metrics(
        {
            "train_cases": manifest.num_cases,
            "train_cases_pseudo": manifest.num_pseudo,
            "train_cases_real": manifest.num_real,
        },
        step=index,
    )
    write_run_info(out_dir, run.run_id or "", index)
    return {"run_id": run.run_id or ""}


def teacher_fold(models_dir: str | Path | None, fold: int) -> Path | None:
    """The previous round's model for ``fold`` in an ensemble artifact (see :func:`register`)."""
    from cosmos.segmentation.environment import FINAL_CHECKPOINT

    if models_dir is None:
        return None
    root = Path(models_dir)
    for name in (f"fold_{fold}", "fold_0"):
        if (root / name / FINAL_CHECKPOINT).is_file():
            return root / name
    hits = sorted(root.glob(f"fold_*/{FINAL_CHECKPOINT}"))
    return hits[0].parent if hits else None


def train(
    index: int,
    fold: int,
    cfg: CosmosConfig,
    *,
    prepared_dir: str | Path,
    run_dir: str | Path | None,
    out_dir: str | Path,
    tracking_uri: str,
    teacher_models_dir: str | Path | None = None,
    pipeline_run_id: str = "",
) -> dict[str, Any]:
    """Train one nnU-Net fold of the round (resumable); ``out_dir`` points at the fold model.

    ``pipeline_run_id`` (cluster runs; "" locally): with ``segmentation.checkpoint_uri`` set, the
    fold's checkpoints are mirrored under ``<checkpoint_uri>/<pipeline_run_id>/round_<k>/fold_<f>/``
    so a retried task resumes from them (:mod:`cosmos.segmentation.checkpoint_sync`).
    """
    from cosmos.segmentation.checkpoint_sync import fold_checkpoint_uri
    from cosmos.segmentation.training import train_fold

    init = None
    if index > 0 and cfg.selftraining.student_init == "teacher":
        init = teacher_fold(teacher_models_dir, fold)
        if init is None:
            raise CosmosError(
                f"round {index} fold {fold}: selftraining.student_init=teacher but the previous "
                f"round's models are missing in {teacher_models_dir}"
            )
    checkpoint_uri = fold_checkpoint_uri(cfg.segmentation.checkpoint_uri, pipeline_run_id, index, fold)
    fold_dir = train_fold(
        prepared_dir,
        fold,
        out_dir,
        cfg,
        parent_run_id=read_run_id(run_dir),
        tracking_uri=tracking_uri,
        init_from=init,
        checkpoint_uri=checkpoint_uri,
    )
    roi.write_model(roi.model_of(prepared_dir), fold_dir)
    lineage = Path(prepared_dir) / verdict.LINEAGE_FILE
    if lineage.is_file():
        shutil.copyfile(lineage, Path(fold_dir) / verdict.LINEAGE_FILE)
    write_pointer(out_dir, fold_dir)
    return {"fold": fold, "init": str(init) if init else "scratch"}


def fold_model_dirs(model_artifacts: Sequence[str | Path]) -> list[Path]:
    """The fold model directories behind the collected ``train`` outputs, in fold order."""
    dirs = [read_pointer(p) for p in model_artifacts]
    return sorted(dirs, key=lambda d: str(d))


def pseudo_label(
    index: int,
    cfg: CosmosConfig,
    *,
    fold_dirs: Sequence[str | Path],
    data_dir: str | Path,
    previous_kept_dir: str | Path | None,
    run_dir: str | Path | None,
    labels_dir: str | Path,
    kept_dir: str | Path,
    tracking_uri: str,
) -> dict[str, Any]:
    """Pseudo-label the real target-training hrT2 (mirroring TTA always on) and filter them.

    With ``selftraining.carry_over``, a case whose new pseudo-label is rejected keeps its last accepted
    one (from ``previous_kept_dir``); without it (the paper) it leaves the training set. Logs
    kept/dropped/carried counts and, from the second round on, how much the accepted labels changed
    (Dice between consecutive pseudo-label sets). The raw pseudo-labels' label-free plausibility goes to
    ``labels_dir/plausibility.json`` (:mod:`cosmos.selftraining.plausibility`).
    """
    from cosmos.segmentation.inference import predict
    from cosmos.selftraining.filtering import filter_pseudo_labels, label_change

    images = Path(data_dir) / layout.TARGET_DIR
    pixel = cfg.selftraining.filter == "pixel"
    # no measurements JSON beside pseudo-labels: that folder is training data, not a result
    predict(
        [Path(d) for d in fold_dirs],
        images,
        labels_dir,
        cfg,
        mirroring=True,
        save_probabilities=pixel,
        measurements=False,
    )
    carry_from = previous_kept_dir if cfg.selftraining.carry_over else None
    filt = filter_pseudo_labels(labels_dir, kept_dir, cfg.selftraining, previous_kept_dir=carry_from)
    plausibility.assess_folder(labels_dir, images, data_dir, cfg.checks.volume_range_factor)
    change = label_change(previous_kept_dir, kept_dir) if previous_kept_dir is not None else None
    write_json(Path(kept_dir) / CHANGE_FILE, change)
    run = _round_run(index, run_dir, tracking_uri)
    values: dict[str, float] = {
        "pseudo_labels_kept": len(filt.kept),
        "pseudo_labels_dropped": len(filt.dropped),
        "pseudo_labels_carried": len(filt.carried_over),
    }
    if change is not None:
        values["pseudo_labels_changed"] = float(change["n_changed"])
        if change.get("mean_dice") is not None and math.isfinite(change["mean_dice"]):
            values["pseudo_label_change_dice"] = float(change["mean_dice"])
    run.log_metrics(values, step=index)
    run.set_tags({TAG_KEPT: ",".join(filt.kept) or "-", TAG_DROPPED: ",".join(filt.dropped) or "-"})
    if filt.alert:
        run.set_tags({TAG_ALERT: filt.alert})
    return {
        "kept": list(filt.kept),
        "dropped": list(filt.dropped),
        "carried": list(filt.carried_over),
        "alert": filt.alert,
        "change": _brief_change(change),
    }


def predict_validation(
    index: int, cfg: CosmosConfig, *, fold_dirs: Sequence[str | Path], data_dir: str | Path, out_dir: str | Path
) -> dict[str, Any]:
    """Predict target_validation (what the round is scored on); 0 cases when the data has none."""
    from cosmos.segmentation.inference import predict

    images = Path(data_dir) / layout.VALIDATION_DIR
    if not images.is_dir() or not any(images.glob("*.nii*")):
        log.warning("round %d: no target_validation images, nothing to predict", index)
        return {"n_cases": 0}
    written = predict([Path(d) for d in fold_dirs], images, out_dir, cfg)
    plaus = plausibility.assess_folder(out_dir, images, data_dir, cfg.checks.volume_range_factor)
    return {"n_cases": len(written), "plausible": plaus["n_plausible"]}


def score(
    index: int,
    cfg: CosmosConfig,
    *,
    predictions_dir: str | Path,
    data_dir: str | Path,
    run_dir: str | Path | None,
    out_dir: str | Path,
    tracking_uri: str,
    roi_data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Dice/ASSD of the round on target_validation, logged with step = round.

    Predictions made on ROI-cropped scans (``roi_data_dir``) are first put back on the original
    grids of ``data_dir`` (``out_dir/predictions``), so the score is exactly ``cosmos evaluate``'s on
    the user's scans (a structure the crop missed counts as missed). ``metrics.json`` in ``out_dir``.
    """
    from cosmos.data.roi import uncrop_predictions
    from cosmos.evaluation.metrics import evaluate_folder
    from cosmos.evaluation.metrics import write_json as write_metrics

    full = Path(out_dir) / FULL_PREDICTIONS
    if any(Path(predictions_dir).glob("*_Label.nii.gz")):
        if roi_data_dir is not None:
            uncrop_predictions(predictions_dir, full, roi_data_dir, data_dir)
            # the measurements go along: a crop is cut from the scan, not resampled, so the voxels are the same
            for meas in Path(predictions_dir).glob("*_measurements.json"):
                (full / meas.name).write_bytes(meas.read_bytes())
        else:
            copy_tree(predictions_dir, full)
    labels = Path(data_dir) / layout.VALIDATION_LABELS_DIR
    if not labels.is_dir() or not any(labels.glob("*.nii*")):
        log.warning("round %d: no validation labels, not scored", index)
        return {"has_metrics": False, "mean_dice": None}
    selection = list(cfg.tracking.selection_cases)
    reported = None
    if selection:  # promote=labels: the selection set chooses, the other cases are reported; never both
        from cosmos.evaluation.metrics import _find_labels

        reported = sorted(set(_find_labels(labels)) - set(selection), key=layout.case_sort_key)
        if not reported:
            raise CosmosError(
                f"tracking.selection_cases {selection} hold every labelled validation case: none is left to report"
            )
        write_metrics(evaluate_folder(full, labels, only=selection), Path(out_dir) / SELECTION_METRICS)
    result = evaluate_folder(full, labels, only=reported)
    write_metrics(result, Path(out_dir) / "metrics.json")
    if result.get("errors"):
        log.warning("round %d: evaluation errors: %s", index, result["errors"])
    run = _round_run(index, run_dir, tracking_uri)
    run.log_metrics(metric_values(result), step=index)
    run.log_dict(dict(result), "metrics.json")
    mean = ((result.get("summary") or {}).get("mean") or {}).get("dice_mean")
    return {"has_metrics": True, "mean_dice": mean}
