"""Per-stage Kubernetes resources of ``cosmos-pipeline``: requests, limits, /dev/shm, timeouts,
retries, and the optional scratch volume, with one default table per profile.

Why a table here and not in the run-time config: requests, limits and volumes are fixed when the
pipeline is *compiled* (they land in the IR and the platform spec), while the ``profile`` and
``config`` pipeline parameters are only read when a task runs. So the table is keyed by the
compile-time profile (``PipelineOptions.profile``) and overridden per stage at compile time
(``PipelineOptions.resources``).

What the numbers are for:

* **Requests** keep fold, prepare and translate pods out of the BestEffort class, which the
  kubelet evicts first under node pressure. **Limits** bound a runaway stage.
* **/dev/shm**: a pod gets 64 MiB of shared memory by default. nnU-Net's augmentation workers
  (up to 12 on a GPU node, ``cosmos.segmentation.environment.augmentation_workers``) and the
  prediction export pass tensors through /dev/shm, and die ("background workers died") when it
  is full. ``train_fold`` and every ``predict_*`` stage therefore get a Memory-backed emptyDir at
  /dev/shm. Such an emptyDir is RAM and counts against the container's memory limit, so
  :func:`check` refuses a shm size that does not fit under the limit with room to spare.
* **Timeouts** become the pod's ``activeDeadlineSeconds`` (kfp-kubernetes ``set_timeout``): a
  hung stage fails instead of holding a GPU for ever. They are per attempt (a retried pod gets a
  new deadline).
* **Retries**: only ``train_fold`` retries (preemptible GPU nodes). With
  ``segmentation.checkpoint_uri`` set, a retried fold resumes from its last checkpoint in the
  object store (:mod:`cosmos.segmentation.checkpoint_sync`); without it, from epoch 0.

The paper profile's figures assume the crossMoDA 2021 data (105 + 105 + 32 volumes, nnU-Net
3d_fullres, 200 epochs) on one 24-80 GB GPU per fold; tiny and small are CPU-only profiles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Mapping

# Stages with side effects outside their own output artifacts (an MLflow run, metrics, a model
# registration, an alias, a report logged to MLflow). KFP must never serve them from its cache: a
# cache hit would skip the side effect (e.g. a new MLflow server would never see the champion),
# and the cache key cannot see the state of the MLflow server.
SIDE_EFFECT_STAGES = frozenset({"train_translator", "start_round_run", "evaluate", "register_round", "report"})

# Stages that get a Memory-backed emptyDir at /dev/shm (nnU-Net worker processes).
SHM_STAGES = frozenset({"train_fold", "predict_pseudo_labels", "predict_validation"})

# Stages that retry on failure (pod preempted, node lost), and how often by default.
RETRY_STAGES = frozenset({"train_fold"})

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
class StageResources:
    """What one stage's pod asks for. Quantities use Kubernetes syntax (``"4"``, ``"500m"``, ``"16Gi"``)."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    timeout_s: int = 0  # activeDeadlineSeconds per attempt; 0 = none
    shm: str | None = None  # Memory-backed /dev/shm size (SHM_STAGES only); counts against memory_limit
    retries: int = 0  # retry attempts after the first (RETRY_STAGES only)


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
    stages: tuple[str, ...] = (
        "ingest_validate",
        "crop_roi",
        "translate",
        "import_pseudo",
        "labelled_as_pseudo",
        "prepare_round",
        "train_fold",
        "predict_pseudo_labels",
        "predict_validation",
    )

    def __post_init__(self) -> None:
        if self.kind not in ("ephemeral", "pvc"):
            raise ValueError(f"scratch volume kind {self.kind!r}: use 'ephemeral' or 'pvc'")
        if self.kind == "pvc" and not self.pvc_name:
            raise ValueError("scratch volume kind 'pvc' needs pvc_name (an existing PersistentVolumeClaim)")
        if self.kind == "ephemeral":
            quantity(self.size)
        if not self.mount_path.startswith("/"):
            raise ValueError(f"scratch volume mount_path {self.mount_path!r} must be absolute")


_H = 3600
R = StageResources

