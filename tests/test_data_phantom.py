"""The built-in phantom: layout, determinism, geometry, contrasts (the domain gap), learnable sizes, and what
keeps it from flattering us: an unlabelled bright labyrinth next to the cochlea, flow voids, two hrT2 scanner
sites with different storage, partial-volume labels and varied grids."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest

from cosmos.cli import main
from cosmos.data import layout, nifti, storage
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
    assert cases["crossmoda_9"]["labyrinth_voxels"] > 0 and cases["crossmoda_9"]["vessel_voxels"] > 0
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
    P.make_phantom(tmp_path / "a", n_source=1, n_target=2, n_val=0, seed=5, preview=False)
    P.make_phantom(tmp_path / "b", n_source=1, n_target=2, n_val=0, seed=5, preview=False)
    P.make_phantom(tmp_path / "c", n_source=1, n_target=1, n_val=0, seed=5, preview=False)
    for rel in (
        "source_training/crossmoda_1_ceT1.nii.gz",
        "source_training/crossmoda_1_Label.nii.gz",
        "target_training/crossmoda_2_hrT2.nii.gz",
        "target_training/crossmoda_3_hrT2.nii.gz",
    ):
        va, vb = nib.load(str(tmp_path / "a" / rel)), nib.load(str(tmp_path / "b" / rel))
        assert va.get_data_dtype() == vb.get_data_dtype()  # int16 and float32 sites alike
        assert np.asanyarray(va.dataobj).tobytes() == np.asanyarray(vb.dataobj).tobytes()
        assert np.array_equal(va.affine, vb.affine)
    # Each case from its own stream: case 2 is the same whether or not case 3 exists.
    rel = "target_training/crossmoda_2_hrT2.nii.gz"
    assert nifti.load(tmp_path / "a" / rel).data.tobytes() == nifti.load(tmp_path / "c" / rel).data.tobytes()


def test_unpaired_domains_have_their_own_grids(small_phantom):
    root, _ = small_phantom
    ds = layout.discover(root)
    spacings = set()
    for c in ds.source:
        img, lab = nifti.load(c.image), nifti.load(c.label, label=True)
        sx, sy, sz = img.spacing
        assert 0.55 <= sx <= 0.65 and abs(sx - sy) < 1e-4 and 1.2 <= sz <= 1.6  # ~0.6 x 0.6 x 1.4 mm
        assert 40.0 <= img.shape[0] * sx <= 51.2 and 38.0 <= img.shape[2] * sz <= 46.0
        assert lab.data.dtype == np.uint8 and nifti.same_grid(img, lab) is None
        assert img.header.get_data_dtype() == np.int16  # integers, as scanners store them
        spacings.add((round(sx, 3), round(sz, 3)))
    for c in ds.target + ds.validation:
        img = nifti.load(c.image)
        sx, sy, sz = img.spacing
        assert 0.45 <= sx <= 0.55 and abs(sx - sy) < 1e-4 and 0.8 <= sz <= 1.2  # ~0.5 x 0.5 x 1.0 mm
        # In-plane FOV covered by a 64 px x 0.8 mm translator grid.
        assert img.shape[0] * sx <= 51.2 and img.shape[1] * sy <= 51.2
        spacings.add((round(sx, 3), round(sz, 3)))
    assert len(spacings) >= 8  # anisotropy varies case by case, not one grid per modality


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
    assert _mean(t2, P.COCHLEA) < 0.92 * _mean(t2, P.CSF)  # a notch below the CSF-filled canal


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
    manifest = root / P.MANIFEST
    manifest_mtime = manifest.stat().st_mtime_ns
    fingerprint = storage.fingerprint(str(root))
    P.make_phantom(root, n_source=1, n_target=1, n_val=1, seed=0, preview=False)
    assert f.stat().st_mtime_ns == mtime
    # not even the manifest is rewritten: the folder's fingerprint (which keys every stage of a resumed
    # `cosmos benchmark` on it) stays the same
    assert manifest.stat().st_mtime_ns == manifest_mtime and storage.fingerprint(str(root)) == fingerprint
    before = nifti.load(f).data
    P.make_phantom(root, n_source=1, n_target=2, n_val=0, seed=1, preview=False)
    assert not np.array_equal(before, nifti.load(f).data) or before.shape != nifti.load(f).shape
    assert not (root / "target_validation" / "crossmoda_3_hrT2.nii.gz").exists()  # stale case removed
    assert (root / "target_training" / "crossmoda_3_hrT2.nii.gz").exists()
    assert validate_dataset(
        root,
    ) == [] or all("target_validation" in p.path for p in validate_dataset(root))


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
    rc = main(["phantom", str(out), "--n-source", "1", "--n-target", "2", "--n-val", "1", "--seed", "2"])
    assert rc == 0
    assert str(out) in capsys.readouterr().out
    assert (out / "preview.png").exists()
    assert len(layout.discover(out).validation) == 1
    assert main(["validate", str(out)]) == 0  # int16 and float32 images alike


def test_full_scale_grids_are_crossmoda_sized():
    shapes, spacings = set(), set()
    for k in range(12):
        rng = np.random.default_rng(k)
        sub = P._sample_subject(rng, "full")
        g1 = P._sample_grid(rng, "full", "ceT1", sub, k)
        g2 = P._sample_grid(rng, "full", "hrT2", sub, k)
        s1, s2 = np.linalg.norm(g1.affine[:3, :3], axis=0), np.linalg.norm(g2.affine[:3, :3], axis=0)
        assert g1.shape[:2] == (512, 512) and 0.39 <= s1[0] <= 0.46 and 1.2 <= s1[2] <= 1.5
        assert 150 <= g1.shape[2] * s1[2] <= 185  # the whole head
        assert g2.shape[0] == g2.shape[1] and g2.shape[0] in (384, 448) and 0.43 <= s2[0] <= 0.55
        assert 0.8 <= s2[2] <= 1.5 and 55 <= g2.shape[2] * s2[2] <= 81
        # A life-sized head (~14 x 18 cm) inside the ceT1 field of view.
        assert 130 <= 2 * sub.head_axes[0] <= 155 and 170 <= 2 * sub.head_axes[1] <= 195
        assert 2 * max(sub.head_axes[:2]) <= 512 * s1[0] + 5
        shapes.add(g2.shape[0])
        spacings.add(round(float(s2[2]), 2))
    assert shapes == {384, 448} and len(spacings) > 3


def test_full_scale_anatomy_is_life_sized():
    """VS from 4 to 30 mm across, a cochlea of a few millimetres, labyrinth around the fundus."""
    diam, cochlea = [], []
    for k in range(60):
        sub = P._sample_subject(np.random.default_rng(k), "full")
        diam.append(2.7 * sub.vs_radius)  # body plus lobes
        co, r = P._geometry(sub)["labyrinth"]["cochlea"]
        extent = (co + r[:, None]).max(0) - (co - r[:, None]).min(0)
        cochlea.append(float(extent.max()))
    assert 4.0 <= min(diam) < 8.0 and 20.0 < max(diam) <= 30.0
    assert 5.5 <= min(cochlea) and max(cochlea) <= 8.5  # a few mm, basal turn to apex


@pytest.mark.slow
def test_full_scale_case_renders():
    c = P.make_case(0, 1, "hrT2", scale="full")
    assert c.image.shape[:2] in ((384, 384), (448, 448))
    voxel = float(np.prod(np.linalg.norm(c.affine[:3, :3], axis=0)))
    from scipy import ndimage

    comps, n = ndimage.label(c.label == 2)
    assert n == 2
    for k in (1, 2):  # each cochlea some tens of mm^3 (crossMoDA: ~100-300 hrT2 voxels)
        assert 20 <= (comps == k).sum() * voxel <= 150
    assert (c.label == 1).sum() * voxel >= 15
    assert (np.isin(c.tissue, (P.VESTIBULE, P.SCC)) & (c.label == 0)).sum() * voxel > 20


# --- what keeps the phantom from flattering us -------------------------------------------------------


def _world(case, mask):
    ijk = np.argwhere(mask)
    return ijk @ case.affine[:3, :3].T + case.affine[:3, 3]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_labyrinth_is_bright_unlabelled_and_next_to_the_cochlea(n):
    """Vestibule and semicircular canals: fluid like the cochlea (bright hrT2, dark-grey ceT1), label 0,
    a few millimetres from the cochlea on both sides: "bright blob in the petrous bone" is not enough."""
    from scipy.spatial import cKDTree

    t2, t1 = P.make_case(0, n, "hrT2"), P.make_case(0, n, "ceT1")
    for case in (t2, t1):
        vest, scc = case.tissue == P.VESTIBULE, case.tissue == P.SCC
        assert vest.sum() >= 20 and scc.sum() >= 40
        assert (case.label[vest | scc] == 0).all()
    lab2 = np.isin(t2.tissue, (P.VESTIBULE, P.SCC))
    fluid = _mean(t2, P.VESTIBULE)
    assert fluid > 5 * _mean(t2, P.PETROUS) and fluid > 1.4 * _mean(t2, P.VS)
    assert fluid > 0.9 * _mean(t2, P.COCHLEA)  # at least as bright as the cochlea: intensity cannot tell them apart
    assert float(t2.image[lab2].mean()) > 0.7 * _mean(t2, P.CSF)
    assert 2 * _mean(t1, P.PETROUS) < _mean(t1, P.VESTIBULE) < 0.6 * _mean(t1, P.BRAIN)
    # Close to the cochlea on each side (a few mm of bone), but never touching it.
    co = _world(t2, t2.label == 2)
    d, _ = cKDTree(co).query(_world(t2, lab2))
    assert 0.4 < d.min() < 3.0
    for sign in (-1, 1):  # both ears have a labyrinth
        assert (np.sign(_world(t2, lab2)[:, 0]) == sign).sum() >= 30


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_vessels_are_flow_voids_in_csf_and_enhance_on_cet1(n):
    from scipy import ndimage

    t2, t1 = P.make_case(0, n, "hrT2"), P.make_case(0, n, "ceT1")
    for case in (t2, t1):
        vessel = case.tissue == P.VESSEL
        assert vessel.sum() >= 30
        # Inside CSF: most vessel voxels touch CSF.
        touches = ndimage.binary_dilation(case.tissue == P.CSF) & vessel
        assert touches.sum() >= 0.5 * vessel.sum()
        assert (case.label[vessel] == 0).all()
    # hrT2: black in the bright cistern (partial volume included); ceT1: brighter than brain.
    assert _mean(t2, P.VESSEL) < 0.5 * _mean(t2, P.CSF)
    assert _mean(t1, P.VESSEL) > 1.3 * _mean(t1, P.BRAIN)
    # The basilar artery runs through the pre-pontine cistern along the slice axis: a void on many slices.
    assert (t2.tissue == P.VESSEL).any(axis=(0, 1)).sum() >= 0.6 * t2.tissue.shape[2]


def test_two_hrt2_sites_with_their_own_storage_and_contrast(small_phantom):
    root, _ = small_phantom
    import json

    cases = json.loads((root / P.MANIFEST).read_text())["cases"]
    ds = layout.discover(root)
    for group in (ds.target, ds.validation):
        assert {cases[c.case_id]["site"] for c in group} == {"CISS", "FIESTA"}
    assert {cases[c.case_id]["site"] for c in ds.source} == {"MPRAGE", "SPGR"}
    for c in ds.target + ds.validation + ds.source:
        img = nib.load(str(c.image))
        site = cases[c.case_id]["site"]
        arr = np.asanyarray(img.dataobj)
        if site == "FIESTA":
            assert img.get_data_dtype() == np.float32 and not np.array_equal(arr, np.rint(arr))
            assert 100 < float(arr.max()) < 1000
        else:
            assert img.get_data_dtype() == np.int16
            assert img.dataobj.slope == 1 and img.dataobj.inter == 0  # raw integers, scl_slope 1
            assert 0 <= int(arr.min()) and 500 < int(arr.max()) < 5000  # a scanner's range, not 0..1
        assert cases[c.case_id]["dtype"] == str(img.get_data_dtype())
    # Different contrast curves: CSF/brain and VS/brain ratios differ between the sites.
    ciss, fiesta = P.make_case(0, 2, "hrT2"), P.make_case(0, 3, "hrT2")
    assert (ciss.site, fiesta.site) == ("CISS", "FIESTA")
    r = {c.site: (_mean(c, P.CSF) / _mean(c, P.BRAIN), _mean(c, P.VS) / _mean(c, P.BRAIN)) for c in (ciss, fiesta)}
    assert r["FIESTA"][0] > 1.15 * r["CISS"][0]
    noise = {c.site: float(np.std(c.image[c.tissue == P.BRAIN]) / _mean(c, P.BRAIN)) for c in (ciss, fiesta)}
    assert noise["FIESTA"] > noise["CISS"]


@pytest.mark.parametrize("n,modality", [(2, "hrT2"), (3, "hrT2"), (1, "ceT1")])
def test_labels_are_partial_volume_coverage(n, modality):
    """A voxel is VS/cochlea when >= half of it is (checked against 125 sub-samples per voxel), so label
    volume equals covered volume; boundary voxels have intensities between the two tissues."""
    from scipy import ndimage

    case = P.make_case(0, n, modality)
    sub, grid = P.case_subject(0, n, modality)
    region = ndimage.binary_dilation(case.label > 0, iterations=2)
    ijk = np.argwhere(region).astype(np.float64)
    off = (np.arange(5) + 0.5) / 5 - 0.5
    sub5 = np.stack(np.meshgrid(off, off, off, indexing="ij"), -1).reshape(-1, 3)
    pts = (ijk[:, None, :] + sub5[None]) @ grid.affine[:3, :3].T + grid.affine[:3, 3]
    tissue = P._paint(sub, *(pts[..., a].astype(np.float32) for a in range(3)))
    lab = case.label[region]
    for value, cls in ((1, P.VS), (2, P.COCHLEA)):
        cover = (tissue == cls).mean(axis=1)
        assert (lab[cover >= 0.7] == value).all()
        assert (lab[cover <= 0.3] != value).all()
        if value == 2:
            # Volume: labelled voxels vs summed coverage, within a few percent.
            assert abs((lab == value).sum() - cover.sum()) <= 0.06 * cover.sum()
            # Many boundary voxels are genuinely partial (a smooth label edge, not a centre-sampled one).
            assert ((cover > 0.2) & (cover < 0.8)).sum() >= 0.2 * (cover >= 0.5).sum()
    # Image: voxels half VS half CSF lie between pure CSF and pure VS (averaged over many voxels).
    if modality == "hrT2":
        vs_cover = (tissue == P.VS).mean(axis=1)
        csf_cover = (tissue == P.CSF).mean(axis=1)
        img = case.image[region]
        mixed = (vs_cover > 0.3) & (vs_cover < 0.7) & (vs_cover + csf_cover > 0.95)
        pure_vs, pure_csf = img[vs_cover == 1].mean(), img[csf_cover == 1].mean()
        assert mixed.sum() >= 20
        assert pure_vs + 0.2 * (pure_csf - pure_vs) < img[mixed].mean() < pure_csf - 0.2 * (pure_csf - pure_vs)


def test_oblique_and_flipped_affines_keep_labels_on_the_anatomy():
    """Whatever the flips or obliquity, the labels land on the same world anatomy (VS on the tumour side)."""
    for n in range(1, 7):
        sub, _ = P.case_subject(0, n, "hrT2")
        case = P.make_case(0, n, "hrT2")
        vs = _world(case, case.label == 1).mean(0)
        assert np.sign(vs[0]) == sub.side
        co = _world(case, case.label == 2)
        assert (np.sign(co[:, 0]) == 1).sum() > 50 and (np.sign(co[:, 0]) == -1).sum() > 50


# --- random style: a dataset style drawn from the seed, so a recipe cannot overfit to one rendering -----


def _manifest(root):
    import json

    return json.loads((root / P.MANIFEST).read_text())


def test_builtin_style_is_the_default_and_leaves_the_manifest_alone(tmp_path):
    a, b = P.make_case(4, 2, "hrT2"), P.make_case(4, 2, "hrT2", style="builtin")
    assert a.image.tobytes() == b.image.tobytes() and a.label.tobytes() == b.label.tobytes()
    assert np.array_equal(a.affine, b.affine) and (a.site, a.dtype) == (b.site, b.dtype)
    P.make_phantom(tmp_path / "a", n_source=1, n_target=1, n_val=0, seed=4, preview=False)
    P.make_phantom(tmp_path / "b", n_source=1, n_target=1, n_val=0, seed=4, preview=False, style="builtin")
    text = (tmp_path / "a" / P.MANIFEST).read_text()
    assert (tmp_path / "b" / P.MANIFEST).read_text() == text
    assert "style" not in _manifest(tmp_path / "a") and "style" not in _manifest(tmp_path / "a")["params"]
    for rel in ("source_training/crossmoda_1_ceT1.nii.gz", "target_training/crossmoda_2_hrT2.nii.gz"):
        assert nifti.load(tmp_path / "a" / rel).data.tobytes() == nifti.load(tmp_path / "b" / rel).data.tobytes()


def test_random_style_is_deterministic_and_differs_between_seeds():
    s3 = P.dataset_style(3)
    assert s3 == P.dataset_style(3, "small") and s3["seed"] == 3 and s3["name"] == "random"
    a = P.make_case(3, 1, "hrT2", style="random")
    b = P.make_case(3, 1, "hrT2", style="random")
    assert a.image.tobytes() == b.image.tobytes() and a.label.tobytes() == b.label.tobytes()
    assert np.array_equal(a.affine, b.affine) and a.dtype == b.dtype
    # The recorded style is complete: rendering from the dict gives the same arrays.
    c = P.make_case(3, 1, "hrT2", style=s3)
    assert c.image.tobytes() == a.image.tobytes() and c.site == a.site
    builtin = P.make_case(3, 1, "hrT2")
    assert a.image.shape != builtin.image.shape or not np.array_equal(a.image, builtin.image)
    # Other seeds: other grids and contrast curves.
    others = [P.dataset_style(s) for s in range(4, 8)]
    for m in ("ceT1", "hrT2"):
        assert len({tuple(st["grids"][m]["sp"]) for st in [s3, *others]}) == 5
        assert len({tuple(st["sites"][m][0]["table"].values()) for st in [s3, *others]}) == 5
    spacings = {
        tuple(np.round(np.linalg.norm(P.make_case(s, 1, "hrT2", style="random").affine[:3, :3], axis=0), 3))
        for s in (3, 4, 5)
    }
    assert len(spacings) == 3


def test_random_style_keeps_the_physics_and_its_ranges():
    """Drawn tables keep the contrast ordering of each modality; every drawn value stays in its range."""
    names = {name: k for k, name in enumerate(P.TISSUE_NAMES)}
    modes = set()
    for seed in range(10):
        for scale in ("small", "full"):
            st = P.dataset_style(seed, scale)
            for key, (lo, hi) in {"head": (0.9, 1.12), "cochlea": (0.85, 1.15), "vs": (0.75, 1.15)}.items():
                assert lo <= st["anatomy"][key] <= hi
            assert 0.85 <= st["anatomy"]["canal"] <= 1.2
            for m, (dz_lo, dz_hi) in (("ceT1", (0.8, 2.0)), ("hrT2", (0.5, 1.5))):
                g = st["grids"][m]
                modes.add((scale, g["fov_mode"]))
                assert 0.4 <= g["sp"][0] <= g["sp"][1] <= 1.0
                assert dz_lo <= g["dz"][0] <= g["dz"][1] <= dz_hi
                assert g["max_matrix"] <= (320 if scale == "small" else 512)
                assert g["max_matrix"] >= int(g["fov"][1] // g["sp"][0])
                if scale == "small":
                    assert g["max_voxels"] <= 500_000
                    assert g["min_cochlea_voxels"] >= (150 if m == "hrT2" else 60)
                for site in st["sites"][m]:
                    t = {k: site["table"][name] for name, k in names.items()}
                    assert all(0.0 <= v <= 1.0 for v in t.values()) and t[P.AIR] == 0.0
                    assert 0.8 <= site["gamma"] <= 1.4 and site["dtype"] in ("int16", "float32", "uint16")
                    assert 0.0 < site["noise"][0] < site["noise"][1] <= 0.06 and 0.0 < site["bias"] <= 0.2
                    assert 0.0 < site["scale"][0] < site["scale"][1]
                    parenchyma = max(t[P.BRAIN], t[P.BRAINSTEM])
                    fluid = [t[P.CSF], t[P.CANAL], t[P.VESTIBULE], t[P.SCC]]
                    assert max(fluid) <= 1.3 * min(fluid)  # one fluid (CSF, canal, labyrinth)
                    if m == "hrT2":
                        # CSF and labyrinth fluid the brightest; the VS between brain and CSF; bone and vessels dark.
                        assert min(fluid) > max(parenchyma, t[P.VS], t[P.SCALP])
                        assert min(fluid) >= 0.9 * t[P.COCHLEA]  # no fluid clearly darker than the cochlea
                        assert t[P.COCHLEA] <= t[P.CSF] and t[P.COCHLEA] > t[P.VS]
                        assert parenchyma < t[P.VS] < t[P.CSF]
                        assert max(t[P.SKULL], t[P.PETROUS], t[P.VESSEL]) < 0.5 * min(t[P.BRAIN], t[P.BRAINSTEM])
                    else:
                        # The enhancing VS the brightest structure near the ear; fluid darker than brain; bone darkest.
                        near_ear = [t[k] for k in (P.BRAIN, P.BRAINSTEM, P.CSF, P.CANAL, P.COCHLEA, P.VESTIBULE)]
                        assert t[P.VS] > max(near_ear + [t[P.SCC], t[P.PETROUS]])
                        assert max(fluid + [t[P.COCHLEA]]) < min(t[P.BRAIN], t[P.BRAINSTEM])
                        others = [t[k] for k in range(P.N_TISSUES) if k not in (P.AIR, P.SKULL, P.PETROUS)]
                        assert max(t[P.SKULL], t[P.PETROUS]) < min(others)
                        assert t[P.VESSEL] > t[P.BRAIN]
                    assert P.contrast_ok(m, t)
    assert {mode for _, mode in modes} == {"whole_head", "ear"}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_style_labels_stay_consistent_and_learnable(seed):
    from scipy import ndimage

    st = P.dataset_style(seed)
    for modality, floor in (("hrT2", 150), ("ceT1", 60)):
        g = st["grids"][modality]
        for n in (1, 2):
            case = P.make_case(seed, n, modality, style="random")
            assert (
                case.site == st["sites"][modality][n % 2]["name"]
                and case.dtype == st["sites"][modality][n % 2]["dtype"]
            )
            sp = np.linalg.norm(case.affine[:3, :3], axis=0)
            assert g["sp"][0] - 1e-6 <= sp[0] <= g["sp"][1] + 1e-6 and g["dz"][0] - 1e-6 <= sp[2] <= g["dz"][1] + 1e-6
            assert max(case.image.shape[:2]) <= g["max_matrix"] and case.image.size <= g["max_voxels"]
            assert ndimage.label(case.label == 1)[1] == 1  # one VS
            comps, k = ndimage.label(case.label == 2)
            assert k == 2 and min((comps == c).sum() for c in (1, 2)) >= floor  # both cochleas, learnable
            assert np.isfinite(case.image).all() and float(case.image.min()) >= 0.0
            # The rendered contrast follows the drawn table (after jitter, gamma, blur and noise).
            if modality == "hrT2":
                assert _mean(case, P.CSF) > _mean(case, P.VS) > _mean(case, P.BRAIN) > _mean(case, P.PETROUS)
                assert _mean(case, P.COCHLEA) > _mean(case, P.VS)
            else:
                assert _mean(case, P.VS) > _mean(case, P.BRAIN) > _mean(case, P.CSF) > _mean(case, P.PETROUS)


def test_random_style_is_recorded_in_the_manifest(tmp_path):
    root = P.make_phantom(tmp_path, n_source=1, n_target=2, n_val=1, seed=3, preview=False, style="random")
    m = _manifest(root)
    assert m["params"]["style"] == "random" and m["style"] == P.dataset_style(3, "small")
    sites = {m: {s["name"]: s["dtype"] for s in v} for m, v in m["style"]["sites"].items()}
    for cid, info in m["cases"].items():
        assert sites[info["modality"]][info["site"]] == info["dtype"]
        img = nib.load(str(next(root.glob(f"*/{cid}_{info['modality']}.nii.gz"))))
        assert str(img.get_data_dtype()) == info["dtype"]
        assert info["vs_voxels"] > 0 and info["cochlea_voxels"] > 0
    assert validate_dataset(root) == []
    # Resumed: no work; the builtin style on the same folder regenerates it.
    f = root / "source_training" / "crossmoda_1_ceT1.nii.gz"
    mtime, manifest_mtime = f.stat().st_mtime_ns, (root / P.MANIFEST).stat().st_mtime_ns
    P.make_phantom(root, n_source=1, n_target=2, n_val=1, seed=3, preview=False, style="random")
    assert f.stat().st_mtime_ns == mtime and (root / P.MANIFEST).stat().st_mtime_ns == manifest_mtime
    P.make_phantom(root, n_source=1, n_target=2, n_val=1, seed=3, preview=False)
    assert "style" not in _manifest(root) and _manifest(root)["cases"]["crossmoda_1"]["site"] == "SPGR"


def test_bad_style_is_a_cosmos_error(tmp_path):
    from cosmos.errors import CosmosError

    with pytest.raises(CosmosError, match="style"):
        P.make_phantom(tmp_path, style="fancy")
    with pytest.raises(CosmosError, match="style"):
        P.make_case(0, 1, "hrT2", style="fancy")


def test_cli_phantom_random_style(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        "phantom",
        str(out),
        "--style",
        "random",
        "--seed",
        "3",
        "--n-source",
        "1",
        "--n-target",
        "1",
        "--n-val",
        "1",
    ]
    assert main(args) == 0
    assert str(out) in capsys.readouterr().out
    m = _manifest(out)
    assert m["params"]["style"] == "random" and m["style"]["seed"] == 3
    assert (out / "preview.png").exists() and len(layout.discover(out).validation) == 1
    assert main(["validate", str(out)]) == 0
