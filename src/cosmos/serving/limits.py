"""Bounds on what one request may make the server do: decompressed size, and a DICOM zip's size.

Why: ``--max-mb`` capped the request body only, so a 204 KB gzip that inflates to 200 MB was
inflated whole (the server went from 0.9 to 2.1 GB). Here a gzip scan is inflated as a stream into
an uncompressed ``.nii`` beside it, counting the bytes, and refused (413) as soon as it passes the
cap: memory stays at one chunk, the disk at the cap. The uncompressed file is also what the
segmenter then reads (nibabel and nnU-Net's SimpleITK would otherwise each inflate it again); its
voxels are the same, so the labels are too.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from cosmos.serving.codec import RequestError

CHUNK = 1 << 20  # bytes inflated per step


def inflate_capped(src: Path, dst: Path, max_bytes: int, where: str) -> Path:
    """``src`` (a gzip file) inflated into ``dst``; :class:`RequestError` 413 once more than
    ``max_bytes`` come out, 400 for a corrupt or truncated stream (``where`` names the scan)."""
    written = 0
    try:
        with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
            while chunk := fin.read(CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise RequestError(
                        f"{where}: decompresses to more than {max_bytes / 1e6:.1f} MB, the server's cap "
                        "(cosmos serve --max-mb)",
                        status=413,
                    )
                fout.write(chunk)
    except RequestError:
        dst.unlink(missing_ok=True)
        raise
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:  # a full disk stays a server fault (500)
        dst.unlink(missing_ok=True)
        reason = "it ends before its end-of-stream marker" if isinstance(exc, EOFError) else str(exc)
        raise RequestError(f"{where}: corrupt or truncated gzip stream ({reason})") from None
    return dst
