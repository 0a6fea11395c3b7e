"""``cosmos submit``: upload ``cosmos-pipeline`` to a Kubeflow Pipelines server and start a run.

Uses ``kfp.Client`` (the KFP v2 REST API, ``/apis/v2beta1``): the pipeline is uploaded as
``cosmos-pipeline`` (a new version when a pipeline of that name exists), the experiment is created
if needed, and a run of the uploaded version is created with the given parameters.

Authentication, first match wins: ``--token`` (or $KFP_TOKEN) as a bearer token; ``--cookies`` for
an auth proxy; else, inside a cluster (a notebook or pod of a Kubeflow profile), the projected
service-account token at $KF_PIPELINES_SA_TOKEN_PATH (default
``/var/run/secrets/kubeflow/pipelines/token``), re-read on every request because the kubelet
rotates it.

The backend version is checked before anything is uploaded (:data:`MIN_KFP_BACKEND`).

The pipeline root (where every task's artifacts go) is set per run (``pipeline_root``), so
COSMOS does not need the namespace-wide ``kfp-launcher`` ConfigMap that would change it for every
pipeline of the namespace.

Multi-user Kubeflow (``--namespace NS``, or the pod's own namespace inside a cluster): the pipeline
is uploaded INTO the profile namespace (``POST /apis/v2beta1/pipelines/upload?namespace=NS``), looked
up there (``GET /apis/v2beta1/pipelines?namespace=NS``), and the run goes to an experiment of that
namespace: a v2beta1 ``Run`` has no namespace field, the API server takes the run's namespace from its
experiment (backend 2.17.0 ``run_server.go`` ``createRun`` -> ``GetValidExperimentNamespacePair``).
Without a namespace the pipeline would be a *shared* one: refused when the server requires a namespace
(``REQUIRE_NAMESPACE_FOR_PIPELINES``, ``validation/namespace.go``), published to every namespace when not.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote, urlsplit

import yaml

log = logging.getLogger(__name__)

# The oldest KFP backend that runs the compiled package. kfp-kubernetes 2.17 writes ``optional``
# and ``secretNameParameter`` into every ``secretAsEnv`` entry of the platform spec, and the
# backend's driver refuses unknown fields ("failed to unmarshal Kubernetes config, error: unknown
# field ..."). ``secretNameParameter`` is understood since backend 2.5.0 (kubeflow/pipelines commit
# 7838009, PR #11621; kubeflow/pipelines#11935 shows the error on Kubeflow 1.9), ``optional`` only
# since 2.15.0 (commit 55ec846, PR #12216, first tagged in 2.15.0; kubeflow/pipelines#12495 shows
# the error on an older backend). Empty-dir mounts, generic ephemeral volumes, timeouts and retry
# policies are all older than that. 2.17.0: the ingest's If/Else on ``data_fingerprint`` hands its
# artifacts on through ``dsl.OneOf``, and a driver before 2.17.0 always takes the LAST branch's artifact
# (``resolve.go`` ``GetProducerTask``), so a run without a fingerprint (its If branch) could not start
# ``crop_roi``: fixed by kubeflow/pipelines commit 456c72a, PR #13437 (issue #13436), first tagged 2.17.0.
MIN_KFP_BACKEND = (2, 17, 0)

# The object-store prefixes the KFP profile controller grants a profile namespace's keys (the Secret
# ``mlpipeline-minio-artifact`` it writes into the namespace): kubeflow/pipelines 2.17.0,
# manifests/kustomize/base/installs/multi-user/pipelines-profile-controller/sync.py, the user policy
# ``KubeflowProject<ns>`` (s3:Put*, Get*, List*, DeleteObject on these keys of bucket ``mlpipeline``;
# no CreateBucket). The namespace's default pipeline root (its ``kfp-launcher`` ConfigMap, also written
# by the controller) is ``minio://mlpipeline/private-artifacts/<ns>/v2/artifacts``.
PROFILE_BUCKET = "mlpipeline"
PROFILE_PREFIXES = ("artifacts/", "private-artifacts/{ns}/", "private/{ns}/", "shared/")

SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
SA_TOKEN_DEFAULT_PATH = "/var/run/secrets/kubeflow/pipelines/token"


@dataclass
class SubmitResult:
    pipeline_id: str
    version_id: str
    experiment_id: str
    run_id: str
    run_url: str


def parse_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are YAML (``folds=[0,1]`` is a list, ``x=3`` an int)."""
    from cosmos.errors import CosmosError

    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CosmosError(f"run parameter {item!r}: expected key=value")
        value = yaml.safe_load(raw) if raw.strip() else ""
        params[key.strip()] = value if value is not None else ""
    return params


