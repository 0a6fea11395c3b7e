"""Translator training on the phantom: losses go down, resume continues the same MLflow run, the
registered model loads from models:/ and converts with the source geometry, CLI end to end.

One module-scoped training (a micro config: 32x32 slices, 4-channel U-Nets) keeps this to seconds
of compute; the tiny profile itself is exercised by the benchmark and the demo.
"""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pytest

from cosmos.config import load_config
from cosmos.data import nifti
from cosmos.data.layout import SOURCE_DIR
from cosmos.errors import CosmosError
from cosmos.translation.conversion import convert_source
from cosmos.translation.training import train_translator

MICRO = [
    "translator.base_channels=4",
    "translator.disc_channels=4",
    "translator.image_size=32",
    "translator.inplane_spacing=1.6",
    "translator.batch_size=4",
    "translator.slices_per_epoch=24",
    "translator.lr=0.002",
    "translator.seg_translated_start_epoch=1",
    "translator.seg_loss=dice_ce",
    "translator.fg_oversample=0.5",
    "translator.sample_every=1",
    "translator.device=cpu",
    "translator.num_threads=1",
    "translator.loss_preset=paper",  # the paper's weights (identity term on), not tiny's tuned ones
    "translator.select_epoch=last",  # the final epoch is the model (the paper); tiny keeps the best-scored one
]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from cosmos.data.phantom import make_phantom

    return make_phantom(
        tmp_path_factory.mktemp("phantom"), n_source=2, n_target=2, n_val=0, seed=3, scale="small", preview=False
    )


@pytest.fixture(scope="module")
def trained(phantom, tmp_path_factory):
    """Train 1 epoch, then re-run the same --out with epochs=3 (a 'killed' run resumed), then once more."""
    out = tmp_path_factory.mktemp("translator")
    uri = f"sqlite:///{out / 'mlflow.db'}"
    cfg1 = load_config("tiny", overrides=MICRO + ["translator.epochs=1"])
    first = train_translator(phantom, out / "run", cfg1, tracking_uri=uri)
    ckpt_after_1 = (out / "run" / "checkpoint.pt").stat().st_mtime_ns
    cfg3 = load_config("tiny", overrides=MICRO + ["translator.epochs=3"])
    second = train_translator(phantom, out / "run", cfg3, tracking_uri=uri)
    t0 = time.time()
    third = train_translator(phantom, out / "run", cfg3, tracking_uri=uri)
    return {
        "out": out / "run",
        "uri": uri,
        "first": first,
        "second": second,
        "third": third,
        "third_seconds": time.time() - t0,
        "ckpt_after_1": ckpt_after_1,
        "cfg": cfg3,
    }


def test_training_lowers_the_losses_and_logs_everything(trained):
    import mlflow

    res = trained["second"]
    h = res.history
    assert [e["epoch"] for e in h] == [1, 2, 3]
    for term in ("identity", "seg_src"):  # the heavily weighted terms fall within 18 steps
        assert h[-1][term] < h[0][term], (term, h)
    # the paper weights cycle at 0.01 (vs adversarial 0.1): over 18 steps the GAN game moves it either way,
    # but it must not blow up
    assert h[-1]["cycle"] < 1.5 * h[0]["cycle"], h
    mlflow.set_tracking_uri(trained["uri"])
    client = mlflow.MlflowClient()
    run = client.get_run(res.run_id)
    params = run.data.params
    assert params["translator.base_channels"] == "4" and params["profile"] == "tiny" and params["seed"] == "0"
    assert params["translator.lambda_cycle"] == "0.01"  # the paper preset by default
    for term in ("cycle", "adv_G", "adv_D", "identity", "seg_src", "seg_translated", "total"):
        steps = [m.step for m in client.get_metric_history(res.run_id, term)]
        assert steps == [1, 2, 3], (term, steps)  # each epoch logged once: epoch 1 was not redone
    for term in ("fidelity_w1", "fidelity_w1_untranslated", "fidelity_vs_fluid_contrast"):
        steps = [m.step for m in client.get_metric_history(res.run_id, term)]
        assert steps == [1, 2, 3], (term, steps)  # translation fidelity scored after every epoch
    w1 = [m.value for m in client.get_metric_history(res.run_id, "fidelity_w1")]
    assert len(set(w1)) > 1 and all(0 <= v <= 2 for v in w1)  # the generator changed between epochs
    assert {e["fidelity_w1"] for e in h} == set(w1)
    fid = json.loads((trained["out"] / "fidelity.json").read_text())
    assert fid["epochs"] == 3 and fid["n_source"] == 2 and fid["n_target"] == 2 and len(fid["per_case"]) == 2
    assert fid["w1"] == pytest.approx(w1[-1], abs=1e-6)  # the final generator, scored as in epoch 3
    assert "fidelity.json" in {a.path for a in client.list_artifacts(res.run_id)}
    assert run.data.tags["dataset_digest"] and run.data.tags["git_commit"]
    arts = {a.path for a in client.list_artifacts(res.run_id, "samples")}
    assert {"samples/epoch_001.png", "samples/epoch_002.png", "samples/final.png"} <= arts
    assert (trained["out"] / "samples" / "final.png").stat().st_size > 1000


