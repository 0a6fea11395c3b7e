"""The segmenter registry: a round's folds as an mlflow.pyfunc model, loadable from models:/ by
version and by @champion, predicting NIfTI on the input grid; model references resolve to folds.

nnU-Net itself is replaced by a fake ``cosmos.segmentation.inference`` here (fast); the slow
end-to-end self-training test exercises the real predictor through the same registry code.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

from cosmos.config import load_config  # noqa: E402
from cosmos.data.nifti import load, same_grid, save  # noqa: E402
from cosmos.errors import CosmosError  # noqa: E402
from cosmos.segmentation import registry  # noqa: E402

AFFINE = np.array([[0, -0.5, 0, 10.0], [-0.6, 0, 0, 20.0], [0, 0, 1.2, -5.0], [0, 0, 0, 1]])


def fake_predict_module(calls: list):
    """Threshold 'segmenter' with the predict() contract: crossmoda_{k}_Label.nii.gz (or <stem>_seg.nii.gz)
    on the input grid."""

    def predict(fold_model_dirs, inputs, out_dir, cfg, mirroring=None, save_probabilities=None):
        from pathlib import Path

        calls.append({"folds": [Path(d) for d in fold_model_dirs], "mirroring": mirroring, "n": len(inputs)})
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = sorted(Path(inputs).glob("*.nii.gz")) if not isinstance(inputs, (list, tuple)) else inputs
        written = []
        for f in files:
            vol = load(f)
            lab = (vol.data > np.percentile(vol.data, 70)).astype(np.uint8)
            lab[vol.data > np.percentile(vol.data, 95)] = 2
            written.append(save(out / registry.output_name(f), lab, like=vol, label=True))
        return written

    return types.SimpleNamespace(predict=predict)


@pytest.fixture()
def calls(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "cosmos.segmentation.inference", fake_predict_module(calls))
    return calls


def make_fold(d, fold):
    d.mkdir(parents=True)
    (d / "checkpoint_final.pth").write_bytes(b"weights %d" % fold)
    (d / "checkpoint_latest.pth").write_bytes(b"big")
    (d / "plans.json").write_text("{}")
    (d / "dataset_fingerprint.json").write_text('{"spacings": [[1, 0.5, 0.5]]}')
    return d


def make_image(path, shape=(14, 12, 8), seed=0):
    rng = np.random.default_rng(seed)
    return save(path, rng.random(shape).astype(np.float32), affine=AFFINE)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """Two rounds registered into a fresh sqlite store; champion on round 1."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = load_config("tiny", overrides=["tracking.experiment=registry-test", "segmentation.mirroring=false"])
    r0 = [make_fold(root / "r0" / f"fold_{f}", f) for f in (0, 1)]
    r1 = [make_fold(root / "r1" / f"fold_{f}", f) for f in (0, 1)]
    v0 = registry.register_round(r0, 0, cfg, tracking_uri=uri, tags={"dataset_digest": "abc123"})
    v1 = registry.register_round(r1, 1, cfg, alias="champion", tracking_uri=uri)
    return {"uri": uri, "v0": v0, "v1": v1, "root": root, "cfg": cfg}


def test_versions_tags_and_alias(registered):
    client = MlflowClient(registered["uri"])
    assert (registered["v0"], registered["v1"]) == ("1", "2")
    mv0 = client.get_model_version("cosmos-segmenter", "1")
    assert mv0.tags["round"] == "0" and mv0.tags["folds"] == "0,1" and mv0.tags["profile"] == "tiny"
    assert mv0.tags["dataset_digest"] == "abc123"
    mv1 = client.get_model_version_by_alias("cosmos-segmenter", "champion")
    assert str(mv1.version) == "2" and mv1.tags["round"] == "1"
    assert len(mv1.tags["dataset_digest"]) == 16  # computed from the folds' dataset fingerprint


@pytest.mark.parametrize("ref", ["models:/cosmos-segmenter/1", "models:/cosmos-segmenter@champion"])
def test_pyfunc_loads_from_registry_and_predicts(registered, calls, tmp_path, ref):
    mlflow.set_tracking_uri(registered["uri"])
    model = mlflow.pyfunc.load_model(ref)
    img = make_image(tmp_path / "in" / "crossmoda_211_hrT2.nii.gz")
    other = make_image(tmp_path / "in" / "scan-7.nii.gz", seed=1)
    out = model.predict(pd.DataFrame({"path": [str(img), str(other)]}), params={"output_dir": str(tmp_path / "out")})
    assert list(out.columns) == ["input", "output"]
    assert [p.split("/")[-1] for p in out["output"]] == ["crossmoda_211_Label.nii.gz", "scan-7_seg.nii.gz"]
    for src, dst in zip(out["input"], out["output"]):
        assert same_grid(load(src), load(dst, label=True)) is None
        assert np.allclose(load(dst).affine, AFFINE, atol=1e-5)
    # the model's folds were used (latest checkpoints are not shipped) and the saved config too
    used = calls[-1]["folds"]
    assert [d.name for d in used] == ["fold_0", "fold_1"]
    assert all((d / "checkpoint_final.pth").is_file() and not (d / "checkpoint_latest.pth").exists() for d in used)
    assert calls[-1]["mirroring"] is False  # signature default = the training config's mirroring
    # a {"path": [...]} dict and a param override work too
    out2 = model.predict({"path": [str(img)]}, params={"output_dir": str(tmp_path / "out2"), "mirroring": True})
    assert out2["output"][0].endswith("crossmoda_211_Label.nii.gz") and calls[-1]["mirroring"] is True


def test_resolve_model_references(registered, tmp_path):
    uri = registered["uri"]
    by_alias = registry.resolve_model("models:/cosmos-segmenter@champion", uri, tmp_path / "a")
    assert by_alias.version == "2" and [d.name for d in by_alias.fold_dirs] == ["fold_0", "fold_1"]
    assert by_alias.cfg is not None and by_alias.cfg.segmentation.mirroring is False
    latest = registry.resolve_model("models:/cosmos-segmenter", uri, tmp_path / "b")
    assert latest.version == "2"
    local = registry.resolve_fold_dirs(registered["root"] / "r0")
    assert [d.name for d in local] == ["fold_0", "fold_1"]
    single = registry.resolve_fold_dirs(registered["root"] / "r0" / "fold_1")
    assert single == [registered["root"] / "r0" / "fold_1"]


@pytest.mark.parametrize(
    "ref, message",
    [
        ("models:/cosmos-segmenter@nope", "has no alias @nope; versions: \\[1, 2\\]; aliases: @champion"),
        ("models:/cosmos-segmenter/9", "has no version 9"),
        ("models:/no-such-model@champion", "no registered model 'no-such-model'.*registered: cosmos-segmenter"),
        ("models:/a/b/c", "not a model URI"),
    ],
)
def test_resolve_unknown_references(registered, ref, message):
    with pytest.raises(CosmosError, match=message):
        registry.resolve_model(ref, registered["uri"])


def test_resolve_local_errors(tmp_path):
    with pytest.raises(CosmosError, match="model not found"):
        registry.resolve_model(tmp_path / "missing")
    with pytest.raises(CosmosError, match="no trained fold"):
        registry.resolve_model(tmp_path)


def test_register_refuses_untrained_folds(tmp_path):
    cfg = load_config("tiny")
    (tmp_path / "fold_0").mkdir()
    with pytest.raises(CosmosError, match="checkpoint_final.pth missing"):
        registry.register_round([tmp_path / "fold_0"], 0, cfg, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