def _check_params(package: Path, params: Mapping[str, Any]) -> None:
    from cosmos.errors import CosmosError

    spec = next(yaml.safe_load_all(package.read_text()))
    known = set(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}))
    unknown = sorted(set(params) - known)
    if unknown:
        raise CosmosError(f"unknown pipeline parameter(s) {unknown}; the pipeline takes {sorted(known)}")
    for key in ("data_uri", "val_labels_uri", "profile", "config", "tracking_uri", "experiment", "work_root"):
        if key in params and not isinstance(params[key], str):
            params[key] = str(params[key])  # type: ignore[index]


def fill_data_fingerprint(package: Path, params: dict[str, Any]) -> None:
    """Set the ``data_fingerprint`` run parameter (unless given) from the ``s3://`` data's listing.

    Why: KFP's cache key of a task is its component spec plus its input values
    (backend 2.17.0 ``cacheutils/cache.go`` ``GenerateCacheKey``), so ``ingest_validate`` can be served
    from the cache only when a value that follows the data is one of its inputs. The fingerprint is
    ``sha256:`` over the keys, sizes and ETags under ``data_uri`` and ``val_labels_uri``
    (``components._runtime.data_fingerprint``, one listing each with the submitter's AWS
    credentials); the task recomputes it and refuses a mismatch, so a cached ingest is always of
    data with that fingerprint. When the bucket cannot be listed from here (an in-cluster endpoint),
    a one-off ``unique:`` value is passed: the run works, and its ingest is never served from the cache.
    Packages without the parameter (older ones) and non-s3 data are left alone.
    """
    import uuid

    from components._runtime import UNIQUE_FINGERPRINT, data_fingerprint

    spec = next(yaml.safe_load_all(package.read_text()))
    known = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    if "data_fingerprint" not in known or params.get("data_fingerprint"):
        return
    data_uri, val_labels_uri = str(params.get("data_uri") or ""), str(params.get("val_labels_uri") or "")
    if not any(u.startswith("s3://") for u in (data_uri, val_labels_uri)):
        return
    try:
        params["data_fingerprint"] = data_fingerprint(data_uri, val_labels_uri)
        log.info("data fingerprint %s (ingest_validate may be served from KFP's cache)", params["data_fingerprint"])
    except Exception as exc:  # unreachable endpoint, no credentials, no such bucket
        params["data_fingerprint"] = f"{UNIQUE_FINGERPRINT}{uuid.uuid4().hex}"
        log.warning(
            "cannot list %s from here to fingerprint it (%s: %s); this run's ingest will not be served from "
            "KFP's cache (pass data_fingerprint=... to allow it)",
            data_uri or val_labels_uri,
            type(exc).__name__,
            str(exc).strip()[:200],
        )


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """``"2.15.0"``, ``"v2.15.0"`` or ``"2.15.0-rc.1"`` -> (2, 15, 0); None when it is no version."""
    m = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", (text or "").strip())
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def check_backend_version(tag: str | None, host: str) -> None:
    """Refuse a KFP backend older than :data:`MIN_KFP_BACKEND` before anything is uploaded.

    A backend that reports no parsable version (a source build) is let through with a warning:
    refusing it would block exactly the people who built a newer backend themselves.
    """
    from cosmos.errors import CosmosError

    minimum = ".".join(map(str, MIN_KFP_BACKEND))
    version = parse_version(tag)
    if version is None:
        log.warning("%s reports KFP version %r; cannot check it against the minimum %s", host, tag, minimum)
        return
    if version < MIN_KFP_BACKEND:
        raise CosmosError(
            f"{host} runs Kubeflow Pipelines {tag}, but cosmos-pipeline needs a KFP backend >= {minimum}: "
            "its tasks read the credentials Secret through secretAsEnv with 'optional' and "
            "'secretNameParameter' (kfp-kubernetes 2.17), which older drivers reject as unknown fields, and "
            "its ingest hands artifacts on through dsl.OneOf, which drivers before 2.17.0 resolve to the wrong "
            "branch. Upgrade Kubeflow Pipelines, or run locally with 'cosmos run'."
        )