def test_resume_continues_the_same_run_without_redoing_epochs(trained):
    first, second, third = trained["first"], trained["second"], trained["third"]
    assert first.epochs == 1 and second.epochs == 3
    assert second.run_id == first.run_id  # the SAME MLflow run
    assert second.history[0] == first.history[0]  # epoch 1 comes from the checkpoint, not retrained
    assert (second.model_version, first.model_version) == ("2", "1")  # a new registered version
    # a finished training returns at once, with the same result
    assert third.run_id == second.run_id and third.model_version == second.model_version
    assert trained["third_seconds"] < 5
    state = json.loads((trained["out"] / "result.json").read_text())
    assert state["epochs"] == 3


def test_resume_refuses_another_architecture(trained, phantom):
    cfg = load_config("tiny", overrides=MICRO + ["translator.epochs=4", "translator.base_channels=8"])
    with pytest.raises(CosmosError, match="base_channels"):
        train_translator(phantom, trained["out"], cfg, tracking_uri=trained["uri"])


def _non_identity(affine: np.ndarray) -> bool:
    return nib.aff2axcodes(affine) != ("R", "A", "S") or not np.allclose(
        affine[:3, :3], np.diag(np.diag(affine[:3, :3]))
    )


def test_conversion_keeps_the_source_grid_and_labels(trained, phantom, tmp_path):
    out = tmp_path / "pseudo"
    paths = convert_source(trained["second"].model_dir, phantom, out, trained["cfg"])
    assert [p.name for p in paths] == ["crossmoda_1_hrT2pseudo.nii.gz", "crossmoda_2_hrT2pseudo.nii.gz"]
    seen_non_identity = False
    for p in paths:
        case = p.name.split("_hrT2pseudo")[0]
        src = nifti.load(phantom / SOURCE_DIR / f"{case}_ceT1.nii.gz")
        pseudo = nifti.load(p)
        assert nifti.same_grid(src, pseudo, atol=1e-6) is None
        assert np.array_equal(pseudo.header.get_sform(), src.header.get_sform())
        assert np.array_equal(pseudo.header.get_qform(), src.header.get_qform())
        lab_src = (phantom / SOURCE_DIR / f"{case}_Label.nii.gz").read_bytes()
        assert (out / f"{case}_Label.nii.gz").read_bytes() == lab_src  # byte copy: aligned voxel for voxel
        assert 0.0 <= pseudo.data.min() and pseudo.data.max() <= 1.0 and pseudo.data.std() > 0.01
        seen_non_identity |= _non_identity(src.affine)
    assert seen_non_identity, "the phantom should include a flipped/oblique case"
    fid = json.loads((out / "fidelity.json").read_text())  # scored against target_training hrT2
    assert fid["n_source"] == 2 and fid["n_target"] == 2 and 0 <= fid["w1"] <= 2 and fid["w1_untranslated"] > 0
    # resumable: a second call does no work and returns the same files
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert convert_source(trained["second"].model_dir, phantom, out, trained["cfg"]) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes


