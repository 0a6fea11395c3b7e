"""``validate_dataset`` and ``cosmos validate``: every kind of broken dataset gives a line naming the file.

Also issue 14 at ``validate`` and ``ingest`` (rows 1, 4, 5, 7 and the path half of row 8): a bad file
must be one line naming the user's own file, from ``cosmos validate`` and from the pipeline's ingest
stage alike (the two never disagree), and nothing the user wrote is touched.
"""

from __future__ import annotations

import gzip
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from cosmos.cli import main
from cosmos.data import layout, nifti
from cosmos.data.ingest import DatasetError, ingest
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


# ================================================================ issue 14: bad files at validate and ingest


@pytest.fixture(scope="module")
def seed5_template(tmp_path_factory):
    """A second clean phantom (seed 5) for the bad-file, ingest and symlink tests below."""
    root = tmp_path_factory.mktemp("template") / "data"
    make_phantom(root, n_source=2, n_target=2, n_val=1, seed=5, preview=False)
    return root


@pytest.fixture
def seed5_data(seed5_template, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(seed5_template, root)
    return root


def _flip_last_bit_before_trailer(path):
    """One bit flipped in the last compressed byte: nibabel alone never reads that far."""
    blob = bytearray(path.read_bytes())
    blob[-9] ^= 0x01
    path.write_bytes(bytes(blob))


def _rewrite(path, fn):
    vol = nifti.load(path)
    img = nib.Nifti1Image(fn(vol.data.copy()), vol.affine)
    nib.save(img, str(path))


# ---------------------------------------------------------------- row 1
def test_validate_cli_reports_a_bit_flip_as_one_line(seed5_data, capsys):
    bad = seed5_data / SRC / "crossmoda_1_ceT1.nii.gz"
    _flip_last_bit_before_trailer(bad)
    assert main(["validate", str(seed5_data)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"{bad}: corrupt"), out
    assert "gzip stream" in out[0]


def test_ingest_names_the_users_file_not_the_work_copy(seed5_data, tmp_path):
    bad = seed5_data / SRC / "crossmoda_2_Label.nii.gz"
    _flip_last_bit_before_trailer(bad)
    before = bad.read_bytes()
    work = tmp_path / "work" / "ingest-abc" / "data"
    with pytest.raises(DatasetError) as info:
        ingest(str(seed5_data), work)
    problems = [str(p) for p in info.value.problems]
    assert len(problems) == 1 and problems[0].startswith(f"{bad}: corrupt"), problems
    assert str(work) not in str(info.value)
    assert bad.read_bytes() == before  # the user's file is untouched


# ---------------------------------------------------------------- row 4
def _to_nii(path):
    target = path.with_name(path.name[: -len(".gz")])
    target.write_bytes(gzip.decompress(path.read_bytes()))
    path.unlink()
    return target


def test_uncompressed_dataset_validates_and_ingests_with_labels(seed5_data, tmp_path):
    for p in sorted(seed5_data.rglob("*.nii.gz")):
        _to_nii(p)
    assert validate_dataset(seed5_data) == []
    ds = ingest(str(seed5_data), tmp_path / "run")
    assert [c.case_id for c in ds.source] == ["crossmoda_1", "crossmoda_2"]
    assert all(c.label is not None and c.label.name.endswith("_Label.nii.gz") for c in ds.source)
    assert not list((tmp_path / "run").rglob("*.nii"))  # one ending downstream
    assert list(seed5_data.rglob("*.nii")) and not list(seed5_data.rglob("*.nii.gz"))  # user's folder untouched
    # The working copy reads the same voxels the user's .nii holds.
    assert np.array_equal(
        nifti.load(ds.source[0].image).data, nifti.load(seed5_data / SRC / "crossmoda_1_ceT1.nii").data
    )
    again = ingest(str(seed5_data), tmp_path / "run")  # a re-run in the same folder is clean too
    assert len(again.source) == 2


def test_layout_pairs_an_uncompressed_label(seed5_data):
    _to_nii(seed5_data / SRC / "crossmoda_1_Label.nii.gz")
    cases = layout.discover(seed5_data).source
    assert cases[0].label is not None and cases[0].label.name == "crossmoda_1_Label.nii"


def test_nii_beside_nii_gz_is_a_duplicate_in_validate_and_ingest(seed5_data, tmp_path):
    gz = seed5_data / TGT / "crossmoda_3_hrT2.nii.gz"
    (seed5_data / TGT / "crossmoda_3_hrT2.nii").write_bytes(gzip.decompress(gz.read_bytes()))
    assert any("duplicate" in p.message for p in validate_dataset(seed5_data))
    with pytest.raises(DatasetError, match="duplicate"):
        ingest(str(seed5_data), tmp_path / "run")


# ---------------------------------------------------------------- row 5
def test_forged_header_in_a_dataset_is_one_line(seed5_data, capsys):
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.uint8)
    hdr.set_data_shape((1200, 1200, 1200))
    hdr["vox_offset"] = 352
    bad = seed5_data / TGT / "crossmoda_4_hrT2.nii.gz"
    bad.write_bytes(gzip.compress(hdr.binaryblock + bytes(4000)))
    assert main(["validate", str(seed5_data)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"{bad}: header claims 1200x1200x1200 voxels")


# ---------------------------------------------------------------- row 7
@pytest.mark.parametrize(
    "kind,fn,expected",
    [
        ("nan", lambda a: np.full_like(a, np.nan), "every voxel is NaN or inf"),
        ("zeros", lambda a: np.zeros_like(a), "image is constant"),
    ],
)
def test_validate_refuses_unusable_images(seed5_data, kind, fn, expected):
    bad = seed5_data / VAL / "crossmoda_5_hrT2.nii.gz"
    _rewrite(bad, fn)
    problems = validate_dataset(seed5_data)
    assert [str(p) for p in problems if p.path == str(bad)] == [f"{bad}: {expected}"] or any(
        p.path == str(bad) and expected in p.message for p in problems
    ), problems


def test_validate_refuses_a_nan_affine(seed5_data):
    import io

    bad = seed5_data / TGT / "crossmoda_3_hrT2.nii.gz"
    raw = gzip.decompress(bad.read_bytes())
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    hdr["srow_x"] = [np.nan, 0, 0, 0]
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    bad.write_bytes(gzip.compress(hdr.binaryblock + raw[348:]))
    assert any(p.path == str(bad) and "affine" in p.message for p in validate_dataset(seed5_data))


def test_empty_source_label_is_a_warning_not_an_error(seed5_data, capsys, tmp_path):
    lab = seed5_data / SRC / "crossmoda_1_Label.nii.gz"
    from cosmos.data.validate import check_dataset

    _rewrite(lab, lambda a: np.zeros_like(a, dtype=np.uint8))
    report = check_dataset(seed5_data)
    assert report.errors == []
    assert [str(w) for w in report.warnings] == [
        f"{lab}: source label has no foreground at all (no VS, no cochlea): this case teaches the segmenter nothing"
    ]
    assert main(["validate", str(seed5_data)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {lab}: source label has no foreground" in err
    ds = ingest(str(seed5_data), tmp_path / "run")
    assert ds.no_foreground == [str(lab)]


# ---------------------------------------------------------------- row 8 (symlinks)
def test_symlink_loop_and_dangling_link_in_a_dataset(seed5_data, capsys):
    loop = seed5_data / TGT / "crossmoda_9_hrT2.nii.gz"
    os.symlink(loop, loop)
    dangling = seed5_data / TGT / "crossmoda_8_hrT2.nii.gz"
    os.symlink(seed5_data / "gone.nii.gz", dangling)
    assert main(["validate", str(seed5_data)]) == 1
    out = capsys.readouterr().out
    assert f"{loop}: symlink loop" in out and f"{dangling}: dangling symlink" in out


def test_dataset_root_that_is_a_symlink_loop(tmp_path, capsys):
    root = tmp_path / "data"
    os.symlink(root, root)
    assert main(["validate", str(root)]) == 1
    assert capsys.readouterr().out.strip() == f"{root}: symlink loop (too many levels of symbolic links)"