# profile -> stage -> resources. tiny/small: the CPU profiles (1-2 threads per task, phantom-sized
# data); they retry nothing because they mostly run under kfp.local (``cosmos run``), which honours
# retries, and there a retry only repeats a deterministic failure. paper: GPU nodes, crossMoDA-sized
# data; train_fold retries because GPU nodes are often preemptible.
PROFILE_RESOURCES: dict[str, dict[str, StageResources]] = {
    "tiny": {
        "ingest_validate": R("500m", "2", "1Gi", "2Gi", 1 * _H),
        "crop_roi": R("500m", "2", "1Gi", "2Gi", 1 * _H),
        "train_translator": R("1", "2", "2Gi", "4Gi", 2 * _H),
        "translate": R("1", "2", "2Gi", "4Gi", 1 * _H),
        "import_pseudo": R("500m", "2", "1Gi", "2Gi", 1 * _H),
        "labelled_as_pseudo": R("500m", "2", "1Gi", "2Gi", 1 * _H),
        "prepare_round": R("1", "2", "2Gi", "4Gi", 1 * _H),
        "start_round_run": R("100m", "1", "256Mi", "1Gi", 600),
        "train_fold": R("1", "2", "3Gi", "6Gi", 2 * _H, shm="1Gi"),
        "predict_pseudo_labels": R("1", "2", "2Gi", "4Gi", 1 * _H, shm="1Gi"),
        "predict_validation": R("1", "2", "2Gi", "4Gi", 1 * _H, shm="1Gi"),
        "evaluate": R("500m", "2", "1Gi", "2Gi", 1 * _H),
        "register_round": R("500m", "1", "1Gi", "2Gi", 1 * _H),
        "report": R("500m", "1", "1Gi", "2Gi", 1 * _H),
        "benchmark_table": R("500m", "1", "1Gi", "2Gi", 1 * _H),
    },
    "small": {
        "ingest_validate": R("500m", "2", "1Gi", "2Gi", 1 * _H),
        "crop_roi": R("500m", "2", "2Gi", "4Gi", 1 * _H),
        "train_translator": R("2", "4", "4Gi", "8Gi", 4 * _H),
        "translate": R("2", "4", "4Gi", "8Gi", 2 * _H),
        "import_pseudo": R("500m", "2", "1Gi", "2Gi", 1 * _H),
        "labelled_as_pseudo": R("500m", "2", "1Gi", "2Gi", 1 * _H),
        "prepare_round": R("2", "4", "4Gi", "8Gi", 2 * _H),
        "start_round_run": R("100m", "1", "256Mi", "1Gi", 600),
        "train_fold": R("2", "4", "6Gi", "10Gi", 6 * _H, shm="2Gi"),
        "predict_pseudo_labels": R("2", "4", "4Gi", "8Gi", 2 * _H, shm="2Gi"),
        "predict_validation": R("2", "4", "4Gi", "8Gi", 2 * _H, shm="2Gi"),
        "evaluate": R("1", "2", "2Gi", "4Gi", 1 * _H),
        "register_round": R("500m", "1", "2Gi", "4Gi", 1 * _H),
        "report": R("500m", "1", "2Gi", "4Gi", 1 * _H),
        "benchmark_table": R("500m", "1", "2Gi", "4Gi", 1 * _H),
    },
    "paper": {
        # 105 + 105 + 32 volumes; the ingest copies and validates all of them.
        "ingest_validate": R("2", "4", "4Gi", "8Gi", 3 * _H),
        # crop every volume to the inner-ear region (resampling, I/O; CPU only).
        "crop_roi": R("2", "4", "4Gi", "8Gi", 3 * _H),
        # CycleGAN + segmentor on one GPU; data loading in the main process.
        "train_translator": R("4", "8", "16Gi", "32Gi", 24 * _H),
        # ceT1 -> pseudo-hrT2 conversion of 105 volumes (GPU: minutes; the CPU would take hours).
        "translate": R("4", "8", "8Gi", "16Gi", 6 * _H),
        # ablation rows: copy/link an existing pseudo-hrT2 set or the labelled data (I/O only).
        "import_pseudo": R("1", "2", "2Gi", "4Gi", 3 * _H),
        "labelled_as_pseudo": R("1", "2", "2Gi", "4Gi", 3 * _H),
        # nnU-Net plan + preprocess with num_processes workers.
        "prepare_round": R("4", "8", "16Gi", "32Gi", 6 * _H),
        "start_round_run": R("250m", "1", "512Mi", "1Gi", 900),
        # One nnU-Net fold: the GPU plus up to 12 augmentation workers (one core each) sharing
        # batches through /dev/shm; 200 epochs x 250 iterations fit well inside 48 h on one GPU.
        "train_fold": R("12", "16", "48Gi", "64Gi", 48 * _H, shm="16Gi", retries=3),
        # Sliding-window prediction of every case (8x mirroring), export workers use /dev/shm.
        "predict_pseudo_labels": R("4", "8", "24Gi", "40Gi", 8 * _H, shm="8Gi"),
        "predict_validation": R("4", "8", "16Gi", "32Gi", 4 * _H, shm="8Gi"),
        "evaluate": R("2", "4", "4Gi", "8Gi", 2 * _H),
        "register_round": R("1", "2", "4Gi", "8Gi", 2 * _H),
        "report": R("1", "2", "4Gi", "8Gi", 1 * _H),
        "benchmark_table": R("500m", "1", "2Gi", "4Gi", 1 * _H),
    },
}

# A stage missing from a profile's table (a stage added to the DAG later) gets this, so the
# pipeline still compiles; tests/test_pipeline_cluster.py asserts that every stage has an entry.
DEFAULT_RESOURCES: dict[str, StageResources] = {
    "tiny": R("500m", "2", "1Gi", "2Gi", 1 * _H),
    "small": R("1", "2", "2Gi", "4Gi", 2 * _H),
    "paper": R("2", "4", "8Gi", "16Gi", 6 * _H),
}
del R


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
) -> StageResources:
    """The resources of ``stage`` for a compile-time ``profile``, after overrides, checked.

    ``overrides`` replaces a stage's entry whole; ``shm`` (if given) replaces the /dev/shm size
    of every SHM stage and ``retries`` (if given) the retry count of every RETRY stage.
    """
    if profile not in PROFILE_RESOURCES:
        raise ValueError(f"no resource table for profile {profile!r}; known: {', '.join(PROFILE_RESOURCES)}")
    res = (overrides or {}).get(stage) or PROFILE_RESOURCES[profile].get(stage) or DEFAULT_RESOURCES[profile]
    if shm is not None and stage in SHM_STAGES:
        res = replace(res, shm=shm)
    if retries is not None and stage in RETRY_STAGES:
        res = replace(res, retries=retries)
    if stage not in SHM_STAGES:
        res = replace(res, shm=None)
    if stage not in RETRY_STAGES:
        res = replace(res, retries=0)
    return check(stage, res)
