"""The built-in phantom: layout, determinism, geometry, contrasts (the domain gap) and learnable sizes."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest

from cosmos.cli import main
from cosmos.data import layout, nifti
from cosmos.data import phantom as P
from cosmos.data.validate import validate_dataset


@pytest.fixture(scope="module")
def small_phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    t0 = time.process_time()  # CPU time: robust to other jobs sharing the machine
    P.make_phantom(root, n_source=4, n_target=4, n_val=2, seed=3)
    return root, time.process_time() - t0


def test_layout_ids_and_clean_validation(small_phantom):
    root, _ = small_phantom
    ds = layout.discover(root)
    assert [c.case_id for c in ds.source] == [f"crossmoda_{i}" for i in range(1, 5)]
    assert [c.case_id for c in ds.target] == [f"crossmoda_{i}" for i in range(5, 9)]
    assert [c.case_id for c in ds.validation] == ["crossmoda_9", "crossmoda_10"]
    assert all(c.label is not None for c in ds.source)
    assert all(c.label is None for c in ds.target)
    assert ds.has_validation_labels
    assert validate_dataset(root) == []
    import json

    cases = json.loads((root / P.MANIFEST).read_text())["cases"]
    assert set(cases) == {f"crossmoda_{i}" for i in range(1, 11)}
    lab = nifti.load(ds.validation[0].label, label=True).data
    assert cases["crossmoda_9"]["vs_voxels"] == int((lab == 1).sum()) > 0
    png = (root / P.PREVIEW).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_generation_is_cheap(small_phantom):
    _, seconds = small_phantom
    # ~1-2 s of CPU for 4+4+2 (incl. preview and gzip); generous bound for slower CPUs.
    assert seconds < 8, seconds


def test_same_seed_same_arrays_and_other_seed_differs():
    a = P.make_case(7, 2, "hrT2")
    b = P.make_case(7, 2, "hrT2")
    assert a.image.tobytes() == b.image.tobytes() and a.label.tobytes() == b.label.tobytes()
    assert np.array_equal(a.affine, b.affine)
    c = P.make_case(8, 2, "hrT2")
    assert c.image.shape != a.image.shape or not np.array_equal(c.image, a.image)


def test_files_are_deterministic(tmp_path):
    P.make_phantom(tmp_path / "a", n_source=1, n_target=1, n_val=0, seed=5, preview=False)
    P.make_phantom(tmp_path / "b", n_source=1, n_target=1, n_val=0, seed=5, preview=False)
    for rel in ("source_training/crossmoda_1_ceT1.nii.gz", "source_training/crossmoda_1_Label.nii.gz",
                "target_training/crossmoda_2_hrT2.nii.gz"):
        va, vb = nifti.load(tmp_path / "a" / rel), nifti.load(tmp_path / "b" / rel)
        assert va.data.tobytes() == vb.data.tobytes()
        assert np.array_equal(va.affine, vb.affine)


def test_unpaired_domains_have_their_own_grids(small_phantom):
    root, _ = small_phantom
    ds = layout.discover(root)
    for c in ds.source:
        img, lab = nifti.load(c.image), nifti.load(c.label, label=True)
        assert np.allclose(img.spacing, (0.6, 0.6, 1.5), atol=1e-4)
        assert 76 <= img.shape[0] <= 90 and 24 <= img.shape[2] <= 32
        assert lab.data.dtype == np.uint8 and nifti.same_grid(img, lab) is None
        assert img.header.get_data_dtype() == np.int16  # integers, as scanners store them
    for c in ds.target + ds.validation:
        img = nifti.load(c.image)
        assert np.allclose(img.spacing, (0.5, 0.5, 1.0), atol=1e-4)
        # In-plane FOV covered by a 64 px x 0.8 mm translator grid.
        assert img.shape[0] * 0.5 <= 51.2 and img.shape[1] * 0.5 <= 51.2


def test_orientations_are_varied_but_slice_axis_stays_third():
    affines = [P.make_case(0, n, "ceT1").affine for n in range(1, 7)]
    signs = {tuple(np.sign(np.diag(a)[:3]).astype(int)) for a in affines}
    assert (-1, -1, 1) in signs  # both in-plane axes flipped (radiological LPS storage)
    assert any(s[2] == -1 for s in signs)  # a slice-axis flip too
    assert any(np.abs(a[:3, :3] - np.diag(np.diag(a[:3, :3]))).max() > 1e-3 for a in affines)  # oblique
    for a in affines:
        # The third array axis is still (nearly) the superior-inferior world axis.
        col = a[:3, 2] / np.linalg.norm(a[:3, 2])
        assert abs(col[2]) > 0.95


def test_qform_and_sform_are_written(small_phantom):
    root, _ = small_phantom
    img = nib.load(str(root / "source_training" / "crossmoda_1_ceT1.nii.gz"))
    sform, scode = img.header.get_sform(coded=True)
    qform, qcode = img.header.get_qform(coded=True)
    assert scode > 0 and qcode > 0
    assert np.allclose(sform, qform, atol=1e-4)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_structures_are_learnable_sizes(n):
    t2 = P.make_case(0, n, "hrT2")
    t1 = P.make_case(0, n, "ceT1")
    # VS: ~1500-6000 voxels on the hrT2 grid; cochleas (both sides): >= ~150 voxels each.
    assert 1200 <= int((t2.label == 1).sum()) <= 7000
    assert int((t2.label == 2).sum()) >= 300
    assert int((t1.label == 2).sum()) >= 120
    # Both cochleas present: two connected components of label 2.
    from scipy import ndimage

    assert ndimage.label(t2.label == 2)[1] == 2
    assert ndimage.label(t2.label == 1)[1] == 1  # one VS


def _mean(case, tissue):
    return float(case.image[case.tissue == tissue].mean())


@pytest.mark.parametrize("n", [1, 2, 3])
def test_contrasts_carry_the_domain_gap(n):
    t1 = P.make_case(0, n, "ceT1")
    t2 = P.make_case(0, n, "hrT2")
    # ceT1: enhancing VS brightest, parenchyma mid grey, fluid (CSF, cochlea) dark grey, bone black.
    assert _mean(t1, P.VS) > 1.5 * _mean(t1, P.BRAIN) > 1.5 * _mean(t1, P.CSF)
    assert 2 * _mean(t1, P.PETROUS) < _mean(t1, P.COCHLEA) < 0.6 * _mean(t1, P.BRAIN)
    # hrT2: CSF very bright, VS intermediate, cochlea bright against black bone.
    assert _mean(t2, P.CSF) > 1.5 * _mean(t2, P.VS) > 1.2 * _mean(t2, P.BRAIN)
    assert _mean(t2, P.COCHLEA) > 5 * _mean(t2, P.PETROUS)
    assert _mean(t2, P.COCHLEA) > 1.15 * _mean(t2, P.VS)
    assert _mean(t2, P.COCHLEA) < 0.9 * _mean(t2, P.CSF)  # distinct from the CSF-filled canal


def test_noise_and_bias_make_intensities_non_piecewise_constant():
    c = P.make_case(0, 1, "hrT2")
    brain = c.image[c.tissue == P.BRAIN]
    assert brain.std() / brain.mean() > 0.03
    assert float(c.image.min()) >= 0.0  # Rician magnitude
    assert np.isfinite(c.image).all()


def test_rerun_does_no_work_and_param_change_regenerates(tmp_path):
    root = P.make_phantom(tmp_path, n_source=1, n_target=1, n_val=1, seed=0, preview=False)
    f = root / "source_training" / "crossmoda_1_ceT1.nii.gz"
    mtime = f.stat().st_mtime_ns
    P.make_phantom(root, n_source=1, n_target=1, n_val=1, seed=0, preview=False)
    assert f.stat().st_mtime_ns == mtime
    before = nifti.load(f).data
    P.make_phantom(root, n_source=1, n_target=2, n_val=0, seed=1, preview=False)
    assert not np.array_equal(before, nifti.load(f).data) or before.shape != nifti.load(f).shape
    assert not (root / "target_validation" / "crossmoda_3_hrT2.nii.gz").exists()  # stale case removed
    assert (root / "target_training" / "crossmoda_3_hrT2.nii.gz").exists()
    assert validate_dataset(root, ) == [] or all("target_validation" in p.path for p in validate_dataset(root))


def test_target_labels_option_writes_hidden_labels(tmp_path):
    root = P.make_phantom(tmp_path, n_source=1, n_target=2, n_val=0, preview=False, target_labels=True)
    labs = sorted(p.name for p in (root / P.TARGET_LABELS_DIR).iterdir())
    assert labs == ["crossmoda_2_Label.nii.gz", "crossmoda_3_Label.nii.gz"]
    assert validate_dataset(root) == []  # the extra folder is not part of the layout COSMOS reads


def test_bad_arguments_are_cosmos_errors(tmp_path):
    from cosmos.errors import CosmosError

    with pytest.raises(CosmosError, match="scale"):
        P.make_phantom(tmp_path, scale="huge")
    with pytest.raises(CosmosError, match="n_source"):
        P.make_phantom(tmp_path, n_source=-1)


def test_cli_phantom_verb(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["phantom", str(out), "--n-source", "1", "--n-target", "1", "--n-val", "1", "--seed", "2"])
    assert rc == 0
    assert str(out) in capsys.readouterr().out
    assert (out / "preview.png").exists()
    assert len(layout.discover(out).validation) == 1


def test_full_scale_grids_are_crossmoda_sized():
    rng = np.random.default_rng(0)
    sub = P._sample_subject(rng, "full")
    g1 = P._sample_grid(rng, "full", "ceT1", sub, 0)
    g2 = P._sample_grid(rng, "full", "hrT2", sub, 0)
    assert g1.shape[:2] == (512, 512) and 110 <= g1.shape[2] <= 130
    assert g2.shape[:2] == (384, 384) and 70 <= g2.shape[2] <= 90
    assert np.allclose(np.linalg.norm(g1.affine[:3, :3], axis=0), (0.4, 0.4, 1.5))
    assert np.allclose(np.linalg.norm(g2.affine[:3, :3], axis=0), (0.5, 0.5, 1.0))


@pytest.mark.slow
def test_full_scale_case_renders():
    c = P.make_case(0, 1, "hrT2", scale="full")
    assert c.image.shape[:2] == (384, 384)
    assert (c.label == 1).sum() > 2000 and (c.label == 2).sum() > 300
