"""Preemption-safe folds: fold checkpoints mirrored to a REAL S3 server (SeaweedFS) and resumed by a retried task.

* The sync alone (no training): upload, atomic manifest, clean-up of older uploads, restore into a
  fresh directory, a corrupted object refused, the per-run/round/fold key.
* The cluster code path end to end: the ``train_fold`` KFP component function with ``work_root=""``
  runs a tiny fold in a subprocess, is SIGKILLed once the object store holds a checkpoint, and a
  second run into a FRESH output directory (what a retried pod gets) resumes from the object store.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from cosmos.config import ConfigError, load_config
from cosmos.errors import CosmosError
from cosmos.segmentation.checkpoint_sync import MANIFEST, CheckpointSync, fold_checkpoint_uri

REPO = Path(__file__).resolve().parents[1]


def _bucket(endpoint: str, name: str) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    try:
        client.create_bucket(Bucket=name)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass


def _keys(uri: str) -> list[str]:
    from cosmos.data.storage import list_objects, split_s3

    _, prefix = split_s3(uri)
    return sorted(k[len(prefix) + 1 :] for k, _ in list_objects(uri))


# ------------------------------------------------------------------------------------------ the key
def test_fold_key_is_per_run_round_and_fold():
    assert fold_checkpoint_uri("s3://b/ckpt/", "a1b2-c3", 2, 4) == "s3://b/ckpt/a1b2-c3/round_2/fold_4"
    assert fold_checkpoint_uri("", "a1b2", 0, 0) is None  # off
    assert fold_checkpoint_uri("s3://b/ckpt", "", 0, 0) is None  # local run: no run id
    with pytest.raises(CosmosError, match="placeholder"):
        fold_checkpoint_uri("s3://b/ckpt", "{{$.pipeline_job_uuid}}", 0, 0)


def test_checkpoint_uri_is_validated():
    assert load_config("tiny", overrides=["segmentation.checkpoint_uri=s3://b/c"]).segmentation.checkpoint_uri
    with pytest.raises(ConfigError, match="checkpoint_uri"):
        load_config("tiny", overrides=["segmentation.checkpoint_uri=relative/dir"])


# ------------------------------------------------------------------------------------------ the sync, on SeaweedFS
def test_push_restore_and_clear_on_real_s3(real_s3_env, tmp_path):
    _bucket(real_s3_env, "ckpt-unit")
    uri = fold_checkpoint_uri("s3://ckpt-unit/cosmos", "run-1", 1, 0)
    fold = tmp_path / "fold"
    fold.mkdir()
    (fold / "checkpoint_latest.pth").write_bytes(b"epoch-2 weights")
    (fold / ".cosmos_init.json").write_text('{"from": "/teacher", "lr_scale": 0.5}')
    (fold / "training_log.txt").write_text("not needed to resume")
    sync = CheckpointSync(uri, fold)
    sync(0, {})  # the file was already there when the sync started: nothing new to upload
    assert _keys(uri) == []
    os.replace(fold / "checkpoint_latest.pth", fold / "old")  # the trainer replaces the file (new inode)
    (fold / "checkpoint_latest.pth").write_bytes(b"epoch-2 weights")
    sync(1, {})  # epoch index 1 finished -> 2 epochs done
    assert set(_keys(uri)) == {"epoch_0002/checkpoint_latest.pth", "epoch_0002/.cosmos_init.json", MANIFEST}
    (fold / "checkpoint_latest.pth").unlink()
    (fold / "checkpoint_latest.pth").write_bytes(b"epoch-4 weights, longer")
    sync(3, {})
    assert set(_keys(uri)) == {"epoch_0004/checkpoint_latest.pth", "epoch_0004/.cosmos_init.json", MANIFEST}

    fresh = tmp_path / "retried"  # what a retried pod gets
    manifest = CheckpointSync(uri, fresh).restore()
    assert manifest is not None and manifest["epoch"] == 4
    assert (fresh / "checkpoint_latest.pth").read_bytes() == b"epoch-4 weights, longer"
    assert json.loads((fresh / ".cosmos_init.json").read_text())["lr_scale"] == 0.5
    assert sorted(p.name for p in fresh.iterdir()) == [".cosmos_init.json", "checkpoint_latest.pth"]
    with pytest.raises(CosmosError, match="already holds"):
        CheckpointSync(uri, fresh).restore()

    # another run / round / fold never sees it
    assert CheckpointSync(fold_checkpoint_uri("s3://ckpt-unit/cosmos", "run-2", 1, 0), tmp_path / "x").restore() is None

    CheckpointSync(uri, fresh).clear()
    assert _keys(uri) == []
    assert CheckpointSync(uri, tmp_path / "after").restore() is None


def test_restore_refuses_a_checkpoint_that_differs_from_its_manifest(real_s3_env, tmp_path):
    import boto3

    _bucket(real_s3_env, "ckpt-unit")
    uri = fold_checkpoint_uri("s3://ckpt-unit/cosmos", "run-corrupt", 0, 1)
    fold = tmp_path / "fold"
    fold.mkdir()
    (fold / "checkpoint_latest.pth").write_bytes(b"good")
    CheckpointSync(uri, fold).push(1)
    boto3.client("s3", endpoint_url=real_s3_env).put_object(
        Bucket="ckpt-unit", Key="cosmos/run-corrupt/round_0/fold_1/epoch_0001/checkpoint_latest.pth", Body=b"bad!"
    )
    with pytest.raises(CosmosError, match="SHA-256"):
        CheckpointSync(uri, tmp_path / "retried").restore()
    assert not (tmp_path / "retried" / "checkpoint_latest.pth").exists()


def test_push_and_restore_to_a_mounted_directory(tmp_path):
    uri = str(tmp_path / "store" / "run-9" / "round_0" / "fold_0")
    fold = tmp_path / "fold"
    fold.mkdir()
    (fold / "checkpoint_latest.pth").write_bytes(b"w1")
    sync = CheckpointSync(uri, fold)
    sync.push(1)
    (fold / "checkpoint_latest.pth").unlink()
    (fold / "checkpoint_latest.pth").write_bytes(b"w2")
    sync(1, {})
    assert sorted(p.relative_to(uri).as_posix() for p in Path(uri).rglob("*") if p.is_file()) == [
        "epoch_0002/checkpoint_latest.pth",
        MANIFEST,
    ]
    assert CheckpointSync(uri, tmp_path / "fresh").restore()["epoch"] == 2
    assert (tmp_path / "fresh" / "checkpoint_latest.pth").read_bytes() == b"w2"
    sync.clear()
    assert not list(Path(uri).rglob("*"))


# ------------------------------------------------------------------------------------------ kill and resume
SHAPE = (32, 32, 8)
EPOCHS = 4
SEG = {
    "epochs": EPOCHS,
    "iterations_per_epoch": 2,
    "val_iterations_per_epoch": 1,
    "save_every": 1,
    "torch_threads": 1,
    "num_processes": 1,
    "mirroring": False,
    "num_folds": 2,
    "folds": [0, 1],
    "not_learning_max_factor": 1,  # this test counts epochs: no training on when nothing is learnt
}

# The task process: the train_fold KFP component function, as a pod runs it (cluster mode:
# work_root ""). MLflow is not under test here, so its fold run is a no-op (tracking_uri only has to
# be non-empty for the cluster fail-fast). HOLD_S > 0 pauses after each epoch's checkpoint upload,
# so the parent can kill the process mid-training on a loaded machine.
CHILD = textwrap.dedent("""
    import contextlib, json, sys, time
    from types import SimpleNamespace


    def main():
        args = json.loads(sys.argv[1])
        import cosmos.segmentation.mlflow_logging as ml
        from cosmos.segmentation.checkpoint_sync import CheckpointSync

        @contextlib.contextmanager
        def no_mlflow(*a, **k):
            yield None

        ml.fold_run = no_mlflow
        if args["hold_s"]:
            upload = CheckpointSync.__call__

            def slow(self, epoch, metrics):
                upload(self, epoch, metrics)
                time.sleep(args["hold_s"])

            CheckpointSync.__call__ = slow
        from components.train_fold import train_fold

        model = SimpleNamespace(path=args["out"], metadata={})
        fold = train_fold(prepared=SimpleNamespace(path=args["prepared"]), fold=0, round_index=0,
                          round_run=SimpleNamespace(path=args["run_dir"]), profile="tiny", config=args["config"],
                          overrides="", tracking_uri="http://127.0.0.1:9", experiment="t", work_root="",
                          model=model, pipeline_run_id=args["run_id"])
        print("FOLD-DONE", fold, flush=True)


    if __name__ == "__main__":
        main()
