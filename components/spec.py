"""What a pipeline stage needs from the cluster, declared once, next to its component.

Every stage folder (``components/<stage>/spec.py``) holds one :class:`StageSpec`. The DAG
(``pipelines/cosmos_pipeline.py``) and the resource tables (``pipelines/resources.py``) read these
specs instead of keeping their own stage-name tables, so adding or changing a stage is one folder.

Why these facts are compile-time facts: GPU scheduling, the credentials Secret, caching, /dev/shm,
retries, requests/limits and timeouts land in the compiled IR and platform spec, while the run's
configuration (``profile``/``config`` pipeline parameters) is only read when a task runs. So the
resources are keyed by the *compile-time* profile (``cosmos compile --profile`` or
``--resource-profile``) and may be overridden per stage at compile time (``PipelineOptions.resources``).

Top-level imports: standard library only (the component modules that import this one are shipped
to KFP by source, and ``components`` must import without the heavy library).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Mapping

# The compile-time profiles that have resource figures; every spec gives one entry per profile.
# tiny and small are the CPU profiles (1-2 threads per task, phantom-sized data); paper assumes the
# crossMoDA 2021 data (105 + 105 + 32 volumes, nnU-Net 3d_fullres, 200 epochs) on one 24-80 GB GPU
# per GPU task.
PROFILES: tuple[str, ...] = ("tiny", "small", "paper")

HOUR = 3600  # seconds, for readable timeouts

# Unrolled folds (``cosmos compile --unroll-folds``): the round's fold consumers take one optional model
# input per fold (fold_model_0 .. fold_model_4), so at most nnU-Net's five folds can be unrolled.
MAX_UNROLLED_FOLDS = 5


@dataclass(frozen=True)
class StageResources:
    """What one stage's pod asks for. Quantities use Kubernetes syntax (``"4"``, ``"500m"``, ``"16Gi"``)."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    timeout_s: int = 0  # activeDeadlineSeconds per attempt; 0 = none
    shm: str | None = None  # Memory-backed /dev/shm size (stages with spec.shm only); counts against memory_limit
    retries: int = 0  # retry attempts after the first (stages with spec.retry only)


class Caching(enum.Enum):
    """Whether KFP may serve a stage from its cache, and if not, why not."""

    ON = "on"
    # Side effects outside the stage's own output artifacts (an MLflow run, metrics, a model
    # registration, an alias, a report logged to MLflow): a cache hit would skip them (a new MLflow
    # server would never see the champion), and KFP's cache key cannot see the MLflow server's state.
    SIDE_EFFECTS = "side effects"
    # Reads data outside KFP's artifacts (a URI whose contents can change under the same string):
    # KFP's cache key sees only the string; the stage's own resume key fingerprints the data.
    EXTERNAL_INPUT = "external input"


@dataclass(frozen=True)
class StageSpec:
    """One pipeline stage: its KFP component function and what its pod needs.

    ``name`` is the component function's name, which is also the stage folder's name and the name
    every table in ``pipelines/`` uses, so a stage's name is typed in one place (its ``def``).
    """

    component: Callable[..., Any]  # the plain function; components.build() turns it into a KFP component
    resources: Mapping[str, StageResources]  # compile-time profile -> requests, limits, timeout, shm, retries
    gpu: bool = False  # accelerator, GPU node selector and tolerations (unless compiled with --no-gpu)
    # gets the credentials Secret as env (talks to S3 or MLflow). Every stage sets it: with an s3:// pipeline
    # root and no ``providers`` block in kfp-launcher, the launcher that downloads and uploads a task's
    # artifacts reads the keys from the task's own environment, so a task without them cannot reach the store.
    secret: bool = False
    caching: Caching = Caching.ON
    shm: bool = False  # Memory-backed /dev/shm (nnU-Net worker processes pass tensors through it)
    retry: bool = False  # may retry a failed pod (preemptible GPU nodes); the count is per profile
    scratch: bool = False  # moves whole data sets: gets the scratch volume when one is compiled in
    # Planning for the data's size (``cosmos compile --dataset-gb N``; pipelines/resources.py). Both are
    # per GB in data_uri, estimated from the artifacts the stage downloads and uploads (benchmarks/bytes_moved.py,
    # ROI crop off: an upper bound): disk_per_gb is the pod's local disk (or scratch volume) for its inputs and
    # outputs; work_s_per_gb the seconds of work that grow with the data (not the fixed epochs of training),
    # added to the timeout with the transfer allowance (resources.TRANSFER_S_PER_GB per GB on disk).
    disk_per_gb: float = 0.0
    work_s_per_gb: int = 0

    @property
    def name(self) -> str:
        return self.component.__name__

    @property
    def cacheable(self) -> bool:
        return self.caching is Caching.ON

    def __post_init__(self) -> None:
        # A contradiction in a spec is a programming error: fail when the package is imported.
        missing = [p for p in PROFILES if p not in self.resources]
        extra = [p for p in self.resources if p not in PROFILES]
        if missing or extra:
            raise ValueError(
                f"{self.name}: resources need exactly the profiles {PROFILES} (missing {missing}, extra {extra})"
            )
        if self.disk_per_gb < 0 or self.work_s_per_gb < 0:
            raise ValueError(f"{self.name}: disk_per_gb and work_s_per_gb must be >= 0")
        for profile, res in self.resources.items():
            if self.shm != (res.shm is not None):
                raise ValueError(
                    f"{self.name} ({profile}): a /dev/shm size is required when shm=True and refused otherwise"
                )
            if res.retries and not self.retry:
                raise ValueError(f"{self.name} ({profile}): retries={res.retries} but the stage does not retry")
