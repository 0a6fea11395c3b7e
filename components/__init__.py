"""KFP v2 components of the COSMOS pipeline: one folder per stage, each a thin wrapper that calls
one ``cosmos`` library function (no algorithm lives here).

``components/<stage>/`` holds ``component.py`` (the plain Python function KFP ships by source) and
``spec.py`` (its :class:`~components.spec.StageSpec`: GPU, Secret, caching, /dev/shm, retries,
scratch volume, resources per profile). :data:`STAGE_NAMES` is the one list of stages, in DAG
order; everything else here (STAGES, SPECS, GPU_STAGES, :class:`Components`) and the tables in
``pipelines/`` are read off the specs.

:func:`build` turns the functions into KFP components for a given base image, so the image is
chosen at compile time (``cosmos compile --image``)::

    ops = build("registry.example.com/cosmos:0.1.0")
    ops.ingest_validate(data_uri="s3://bucket/crossmoda", ...)      # inside a @dsl.pipeline
    ops.ingest_validate.python_func(...)                           # the raw function (unit tests)
    ops.spec_of(task)                                              # the StageSpec behind a task

``install_kfp_package=False``: the image (docker/Dockerfile) already has the pinned kfp, and the
local runner (``cosmos run``) would otherwise pip-install kfp for every task.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator, Mapping

from components.spec import StageSpec

DEFAULT_IMAGE = "ghcr.io/cosmos-kubeflow/cosmos:0.1.0"

# The stages, in the DAG's order; each is the folder components/<name>/ with its component and spec.
STAGE_NAMES: tuple[str, ...] = (
    "ingest_validate",
    "crop_roi",
    "train_translator",
    "translate",
    "import_pseudo",
    "labelled_as_pseudo",
    "prepare_round",
    "start_round_run",
    "train_fold",
    "predict_pseudo_labels",
    "predict_validation",
    "evaluate",
    "register_round",
    "report",
    "benchmark_table",
)


def _load_specs() -> dict[str, StageSpec]:
    specs: dict[str, StageSpec] = {}
    for name in STAGE_NAMES:
        spec = importlib.import_module(f"{__name__}.{name}").SPEC
        if not isinstance(spec, StageSpec) or spec.name != name:
            raise ImportError(f"components/{name}/spec.py: SPEC must be a StageSpec of the function {name}()")
        specs[name] = spec
    return specs


# stage name -> its spec, in the DAG's order.
SPECS: dict[str, StageSpec] = _load_specs()

# component name -> the plain function behind it; the order is the DAG's order.
STAGES: dict[str, Callable[..., Any]] = {name: spec.component for name, spec in SPECS.items()}

# The stages that need a GPU (accelerator, node selector, tolerations at compile time).
GPU_STAGES = frozenset(name for name, spec in SPECS.items() if spec.gpu)


def stages_where(test: Callable[[StageSpec], bool]) -> frozenset[str]:
    """The names of the stages whose spec passes ``test`` (the tables in ``pipelines/`` are built so)."""
    return frozenset(name for name, spec in SPECS.items() if test(spec))


def stage_function(name: str) -> Callable[..., Any]:
    """The raw Python function behind a stage."""
    return STAGES[name]


class Components:
    """The built KFP components, one attribute per stage (``ops.train_fold``; see STAGE_NAMES)."""

    __slots__ = ("_built", "_by_component")

    def __init__(self, built: Mapping[str, Any]) -> None:
        if list(built) != list(STAGE_NAMES):
            raise ValueError(f"Components needs every stage in order: {', '.join(STAGE_NAMES)}")
        self._built = dict(built)
        # KFP's component name (``train-fold``) -> stage, so a task finds its spec without its name typed again
        self._by_component = {comp.component_spec.name: name for name, comp in built.items()}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # an unset slot (copy, pickle): no lookup through _built
            raise AttributeError(name)
        try:
            return self._built[name]
        except KeyError:
            raise AttributeError(f"no stage {name!r}; stages: {', '.join(STAGE_NAMES)}") from None

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self._built]

    def __iter__(self) -> Iterator[str]:
        return iter(self._built)

    def spec_of(self, task: Any) -> StageSpec:
        """The spec of the stage a pipeline task (``ops.<stage>(...)`` inside a pipeline) runs."""
        return SPECS[self._by_component[task.component_spec.name]]


def build(base_image: str = DEFAULT_IMAGE) -> Components:
    """Every stage as a KFP component running in ``base_image``."""
    from kfp import dsl

    return Components(
        {
            name: dsl.component(spec.component, base_image=base_image, install_kfp_package=False)
            for name, spec in SPECS.items()
        }
    )