""")


def _case(n: int):
    rng = np.random.default_rng(n)
    img = rng.normal(0.2, 0.05, SHAPE).astype(np.float32)
    lab = np.zeros(SHAPE, np.uint8)
    lab[8 + n % 3 : 16 + n % 3, 8:16, 2:6] = 1
    lab[20:24, 20:24, 3:6] = 2
    img[lab == 1] += 0.5
    img[lab == 2] += 1.0
    return img, lab


@pytest.fixture(scope="module")
def prepared_round(tmp_path_factory):
    """A tiny prepared round 0 (6 synthetic 32x32x8 cases, nnU-Net planned and preprocessed)."""
    from cosmos.data import nifti
    from cosmos.segmentation.prepare import prepare_round

    root = tmp_path_factory.mktemp("ckpt_round")
    aff = np.diag([0.5, 0.5, 1.5, 1.0])
    for n in range(1, 7):
        img, lab = _case(n)
        nifti.save(root / "pseudo" / f"crossmoda_{n}_hrT2pseudo.nii.gz", img, affine=aff)
        nifti.save(root / "pseudo" / f"crossmoda_{n}_Label.nii.gz", lab, affine=aff, label=True)
    cfg = load_config("tiny", overrides=[f"segmentation.{k}={json.dumps(v)}" for k, v in SEG.items()])
    return prepare_round(root / "pseudo", root / "prepared", cfg)


def _start(tmp_path: Path, prepared: Path, out: Path, config: str, hold_s: float) -> subprocess.Popen:
    script = tmp_path / "fold_task.py"
    script.write_text(CHILD)
    run_dir = tmp_path / "run_info"
    run_dir.mkdir(exist_ok=True)
    args = {
        "prepared": str(prepared),
        "run_dir": str(run_dir),
        "out": str(out),
        "config": config,
        "run_id": "kfp-run-7f3a",
        "hold_s": hold_s,
    }
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    log = open(out.parent / f"{out.name}.log", "wb")
    return subprocess.Popen(
        [sys.executable, str(script), json.dumps(args)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.slow
def test_killed_fold_task_resumes_from_the_object_store(real_s3_env, prepared_round, tmp_path):
    _bucket(real_s3_env, "cosmos-ckpt")
    config = json.dumps({"segmentation": {**SEG, "checkpoint_uri": "s3://cosmos-ckpt/checkpoints"}})
    uri = "s3://cosmos-ckpt/checkpoints/kfp-run-7f3a/round_0/fold_0"  # <checkpoint_uri>/<run id>/round_<k>/fold_<f>
    store = CheckpointSync(uri, tmp_path / "probe")

    first = _start(tmp_path, prepared_round, tmp_path / "attempt1", config, hold_s=3.0)
    t0 = time.monotonic()
    try:
        while True:
            manifest = store.manifest()
            if manifest is not None and manifest["epoch"] >= 1:
                break
            assert first.poll() is None, (tmp_path / "attempt1.log").read_text()[-3000:]
            assert time.monotonic() - t0 < 120, "no checkpoint reached the object store"
            time.sleep(0.3)
        os.killpg(first.pid, signal.SIGKILL)  # preemption: no clean-up, no exit handlers
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    saved = store.manifest()  # what the retried task will find (an upload may have finished meanwhile)
    assert saved is not None and 1 <= saved["epoch"] < EPOCHS
    assert not (tmp_path / "attempt1" / "checkpoint_final.pth").exists()

    out = tmp_path / "attempt2"  # a retried pod: a fresh, empty output artifact directory
    second = _start(tmp_path, prepared_round, out, config, hold_s=0.0)
    try:
        assert second.wait(timeout=150) == 0, (tmp_path / "attempt2.log").read_text()[-3000:]
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    text = (tmp_path / "attempt2.log").read_text()
    assert f"restored fold checkpoint of epoch {saved['epoch']} from {uri}" in text
    meta = json.loads((out / "cosmos_fold.json").read_text())
    assert meta["resumed"] is True and meta["restored_from_store"]["epoch"] == saved["epoch"]
    # nnU-Net's own training log of the retried task: it starts at the saved epoch and runs to the end
    log_files = list(out.glob("training_log_*.txt"))
    assert len(log_files) == 1
    epochs = [int(e) for e in re.findall(r"^\S+ \S+: Epoch (\d+)\s*$", log_files[0].read_text(), flags=re.M)]
    assert epochs == list(range(saved["epoch"], EPOCHS)), epochs
    import torch

    ckpt = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["current_epoch"] == EPOCHS
    assert len(ckpt["logging"]["train_losses"]) == EPOCHS  # the killed attempt's epochs came with the checkpoint
    assert _keys(uri) == []  # a finished fold leaves nothing behind in the store
