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

The summary artifact is cumulative: each round's ``register`` copies the previous summary and adds
its own entry (``rounds.json`` + ``round_<k>/``), so the report reads one artifact whatever K is.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from cosmos.config import PREDICTION_ONLY, ROUND_COUNT, CosmosConfig
from cosmos.data import layout, roi
from cosmos.errors import CosmosError
from cosmos.resume import KEY_FILE, copy_tree, read_pointer, write_json, write_pointer
from cosmos.selftraining import plausibility, verdict

log = logging.getLogger(__name__)

RUN_INFO_FILE = "run.json"
ROUNDS_FILE = "rounds.json"
CHANGE_FILE = "label_change.json"
REPLAY_FILE = "replay_alert.json"
FULL_PREDICTIONS = "predictions"  # in the score step's output: validation predictions on the original grids
SELECTION_METRICS = "selection_metrics.json"  # promote=labels: the selection cases' scores (never reported)
STRUCTURES = ("VS", "cochlea", "mean")

# MLflow names, spelled once.
TAG_ROUND_NAME = "cosmos.round_name"
TAG_PROFILE = "cosmos.profile"
TAG_COMMIT = "cosmos.git_commit"
TAG_KEPT = "cosmos.pseudo_labels_kept"
TAG_DROPPED = "cosmos.pseudo_labels_dropped"
TAG_ALERT = "cosmos.filter_alert"
TAG_REPLAY = "cosmos.replay_alert"
TAG_GATE = "cosmos.promotion"
VERSION_TAG_SCORE = "gate_score"
VERSION_TAG_METRIC = "gate_metric"
VERSION_TAG_CHECKS = "label_free_checks"
TAG_CHECKS = "cosmos.label_free_checks"


def round_name(index: int) -> str:
    """``teacher`` for round 0, ``student k`` after it: the one spelling used everywhere."""
    return "teacher" if index == 0 else f"student {index}"


def round_run_name(index: int) -> str:
    """The round's MLflow run name, e.g. ``round_0-teacher``, ``round_2-student_2``."""
    return f"round_{index}-{round_name(index).replace(' ', '_')}"


def round_params(index: int, cfg: CosmosConfig) -> dict[str, Any]:
    """The params of a round's MLflow run (the same whichever command ran the round). Without the fields its
    work does not depend on (``PREDICTION_ONLY``, ``ROUND_COUNT``): a run reused after one of them changed
    would otherwise show a stale value, and MLflow refuses to change a logged param."""
    flat = {**cfg.flat("segmentation"), **cfg.flat("selftraining")}
    for name in (*PREDICTION_ONLY, *ROUND_COUNT):
        flat.pop(name, None)
    return {"round": index, "profile": cfg.profile, "seed": cfg.seed, **flat}


def round_tags(index: int, cfg: CosmosConfig) -> dict[str, str]:
    from cosmos.tracking import git_commit

    return {TAG_ROUND_NAME: round_name(index), TAG_PROFILE: cfg.profile, TAG_COMMIT: git_commit()}


