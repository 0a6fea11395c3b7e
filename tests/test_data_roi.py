"""cosmos.data.roi: the inner-ear crop learnt from source labels, on synthetic whole-head volumes.

Heads are ellipsoids of ~150 mm in a 200 mm field of view; the "ears" (labelled on the source
side) sit ±30 mm lateral of the head centre. Grids differ between the domains (spacing, flips,
offsets), as real ceT1 and hrT2 do.
"""

from __future__ import annotations

import numpy as np
import pytest

from cosmos.data import layout, nifti, roi


def _head(shape, spacing, flip=(1, 1, 1), shift=(0.0, 0.0, 0.0), centre=(0.0, 0.0, 0.0), fov_z=None):
    """(image, label, affine): a bright head with two labelled blobs at its inner ears."""
    spacing = np.asarray(spacing, float)
    affine = np.diag([*(spacing * np.asarray(flip)), 1.0])
    extent = (np.asarray(shape) - 1) * spacing
    origin = -np.asarray(flip) * extent / 2 + np.asarray(shift)
    affine[:3, 3] = origin
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = (affine[:3, :3] @ ijk.T).T + affine[:3, 3] - np.asarray(centre)
    x, y, z = xyz.T
    head = (x / 75) ** 2 + (y / 90) ** 2 + (z / 70) ** 2 <= 1
    image = np.where(head, 0.6, 0.0).astype(np.float32)
    label = np.zeros(len(xyz), np.uint8)
    for side in (-1, 1):
        blob = (x - side * 30) ** 2 + (y - 5) ** 2 + z**2 <= 5**2
        label[blob] = 2
        image[blob] = 0.9
    vs = (x - 22) ** 2 + (y - 5) ** 2 + z**2 <= 7**2
    label[vs] = 1
    return image.reshape(shape), label.reshape(shape), affine


def _write(root, folder, case, modality, image, affine, label=None):
    nifti.save(root / folder / layout.image_name(case, modality), image, affine=affine)
    if label is not None:
        lab_folder = folder if folder == layout.SOURCE_DIR else layout.VALIDATION_LABELS_DIR
        nifti.save(root / lab_folder / layout.label_name(case), label, affine=affine, label=True)


@pytest.fixture
def heads(tmp_path):
    root = tmp_path / "data"
    for i, (flip, shift) in enumerate((((1, 1, 1), (0, 0, 0)), ((-1, -1, 1), (8, -6, 4)))):
        img, lab, aff = _head((100, 100, 80), (2.0, 2.0, 2.5), flip, shift, centre=shift)
        _write(root, layout.SOURCE_DIR, f"crossmoda_{i + 1}", "ceT1", img, aff, lab)
    # target: other spacing, flips and position of the head in the field of view
    img, lab, aff = _head((120, 120, 60), (1.6, 1.7, 3.0), (-1, 1, -1), (5, 4, -3), centre=(-10, 12, 6))
    _write(root, layout.TARGET_DIR, "crossmoda_3", "hrT2", img, aff)
    _write(root, layout.VALIDATION_DIR, "crossmoda_4", "hrT2", img, aff, lab)
    return root


def test_crop_keeps_every_structure_and_much_less_than_the_head(heads, tmp_path):
    result = roi.crop_dataset(heads, tmp_path / "roi")
    assert result["model"]["n_cases"] == 2
    rec = result["files"][f"{layout.VALIDATION_DIR}/crossmoda_4_hrT2.nii.gz"]
    kept = np.prod([b - a for a, b in rec["box"]]) / np.prod(rec["shape"])
    assert rec["cropped"] and kept < 0.35, kept
    full = nifti.load(heads / layout.VALIDATION_LABELS_DIR / "crossmoda_4_Label.nii.gz", label=True)
    crop = nifti.load(tmp_path / "roi" / layout.VALIDATION_LABELS_DIR / "crossmoda_4_Label.nii.gz", label=True)
    for value in (1, 2):  # nothing labelled is cut away, on another grid than the source's
        assert np.count_nonzero(crop.data == value) == np.count_nonzero(full.data == value) > 0
    img = nifti.load(tmp_path / "roi" / layout.VALIDATION_DIR / "crossmoda_4_hrT2.nii.gz")
    assert nifti.same_grid(img, crop) is None  # image and label cropped with one window


