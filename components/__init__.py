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
from typing import Any

DEFAULT_IMAGE = "ghcr.io/cosmos-kubeflow/cosmos:0.1.0"

# component name -> (module, function); the order is the DAG's order.
STAGES: dict[str, tuple[str, str]] = {
    "ingest_validate": ("components.ingest_validate", "ingest_validate"),
    "train_translator": ("components.train_translator", "train_translator"),
    "translate": ("components.translate", "translate"),
    "prepare_round": ("components.prepare_round", "prepare_round"),
    "start_round_run": ("components.prepare_round", "start_round_run"),
    "train_fold": ("components.train_fold", "train_fold"),
    "predict_pseudo_labels": ("components.predict", "predict_pseudo_labels"),
    "predict_validation": ("components.predict", "predict_validation"),
    "evaluate": ("components.evaluate", "evaluate"),
    "register_round": ("components.report_register", "register_round"),
    "report": ("components.report_register", "report"),
}

# The stages that need a GPU (accelerator, node selector, tolerations at compile time).
GPU_STAGES = frozenset({"train_translator", "translate", "train_fold", "predict_pseudo_labels", "predict_validation"})


@dataclass(frozen=True)
class Components:
    """The built KFP components, one attribute per stage (see STAGES)."""

    ingest_validate: Any
    train_translator: Any
    translate: Any
    prepare_round: Any
    start_round_run: Any
    train_fold: Any
    predict_pseudo_labels: Any
    predict_validation: Any
    evaluate: Any
    register_round: Any
    report: Any


def stage_function(name: str):
    """The raw Python function behind a stage."""
    import importlib

    module, func = STAGES[name]
    return getattr(importlib.import_module(module), func)


def build(base_image: str = DEFAULT_IMAGE) -> Components:
    """Every stage as a KFP component running in ``base_image``."""
    from kfp import dsl

    built = {
        f.name: dsl.component(stage_function(f.name), base_image=base_image, install_kfp_package=False)
        for f in fields(Components)
    }
    return Components(**built)
