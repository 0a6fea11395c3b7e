"""The round's last step, ``register``: its registry version and the promotion gate for ``champion``.

``register`` turns the round's fold models into one ``cosmos-segmenter`` version (registry tags: the
round's name, its kept pseudo-labels, its label-free checks and, for ``promote=labels``, the gate's
figure), decides whether the ``champion`` alias moves to it (:func:`promotion_decision`), adds the
round's summary entry (:mod:`cosmos.selftraining.summary`) and closes the round run.

Why apart from the other steps (:mod:`cosmos.selftraining.rounds`): the gate is the one policy
decision of a round (``tracking.promote``: ``always``, the paper's; ``label_free``; ``labels``) and the
only step that reads back what an earlier round registered (the champion's figure, from its version
tags).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from cosmos.config import CosmosConfig
from cosmos.resume import copy_tree
from cosmos.selftraining import plausibility, verdict
from cosmos.selftraining.naming import (
    SELECTION_METRICS,
    TAG_CHECKS,
    TAG_GATE,
    VERSION_TAG_CHECKS,
    VERSION_TAG_METRIC,
    VERSION_TAG_SCORE,
    _round_run,
    read_label_change,
    read_run_id,
    round_name,
)
from cosmos.selftraining.summary import summarize

log = logging.getLogger("cosmos.selftraining.rounds")  # the steps' logger, as before the split: same log lines


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
    validation_plausibility, pseudo_plausibility = plausibility.read(predictions_dir), plausibility.read(labels_dir)
    checks = verdict.round_checks(
        cfg.checks,
        fold_dirs=folds,
        filter_summary=filt_dict if filt is not None else None,
        validation_plausibility=validation_plausibility,
        pseudo_plausibility=pseudo_plausibility,
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
    filt_dict["plausibility"] = _brief_plausibility(pseudo_plausibility)
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
        validation_plausibility=_brief_plausibility(validation_plausibility),
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
