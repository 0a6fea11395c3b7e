"""An output never replaces a file the user gave or a file that is not ours (cosmos.data.outputs).

Each bug below was found by a user with the sha256 of every input before and after: ``cosmos predict
DIR -o DIR`` replaced the ground truth ``crossmoda_5_Label.nii.gz`` with the prediction;
``cosmos predict DIR/scan.nii.gz -o DIR`` replaced the user's ``scan_seg.nii.gz``; ``cosmos evaluate
--json PRED/crossmoda_5_Label.nii.gz`` turned a prediction into JSON; ``cosmos compile --image ""``
wrote a package without ``image:`` fields. Every refusal here: exit 2, one stderr line naming the
user's path, every file byte-identical. No model is trained: refusals come before the model is
resolved, so ``--model models:/x@y`` is never looked up.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from cosmos.cli import main
from cosmos.data.nifti import save
from cosmos.data.outputs import (
    PREDICT_MANIFEST,
    check_json_output,
    check_output_folder,
    our_outputs,
    record_outputs,
)
from cosmos.errors import CosmosError

AFFINE = np.diag([0.5, 0.5, 1.0, 1.0])
BOGUS_MODEL = "models:/x@y"


def make_image(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    return save(path, rng.random((10, 9, 6)).astype(np.float32), affine=AFFINE)


def make_label(path: Path) -> Path:
    lab = np.zeros((10, 9, 6), np.uint8)
    lab[2:5, 2:5, 1:4] = 1
    lab[6:8, 6:8, 2:4] = 2
    return save(path, lab, affine=AFFINE, label=True)


def sums(*folders: Path) -> dict[str, str]:
    """sha256 of every file (dotfiles included) under the folders."""
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def refused(capsys, argv: list[str], path: Path | str, *folders: Path) -> str:
    """Run the CLI; assert exit 2, one stderr line starting with the path, nothing changed."""
    before = sums(*folders)
    rc = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (out, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"cosmos: error: {path}: "), err
    assert sums(*folders) == before
    return lines[0]


# ------------------------------------------------------------------------------ 1. predict DIR -o DIR
@pytest.fixture()
def case_dir(tmp_path):
    d = tmp_path / "data"
    make_image(d / "crossmoda_5_hrT2.nii.gz")
    make_label(d / "crossmoda_5_Label.nii.gz")
    return d


def test_predict_into_the_input_folder_keeps_the_ground_truth(case_dir, capsys):
    line = refused(capsys, ["predict", str(case_dir), "-o", str(case_dir), "--model", BOGUS_MODEL], case_dir, case_dir)
    assert "is the input folder" in line and "give -o a new folder" in line
    assert sorted(p.name for p in case_dir.iterdir()) == ["crossmoda_5_Label.nii.gz", "crossmoda_5_hrT2.nii.gz"]


@pytest.mark.parametrize("how", ["symlink", "dotdot", "file"])
def test_predict_into_the_input_folder_by_another_name(case_dir, tmp_path, capsys, how):
    if how == "symlink":
        out = tmp_path / "link"
        out.symlink_to(case_dir, target_is_directory=True)
    else:
        out = case_dir / ".." / case_dir.name
    inp = case_dir / "crossmoda_5_hrT2.nii.gz" if how == "file" else case_dir
    line = refused(capsys, ["predict", str(inp), "-o", str(out), "--model", BOGUS_MODEL], out, case_dir)
    assert "give -o a new folder" in line


def test_input_folder_reached_through_a_symlinked_scan(case_dir, tmp_path, capsys):
    """The scan is a symlink in another folder; -o is the folder it points into."""
    links = tmp_path / "links"
    links.mkdir()
    (links / "crossmoda_5_hrT2.nii.gz").symlink_to(case_dir / "crossmoda_5_hrT2.nii.gz")
    argv = ["predict", str(links / "crossmoda_5_hrT2.nii.gz"), "-o", str(case_dir), "--model", BOGUS_MODEL]
    line = refused(capsys, argv, case_dir, case_dir, links)
    assert "through a symlink" in line


# ------------------------------------------------------------------------------ 2. the user's own scan_seg
def test_predict_a_scan_into_its_folder_keeps_the_users_seg(tmp_path, capsys):
    d = tmp_path / "patient"
    scan = make_image(d / "scan.nii.gz")
    make_label(d / "scan_seg.nii.gz")  # the user's own segmentation, named like our output
    line = refused(capsys, ["predict", str(scan), "-o", str(d), "--model", BOGUS_MODEL], d, d)
    assert "holds the input scan" in line


def test_predict_into_a_folder_with_a_file_that_is_not_ours(tmp_path, capsys):
    scan = make_image(tmp_path / "in" / "scan.nii.gz")
    out = tmp_path / "out"
    make_label(out / "scan_seg.nii.gz")  # not listed in any predict manifest
    line = refused(
        capsys, ["predict", str(scan), "-o", str(out), "--model", BOGUS_MODEL], out / "scan_seg.nii.gz", tmp_path
    )
    assert "not written by cosmos predict" in line and "give -o a new folder" in line


def test_predict_into_a_folder_whose_manifest_lists_other_files(tmp_path, capsys):
    scan = make_image(tmp_path / "in" / "scan.nii.gz")
    out = tmp_path / "out"
    make_label(out / "scan_seg.nii.gz")
    make_label(out / "other_seg.nii.gz")
    (out / PREDICT_MANIFEST).write_text(json.dumps({"run": {"model": "m"}, "done": {"other_seg.nii.gz": "/x"}}))
    refused(capsys, ["predict", str(scan), "-o", str(out), "--model", BOGUS_MODEL], out / "scan_seg.nii.gz", tmp_path)


def test_output_file_as_folder_is_refused(tmp_path, capsys):
    scan = make_image(tmp_path / "in" / "scan.nii.gz")
    (tmp_path / "out.txt").write_text("mine")
    line = refused(
        capsys,
        ["predict", str(scan), "-o", str(tmp_path / "out.txt"), "--model", BOGUS_MODEL],
        tmp_path / "out.txt",
        tmp_path,
    )
    assert "is a file, not a folder" in line


def _manifest_as_inference_writes_it(out: Path, names: list[str], with_outputs: bool) -> None:
    """What cosmos.segmentation.inference.predict writes: run key, done (and, since this fix, outputs)."""
    done = {n: f"/data/{n}" for n in names}
    manifest: dict = {"run": {"model": "abc", "mirroring": False}, "done": done}
    if with_outputs:
        manifest["outputs"] = dict(done)
    (out / PREDICT_MANIFEST).write_text(json.dumps(manifest, indent=2))


@pytest.mark.parametrize("with_outputs", [False, True], ids=["manifest-before-fix", "manifest-now"])
def test_our_earlier_output_may_be_replaced(tmp_path, with_outputs):
    scan = make_image(tmp_path / "in" / "scan.nii.gz")
    out = tmp_path / "out"
    make_label(out / "scan_seg.nii.gz")
    _manifest_as_inference_writes_it(out, ["scan_seg.nii.gz"], with_outputs)
    assert check_output_folder(out, inputs=[scan], outputs=["scan_seg.nii.gz"]) == out


def test_a_symlink_named_like_our_output_is_never_ours(tmp_path):
    scan = make_image(tmp_path / "in" / "scan.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    (out / "scan_seg.nii.gz").symlink_to(scan)
    _manifest_as_inference_writes_it(out, ["scan_seg.nii.gz"], True)
    with pytest.raises(CosmosError, match=f"scan_seg.nii.gz: is the input {scan}"):
        check_output_folder(out, inputs=[scan], outputs=["scan_seg.nii.gz"])
    other = make_image(tmp_path / "elsewhere.nii.gz")  # a link to a file that is not an input: still not ours
    (out / "scan_seg.nii.gz").unlink()
    (out / "scan_seg.nii.gz").symlink_to(other)
    with pytest.raises(CosmosError, match="not written by cosmos predict"):
        check_output_folder(out, inputs=[scan], outputs=["scan_seg.nii.gz"])


def test_record_outputs_keeps_the_resume_state(tmp_path):
    _manifest_as_inference_writes_it(tmp_path, ["a_seg.nii.gz"], False)
    record_outputs(tmp_path, {"b_seg.nii.gz": tmp_path / "b.nii.gz"})
    manifest = json.loads((tmp_path / PREDICT_MANIFEST).read_text())
    assert manifest["run"] == {"model": "abc", "mirroring": False} and set(manifest["done"]) == {"a_seg.nii.gz"}
    assert set(our_outputs(tmp_path)) == {"a_seg.nii.gz", "b_seg.nii.gz"}
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_manifest_name_matches_inference():
    from cosmos.segmentation import inference

    assert inference.PREDICT_MANIFEST == PREDICT_MANIFEST


def test_a_fresh_output_folder_is_accepted(case_dir, tmp_path, capsys):
    scan = case_dir / "crossmoda_5_hrT2.nii.gz"
    assert check_output_folder(tmp_path / "new", inputs=[case_dir, scan], outputs=["crossmoda_5_Label.nii.gz"])
    (tmp_path / "empty").mkdir()
    assert check_output_folder(tmp_path / "empty", inputs=[case_dir, scan], outputs=["crossmoda_5_Label.nii.gz"])
    # the CLI gets past the output check and stops only at the (nonexistent) model, writing nothing
    before = sums(tmp_path)
    rc = main(["predict", str(case_dir), "-o", str(tmp_path / "new"), "--model", str(tmp_path / "no-model")])
    err = capsys.readouterr().err
    assert rc == 2 and "no-model" in err and "give -o" not in err, err
    assert sums(tmp_path) == before and not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------ 3. evaluate --json
@pytest.fixture()
def eval_dirs(tmp_path):
    pred, labels, other = tmp_path / "pred", tmp_path / "labels", tmp_path / "other"
    make_label(pred / "crossmoda_5_Label.nii.gz")
    make_label(labels / "crossmoda_5_Label.nii.gz")
    other.mkdir()
    (other / "notes.txt").write_text("my notes")
    (other / "config.json").write_text('{"mine": true}')
    return pred, labels, other


@pytest.mark.parametrize(
    "where, problem",
    [
        ("pred/crossmoda_5_Label.nii.gz", "has a NIfTI suffix"),
        ("pred/metrics.json", "is inside the prediction folder"),
        ("labels/metrics.json", "is inside the label folder"),
        ("other/result.nii", "has a NIfTI suffix"),
        ("other/notes.txt", "exists and is not JSON"),
        ("other/config.json", "is not an earlier result"),
        ("other", "is a folder"),
    ],
)
def test_evaluate_json_never_replaces_inputs(eval_dirs, tmp_path, capsys, where, problem):
    pred, labels, _ = eval_dirs
    target = tmp_path / where
    line = refused(capsys, ["evaluate", str(pred), str(labels), "--json", str(target)], target, tmp_path)
    assert problem in line and "give --json a new .json file" in line


def test_evaluate_json_through_a_symlinked_folder(eval_dirs, tmp_path, capsys):
    pred, labels, _ = eval_dirs
    (tmp_path / "alias").symlink_to(pred, target_is_directory=True)
    target = tmp_path / "alias" / "metrics.json"
    line = refused(capsys, ["evaluate", str(pred), str(labels), "--json", str(target)], target, tmp_path)
    assert "is inside the prediction folder" in line


def test_evaluate_json_fresh_file_and_earlier_result_are_accepted(eval_dirs, tmp_path, capsys):
    pred, labels, _ = eval_dirs
    target = tmp_path / "results" / "metrics.json"
    for _ in range(2):  # the second run replaces the first run's result
        assert main(["evaluate", str(pred), str(labels), "--json", str(target)]) == 0
        capsys.readouterr()
        assert json.loads(target.read_text())["n_cases"] == 1
    assert check_json_output(target, inputs={"prediction folder": pred}, keys=("cases",)) == target


# ------------------------------------------------------------------------------ 4. compile --image ""
@pytest.mark.parametrize("image", ["", "   ", "ghcr.io/x/cosmos:1 "])
def test_compile_refuses_a_blank_image(tmp_path, capsys, image):
    out = tmp_path / "p.yaml"
    line = refused(capsys, ["compile", "-o", str(out), "--image", image], f"--image {image!r}", tmp_path)
    assert "not a container image" in line
    assert not out.exists()
