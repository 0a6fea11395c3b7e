"""``ingest``: phantom / local sources, copy-not-touch, validation errors listed together, resumability.
(The s3:// source is tested against a real S3 server, SeaweedFS, in test_data_storage.py.)"""

from __future__ import annotations

import json
import shutil

import pytest

from cosmos.config import load_config
from cosmos.data import layout
from cosmos.data.ingest import DatasetError, ingest
from cosmos.data.phantom import make_phantom
from cosmos.errors import CosmosError


@pytest.fixture(scope="module")
def user_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("user") / "data"
    make_phantom(root, n_source=2, n_target=2, n_val=1, seed=9, preview=False)
    return root


def _snapshot(root):
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()
    }


def test_empty_uri_builds_phantom_from_config(tmp_path):
    cfg = load_config("tiny", overrides=["phantom.n_source=2", "phantom.n_target=1", "phantom.n_val=1"])
    ds = ingest("", tmp_path / "run", cfg=cfg)
    assert [c.case_id for c in ds.source] == ["crossmoda_1", "crossmoda_2"]
    assert [c.case_id for c in ds.target] == ["crossmoda_3"]
    assert ds.has_validation_labels
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["source"] == "phantom"
    rec = next(f for f in manifest["files"] if f["case"] == "crossmoda_3")
    assert rec["kind"] == "hrT2" and len(rec["sha256"]) == 64 and len(rec["affine"]) == 4
    # The phantom varies the hrT2 grid (~0.5 x 0.5 x 1.0 mm) case by case: the record holds the file's own.
    sx, sy, sz = rec["spacing"]
    assert 0.45 <= sx <= 0.55 and sy == pytest.approx(sx, abs=1e-4) and 0.8 <= sz <= 1.2


def test_local_copy_leaves_user_data_untouched(user_data, tmp_path):
    before = _snapshot(user_data)
    ds = ingest(str(user_data), tmp_path / "run")
    assert ds.root == tmp_path / "run"
    assert all(tmp_path / "run" in c.image.parents for c in ds.source + ds.target + ds.validation)
    # A later stage scribbling on the run copy never reaches the user's files.
    ds.source[0].image.write_bytes(b"scribble")
    assert _snapshot(user_data) == before
    assert not (tmp_path / "run" / "phantom.json").exists()  # only the crossMoDA folders are copied


def test_rerun_copies_nothing(user_data, tmp_path):
    ingest(str(user_data), tmp_path / "run")
    f = tmp_path / "run" / layout.SOURCE_DIR / "crossmoda_1_ceT1.nii.gz"
    mtime = f.stat().st_mtime_ns
    ingest(str(user_data), tmp_path / "run")
    assert f.stat().st_mtime_ns == mtime


def test_new_source_replaces_old_cases(user_data, tmp_path):
    run = tmp_path / "run"
    ingest(str(user_data), run)
    other = tmp_path / "other"
    make_phantom(other, n_source=1, n_target=1, n_val=0, seed=1, preview=False)
    ds = ingest(str(other), run)
    assert [c.case_id for c in ds.source] == ["crossmoda_1"] and ds.validation == []


def test_ingest_in_place(user_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(user_data, data)
    before = _snapshot(data)
    ds = ingest(str(data), data)
    assert len(ds.source) == 2
    assert _snapshot(data) == before  # nothing written into the user's folder


def test_problems_raise_one_error_listing_all(user_data, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(user_data, bad)
    (bad / layout.SOURCE_DIR / "crossmoda_2_Label.nii.gz").unlink()
    (bad / layout.TARGET_DIR / "crossmoda_3_hrT2.nii.gz").write_bytes(b"junk")
    (bad / layout.TARGET_DIR / "readme.nii.gz").write_bytes(b"junk")
    with pytest.raises(DatasetError) as err:
        ingest(str(bad), tmp_path / "run")
    assert isinstance(err.value, CosmosError)
    assert len(err.value.problems) == 3
    text = str(err.value)
    for name in ("crossmoda_2_ceT1", "crossmoda_3_hrT2", "readme.nii.gz"):
        assert name in text


def test_missing_or_foreign_folder(tmp_path):
    with pytest.raises(CosmosError, match="does not exist"):
        ingest(str(tmp_path / "absent"), tmp_path / "run")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "scan.nii.gz").write_bytes(b"x")
    with pytest.raises(CosmosError, match="no crossMoDA folders"):
        ingest(str(tmp_path / "foreign"), tmp_path / "run2")


def test_separate_validation_labels_folder(user_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(user_data, data)
    labels = tmp_path / "labels"
    shutil.move(data / layout.VALIDATION_LABELS_DIR, labels)
    assert not ingest(str(data), tmp_path / "run").has_validation_labels
    ds = ingest(str(data), tmp_path / "run2", val_labels_uri=str(labels))
    assert ds.has_validation_labels
