"""Issue 14 at ``validate`` and ``ingest``: rows 1, 4, 5, 7 and the path half of row 8.

A bad file must be one line naming the user's own file, from ``cosmos validate`` and from the
pipeline's ingest stage alike (the two never disagree), and nothing the user wrote is touched.
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
from cosmos.data.validate import validate_dataset

SRC, TGT, VAL = "source_training", "target_training", "target_validation"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("template") / "data"
    make_phantom(root, n_source=2, n_target=2, n_val=1, seed=5, preview=False)
    return root


@pytest.fixture
def data(template, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(template, root)
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
def test_validate_cli_reports_a_bit_flip_as_one_line(data, capsys):
    bad = data / SRC / "crossmoda_1_ceT1.nii.gz"
    _flip_last_bit_before_trailer(bad)
    assert main(["validate", str(data)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"{bad}: corrupt"), out
    assert "gzip stream" in out[0]


def test_ingest_names_the_users_file_not_the_work_copy(data, tmp_path):
    bad = data / SRC / "crossmoda_2_Label.nii.gz"
    _flip_last_bit_before_trailer(bad)
    before = bad.read_bytes()
    work = tmp_path / "work" / "ingest-abc" / "data"
    with pytest.raises(DatasetError) as info:
        ingest(str(data), work)
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


def test_uncompressed_dataset_validates_and_ingests_with_labels(data, tmp_path):
    for p in sorted(data.rglob("*.nii.gz")):
        _to_nii(p)
    assert validate_dataset(data) == []
    ds = ingest(str(data), tmp_path / "run")
    assert [c.case_id for c in ds.source] == ["crossmoda_1", "crossmoda_2"]
    assert all(c.label is not None and c.label.name.endswith("_Label.nii.gz") for c in ds.source)
    assert not list((tmp_path / "run").rglob("*.nii"))  # one ending downstream
    assert list(data.rglob("*.nii")) and not list(data.rglob("*.nii.gz"))  # user's folder untouched
    # The working copy reads the same voxels the user's .nii holds.
    assert np.array_equal(nifti.load(ds.source[0].image).data, nifti.load(data / SRC / "crossmoda_1_ceT1.nii").data)
    again = ingest(str(data), tmp_path / "run")  # a re-run in the same folder is clean too
    assert len(again.source) == 2


def test_layout_pairs_an_uncompressed_label(data):
    _to_nii(data / SRC / "crossmoda_1_Label.nii.gz")
    cases = layout.discover(data).source
    assert cases[0].label is not None and cases[0].label.name == "crossmoda_1_Label.nii"


def test_nii_beside_nii_gz_is_a_duplicate_in_validate_and_ingest(data, tmp_path):
    gz = data / TGT / "crossmoda_3_hrT2.nii.gz"
    (data / TGT / "crossmoda_3_hrT2.nii").write_bytes(gzip.decompress(gz.read_bytes()))
    assert any("duplicate" in p.message for p in validate_dataset(data))
    with pytest.raises(DatasetError, match="duplicate"):
        ingest(str(data), tmp_path / "run")


# ---------------------------------------------------------------- row 5
def test_forged_header_in_a_dataset_is_one_line(data, capsys):
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.uint8)
    hdr.set_data_shape((1200, 1200, 1200))
    hdr["vox_offset"] = 352
    bad = data / TGT / "crossmoda_4_hrT2.nii.gz"
    bad.write_bytes(gzip.compress(hdr.binaryblock + bytes(4000)))
    assert main(["validate", str(data)]) == 1
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
def test_validate_refuses_unusable_images(data, kind, fn, expected):
    bad = data / VAL / "crossmoda_5_hrT2.nii.gz"
    _rewrite(bad, fn)
    problems = validate_dataset(data)
    assert [str(p) for p in problems if p.path == str(bad)] == [f"{bad}: {expected}"] or any(
        p.path == str(bad) and expected in p.message for p in problems
    ), problems


def test_validate_refuses_a_nan_affine(data):
    import io

    bad = data / TGT / "crossmoda_3_hrT2.nii.gz"
    raw = gzip.decompress(bad.read_bytes())
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    hdr["srow_x"] = [np.nan, 0, 0, 0]
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    bad.write_bytes(gzip.compress(hdr.binaryblock + raw[348:]))
    assert any(p.path == str(bad) and "affine" in p.message for p in validate_dataset(data))


def test_empty_source_label_is_a_warning_not_an_error(data, capsys, tmp_path):
    lab = data / SRC / "crossmoda_1_Label.nii.gz"
    from cosmos.data.validate import check_dataset

    _rewrite(lab, lambda a: np.zeros_like(a, dtype=np.uint8))
    report = check_dataset(data)
    assert report.errors == []
    assert [str(w) for w in report.warnings] == [
        f"{lab}: source label has no foreground at all (no VS, no cochlea): this case teaches the segmenter nothing"
    ]
    assert main(["validate", str(data)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {lab}: source label has no foreground" in err
    ds = ingest(str(data), tmp_path / "run")
    assert ds.no_foreground == [str(lab)]


# ---------------------------------------------------------------- row 8 (symlinks)
def test_symlink_loop_and_dangling_link_in_a_dataset(data, capsys):
    loop = data / TGT / "crossmoda_9_hrT2.nii.gz"
    os.symlink(loop, loop)
    dangling = data / TGT / "crossmoda_8_hrT2.nii.gz"
    os.symlink(data / "gone.nii.gz", dangling)
    assert main(["validate", str(data)]) == 1
    out = capsys.readouterr().out
    assert f"{loop}: symlink loop" in out and f"{dangling}: dangling symlink" in out


def test_dataset_root_that_is_a_symlink_loop(tmp_path, capsys):
    root = tmp_path / "data"
    os.symlink(root, root)
    assert main(["validate", str(root)]) == 1
    assert capsys.readouterr().out.strip() == f"{root}: symlink loop (too many levels of symbolic links)"
