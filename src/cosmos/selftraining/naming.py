"""The names a self-training round is known by, spelled once, and the handles its steps pass on.

Every entry point (``cosmos run``, ``cosmos selftrain``, ``cosmos benchmark``, a Kubeflow cluster) runs
the round steps (:mod:`cosmos.selftraining.rounds`) through the same DAG, so one set of names holds
whoever started the run:

* the round's name (``teacher``, ``student k``) and its MLflow run name, params (:func:`round_params`),
  tags (``TAG_*``) and metric names (:func:`metric_values`, ``step`` = round);
* the registry version tags the promotion gate reads back (``VERSION_TAG_*``,
  :mod:`cosmos.selftraining.gate`);
* the files one step leaves for the next (``run.json`` with the round's MLflow run id, the label
  change, the replay alert, the summary's ``rounds.json``) and the helpers that read them;
* :func:`check_compiled_shape`: the run's config against the DAG it was compiled into.

Why a module of its own: the steps, the gate and the summary all spell these names; kept here, below
all of them, none has to import another to spell one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from cosmos.config import PREDICTION_ONLY, ROUND_COUNT, CosmosConfig
from cosmos.errors import CosmosError

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


# ------------------------------------------------------------------------------------ label change
# pseudo_label writes it (CHANGE_FILE), register reads it back for the round's summary entry.
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
