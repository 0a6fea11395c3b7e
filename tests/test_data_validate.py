"""``validate_dataset`` and ``cosmos validate``: every kind of broken dataset gives a line naming the file."""

from __future__ import annotations

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest

from cosmos.cli import main
from cosmos.data import nifti
from cosmos.data.phantom import make_phantom
from cosmos.data.validate import Problem, validate_dataset

SRC, TGT, VAL, VAL_LAB = "source_training", "target_training", "target_validation", "target_validation_labels"


@pytest.fixture(scope="module")
def clean_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("template") / "data"
    make_phantom(root, n_source=2, n_target=2, n_val=1, seed=11, preview=False)
    return root


@pytest.fixture
def data(clean_template, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(clean_template, root)
    return root


def _only(problems: list[Problem], fragment: str, path_end: str) -> Problem:
    hits = [p for p in problems if fragment.lower() in p.message.lower() and p.path.endswith(path_end)]
    assert hits, f"no problem {fragment!r} for *{path_end} in:\n" + "\n".join(map(str, problems))
    return hits[0]


def test_clean_phantom_has_no_problems(data):
    assert validate_dataset(data) == []


def test_problem_str_names_the_file():
    assert str(Problem("/d/x.nii.gz", "bad")) == "/d/x.nii.gz: bad"


def test_missing_root_and_s3_uri_are_problems_not_errors(tmp_path):
    assert "does not exist" in str(validate_dataset(tmp_path / "nope")[0])
    assert "s3://" in str(validate_dataset("s3://bucket/data")[0])


def test_corrupt_gzip(data):
    f = data / SRC / "crossmoda_1_ceT1.nii.gz"
    f.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    _only(validate_dataset(data), "gzip", "crossmoda_1_ceT1.nii.gz")


def test_not_gzip_at_all(data):
    f = data / SRC / "crossmoda_1_ceT1.nii.gz"
    f.write_bytes(b"this is not a nifti file")
    probs = validate_dataset(data)
    assert any(p.path.endswith("crossmoda_1_ceT1.nii.gz") for p in probs), probs


def test_truncated_gzip(data):
    f = data / TGT / "crossmoda_3_hrT2.nii.gz"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    _only(validate_dataset(data), "truncated", "crossmoda_3_hrT2.nii.gz")


def test_truncated_uncompressed_nifti(data):
    gz = data / TGT / "crossmoda_3_hrT2.nii.gz"
    raw = gzip.decompress(gz.read_bytes())
    gz.unlink()
    (data / TGT / "crossmoda_3_hrT2.nii").write_bytes(raw[: 352 + 1000])  # header + a sliver of voxels
    _only(validate_dataset(data), "truncated", "crossmoda_3_hrT2.nii")


def test_non_3d_image(data):
    f = data / TGT / "crossmoda_4_hrT2.nii.gz"
    vol = nifti.load(f)
    nib.save(nib.Nifti1Image(np.stack([vol.data, vol.data], axis=-1), vol.affine), str(f))
    _only(validate_dataset(data), "3D", "crossmoda_4_hrT2.nii.gz")


def test_2d_image(data):
    f = data / TGT / "crossmoda_4_hrT2.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10), np.float32), np.eye(4)), str(f))
    _only(validate_dataset(data), "3D", "crossmoda_4_hrT2.nii.gz")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_intensities(data, bad):
    f = data / SRC / "crossmoda_2_ceT1.nii.gz"
    vol = nifti.load(f)
    arr = vol.data.copy()
    arr[3, 4, 5] = bad
    nifti.save(f, arr, like=vol)
    _only(validate_dataset(data), "NaN or inf", "crossmoda_2_ceT1.nii.gz")


def test_label_values_outside_0_1_2(data):
    f = data / SRC / "crossmoda_1_Label.nii.gz"
    vol = nifti.load(f, label=True)
    arr = vol.data.copy()
    arr[0, 0, 0] = 3
    nifti.save(f, arr, like=vol, label=True)
    p = _only(validate_dataset(data), "outside {0, 1, 2}", "crossmoda_1_Label.nii.gz")
    assert "3" in p.message


def test_negative_and_fractional_label_values(data):
    f = data / VAL_LAB / "crossmoda_5_Label.nii.gz"
    vol = nifti.load(f, label=True)
    arr = vol.data.astype(np.float32)
    arr[0, 0, 0] = -1
    nifti.save(f, arr, like=vol)  # float label
    _only(validate_dataset(data), "outside", "crossmoda_5_Label.nii.gz")
    arr[0, 0, 0] = 0.5
    nifti.save(f, arr, like=vol)
    p = _only(validate_dataset(data), "outside", "crossmoda_5_Label.nii.gz")
    assert "0.5" in p.message


def test_label_grid_shape_differs(data):
    f = data / SRC / "crossmoda_2_Label.nii.gz"
    vol = nifti.load(f, label=True)
    nifti.save(f, vol.data[:-1], affine=vol.affine, label=True)
    _only(validate_dataset(data), "grid differs", "crossmoda_2_Label.nii.gz")


def test_label_affine_beyond_tolerance(data):
    f = data / SRC / "crossmoda_2_Label.nii.gz"
    vol = nifti.load(f, label=True)
    shifted = vol.affine.copy()
    shifted[0, 3] += 0.5
    nifti.save(f, vol.data, affine=shifted, label=True)
    _only(validate_dataset(data), "affine differs", "crossmoda_2_Label.nii.gz")


def test_label_affine_within_tolerance_is_fine(data):
    f = data / SRC / "crossmoda_2_Label.nii.gz"
    vol = nifti.load(f, label=True)
    nudged = vol.affine.copy()
    nudged[0, 3] += 1e-5
    nifti.save(f, vol.data, affine=nudged, label=True)
    assert validate_dataset(data) == []


def test_validation_label_grid_checked_too(data):
    f = data / VAL_LAB / "crossmoda_5_Label.nii.gz"
    vol = nifti.load(f, label=True)
    nifti.save(f, vol.data[:, :-2], affine=vol.affine, label=True)
    _only(validate_dataset(data), "grid differs", "crossmoda_5_Label.nii.gz")


def test_duplicate_case_id_across_domains(data):
    shutil.copy(data / TGT / "crossmoda_3_hrT2.nii.gz", data / TGT / "crossmoda_1_hrT2.nii.gz")
    p = _only(validate_dataset(data), "duplicate case id", "crossmoda_1_ceT1.nii.gz")
    assert "crossmoda_1_hrT2.nii.gz" in p.message


def test_duplicate_nii_and_nii_gz(data):
    gz = data / TGT / "crossmoda_3_hrT2.nii.gz"
    (data / TGT / "crossmoda_3_hrT2.nii").write_bytes(gzip.decompress(gz.read_bytes()))
    _only(validate_dataset(data), "duplicate case id", "crossmoda_3_hrT2.nii.gz")


def test_empty_domain_folder(data):
    for f in (data / TGT).iterdir():
        f.unlink()
    _only(validate_dataset(data), "empty folder", TGT)


def test_missing_domain_folder(data):
    shutil.rmtree(data / SRC)
    _only(validate_dataset(data), "missing folder", SRC)


def test_empty_validation_labels_folder(data):
    for f in (data / VAL_LAB).iterdir():
        f.unlink()
    _only(validate_dataset(data), "empty folder", VAL_LAB)


@pytest.mark.parametrize("name", ["foo.nii.gz", "crossmoda_1_T1.nii.gz", "crossmoda_x_ceT1.nii.gz", "notes.csv"])
def test_unknown_naming(data, name):
    (data / SRC / name).write_bytes(b"x")
    _only(validate_dataset(data), "naming", name)


def test_unexpected_subfolder(data):
    (data / TGT / "more").mkdir()
    _only(validate_dataset(data), "sub-folder", "more")


def test_hrt2_in_source_folder(data):
    shutil.move(data / TGT / "crossmoda_3_hrT2.nii.gz", data / SRC / "crossmoda_3_hrT2.nii.gz")
    _only(validate_dataset(data), "hrT2 image in the source", "crossmoda_3_hrT2.nii.gz")


def test_cet1_in_target_folder(data):
    shutil.copy(data / SRC / "crossmoda_1_ceT1.nii.gz", data / VAL / "crossmoda_9_ceT1.nii.gz")
    _only(validate_dataset(data), "ceT1 image in a target", "crossmoda_9_ceT1.nii.gz")


def test_label_in_unannotated_target_folder(data):
    shutil.copy(data / VAL_LAB / "crossmoda_5_Label.nii.gz", data / TGT / "crossmoda_3_Label.nii.gz")
    _only(validate_dataset(data), "unannotated", "crossmoda_3_Label.nii.gz")


def test_source_image_without_label(data):
    (data / SRC / "crossmoda_2_Label.nii.gz").unlink()
    _only(validate_dataset(data), "without its label", "crossmoda_2_ceT1.nii.gz")


def test_label_without_image(data):
    (data / SRC / "crossmoda_2_ceT1.nii.gz").unlink()
    _only(validate_dataset(data), "without its image", "crossmoda_2_Label.nii.gz")


def test_validation_label_without_image(data):
    shutil.copy(data / VAL_LAB / "crossmoda_5_Label.nii.gz", data / VAL_LAB / "crossmoda_6_Label.nii.gz")
    _only(validate_dataset(data), "without its image", "crossmoda_6_Label.nii.gz")


def test_explicit_val_labels_dir(data, tmp_path):
    moved = tmp_path / "labels_elsewhere"
    shutil.move(data / VAL_LAB, moved)
    assert validate_dataset(data, val_labels=moved) == []
    _only(validate_dataset(data, val_labels=tmp_path / "missing"), "does not exist", "missing")


def test_all_problems_reported_at_once(data):
    (data / SRC / "crossmoda_2_Label.nii.gz").unlink()
    (data / TGT / "junk.txt.gz").write_bytes(b"x")
    (data / TGT / "crossmoda_3_hrT2.nii.gz").write_bytes(b"broken")
    probs = validate_dataset(data)
    assert len(probs) >= 3


def test_cli_validate_exit_codes_and_lines(data, tmp_path, capsys):
    assert main(["validate", str(data)]) == 0
    (data / SRC / "crossmoda_2_Label.nii.gz").unlink()
    (data / TGT / "crossmoda_3_hrT2.nii.gz").write_bytes(b"broken")
    capsys.readouterr()
    assert main(["validate", str(data)]) == 1
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert len(lines) == 2
    assert any("crossmoda_2_ceT1.nii.gz" in ln for ln in lines)
    assert any("crossmoda_3_hrT2.nii.gz" in ln for ln in lines)
    assert "Traceback" not in out.out + out.err
    assert main(["validate", str(tmp_path / "absent")]) == 1
    out = capsys.readouterr()
    assert "does not exist" in out.out and "Traceback" not in out.err


def test_validation_labels_beside_images_are_accepted(data):
    for f in (data / VAL_LAB).iterdir():
        shutil.move(f, data / VAL / f.name)
    (data / VAL_LAB).rmdir()
    assert validate_dataset(data) == []
    lab = data / VAL / "crossmoda_5_Label.nii.gz"
    vol = nifti.load(lab, label=True)
    nifti.save(lab, vol.data[:-1], affine=vol.affine, label=True)
    _only(validate_dataset(data), "grid differs", "crossmoda_5_Label.nii.gz")


def test_validation_labels_in_two_places(data):
    shutil.copy(data / VAL_LAB / "crossmoda_5_Label.nii.gz", data / VAL / "crossmoda_5_Label.nii.gz")
    _only(validate_dataset(data), "one place", "crossmoda_5_Label.nii.gz")
