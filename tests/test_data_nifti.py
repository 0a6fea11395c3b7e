"""NIfTI round trips keep geometry exactly (affine, sform, qform codes and matrices, zooms); labels stay uint8.

Also issue 14 rows 1, 5 and 7 at the reader: corrupt gzip streams, forged headers, unusable images
(and symlink loops, row 8) are refused in one line naming the file. Each of those tests builds the
bad file itself, so it needs no data set and runs in well under a second.
"""

from __future__ import annotations

import gzip
import io
import os
import tracemalloc

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


# ================================================================ issue 14: bad files at the reader


def _volume_bytes(shape=(24, 20, 12), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    data = (rng.random(shape) * 100).astype(np.float32)
    return nib.Nifti1Image(data, np.diag([0.5, 0.5, 1.5, 1.0])).to_bytes()


def _write_gz(path, raw: bytes) -> bytes:
    blob = gzip.compress(raw, mtime=0)
    path.write_bytes(blob)
    return blob


# ---------------------------------------------------------------- row 1: integrity
def test_every_single_bit_flip_in_the_gzip_stream_is_refused(tmp_path):
    """Old reader: nibabel stops at the last voxel, so most flips near the end passed (27 of 40)."""
    blob = _write_gz(tmp_path / "ok.nii.gz", _volume_bytes())
    nifti.load(tmp_path / "ok.nii.gz")  # the clean file reads
    rng = np.random.default_rng(14)
    # Bits in the compressed data and the CRC/ISIZE trailer (the 10-byte gzip header holds only
    # flags and a timestamp). Biased to the tail, where the old reader never looked.
    positions = sorted(
        set(rng.integers(len(blob) - 200, len(blob), 30).tolist() + rng.integers(10, len(blob), 10).tolist())
    )
    missed = []
    for pos in positions:
        bad = bytearray(blob)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        path = tmp_path / f"flip_{pos}.nii.gz"
        path.write_bytes(bytes(bad))
        try:
            nifti.load(path)
            missed.append(pos)
        except nifti.NiftiError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
    assert not missed, f"bit flips at byte(s) {missed} were not detected"


def test_wrong_crc_trailer_is_one_line(tmp_path):
    blob = bytearray(_write_gz(tmp_path / "a.nii.gz", _volume_bytes()))
    blob[-8:-4] = bytes(4)  # CRC-32 zeroed, data intact
    (tmp_path / "a.nii.gz").write_bytes(bytes(blob))
    with pytest.raises(nifti.NiftiError, match=r"a\.nii\.gz: corrupt gzip stream .*CRC"):
        nifti.load(tmp_path / "a.nii.gz")


def test_wrong_length_trailer_and_missing_trailer(tmp_path):
    blob = bytearray(_write_gz(tmp_path / "a.nii.gz", _volume_bytes()))
    blob[-4:] = (123).to_bytes(4, "little")
    (tmp_path / "a.nii.gz").write_bytes(bytes(blob))
    with pytest.raises(nifti.NiftiError, match="corrupt gzip stream"):
        nifti.load(tmp_path / "a.nii.gz")
    (tmp_path / "b.nii.gz").write_bytes(bytes(blob[:-8]))  # stream cut before its trailer
    with pytest.raises(nifti.NiftiError, match=r"b\.nii\.gz: corrupt or truncated gzip stream"):
        nifti.load(tmp_path / "b.nii.gz")


# ---------------------------------------------------------------- row 5: bounded work from a header
def _forged_header(shape, dtype=np.float64) -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr["vox_offset"] = 352
    return hdr.binaryblock + bytes(4) + bytes(2000)


def test_forged_header_is_refused_without_allocating(tmp_path):
    path = tmp_path / "forged.nii.gz"
    _write_gz(path, _forged_header((1200, 1200, 1200), np.uint8))
    assert path.stat().st_size < 4096
    tracemalloc.start()
    try:
        with pytest.raises(nifti.NiftiError) as info:
            nifti.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert msg.startswith(f"{path}: header claims 1200x1200x1200 voxels") and "impossible" in msg
    assert peak < 32 * 1024**2, f"allocated {peak / 1e6:.0f} MB before refusing"


def test_header_claim_above_the_cap_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.nii"
    raw = nib.Nifti1Image(np.zeros((64, 64, 64), np.float32), np.eye(4)).to_bytes()
    path.write_bytes(raw)
    assert nifti.load(path).shape == (64, 64, 64)
    monkeypatch.setenv(nifti.MAX_BYTES_ENV, str(512 * 1024))
    with pytest.raises(nifti.NiftiError, match=r"big\.nii: header claims 64x64x64 voxels .* above the 512\.0 KB limit"):
        nifti.load(path)
    monkeypatch.setenv(nifti.MAX_BYTES_ENV, "lots")
    with pytest.raises(nifti.NiftiError, match="COSMOS_MAX_NIFTI_BYTES"):
        nifti.load(path)


def test_uncompressed_file_shorter_than_its_header_claims(tmp_path):
    path = tmp_path / "short.nii"
    raw = nib.Nifti1Image(np.ones((30, 30, 30), np.float32), np.eye(4)).to_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    tracemalloc.start()
    try:
        with pytest.raises(nifti.NiftiError, match=r"short\.nii: truncated NIfTI: header claims"):
            nifti.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(raw)


def test_not_a_nifti_and_empty_files(tmp_path):
    (tmp_path / "text.nii.gz").write_bytes(gzip.compress(b"hello world" * 100))
    with pytest.raises(nifti.NiftiError, match=r"text\.nii\.gz: "):
        nifti.load(tmp_path / "text.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(nifti.NiftiError, match=r"empty\.nii\.gz: empty file"):
        nifti.load(tmp_path / "empty.nii.gz")


# ---------------------------------------------------------------- symlinks (row 8, at the reader)
def test_symlink_loop_and_dangling_link_are_one_line(tmp_path):
    loop = tmp_path / "loop.nii.gz"
    os.symlink(loop, loop)
    with pytest.raises(nifti.NiftiError, match=r"loop\.nii\.gz: symlink loop"):
        nifti.load(loop)
    dangling = tmp_path / "dangling.nii.gz"
    os.symlink(tmp_path / "gone.nii.gz", dangling)
    with pytest.raises(nifti.NiftiError, match=r"dangling\.nii\.gz: dangling symlink"):
        nifti.load(dangling)


# ---------------------------------------------------------------- row 7: unusable images
@pytest.mark.parametrize(
    "case,expected",
    [
        ("all_nan", "every voxel is NaN or inf"),
        ("some_inf", "1 of 120 voxel(s) are NaN or inf"),
        ("zeros", "image is constant (every voxel is 0)"),
        ("nan_affine", "affine holds NaN or inf"),
        ("singular", "affine is singular"),
    ],
)
def test_unusable_images_are_refused(tmp_path, case, expected):
    data = np.arange(120, dtype=np.float32).reshape(6, 5, 4)
    affine = np.eye(4)
    if case == "all_nan":
        data[:] = np.nan
    elif case == "some_inf":
        data[1, 1, 1] = np.inf
    elif case == "zeros":
        data[:] = 0
    elif case == "nan_affine":
        affine[0, 0] = np.nan
    elif case == "singular":
        affine[2, 2] = 0
    path = tmp_path / f"{case}.nii.gz"
    vol = nifti.Volume(data=data, affine=affine, header=nib.Nifti1Header())
    assert expected in "; ".join(nifti.usability_problems(vol.data, vol.affine))
    with pytest.raises(nifti.NiftiError, match=f"^{path}: .*"):
        nifti.check_usable(path, vol)


def test_nan_affine_in_a_file_is_refused_by_load_image(tmp_path):
    raw = nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(5, 4, 3), np.eye(4)).to_bytes()
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    hdr["srow_x"] = [np.nan, 0, 0, 0]  # a scanner header with a NaN sform (nibabel refuses to write one)
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    path = tmp_path / "nan_affine.nii.gz"
    _write_gz(path, hdr.binaryblock + raw[348:])
    with pytest.raises(nifti.NiftiError, match=r"nan_affine\.nii\.gz: .*affine"):
        nifti.load_image(path)
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(5, 4, 3), np.eye(4)), str(good))
    assert nifti.load_image(good).shape == (5, 4, 3)
