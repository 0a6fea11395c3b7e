"""How one task of a COSMOS DAG gets its settings: display name, caching, resources, GPU scheduling
and the credentials Secret, all read off the spec of the stage it runs (``components/<stage>/spec.py``).

Every DAG (``cosmos-pipeline`` in :mod:`pipelines.cosmos_pipeline`, ``cosmos-benchmark`` in
:mod:`pipelines.benchmark_pipeline`) configures each task it adds through :func:`_configure`, so a
stage gets the same settings whichever DAG runs it. The compile-time choices these settings follow
(image, GPU scheduling, Secret, caching, resources, number of rounds) are :class:`PipelineOptions`.
"""

from dataclasses import dataclass

from components import DEFAULT_IMAGE, Components, stages_where
from components.spec import Caching, StageSpec
from pipelines.resources import ScratchVolume, StageResources, quantity, scratch_size, stage_resources

# Stages that read data outside KFP's artifacts (a URI whose contents can change under the same
# string): KFP's cache key would see only the string, so they are never served from its cache (the
# stage's own key fingerprints the data: names, sizes, mtimes or S3 ETags).
EXTERNAL_INPUT_STAGES = stages_where(lambda s: s.caching is Caching.EXTERNAL_INPUT)

# Environment variables read from the credentials Secret (all optional keys, so one Secret
# serves S3-only, MLflow-only or both set-ups). Values never appear in the compiled YAML.
SECRET_ENV_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)

# Stages that talk to S3 or MLflow (get the Secret as env).
SECRET_STAGES = stages_where(lambda s: s.secret)


@dataclass(frozen=True)
class Toleration:
    """A Kubernetes toleration: ``key=value:Effect``, ``key:Exists`` or ``key:Exists:Effect``."""

    key: str
    operator: str = "Equal"  # Equal | Exists
    value: str | None = None
    effect: str | None = None  # NoSchedule | PreferNoSchedule | NoExecute | None (all)

    @classmethod
    def parse(cls, text: str) -> "Toleration":
        from cosmos.errors import CosmosError

        effects = ("NoSchedule", "PreferNoSchedule", "NoExecute")
        text = text.strip()
        if "=" in text:  # key=value[:Effect]
            key, rest = text.split("=", 1)
            value, _, effect = rest.partition(":")
            tol = cls(key.strip(), "Equal", value.strip(), effect.strip() or None)
        else:  # key:Exists[:Effect]
            parts = text.split(":")
            if len(parts) < 2 or parts[1] != "Exists":
                raise CosmosError(f"--gpu-toleration {text!r}: use key=value:Effect, key:Exists or key:Exists:Effect")
            tol = cls(parts[0].strip(), "Exists", None, parts[2].strip() if len(parts) > 2 else None)
        if not tol.key:
            raise CosmosError(f"--gpu-toleration {text!r}: empty key")
        if tol.effect is not None and tol.effect not in effects:
            raise CosmosError(f"--gpu-toleration {text!r}: effect must be one of {effects}")
        return tol


@dataclass(frozen=True)
class PipelineOptions:
    """Compile-time choices. Defaults suit a GPU cluster running the ``paper`` profile."""

    rounds: int = 3  # K students after the teacher (the paper: 3)
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)  # default of the ``folds`` parameter
    parallelism: int = 5  # fold tasks of one round at once
    image: str = DEFAULT_IMAGE
    secret: str | None = "cosmos-credentials"  # None: no Secret (local runs)
    gpu_type: str = "nvidia.com/gpu"
    gpu_limit: int = 1
    gpu_node_selector: tuple[tuple[str, str], ...] = ()
    gpu_tolerations: tuple[Toleration, ...] = (Toleration("nvidia.com/gpu", "Exists", None, "NoSchedule"),)
    use_gpu: bool = True
    caching: bool = True
    profile: str = "paper"  # default of the ``profile`` parameter
    config: str = ""  # default of the ``config`` parameter (YAML merged over the profile)
    experiment: str = "cosmos"
    tracking_uri: str = ""
    work_root: str = ""
    start: str = "data"  # data: train the translator; pseudo: start from an existing pseudo-hrT2 folder
    # Kubernetes resources (pipelines/resources.py): requests/limits, /dev/shm, timeouts, retries.
    resource_profile: str | None = None  # which profile's resource table; None = ``profile``
    resources: tuple[tuple[str, StageResources], ...] = ()  # per-stage overrides of that table
    shm_size: str | None = None  # /dev/shm of train_fold and predict_*; None = the table's
    retries: int | None = None  # train_fold retry attempts; None = the table's
    retry_backoff: str = "120s"  # first retry delay (doubles per attempt, at most 1 h)
    timeouts: bool = True  # activeDeadlineSeconds per stage from the table
    scratch: ScratchVolume | None = None  # a PVC or generic ephemeral volume for artifact staging
    # One train_fold task per fold with its retry policy, instead of the ParallelFor (whose retryPolicy the
    # KFP backend drops: kubeflow/pipelines #12389, #13897). The fold list is then fixed at compile time.
    unroll_folds: bool = False
    # The data set's size (GB in data_uri) the timeouts and scratch sizes are planned for; 0 = the profile's
    # own figures (pipelines/resources.py: scaled, scratch_size, dataset_plan).
    dataset_gb: float = 0.0
    # Built for kfp.local (``cosmos run``/``selftrain``/``benchmark``, pipelines/local_run.py): one ingest task.
    # A cluster DAG has two, branched on ``data_fingerprint`` (:func:`_add_ingest`), gathered by dsl.OneOf, which
    # kfp.local 2.17 cannot resolve for artifacts ("Expected 1 artifact in ArtifactSelectorSpec"); local runs
    # resume by their own keyed work dirs and need no fingerprint.
    local: bool = False


