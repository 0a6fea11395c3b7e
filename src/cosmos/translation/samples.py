"""Fig.-3-style sample grids: real ceT1 | pseudo-hrT2 | segmentor output | label | (real hrT2 reference).

Rows are fixed source slices (largest foreground area, one per volume) so grids from different
epochs are directly comparable. Label colours follow the paper: VS green, cochlea red.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _overlay(ax, image: np.ndarray, label: np.ndarray | None) -> None:
    ax.imshow(image, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    if label is not None:
        rgba = np.zeros(label.shape + (4,), dtype=np.float32)
        rgba[label == 1] = (0.1, 0.9, 0.1, 0.6)
        rgba[label == 2] = (1.0, 0.1, 0.1, 0.8)
        ax.imshow(rgba, interpolation="nearest")


def save_sample_grid(
    path: str | Path,
    real_s: np.ndarray,
    fake_t: np.ndarray,
    seg: np.ndarray | None,
    label: np.ndarray,
    real_t: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """All arrays (N, H, W); images in [-1, 1]; ``seg``/``label`` integer maps. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = ["real ceT1", "pseudo-hrT2", "segmentor (on ceT1)", "label"] + (
        ["real hrT2 (ref.)"] if real_t is not None else []
    )
    n = real_s.shape[0]
    fig, axes = plt.subplots(n, len(cols), figsize=(2.2 * len(cols), 2.2 * n + 0.4), squeeze=False)
    for i in range(n):
        _overlay(axes[i, 0], real_s[i], None)
        _overlay(axes[i, 1], fake_t[i], None)
        if seg is not None:
            _overlay(axes[i, 2], real_s[i], seg[i])
        else:
            axes[i, 2].text(0.5, 0.5, "no segmentor\n(pure CycleGAN)", ha="center", va="center", fontsize=8)
        _overlay(axes[i, 3], real_s[i], label[i])
        if real_t is not None:
            _overlay(axes[i, 4], real_t[i % real_t.shape[0]], None)
    for j, c in enumerate(cols):
        axes[0, j].set_title(c, fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
    return path
