"""Per-stage Kubernetes resources of ``cosmos-pipeline``: requests, limits, /dev/shm, timeouts,
retries, and the optional scratch volume, with one table per compile-time profile.

The figures live with each stage (``components/<stage>/spec.py``, a
:class:`~components.spec.StageSpec`); this module reads them into the tables the compiler uses
(:data:`PROFILE_RESOURCES`, :data:`SIDE_EFFECT_STAGES`, :data:`SHM_STAGES`, :data:`RETRY_STAGES`),
applies the compile-time overrides and refuses settings the cluster would reject. No stage name is
typed here.

Why a table at compile time and not in the run-time config: requests, limits and volumes are fixed
when the pipeline is *compiled* (they land in the IR and the platform spec), while the ``profile``
and ``config`` pipeline parameters are only read when a task runs. So the table is keyed by the
compile-time profile (``PipelineOptions.profile``) and overridden per stage at compile time
(``PipelineOptions.resources``).

What the numbers are for:

* **Requests** keep fold, prepare and translate pods out of the BestEffort class, which the
  kubelet evicts first under node pressure. **Limits** bound a runaway stage.
* **/dev/shm**: a pod gets 64 MiB of shared memory by default. nnU-Net's augmentation workers
  (up to 12 on a GPU node, ``cosmos.segmentation.environment.augmentation_workers``) and the
  prediction export pass tensors through /dev/shm, and die ("background workers died") when it
  is full. ``train_fold`` and every ``predict_*`` stage therefore get a Memory-backed emptyDir at
  /dev/shm (``shm=True`` in their spec). Such an emptyDir is RAM and counts against the container's
  memory limit, so :func:`check` refuses a shm size that does not fit under the limit with room to spare.
* **Timeouts** become the pod's ``activeDeadlineSeconds`` (kfp-kubernetes ``set_timeout``): a
  hung stage fails instead of holding a GPU for ever. They are per attempt (a retried pod gets a
  new deadline).
* **Retries**: only ``train_fold`` retries (``retry=True``; preemptible GPU nodes). With
  ``segmentation.checkpoint_uri`` set, a retried fold resumes from its last checkpoint in the
  object store (:mod:`cosmos.segmentation.checkpoint_sync`); without it, from epoch 0.

* **Data size** (``cosmos compile --dataset-gb N``): every stage's timeout grows by a per-GB
  allowance on top of the profile's base, ``N x (disk_per_gb x TRANSFER_S_PER_GB + work_s_per_gb)``
  (the stage's spec: the GB its pod downloads and stages per GB of data, and the seconds of work that
  grow with the data), and each stage's local disk need is ``N x disk_per_gb`` (:func:`dataset_plan`),
  which sizes a generic ephemeral scratch volume per stage. KFP cannot request ephemeral storage for a
  task (kubeflow/pipelines #11137), so above a few GB the scratch volume is the way to get the disk.

The paper profile's figures assume the crossMoDA 2021 data (105 + 105 + 32 volumes, nnU-Net
3d_fullres, 200 epochs) on one 24-80 GB GPU per fold; tiny and small are CPU-only profiles.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Mapping

from components import SPECS, stages_where
from components.spec import PROFILES, Caching, StageResources

__all__ = [
    "PROFILE_RESOURCES",
    "TRANSFER_S_PER_GB",
    "StagePlan",
    "dataset_plan",
    "scaled",
    "scratch_size",
    "RETRY_STAGES",
    "SHM_STAGES",
    "SIDE_EFFECT_STAGES",
    "ScratchVolume",
    "StageResources",
    "check",
    "quantity",
    "stage_resources",
]

# Stages with side effects outside their own output artifacts (an MLflow run, metrics, a model
# registration, an alias, a report logged to MLflow). KFP must never serve them from its cache: a
# cache hit would skip the side effect (e.g. a new MLflow server would never see the champion),
# and the cache key cannot see the state of the MLflow server.
SIDE_EFFECT_STAGES = stages_where(lambda s: s.caching is Caching.SIDE_EFFECTS)

# Stages that get a Memory-backed emptyDir at /dev/shm (nnU-Net worker processes).
SHM_STAGES = stages_where(lambda s: s.shm)

# Stages that retry on failure (pod preempted, node lost); how often is per profile in their spec.
RETRY_STAGES = stages_where(lambda s: s.retry)

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_FACTORS = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(text: str) -> float:
    """A Kubernetes quantity (``"500m"``, ``"2"``, ``"16Gi"``) as a plain number (cores or bytes).

    Only the suffixes these tables use are accepted, so a typo such as ``"16GB"`` fails at
    compile time instead of being rejected by the API server at run time.
    """
    m = _QUANTITY.match(str(text).strip())
    if not m:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 16Gi)")
    return float(m.group(1)) * _FACTORS[m.group(2)]


@dataclass(frozen=True)
class ScratchVolume:
    """A bigger disk for the stages that move whole data sets (compile-time choice).

    KFP's launcher downloads every input artifact and stages every output under ``/s3/...``
    (pipeline root ``s3://``), ``/minio/...`` or ``/gcs/...`` inside the container, i.e. on the
    node's ephemeral disk. Mounting a volume at that prefix puts both on the volume instead.
    ``kind``: ``ephemeral`` (a generic ephemeral volume: a PVC created with the pod and deleted
    with it, from ``storage_class``) or ``pvc`` (an existing claim ``pvc_name``, e.g. ReadWriteMany
    shared storage).
    """

    kind: str = "ephemeral"  # ephemeral | pvc
    size: str = "200Gi"  # ephemeral only
    storage_class: str | None = None  # ephemeral only; None = the cluster's default class
    pvc_name: str = ""  # pvc only
    mount_path: str = "/s3"  # match the pipeline root's scheme: s3:// -> /s3, minio:// -> /minio, gs:// -> /gcs
    # the stages that get it; default: those whose spec says scratch=True (the data-moving ones)
    stages: tuple[str, ...] = field(default_factory=lambda: tuple(n for n, s in SPECS.items() if s.scratch))

    def __post_init__(self) -> None:
        if self.kind not in ("ephemeral", "pvc"):
            raise ValueError(f"scratch volume kind {self.kind!r}: use 'ephemeral' or 'pvc'")
        if self.kind == "pvc" and not self.pvc_name:
            raise ValueError("scratch volume kind 'pvc' needs pvc_name (an existing PersistentVolumeClaim)")
        if self.kind == "ephemeral":
            quantity(self.size)
        if not self.mount_path.startswith("/"):
            raise ValueError(f"scratch volume mount_path {self.mount_path!r} must be absolute")
        unknown = [s for s in self.stages if s not in SPECS]
        if unknown:
            raise ValueError(f"scratch volume stages {unknown}: not pipeline stages ({', '.join(SPECS)})")


# Seconds allowed per GB a task's launcher downloads or uploads (~50 MB/s from the object store to node
# disk, a deliberately slow figure: shared links, many small NIfTI files), part of every scaled timeout.
TRANSFER_S_PER_GB = 20
SCRATCH_HEADROOM = 1.25  # a planned scratch volume is this much larger than the stage's estimated need
MIN_SCRATCH_GI = 10


@dataclass(frozen=True)
class StagePlan:
    """What a stage needs for a data set of a given size (``cosmos compile --dataset-gb``)."""

    stage: str
    disk_gb: float  # local disk (or scratch volume) for the task's inputs and outputs
    scratch_size: str  # the ephemeral scratch volume it gets (disk_gb with headroom, whole GiB)
    timeout_s: int  # the scaled activeDeadlineSeconds (0 = none)
    extra_s: int  # of which the data-size allowance


def scaled(stage: str, res: StageResources, dataset_gb: float) -> StageResources:
    """``res`` with the timeout grown for ``dataset_gb`` (module docstring); unchanged for 0 GB or no timeout."""
    if dataset_gb <= 0 or res.timeout_s <= 0:
        return res
    return replace(res, timeout_s=res.timeout_s + _extra_s(stage, dataset_gb))


def _extra_s(stage: str, dataset_gb: float) -> int:
    spec = SPECS[stage]
    return int(math.ceil(dataset_gb * (spec.disk_per_gb * TRANSFER_S_PER_GB + spec.work_s_per_gb)))


def scratch_size(stage: str, dataset_gb: float) -> str:
    """The ephemeral scratch volume of ``stage`` for ``dataset_gb``: its disk need with headroom, in GiB."""
    need = SPECS[stage].disk_per_gb * dataset_gb * SCRATCH_HEADROOM * 1e9 / 2**30
    return f"{max(MIN_SCRATCH_GI, int(math.ceil(need)))}Gi"


def dataset_plan(
    profile: str, dataset_gb: float, overrides: Mapping[str, StageResources] | None = None
) -> list[StagePlan]:
    """Per stage, in DAG order: disk need, scratch size and scaled timeout for ``dataset_gb`` GB of data."""
    if dataset_gb <= 0:
        raise ValueError(f"dataset size {dataset_gb} GB: must be > 0")
    plans = []
    for stage, spec in SPECS.items():
        res = stage_resources(profile, stage, overrides, dataset_gb=dataset_gb)
        plans.append(
            StagePlan(
                stage=stage,
                disk_gb=round(spec.disk_per_gb * dataset_gb, 1),
                scratch_size=scratch_size(stage, dataset_gb),
                timeout_s=res.timeout_s,
                extra_s=_extra_s(stage, dataset_gb) if res.timeout_s else 0,
            )
        )
    return plans


# profile -> stage -> resources, read off the stage specs (components/<stage>/spec.py), in DAG order.
PROFILE_RESOURCES: dict[str, dict[str, StageResources]] = {
    profile: {name: spec.resources[profile] for name, spec in SPECS.items()} for profile in PROFILES
}


def check(stage: str, res: StageResources) -> StageResources:
    """Refuse, at compile time, settings the cluster would reject or that would fail at run time."""
    if quantity(res.cpu_request) > quantity(res.cpu_limit):
        raise ValueError(f"{stage}: cpu request {res.cpu_request} exceeds its limit {res.cpu_limit}")
    if quantity(res.memory_request) > quantity(res.memory_limit):
        raise ValueError(f"{stage}: memory request {res.memory_request} exceeds its limit {res.memory_limit}")
    if res.timeout_s < 0 or res.retries < 0:
        raise ValueError(f"{stage}: timeout_s and retries must be >= 0")
    if res.shm is not None:
        # A Memory-backed emptyDir is charged to the container's memory: leave the process at
        # least half of the limit, or a full /dev/shm gets the pod OOM-killed.
        if quantity(res.shm) > quantity(res.memory_limit) / 2:
            raise ValueError(
                f"{stage}: /dev/shm {res.shm} is RAM charged to the memory limit "
                f"{res.memory_limit}; keep it at most half of the limit"
            )
    return res


def stage_resources(
    profile: str,
    stage: str,
    overrides: Mapping[str, StageResources] | None = None,
    shm: str | None = None,
    retries: int | None = None,
    dataset_gb: float = 0.0,
) -> StageResources:
    """The resources of ``stage`` for a compile-time ``profile``, after overrides, checked.

    ``overrides`` replaces a stage's entry whole; ``shm`` (if given) replaces the /dev/shm size
    of every stage whose spec has ``shm`` and ``retries`` (if given) the retry count of every stage
    whose spec has ``retry``; the others never get either, whatever the override says. ``dataset_gb`` > 0
    grows the timeout by the stage's per-GB allowance (:func:`scaled`).
    """
    if profile not in PROFILE_RESOURCES:
        raise ValueError(f"no resource table for profile {profile!r}; known: {', '.join(PROFILE_RESOURCES)}")
    if stage not in SPECS:
        raise ValueError(f"no stage {stage!r}; stages: {', '.join(SPECS)}")
    spec = SPECS[stage]
    res = (overrides or {}).get(stage) or spec.resources[profile]
    if shm is not None and spec.shm:
        res = replace(res, shm=shm)
    if retries is not None and spec.retry:
        res = replace(res, retries=retries)
    if not spec.shm:
        res = replace(res, shm=None)
    if not spec.retry:
        res = replace(res, retries=0)
    return check(stage, scaled(stage, res, dataset_gb))
