"""NIfTI round trips keep geometry exactly (affine, sform, qform codes and matrices, zooms); labels stay uint8."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cosmos.data import nifti
from cosmos.data.phantom import make_case


def _oblique_affine():
    c, s = np.cos(0.1), np.sin(0.1)
    a = np.eye(4)
    a[:3, :3] = np.array([[-c, -s, 0], [s, -c, 0], [0, 0, 1.0]]) @ np.diag([0.6, 0.6, 1.5])
    a[:3, 3] = [12.5, -30.25, 7.0]
    return a


def _write_source(path, sform_code=1, qform_code=2):
    """A file with deliberately different sform and qform (codes and matrices), as scanners write."""
    data = np.random.default_rng(0).random((12, 10, 6)).astype(np.float32)
    img = nib.Nifti1Image(data, None)
    sform = _oblique_affine()
    qform = sform.copy()
    qform[:3, 3] += [0.2, 0.0, -0.1]  # qform differs slightly from sform
    img.set_sform(sform, sform_code)
    img.set_qform(qform, qform_code)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return data


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_round_trip_keeps_affine_sform_qform_and_zooms(tmp_path, suffix):
    src = tmp_path / f"src{suffix}"
    data = _write_source(src)
    vol = nifti.load(src)
    out = nifti.save(tmp_path / f"out{suffix}", vol.data * 2, like=vol)
    a, b = nib.load(str(src)), nib.load(str(out))
    assert np.array_equal(a.affine, b.affine)
    sa, sca = a.header.get_sform(coded=True)
    sb, scb = b.header.get_sform(coded=True)
    qa, qca = a.header.get_qform(coded=True)
    qb, qcb = b.header.get_qform(coded=True)
    assert int(sca) == int(scb) == 1 and int(qca) == int(qcb) == 2
    assert np.array_equal(sa, sb) and np.array_equal(qa, qb)
    assert a.header.get_zooms() == b.header.get_zooms()
    assert np.allclose(np.asanyarray(b.dataobj), data * 2)


def test_label_round_trip_stays_uint8(tmp_path):
    src = tmp_path / "img.nii.gz"
    _write_source(src)
    vol = nifti.load(src)
    lab = np.zeros(vol.shape, np.int64)
    lab[2:4, 2:4, 1:3] = 1
    lab[6, 6, 4] = 2
    out = nifti.save(tmp_path / "lab.nii.gz", lab, like=vol, label=True)
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.uint8
    back = nifti.load(out, label=True)
    assert back.data.dtype == np.uint8 and np.array_equal(back.data, lab)
    assert nifti.same_grid(back, vol) is None


def test_phantom_affine_round_trip_is_exact(tmp_path):
    case = make_case(0, 4, "hrT2")  # flipped slice axis + oblique rotation
    f = nifti.save(tmp_path / "c.nii.gz", case.image, affine=case.affine, dtype=np.int16)
    vol = nifti.load(f)
    assert np.allclose(vol.affine, case.affine, atol=1e-6)
    assert np.allclose(vol.spacing, np.linalg.norm(case.affine[:3, :3], axis=0), atol=1e-5)  # ~0.5 x 0.5 x 1.0 mm
    assert np.abs(vol.data - case.image).max() <= 0.5  # integer storage rounds only
    lab = nifti.save(tmp_path / "l.nii.gz", case.label, like=vol, label=True)
    assert np.array_equal(nifti.load(lab, label=True).data, case.label)


def test_int_dtype_clips_instead_of_wrapping(tmp_path):
    arr = np.full((3, 3, 3), 40000.0, np.float32)
    f = nifti.save(tmp_path / "x.nii.gz", arr, dtype=np.int16)
    assert nifti.load(f).data.max() == 32767