def test_cropped_affine_keeps_world_positions_and_uncrop_is_exact(heads, tmp_path):
    result = roi.crop_dataset(heads, tmp_path / "roi")
    rel = f"{layout.VALIDATION_LABELS_DIR}/crossmoda_4_Label.nii.gz"
    rec = result["files"][rel]
    full = nifti.load(heads / rel, label=True)
    crop = nifti.load(tmp_path / "roi" / rel, label=True)
    start = np.array([a for a, _ in rec["box"]] + [1.0])
    assert np.allclose(crop.affine[:3, 3], (full.affine @ start)[:3])  # the window's first voxel, in world mm
    back = roi.uncrop(crop.data, rec["box"], rec["shape"])
    assert np.array_equal(back, full.data)


def test_predictions_go_back_on_the_original_grids(heads, tmp_path):
    roi.crop_dataset(heads, tmp_path / "roi")
    preds = tmp_path / "preds"
    preds.mkdir()
    lab = nifti.load(tmp_path / "roi" / layout.VALIDATION_LABELS_DIR / "crossmoda_4_Label.nii.gz", label=True)
    nifti.save(preds / "crossmoda_4_Label.nii.gz", lab.data, like=lab, label=True)
    out = roi.uncrop_predictions(preds, tmp_path / "full", tmp_path / "roi", heads)
    full = nifti.load(out[0], label=True)
    original = nifti.load(heads / layout.VALIDATION_LABELS_DIR / "crossmoda_4_Label.nii.gz", label=True)
    assert nifti.same_grid(full, original) is None and np.array_equal(full.data, original.data)


def test_an_axis_where_the_head_fills_the_field_of_view_is_not_cropped(tmp_path):
    img, lab, aff = _head((100, 100, 20), (2.0, 2.0, 2.0))  # 40 mm of slices: the head is cut in z
    vol = nifti.Volume(img, aff, nifti.nib.Nifti1Header())
    model = roi.RoiModel(low=[0.3, 0.4, 0.4], high=[0.7, 0.6, 0.6], margin_mm=5, min_size_mm=10, n_cases=1)
    box = roi.box_for(vol, model)
    assert box[2] == (0, 20) and box[0] != (0, 100)


def test_disabled_roi_copies_the_grids_whole(heads, tmp_path):
    result = roi.crop_dataset(heads, tmp_path / "roi", enabled=False)
    assert not any(r["cropped"] for r in result["files"].values())


def test_no_source_scans_means_no_crop(heads, tmp_path):
    import shutil

    shutil.rmtree(heads / layout.SOURCE_DIR)  # e.g. cosmos selftrain: only hrT2 folders
    result = roi.crop_dataset(heads, tmp_path / "roi")
    assert result["model"]["enabled"] is False and not any(r["cropped"] for r in result["files"].values())


def _slab_dataset(root, source_z: int, target_z: int):
    """Whole-head-height source scans (the head fills the field of view in z) and hrT2-like slabs."""
    for i in (1, 2):
        img, lab, aff = _head((80, 90, source_z), (2.0, 2.0, 2.5), shift=(0, 0, 3.0 * i))
        _write(root, layout.SOURCE_DIR, f"crossmoda_{i}", "ceT1", img, aff, lab)
    img, lab, aff = _head((80, 90, target_z), (2.0, 2.0, 2.0))
    _write(root, layout.TARGET_DIR, "crossmoda_3", "hrT2", img, aff)
    _write(root, layout.VALIDATION_DIR, "crossmoda_4", "hrT2", img, aff, lab)
    return root


