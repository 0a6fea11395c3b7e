"""``cosmos submit``: upload ``cosmos-pipeline`` to a Kubeflow Pipelines server and start a run.

Uses ``kfp.Client`` (the KFP v2 REST API, ``/apis/v2beta1``): the pipeline is uploaded as
``cosmos-pipeline`` (a new version when a pipeline of that name exists), the experiment is created
if needed, and a run of the uploaded version is created with the given parameters. Authentication:
``--token`` (or $KFP_TOKEN) as a bearer token, or ``--cookies`` for an auth proxy.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

log = logging.getLogger(__name__)


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


def submit(package: str | Path, host: str, params: Mapping[str, Any] | None = None, *,
           pipeline_name: str = "cosmos-pipeline", experiment: str = "cosmos", run_name: str | None = None,
           namespace: str | None = None, token: str | None = None, cookies: str | None = None) -> SubmitResult:
    """Upload ``package`` (a new version if ``pipeline_name`` exists) and create a run of it."""
    import kfp

    from cosmos.errors import CosmosError

    package = Path(package)
    params = dict(params or {})
    _check_params(package, params)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        with warnings.catch_warnings():  # "only works with KFP v2.0.0-beta.2 and later": known
            warnings.simplefilter("ignore", FutureWarning)
            client = kfp.Client(host=host, existing_token=token, cookies=cookies,
                                **({"namespace": namespace} if namespace else {}))
        pipeline_id = client.get_pipeline_id(pipeline_name)
        if pipeline_id is None:  # first upload: the pipeline and its first version
            pipeline = client.upload_pipeline(str(package), pipeline_name=pipeline_name,
                                              description="COSMOS ceT1 -> hrT2 domain adaptation")
            pipeline_id = pipeline.pipeline_id
            versions = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
            if not versions.pipeline_versions:
                raise CosmosError(f"{host}: pipeline {pipeline_name} was uploaded but has no version")
            version_id = versions.pipeline_versions[0].pipeline_version_id
            log.info("uploaded new pipeline %s (%s)", pipeline_name, pipeline_id)
        else:  # it exists: a new version of it
            version = client.upload_pipeline_version(str(package), pipeline_version_name=f"{pipeline_name}-{stamp}",
                                                     pipeline_id=pipeline_id)
            version_id = version.pipeline_version_id
            log.info("uploaded version %s of pipeline %s", version.display_name, pipeline_name)
        exp = client.create_experiment(experiment, namespace=namespace)
        run = client.run_pipeline(exp.experiment_id, run_name or f"{pipeline_name}-{stamp}", params=params,
                                  pipeline_id=pipeline_id, version_id=version_id)
    except CosmosError:
        raise
    except Exception as exc:  # connection refused, 401, 404 ... one clear line for the CLI
        raise CosmosError(f"submitting to {host} failed: {type(exc).__name__}: {str(exc).strip()[:500]}") from None
    url = f"{host.rstrip('/')}/#/runs/details/{run.run_id}"
    return SubmitResult(pipeline_id=pipeline_id, version_id=version_id,
                        experiment_id=exp.experiment_id, run_id=run.run_id, run_url=url)