def metric_values(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """``evaluate_folder`` result -> flat MLflow metrics (``val_dice_VS``, ``val_assd_mean_std``, ...)."""
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


def check_compiled_shape(cfg: CosmosConfig, *, compiled_rounds: int, folds: Sequence[int]) -> None:
    """Fail fast when the run's config disagrees with the DAG it runs in.

    K is unrolled and the fold list fans out at compile time, so a config asking for another K, or
    folds other than the ``folds`` parameter, would otherwise train the compiled shape silently.
    """
    k = cfg.selftraining.rounds
    if int(compiled_rounds) != k:
        raise CosmosError(
            f"the pipeline was compiled with K={compiled_rounds} self-training rounds but the run's "
            f"config (profile {cfg.profile}) asks for selftraining.rounds={k}: recompile with "
            f"`cosmos compile --profile {cfg.profile}` (or --rounds {k}), or set "
            f"selftraining.rounds={compiled_rounds}"
        )
    given = sorted(int(float(f)) for f in folds)  # kfp.local hands list items over as floats
    wanted = sorted(int(f) for f in cfg.segmentation.folds)
    if given != wanted:
        raise CosmosError(
            f"the 'folds' parameter {given} differs from the config's segmentation.folds {wanted} "
            f"(profile {cfg.profile}): pass folds={wanted} or recompile with "
            f"`cosmos compile --profile {cfg.profile}`"
        )


# ------------------------------------------------------------------------------------ run handle
def write_run_info(out_dir: str | Path, run_id: str, index: int) -> None:
    (Path(out_dir) / RUN_INFO_FILE).write_text(json.dumps({"run_id": run_id, "round": index}))


def read_run_id(run_dir: str | Path | None) -> str | None:
    """The round's MLflow run id from :func:`open_round`'s output (None when there is none)."""
    if run_dir is None:
        return None
    path = Path(run_dir) / RUN_INFO_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("run_id") or None


def _round_run(index: int, run_dir: str | Path | None, tracking_uri: str):
    from cosmos.segmentation.mlflow_logging import RunLogger, _noop_logger, start_round_run

    run_id = read_run_id(run_dir)
    if not run_id:
        return _noop_logger(f"round {index}")
    run: RunLogger = start_round_run(index, tracking_uri=tracking_uri, resume_run_id=run_id)
    return run


def replay_message(index: int) -> str:
    return (
        f"round {index} ({round_name(index)}): no pseudo-labelled hrT2 was accepted, so this student trains "
        "on its teacher's exact cases (only its seed differs); see the previous round's filter summary"
    )


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
    predict([Path(d) for d in fold_dirs], images, labels_dir, cfg, mirroring=True, save_probabilities=pixel)
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


def _brief_change(change: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The label-change figures without the per-case table (summary entries, MLflow)."""
    if change is None:
        return None
    mean = change.get("mean_dice")
    return {
        "n_compared": change.get("n_compared"),
        "n_changed": change.get("n_changed"),
        "mean_dice": mean if mean is not None and math.isfinite(mean) else None,
        "mean_dice_per_structure": change.get("mean_dice_per_structure"),
    }


def read_label_change(kept_dir: str | Path | None) -> dict[str, Any] | None:
    if kept_dir is None or not (Path(kept_dir) / CHANGE_FILE).is_file():
        return None
    return _brief_change(json.loads((Path(kept_dir) / CHANGE_FILE).read_text()))


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


# ------------------------------------------------------------------------------------ registry + gate
def gate_figure(policy: str, scores_dir: str | Path) -> tuple[str, float] | None:
    """The figure the promotion gate compares. Only ``promote=labels`` has one: the mean Dice on the
    selection cases (``selection_metrics.json``), which the reported score never includes. The other
    policies read no label at all."""
    if policy != "labels":
        return None
    metrics_file = Path(scores_dir) / SELECTION_METRICS
    if metrics_file.is_file():
        mean = ((json.loads(metrics_file.read_text()).get("summary") or {}).get("mean") or {}).get("dice_mean")
        if mean is not None:
            return "selection_dice_mean", float(mean)
    return None


def promotion_decision(
    policy: str,
    is_final: bool,
    round_passed: bool,
    figure: tuple[str, float] | None,
    champion: tuple[str, float] | None,
) -> tuple[bool, str]:
    """Whether the champion alias moves to this round, and why (a sentence for the report/MLflow).

    A round whose label-free checks failed never becomes champion. Otherwise: ``always`` (the paper)
    promotes the final round; ``label_free`` every passing round, so the alias ends on the latest one;
    ``labels`` a round whose selection-set Dice is >= the champion's (or the first passing one).
    """
    if not round_passed:
        return False, "its label-free checks failed (see the round's checks)"
    if policy == "always":
        return is_final, "final round (promote=always)" if is_final else "not the final round (promote=always)"
    if policy == "label_free":
        return True, "its label-free checks pass (promote=label_free: the latest passing round)"
    if figure is None:
        return False, "no selection-set score (promote=labels needs tracking.selection_cases with labels)"
    name, value = figure
    if champion is None or champion[0] != name:
        return True, f"first candidate: {name} {value:.4f}"
    if value >= champion[1]:
        return True, f"{name} {value:.4f} >= champion's {champion[1]:.4f}"
    return False, f"{name} {value:.4f} < champion's {champion[1]:.4f}: alias stays"


def _champion_figure(model_name: str, alias: str) -> tuple[str, float] | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        mv = MlflowClient().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    tags = mv.tags or {}
    if VERSION_TAG_METRIC in tags and VERSION_TAG_SCORE in tags:
        return tags[VERSION_TAG_METRIC], float(tags[VERSION_TAG_SCORE])
    return None


def register(
    index: int,
    cfg: CosmosConfig,
    *,
    fold_dirs: Sequence[str | Path],
    scores_dir: str | Path,
    predictions_dir: str | Path,
    run_dir: str | Path | None,
    is_final: bool,
    summary_dir: str | Path,
    models_dir: str | Path,
    tracking_uri: str,
    labels_dir: str | Path | None = None,
    kept_dir: str | Path | None = None,
    previous_summary_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Register the round's ensemble, apply the promotion gate, close the round run, add the summary entry.

    ``models_dir`` receives the fold models (``fold_<f>/``) when the next student warm-starts from
    them (``selftraining.student_init: teacher``).
    """
    from mlflow import MlflowClient

    from cosmos.segmentation.mlflow_logging import with_retry
    from cosmos.segmentation.registry import register_round
    from cosmos.selftraining.filtering import read_filter_summary

    folds = [Path(d) for d in fold_dirs]
    filt = read_filter_summary(kept_dir) if kept_dir is not None else None
    filt_dict = filt.to_dict() if filt is not None else {}
    filt_dict["change"] = read_label_change(kept_dir)
    checks = verdict.round_checks(
        cfg.checks,
        fold_dirs=folds,
        filter_summary=filt_dict if filt is not None else None,
        validation_plausibility=plausibility.read(predictions_dir),
        pseudo_plausibility=plausibility.read(labels_dir),
    )
    round_passed = verdict.passed(checks)
    for check in checks:
        (log.info if check.passed is not False else log.error)(
            "round %d check %s: %s - %s",
            index,
            check.name,
            {True: "pass", False: "FAIL", None: "n/a"}[check.passed],
            check.detail,
        )
    figure = gate_figure(cfg.tracking.promote, scores_dir)
    run_id = read_run_id(run_dir)
    tags: dict[str, Any] = {
        "round_name": round_name(index),
        "pseudo_labels_kept": len(filt.kept) if filt else 0,
        VERSION_TAG_CHECKS: "passed" if round_passed else "failed",
    }
    if figure is not None:
        tags.update({VERSION_TAG_METRIC: figure[0], VERSION_TAG_SCORE: f"{figure[1]:.6f}"})
    version = register_round(folds, index, cfg, tags=tags, alias=None, tracking_uri=tracking_uri, run_id=run_id)
    name, alias = cfg.tracking.segmenter_model_name, cfg.tracking.champion_alias
    moved, why = promotion_decision(cfg.tracking.promote, is_final, round_passed, figure, _champion_figure(name, alias))
    if moved:
        with_retry(MlflowClient().set_registered_model_alias, name, alias, version, what="set alias")
    log.info(
        "round %d: %s version %s %s @%s (%s)",
        index,
        name,
        version,
        "becomes" if moved else "does not become",
        alias,
        why,
    )
    run = _round_run(index, run_dir, tracking_uri)
    run.set_tags(
        {
            TAG_GATE: ("promoted: " if moved else "held: ") + why,
            TAG_CHECKS: "passed" if round_passed else "; ".join(verdict.failures([c.to_dict() for c in checks])),
        }
    )
    if cfg.selftraining.student_init == "teacher":
        for d in folds:
            copy_tree(d, Path(models_dir) / d.name if d.name.startswith("fold_") else Path(models_dir) / "fold_0")
    gate = {
        "policy": cfg.tracking.promote,
        "figure": figure[0] if figure else None,
        "value": figure[1] if figure else None,
        "promoted": moved,
        "why": why,
    }
    filt_dict["plausibility"] = _brief_plausibility(plausibility.read(labels_dir))
    entry = summarize(
        index,
        summary_dir,
        previous_summary_dir,
        version=version,
        run_id=run_id,
        scores_dir=scores_dir,
        predictions_dir=predictions_dir,
        labels_dir=labels_dir,
        filter_summary=filt_dict,
        gate=gate,
        checks=[c.to_dict() for c in checks],
        validation_plausibility=_brief_plausibility(plausibility.read(predictions_dir)),
        iterations=_round_iterations(folds),
    )
    run.end("FINISHED")
    return {"model_version": version, "promoted": moved, "entry": entry}


def _brief_plausibility(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Plausibility counts and each case's problems (the summary entry and the report)."""
    if not result:
        return None
    return {
        "n_cases": result.get("n_cases"),
        "n_plausible": result.get("n_plausible"),
        "problems": {c: v["problems"] for c, v in (result.get("cases") or {}).items() if v.get("problems")},
    }


def _round_iterations(folds: Sequence[Path]) -> dict[str, int] | None:
    """This round's training iterations per fold and cumulated over the warm-start chain (the fold's own
    manifest), so rows of the benchmark can show what each model's training cost."""
    from cosmos.segmentation.training import FOLD_MANIFEST

    manifests = [verdict.read_json(d / FOLD_MANIFEST) for d in folds]
    manifests = [m for m in manifests if m and "train_iterations" in m]
    if not manifests:
        return None
    return {
        "train_iterations": max(int(m["train_iterations"]) for m in manifests),
        "cumulative_iterations": max(int(m.get("cumulative_iterations", m["train_iterations"])) for m in manifests),
    }


def summarize(
    index: int,
    summary_dir: str | Path,
    previous_summary_dir: str | Path | None,
    *,
    version: str,
    run_id: str | None,
    scores_dir: str | Path,
    predictions_dir: str | Path,
    labels_dir: str | Path | None,
    filter_summary: Mapping[str, Any] | None,
    gate: Mapping[str, Any],
    checks: Sequence[Mapping[str, Any]] = (),
    validation_plausibility: Mapping[str, Any] | None = None,
    iterations: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The cumulative summary artifact: the previous rounds plus this one.

    Layout: ``rounds.json`` (the report's ``rounds`` entries, paths relative to the artifact) and
    ``round_<k>/{metrics.json, predictions/, pseudo_labels/}``.
    """
    out = Path(summary_dir)
    rounds: list[dict[str, Any]] = []
    if previous_summary_dir is not None:
        shutil.copytree(previous_summary_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns(KEY_FILE))
        rounds = json.loads((out / ROUNDS_FILE).read_text())
    rounds = [r for r in rounds if r["index"] != index]
    if gate.get("promoted"):
        for r in rounds:
            r["champion"] = False
    rdir = out / f"round_{index}"
    rdir.mkdir(parents=True, exist_ok=True)
    fs = dict(filter_summary or {})
    entry: dict[str, Any] = {
        "index": index,
        "name": round_name(index),
        "metrics": None,
        "kept": fs.get("kept", []),
        "dropped": fs.get("dropped", []),
        "carried": fs.get("carried_over", []),
        "filter_alert": fs.get("alert"),
        "label_change": fs.get("change"),
        "pseudo_labels_dir": None,
        "predictions_dir": None,
        "model_version": version or None,
        "run_id": run_id or None,
        "champion": bool(gate.get("promoted")),
        "gate": dict(gate),
        "checks": [dict(c) for c in checks],
        "checks_passed": verdict.passed(list(checks)),
        "pseudo_label_plausibility": fs.get("plausibility"),
        "validation_plausibility": dict(validation_plausibility) if validation_plausibility else None,
        "train_iterations": (iterations or {}).get("train_iterations"),
        "cumulative_iterations": (iterations or {}).get("cumulative_iterations"),
    }
    scores = Path(scores_dir) / "metrics.json"
    if scores.is_file():
        shutil.copyfile(scores, rdir / "metrics.json")
        entry["metrics"] = f"round_{index}/metrics.json"
    copy_tree(predictions_dir, rdir / "predictions")
    entry["predictions_dir"] = f"round_{index}/predictions"
    full = Path(scores_dir) / FULL_PREDICTIONS
    if full.is_dir():
        copy_tree(full, rdir / "full_predictions")
        entry["full_predictions_dir"] = f"round_{index}/full_predictions"
    if labels_dir is not None:
        copy_tree(labels_dir, rdir / "pseudo_labels")
        entry["pseudo_labels_dir"] = f"round_{index}/pseudo_labels"
    rounds.append(entry)
    rounds.sort(key=lambda r: r["index"])
    write_json(out / ROUNDS_FILE, rounds)
    return entry


def load_summary(summary_dir: str | Path) -> list[dict[str, Any]]:
    """The rounds of a summary artifact with metrics loaded and paths made absolute."""
    src = Path(summary_dir).resolve()
    entries = []
    for r in json.loads((src / ROUNDS_FILE).read_text()):
        e = dict(r)
        e["metrics"] = json.loads((src / r["metrics"]).read_text()) if r.get("metrics") else None
        for k in ("pseudo_labels_dir", "predictions_dir", "full_predictions_dir"):
            e[k] = str(src / r[k]) if r.get(k) else None
        entries.append(e)
    return entries


def champion_entry(rounds: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The round that holds the champion alias after the run (None when no round was promoted)."""
    promoted = [r for r in rounds if r.get("champion")]
    return promoted[-1] if promoted else None


def _mean_dice(entry: Mapping[str, Any] | None) -> float | None:
    metrics = (entry or {}).get("metrics") or {}
    value = ((metrics.get("summary") or {}).get("mean") or {}).get("dice_mean")
    return float(value) if isinstance(value, (int, float)) else None


def build_bundle(
    summary_dir: str | Path,
    bundle_dir: str | Path,
    *,
    data_dir: str,
    pseudo_dir: str | None,
    profile: str,
    translator_fidelity: Mapping[str, Any] | None = None,
    translator_attempts: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], str, str | None]:
    """The run's final outputs and the report's summary dict.

    Fills ``bundle_dir`` with ``predictions/`` (the final round's, on the original grids: the paper's
    protocol reports its fixed last round), ``metrics.json`` (its scores, when labelled),
    ``summary.json`` and ``verdict.json`` (:func:`cosmos.selftraining.verdict.run_verdict`). Where the
    champion is another round, ``summary.json`` names it and its score beside the final one. Returns
    the summary, the final round's mean Dice as text and the final round's MLflow run id.
    """
    bundle = Path(bundle_dir)
    entries = load_summary(summary_dir)
    final = entries[-1]
    champion = champion_entry(entries)
    copy_tree(final.get("full_predictions_dir") or final["predictions_dir"], bundle / "predictions")
    value = _mean_dice(final)
    dice = f"{value:.3f}" if value is not None else "n/a"
    if final["metrics"] is not None:
        (bundle / "metrics.json").write_text(json.dumps(final["metrics"], indent=2))
    outcome = verdict.run_verdict(entries)
    summary = {
        "title": f"COSMOS run ({profile} profile)",
        "profile": profile,
        "data_dir": str(data_dir),
        "pseudo_dir": str(pseudo_dir) if pseudo_dir else None,
        "rounds": entries,
        "final_round": final["index"],
        "final_mean_dice": value,
        "champion_round": champion["index"] if champion is not None else None,
        "champion_mean_dice": _mean_dice(champion),
        "verdict": outcome,
        "translator_fidelity": translator_fidelity,
        "translator_attempts": translator_attempts,
    }
    (bundle / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (bundle / verdict.VERDICT_FILE).write_text(json.dumps(outcome, indent=2))
    (log.info if outcome["passed"] else log.error)("%s", outcome["line"])
    return summary, dice, final.get("run_id")


def attach_report(run_id: str, index: int, report_dir: str | Path, tracking_uri: str) -> None:
    """Attach the report (Markdown, HTML, PNGs) to the final round's MLflow run under ``report/``."""
    from cosmos.segmentation.mlflow_logging import start_round_run

    run = start_round_run(index, tracking_uri=tracking_uri, resume_run_id=run_id)
    for path in sorted(Path(report_dir).iterdir()):
        if path.is_file():
            run.log_artifact(path, "report")
    run.end("FINISHED")


def report(
    summary_dir: str | Path,
    bundle_dir: str | Path,
    *,
    data_dir: str | Path,
    pseudo_dir: str | Path | None,
    profile: str,
    tracking_uri: str,
) -> str:
    """The run's bundle and report (attached to the final round's MLflow run); returns the final
    round's mean Dice as text ("n/a" without validation labels)."""
    from cosmos.evaluation.report import write_report
    from cosmos.translation.model_io import ATTEMPTS_JSON

    pseudo = Path(pseudo_dir) if pseudo_dir is not None else None
    summary, dice, run_id = build_bundle(
        summary_dir,
        bundle_dir,
        data_dir=str(data_dir),
        pseudo_dir=str(pseudo_dir) if pseudo_dir else None,
        profile=profile,
        translator_fidelity=verdict.read_json(pseudo / "fidelity.json") if pseudo else None,
        translator_attempts=verdict.read_json(pseudo / ATTEMPTS_JSON) if pseudo else None,
    )
    write_report(Path(bundle_dir) / "report", summary)
    if run_id:
        attach_report(run_id, summary["rounds"][-1]["index"], Path(bundle_dir) / "report", tracking_uri)
    return dice