def test_a_source_axis_the_region_cannot_place_is_cut_to_the_target_slab(tmp_path):
    # source: 48 slices x 2.5 mm = 120 mm, all head; target: a 20 x 2 mm = 40 mm slab around the ears
    data = _slab_dataset(tmp_path / "data", source_z=48, target_z=20)
    result = roi.crop_dataset(data, tmp_path / "roi")
    assert result["n_source_matched"] == 2 and result["target_extent_mm"][2] == pytest.approx(40.0)
    for i in (1, 2):
        rec = result["files"][f"{layout.SOURCE_DIR}/crossmoda_{i}_ceT1.nii.gz"]
        z0, z1 = rec["box"][2]
        assert z1 - z0 == 16 and rec["box"][2] != [0, 48]  # 40 mm / 2.5 mm
        full = nifti.load(data / layout.SOURCE_DIR / f"crossmoda_{i}_Label.nii.gz", label=True)
        crop = nifti.load(tmp_path / "roi" / layout.SOURCE_DIR / f"crossmoda_{i}_Label.nii.gz", label=True)
        assert np.count_nonzero(crop.data) == np.count_nonzero(full.data) > 0  # centred on the structures
    # the target scans keep their whole slab; and ratio 0 switches the cut off
    assert result["files"][f"{layout.TARGET_DIR}/crossmoda_3_hrT2.nii.gz"]["box"][2] == [0, 20]
    off = roi.crop_dataset(data, tmp_path / "roi0", source_extent_ratio=0)
    assert off["n_source_matched"] == 0
    assert off["files"][f"{layout.SOURCE_DIR}/crossmoda_1_ceT1.nii.gz"]["box"][2] == [0, 48]


def test_a_source_only_somewhat_longer_than_the_target_is_left_whole(tmp_path):
    # 48 x 2.5 = 120 mm against a 40 x 2 = 80 mm slab: 1.5x, not over it
    data = _slab_dataset(tmp_path / "data", source_z=48, target_z=40)
    result = roi.crop_dataset(data, tmp_path / "roi")
    assert result["n_source_matched"] == 0
    assert result["files"][f"{layout.SOURCE_DIR}/crossmoda_1_ceT1.nii.gz"]["box"][2] == [0, 48]


def test_a_labelled_pseudo_folder_gives_the_region_when_there_is_no_source(heads, tmp_path):
    """cosmos selftrain: the region is learnt from the pseudo-hrT2 labels, the folder is written cropped
    elsewhere (the user's files untouched), and the target scans are cut with the same model."""
    import hashlib

    from cosmos.ablation import import_pseudo, labelled_as_pseudo
    from cosmos.config import RoiConfig

    pseudo = tmp_path / "pseudo"
    labelled_as_pseudo(heads, "source", pseudo)  # whole heads, as a translator would write them
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in pseudo.iterdir()}
    imported = tmp_path / "imported"
    assert import_pseudo(pseudo, imported, RoiConfig()) == 2
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in pseudo.iterdir()} == before
    model = roi.model_of(imported)
    assert model is not None and model.enabled and model.n_cases == 2
    for case in layout.list_cases(imported, "hrT2pseudo"):
        img, lab = nifti.load(case.image), nifti.load(case.label, label=True)
        whole = nifti.load(pseudo / case.image.name)
        assert img.shape == lab.shape and np.prod(img.shape) < 0.5 * np.prod(whole.shape)
        for value in (1, 2):  # every labelled voxel kept
            assert (lab.data == value).sum() == (nifti.load(pseudo / case.label.name, label=True).data == value).sum()
    # a tree without source scans: cut with that model, not left whole
    target_only = tmp_path / "t"
    (target_only / layout.TARGET_DIR).mkdir(parents=True)
    for f in (heads / layout.TARGET_DIR).iterdir():
        (target_only / layout.TARGET_DIR / f.name).write_bytes(f.read_bytes())
    off = roi.crop_dataset(target_only, tmp_path / "off")
    on = roi.crop_dataset(target_only, tmp_path / "on", model=model)
    assert not any(r["cropped"] for r in off["files"].values())
    assert all(r["cropped"] for r in on["files"].values()) and on["model"]["enabled"]
    # roi.enabled false: the folder comes in whole, as before
    whole = tmp_path / "whole"
    import_pseudo(pseudo, whole, RoiConfig(enabled=False))
    assert roi.model_of(whole) is None and len(list(whole.glob("*.nii.gz"))) == 4