def test_registered_model_loads_from_models_uri_and_converts(trained, phantom, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(trained["uri"])
    MlflowClient().set_registered_model_alias("cosmos-translator", "champion", trained["second"].model_version)
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("crossmoda_2_ceT1.nii.gz", "crossmoda_2_Label.nii.gz"):
        (flat / name).write_bytes((phantom / SOURCE_DIR / name).read_bytes())
    local = convert_source(trained["second"].model_dir, flat, tmp_path / "local", trained["cfg"])
    assert not (tmp_path / "local" / "fidelity.json").exists()  # a flat folder has no real hrT2 to compare with
    by_version = convert_source(
        "models:/cosmos-translator/2", flat, tmp_path / "v2", trained["cfg"], tracking_uri=trained["uri"]
    )
    by_alias = convert_source(
        "models:/cosmos-translator@champion", flat, tmp_path / "alias", trained["cfg"], tracking_uri=trained["uri"]
    )
    ref = nifti.load(local[0]).data
    np.testing.assert_allclose(nifti.load(by_version[0]).data, ref, atol=1e-6)
    np.testing.assert_allclose(nifti.load(by_alias[0]).data, ref, atol=1e-6)
    old = convert_source(
        "models:/cosmos-translator/1", flat, tmp_path / "v1", trained["cfg"], tracking_uri=trained["uri"]
    )
    assert not np.allclose(nifti.load(old[0]).data, ref)  # version 1 is the 1-epoch model
    with pytest.raises(CosmosError, match="cannot load"):
        convert_source(
            "models:/cosmos-translator/99", flat, tmp_path / "bad", trained["cfg"], tracking_uri=trained["uri"]
        )


def test_cli_convert_and_errors(trained, phantom, tmp_path, capsys):
    from cosmos.cli import main

    rc = main(
        [
            "translator",
            "convert",
            "--model",
            str(trained["second"].model_dir),
            "--input",
            str(phantom),
            "--out",
            str(tmp_path / "cli"),
            "--set",
            "translator.device=cpu",
        ]
    )
    assert rc == 0 and len(list((tmp_path / "cli").glob("*_hrT2pseudo.nii.gz"))) == 2
    rc = main(
        ["translator", "convert", "--model", str(tmp_path), "--input", str(phantom), "--out", str(tmp_path / "x")]
    )
    assert rc == 2 and "not a translator model directory" in capsys.readouterr().err
    rc = main(["translator", "train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "t")])
    assert rc == 2 and "data directory not found" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_train_pure_cyclegan(phantom, tmp_path):
    from cosmos.cli import main

    args = [
        "translator",
        "train",
        "--data",
        str(phantom),
        "--out",
        str(tmp_path / "noseg"),
        "--no-segmentor",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'm.db'}",
    ]
    for o in MICRO + ["translator.epochs=1", "checks.fidelity_min_pass=0"]:  # one epoch learns no contrast
        args += ["--set", o]
    assert main(args) == 0
    meta = json.loads((tmp_path / "noseg" / "model" / "translator.json").read_text())
    assert meta["generator"]["with_seg"] is False and meta["segmentor"] is False


def test_select_epoch_fidelity_keeps_the_latest_near_best_generator(phantom, tmp_path):
    """select_epoch=fidelity: the saved generator is the latest epoch scored within one case of the best,
    also across a resume (the checkpoint carries the chosen epoch and the top score)."""
    for epochs in (2, 3):  # 2 epochs, then resumed to 3
        cfg = load_config("tiny", overrides=MICRO + [f"translator.epochs={epochs}", "translator.select_epoch=fidelity"])
        res = train_translator(phantom, tmp_path / "run", cfg, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    assert len(res.history) == 3
    scores = [e["fidelity_score"] for e in res.history]
    fid = json.loads((tmp_path / "run" / "fidelity.json").read_text())
    margin = 0.5 / fid["n_source"]
    best = max(i + 1 for i, sc in enumerate(scores) if sc >= max(scores) - margin)
    assert fid["selected_epoch"] == best and fid["epochs"] == 3
    # the final figures are that epoch's figures
    assert fid["w1"] == pytest.approx(res.history[best - 1]["fidelity_w1"], abs=1e-6)
    meta = json.loads((res.model_dir / "translator.json").read_text())
    assert meta["selected_epoch"] == best
    # and the saved generator holds exactly that epoch's weights
    import torch

    from cosmos.translation.model_io import load_model_dir

    kept = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["best"]["g_st"]
    saved = load_model_dir(res.model_dir).generator.state_dict()
    assert all(torch.equal(saved[k].cpu(), v) for k, v in kept.items())