def _configure(ops: Components, task, opts: PipelineOptions, display: str):
    """Display name, caching, resources, GPU scheduling and credentials for one task, all read off
    the spec of the stage the task runs (``components/<stage>/spec.py``).

    Stages with side effects (MLflow runs, registrations, the report) or external inputs are never
    cached: a cache hit would skip the side effect or miss changed data. See :func:`_apply_resources`
    for the rest.
    """
    from kfp import kubernetes

    spec = ops.spec_of(task)
    task.set_display_name(display)
    task.set_caching_options(enable_caching=opts.caching and spec.cacheable)
    _apply_resources(task, spec, opts)
    if opts.use_gpu and spec.gpu:
        task.set_accelerator_type(opts.gpu_type)
        task.set_accelerator_limit(opts.gpu_limit)
        for key, value in opts.gpu_node_selector:
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for tol in opts.gpu_tolerations:
            kubernetes.add_toleration(task, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect)
    if opts.secret and spec.secret:
        kubernetes.use_secret_as_env(
            task, secret_name=opts.secret, secret_key_to_env={k: k for k in SECRET_ENV_KEYS}, optional=True
        )
    return task


def _apply_resources(task, spec: StageSpec, opts: PipelineOptions) -> None:
    """CPU/memory requests and limits, /dev/shm, timeout, retries and the scratch volume of one task.

    Values come from the stage's spec through pipelines/resources.py (the figures of
    ``opts.resource_profile`` or ``opts.profile``, then ``opts.resources``). kfp.local ignores resources and the platform
    settings (with a UserWarning), so local runs are unaffected; it does honour retries, which is
    why the CPU profiles' tables retry nothing.
    """
    from kfp import kubernetes

    res = stage_resources(
        opts.resource_profile or opts.profile,
        spec.name,
        dict(opts.resources),
        opts.shm_size,
        opts.retries,
        dataset_gb=opts.dataset_gb,
    )
    task.set_cpu_request(res.cpu_request)
    task.set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request)
    task.set_memory_limit(res.memory_limit)
    if res.shm is not None:  # 64 MiB otherwise: nnU-Net's worker processes die
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=res.shm)
    if opts.timeouts and res.timeout_s > 0:
        kubernetes.set_timeout(task, res.timeout_s)
    if res.retries > 0:
        task.set_retry(
            num_retries=res.retries,
            backoff_duration=opts.retry_backoff,
            backoff_factor=2.0,
            backoff_max_duration="3600s",
        )
    scratch = opts.scratch
    if scratch is not None and spec.name in scratch.stages:
        if scratch.kind == "pvc":
            kubernetes.mount_pvc(task, pvc_name=scratch.pvc_name, mount_path=scratch.mount_path)
        else:
            kubernetes.add_ephemeral_volume(
                task,
                volume_name="scratch",
                mount_path=scratch.mount_path,
                access_modes=["ReadWriteOnce"],
                size=_scratch_size(scratch.size, spec.name, opts.dataset_gb),
                storage_class_name=scratch.storage_class,
            )


def _scratch_size(given: str, stage: str, dataset_gb: float) -> str:
    """The ephemeral scratch volume of one task: ``given`` (``--scratch-volume ephemeral:SIZE``), or, with
    ``--dataset-gb``, the stage's planned size when that is larger (``SIZE`` is then a floor)."""
    if dataset_gb <= 0:
        return given
    planned = scratch_size(stage, dataset_gb)
    return planned if quantity(planned) > quantity(given) else given
