"""KFP v2 components of the COSMOS pipeline: one module per stage, each a thin wrapper that calls
one ``cosmos`` library function (no algorithm lives here).

The stage modules define plain Python functions; :func:`build` turns them into KFP components for
a given base image, so the image is chosen at compile time (``cosmos compile --image``)::

    ops = build("registry.example.com/cosmos:0.1.0")
    ops.ingest_validate(data_uri="s3://bucket/crossmoda", ...)      # inside a @dsl.pipeline
    ops.ingest_validate.python_func(...)                           # the raw function (unit tests)

``install_kfp_package=False``: the image (docker/Dockerfile) already has the pinned kfp, and the
local runner (``cosmos run``) would otherwise pip-install kfp for every task.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

from components.benchmark import benchmark_table
from components.evaluate import evaluate
from components.ingest_validate import crop_roi, ingest_validate
from components.predict import predict_pseudo_labels, predict_validation
from components.prepare_round import prepare_round, start_round_run
from components.report_register import register_round, report
from components.train_fold import train_fold
from components.train_translator import train_translator
from components.translate import import_pseudo, labelled_as_pseudo, translate

DEFAULT_IMAGE = "ghcr.io/cosmos-kubeflow/cosmos:0.1.0"

# component name -> the plain function behind it; the order is the DAG's order.
STAGES: dict[str, Callable[..., Any]] = {
    "ingest_validate": ingest_validate,
    "crop_roi": crop_roi,
    "train_translator": train_translator,
    "translate": translate,
    "import_pseudo": import_pseudo,
    "labelled_as_pseudo": labelled_as_pseudo,
    "prepare_round": prepare_round,
    "start_round_run": start_round_run,
    "train_fold": train_fold,
    "predict_pseudo_labels": predict_pseudo_labels,
    "predict_validation": predict_validation,
    "evaluate": evaluate,
    "register_round": register_round,
    "report": report,
    "benchmark_table": benchmark_table,
}

# The stages that need a GPU (accelerator, node selector, tolerations at compile time).
GPU_STAGES = frozenset({"train_translator", "translate", "train_fold", "predict_pseudo_labels", "predict_validation"})


@dataclass(frozen=True)
class Components:
    """The built KFP components, one attribute per stage (see STAGES)."""

    ingest_validate: Any
    crop_roi: Any
    train_translator: Any
    translate: Any
    import_pseudo: Any
    labelled_as_pseudo: Any
    prepare_round: Any
    start_round_run: Any
    train_fold: Any
    predict_pseudo_labels: Any
    predict_validation: Any
    evaluate: Any
    register_round: Any
    report: Any
    benchmark_table: Any


def stage_function(name: str) -> Callable[..., Any]:
    """The raw Python function behind a stage."""
    return STAGES[name]


def build(base_image: str = DEFAULT_IMAGE) -> Components:
    """Every stage as a KFP component running in ``base_image``."""
    from kfp import dsl

    built = {
        f.name: dsl.component(STAGES[f.name], base_image=base_image, install_kfp_package=False)
        for f in fields(Components)
    }
    return Components(**built)