def _healthz(client) -> dict[str, Any]:
    """The backend's ``/apis/v2beta1/healthz`` answer (``tag_name``, ``multi_user``, ...).

    The API server writes ``{"commit_sha", "tag_name", "multi_user", ...}`` there, but the
    generated ``V2beta1GetHealthzResponse`` model keeps only ``multi_user`` and
    ``pipeline_store``, so the raw JSON is read (through the client's own auth and host).
    """
    import json

    raw = client._healthz_api.healthz_service_get_healthz(_preload_content=False)
    try:
        data = json.loads(raw.data or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def profile_default_root(namespace: str) -> str:
    """The pipeline root the KFP profile controller gives ``namespace`` (see :data:`PROFILE_PREFIXES`)."""
    return f"minio://{PROFILE_BUCKET}/private-artifacts/{namespace}/v2/artifacts"


def granted_to_profile(uri: str, namespace: str) -> bool:
    """Whether the keys the KFP profile controller issues to ``namespace`` may write ``uri``.

    ``uri`` is ``s3://`` or ``minio://`` BUCKET/KEY-PREFIX; granted means bucket ``mlpipeline`` and a
    key prefix under one of :data:`PROFILE_PREFIXES` with ``{ns}`` = ``namespace``.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("s3", "minio") or parts.netloc != PROFILE_BUCKET:
        return False
    key = parts.path.lstrip("/")
    key = key if key.endswith("/") else key + "/"
    return any(key.startswith(p.format(ns=namespace)) for p in PROFILE_PREFIXES)


def _find_pipeline(client, name: str, namespace: str | None) -> str | None:
    """The id of the pipeline called ``name`` in ``namespace`` (None: the shared pipelines).

    ``kfp.Client.get_pipeline_id`` lists without a namespace, i.e. only the shared pipelines on a
    multi-user server, so a namespaced ``cosmos-pipeline`` would never be found and a shared one of
    the same name would get the new version.
    """
    import json

    from cosmos.errors import CosmosError

    flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    found = client.list_pipelines(filter=flt, namespace=namespace, page_size=2).pipelines or []
    if len(found) > 1:
        where = f"namespace {namespace}" if namespace else "the shared pipelines"
        raise CosmosError(f"{len(found)} pipelines called {name!r} in {where}; rename or delete one")
    return found[0].pipeline_id if found else None


def in_cluster_token_path() -> Path | None:
    """The projected KFP service-account token of this pod, if there is one."""
    path = Path(os.environ.get(SA_TOKEN_ENV) or SA_TOKEN_DEFAULT_PATH)
    return path if path.is_file() else None


def _client(host: str, *, token: str | None, cookies: str | None, namespace: str | None):
    """A ``kfp.Client`` for ``host`` with the first authentication that applies (module docstring)."""
    import kfp

    auth: dict[str, Any] = {"existing_token": token, "cookies": cookies}
    sa_token = None if token or cookies else in_cluster_token_path()
    if sa_token is not None:
        from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

        auth["credentials"] = ServiceAccountTokenVolumeCredentials(str(sa_token))
        log.info("authenticating with the in-cluster service-account token %s", sa_token)
    with warnings.catch_warnings():  # "only works with KFP v2.0.0-beta.2 and later": known
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=host, **auth, **({"namespace": namespace} if namespace else {}))


def run_url(host: str, run_id: str, *, namespace: str | None = None, ui_host: str | None = None) -> str:
    """The address of the run's page in the KFP UI.

    * ``ui_host`` (or $KF_PIPELINES_UI_ENDPOINT): the UI's own address, as kfp.Client takes it.
    * Behind the Kubeflow central dashboard the API is reached at ``https://DASHBOARD/pipeline``,
      while the UI lives in the dashboard's iframe route ``/_/pipeline/`` and takes the profile
      namespace as ``?ns=`` (``https://DASHBOARD/_/pipeline/?ns=NS#/runs/details/ID``).
    * Otherwise (KFP standalone, ``kubectl port-forward svc/ml-pipeline-ui``) the UI is the host.
    """
    ui_host = ui_host or os.environ.get("KF_PIPELINES_UI_ENDPOINT")
    if ui_host:
        base = ui_host if ui_host.startswith(("http://", "https://")) else f"http://{ui_host}"
        return f"{base.rstrip('/')}/#/runs/details/{run_id}"
    parts = urlsplit(host)
    path = parts.path.rstrip("/")
    if path.endswith("/pipeline"):
        origin = f"{parts.scheme}://{parts.netloc}{path[: -len('/pipeline')]}"
        query = f"?ns={quote(namespace)}" if namespace else ""
        return f"{origin}/_/pipeline/{query}#/runs/details/{run_id}"
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def submit(
    package: str | Path,
    host: str,
    params: Mapping[str, Any] | None = None,
    *,
    pipeline_name: str = "cosmos-pipeline",
    experiment: str = "cosmos",
    run_name: str | None = None,
    namespace: str | None = None,
    token: str | None = None,
    cookies: str | None = None,
    pipeline_root: str | None = None,
    ui_host: str | None = None,
    check_version: bool = True,
) -> SubmitResult:
    """Upload ``package`` (a new version if ``pipeline_name`` exists) and create a run of it.

    ``pipeline_root`` (e.g. ``s3://cosmos-artifacts/v2/artifacts``): this run's artifact root;
    None = the server's default (its ``kfp-launcher`` ConfigMap or the deployment default).

    ``namespace``: the Kubeflow profile namespace. The pipeline is uploaded into it and the run is
    created in an experiment of it. Required by a multi-user server (``healthz`` ``multi_user``);
    inside a profile's pod the pod's namespace is used when none is given.
    """
    from cosmos.errors import CosmosError

    package = Path(package)
    params = dict(params or {})
    _check_params(package, params)
    fill_data_fingerprint(package, params)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        client = _client(host, token=token, cookies=cookies, namespace=namespace)
        health = _healthz(client)
        if check_version:
            check_backend_version(health.get("tag_name"), host)
        # inside a profile's pod kfp.Client has read the pod's namespace already
        namespace = namespace or client.get_user_namespace() or None
        if health.get("multi_user") is True:
            if not namespace:
                raise CosmosError(
                    f"{host} is a multi-user Kubeflow Pipelines: give --namespace PROFILE_NAMESPACE "
                    "(a pipeline without one would be shared with every namespace, or refused)"
                )
            if pipeline_root and not granted_to_profile(pipeline_root, namespace):
                log.warning(
                    "pipeline root %s is outside what the KFP profile controller grants namespace %s "
                    "(s3://%s/{%s}); it works only if an admin granted it (k8s/README.md). "
                    "Leave --pipeline-root out to use %s",
                    pipeline_root,
                    namespace,
                    PROFILE_BUCKET,
                    ",".join(p.format(ns=namespace).rstrip("/") for p in PROFILE_PREFIXES),
                    profile_default_root(namespace),
                )
        pipeline_id = _find_pipeline(client, pipeline_name, namespace)
        if pipeline_id is None:  # first upload: the pipeline and its first version
            pipeline = client.upload_pipeline(
                str(package),
                pipeline_name=pipeline_name,
                description="COSMOS ceT1 -> hrT2 domain adaptation",
                namespace=namespace,
            )
            pipeline_id = pipeline.pipeline_id
            versions = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
            if not versions.pipeline_versions:
                raise CosmosError(f"{host}: pipeline {pipeline_name} was uploaded but has no version")
            version_id = versions.pipeline_versions[0].pipeline_version_id
            log.info("uploaded new pipeline %s (%s) to %s", pipeline_name, pipeline_id, namespace or "shared")
        else:  # it exists: a new version of it
            version = client.upload_pipeline_version(
                str(package), pipeline_version_name=f"{pipeline_name}-{stamp}", pipeline_id=pipeline_id
            )
            version_id = version.pipeline_version_id
            log.info("uploaded version %s of pipeline %s", version.display_name, pipeline_name)
        exp = client.create_experiment(experiment, namespace=namespace)
        run = client.run_pipeline(
            exp.experiment_id,
            run_name or f"{pipeline_name}-{stamp}",
            params=params,
            pipeline_id=pipeline_id,
            version_id=version_id,
            pipeline_root=pipeline_root,
        )
    except CosmosError:
        raise
    except Exception as exc:  # connection refused, 401, 404 ... one clear line for the CLI
        raise CosmosError(f"submitting to {host} failed: {type(exc).__name__}: {str(exc).strip()[:500]}") from None
    url = run_url(host, run.run_id, namespace=namespace, ui_host=ui_host)
    return SubmitResult(
        pipeline_id=pipeline_id, version_id=version_id, experiment_id=exp.experiment_id, run_id=run.run_id, run_url=url
    )


# The run states the backend's RetryRun accepts: it re-runs a workflow whose Argo phase is Failed or Error
# (backend 2.17.0 resource_manager.go RetryRun -> execSpec.CanRetry), which a failed or a terminated
# (canceled) run has; a running or succeeded run is refused by the server with a 500.
RETRYABLE_STATES = ("FAILED", "CANCELED")


@dataclass
class RetryResult:
    run_id: str
    previous_state: str
    run_url: str


def retry(
    run_id: str,
    host: str,
    *,
    namespace: str | None = None,
    token: str | None = None,
    cookies: str | None = None,
    ui_host: str | None = None,
) -> RetryResult:
    """Retry a failed run in place: ``POST /apis/v2beta1/runs/{run_id}:retry`` (backend 2.17.0
    ``backend/api/v2beta1/run.proto`` ``RetryRun``).

    Why this is the fold-survival path of the default (``ParallelFor``) package: the backend's Argo
    compiler drops ``retryPolicy`` for tasks inside a loop (kubeflow/pipelines #12389, #13897), so a
    fold whose node is lost fails the run. The server's retry resets only the failed and unfinished
    Argo nodes of the same workflow (``GenerateRetryExecution``; the finished tasks keep their
    outputs) and keeps the run id, which is the ``pipeline_run_id`` that keys each fold's
    object-store checkpoints: a retried fold resumes from its last checkpoint.

    The run's state is read first, so a run that is still running or has succeeded gets one clear
    line instead of the server's internal error.
    """
    from cosmos.errors import CosmosError

    if not run_id or not run_id.strip() or "/" in run_id:
        raise CosmosError(f"run id {run_id!r}: give the id of a KFP run (cosmos submit prints it)")
    if not host or not host.strip():
        raise CosmosError("--host '': give the KFP API endpoint, e.g. http://localhost:8080")
    try:
        client = _client(host, token=token, cookies=cookies, namespace=namespace)
        run = client.get_run(run_id)
        state = str(run.state or "")
        if state not in RETRYABLE_STATES:
            raise CosmosError(
                f"run {run_id} is {state or 'in an unknown state'}: only a {' or '.join(RETRYABLE_STATES)} run can be "
                "retried (wait for it to end, or start a new one with cosmos submit)"
            )
        client._run_api.run_service_retry_run(run_id)
    except CosmosError:
        raise
    except Exception as exc:  # connection refused, 401, 404 ... one clear line for the CLI
        raise CosmosError(
            f"retrying run {run_id} on {host} failed: {type(exc).__name__}: {str(exc).strip()[:500]}"
        ) from None
    return RetryResult(
        run_id=run_id, previous_state=state, run_url=run_url(host, run_id, namespace=namespace, ui_host=ui_host)
    )
