"""`cosmos serve`'s decompression cap (issue 28): a gzip bomb is refused after at most the cap plus one
chunk, without ever holding the inflated scan in memory; a corrupt or truncated gzip is a 400; a scan
under the cap is inflated byte for byte. No server needed: the function the server calls, on files."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest

from cosmos.serving.codec import RequestError
from cosmos.serving.limits import CHUNK, inflate_capped


def _bomb(path, inflated_bytes: int) -> None:
    """A gzip of ``inflated_bytes`` zeros, written by streaming (the test itself never holds them)."""
    block = bytes(CHUNK)
    with gzip.open(path, "wb", compresslevel=9) as fh:
        for _ in range(inflated_bytes // CHUNK):
            fh.write(block)


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    src, dst = tmp_path / "bomb.nii.gz", tmp_path / "bomb.nii"
    _bomb(src, 128 * CHUNK)  # 128 MiB of zeros, ~130 KB on disk
    assert src.stat().st_size < 1_000_000
    cap = 2 * CHUNK
    tracemalloc.start()
    try:
        with pytest.raises(RequestError, match="decompresses to more than") as refused:
            inflate_capped(src, dst, cap, "instances[0]")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413 and "instances[0]" in refused.value.reason
    assert peak < 16 * CHUNK, peak  # a few chunks, not the 128 MiB the bomb inflates to
    assert not dst.exists()  # nothing left behind


def test_a_scan_under_the_cap_is_inflated_exactly(tmp_path):
    payload = bytes(range(256)) * 5000 + b"end"
    src = tmp_path / "scan.nii.gz"
    src.write_bytes(gzip.compress(payload))
    out = inflate_capped(src, tmp_path / "scan.nii", len(payload), "scan")
    assert out.read_bytes() == payload
    with pytest.raises(RequestError) as refused:  # one byte over the cap
        inflate_capped(src, tmp_path / "again.nii", len(payload) - 1, "scan")
    assert refused.value.status == 413


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad-crc"])
def test_a_corrupt_gzip_is_a_client_error(tmp_path, damage):
    whole = gzip.compress(bytes(range(256)) * 4000)
    if damage == "garbage":
        data = b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4
    elif damage == "truncated":
        data = whole[: len(whole) // 2]
    else:  # the CRC-32 trailer flipped: only a reader that goes to the end of the stream sees it
        data = whole[:-8] + (zlib.crc32(b"other") & 0xFFFFFFFF).to_bytes(4, "little") + whole[-4:]
    src = tmp_path / "scan.nii.gz"
    src.write_bytes(data)
    with pytest.raises(RequestError, match="corrupt or truncated gzip") as refused:
        inflate_capped(src, tmp_path / "scan.nii", 10 * CHUNK, "input 'scan'[0]")
    assert refused.value.status == 400 and "input 'scan'[0]" in refused.value.reason
    assert str(tmp_path) not in refused.value.reason  # the server's path is not the client's business
