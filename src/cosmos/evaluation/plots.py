"""Small figure helpers: axial slices in a consistent orientation, label overlays, PNG output.

Conventions (so every figure of a run looks the same, whatever the files' orientations):

* ``canonical(data, affine)`` reorients a volume to the closest RAS+ axes (flips/transposes only,
  no resampling). After it, the THIRD array axis is the axial (inferior -> superior) slice axis,
  the first runs to the subject's right and the second to anterior.
* A 2D slice is always passed in array order, i.e. ``vol[:, :, k]`` (first index = screen
  horizontal). ``display_plane`` turns it into screen rows/columns in the neurological convention
  (anterior at the top, the subject's right on the right of the screen), the same view as the
  phantom's ``preview.png``.
* ``aspect`` = in-plane spacing of the second array axis / the first (screen pixel height / width),
  so anisotropic pixels keep their physical shape.

Matplotlib is used through ``Figure`` + the Agg canvas only (never pyplot), so nothing here needs a
display or touches global pyplot state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

#: RGB colour per label: VS red, cochlea yellow (as in the phantom preview).
LABEL_COLOURS: dict[int, tuple[float, float, float]] = {1: (0.95, 0.15, 0.15), 2: (1.0, 0.85, 0.0)}
LABEL_NAMES: dict[int, str] = {1: "VS", 2: "cochlea"}


# --------------------------------------------------------------------------- geometry
def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Reorient ``data`` to the closest RAS+ axes; returns (array view, spacing per new axis in mm)."""
    import nibabel.orientations as nio

    affine = np.asarray(affine, dtype=float)
    ornt = nio.io_orientation(affine)
    out = nio.apply_orientation(data, ornt)
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    x, y, z = (float(zooms[int(i)]) for i in np.argsort(ornt[:, 0]))
    return out, (x, y, z)


def slice_with_most_foreground(label3d: np.ndarray, labels: Sequence[int] | None = None) -> int:
    """Index along the third (slice) axis with the most foreground voxels; middle slice when empty.

    ``labels`` restricts what counts as foreground (default: any non-zero value). Ties go to the
    lowest index, so the choice is deterministic.
    """
    lab = np.asarray(label3d)
    fg = np.isin(lab, list(labels)) if labels is not None else lab != 0
    counts = fg.reshape(-1, fg.shape[2]).sum(axis=0)
    if counts.max(initial=0) == 0:
        return int(fg.shape[2] // 2)
    return int(np.argmax(counts))


def foreground_box(
    masks: Sequence[np.ndarray | None],
    shape: tuple[int, int],
    spacing: Sequence[float] = (1.0, 1.0),
    margin_mm: float = 15.0,
    min_size_mm: float = 40.0,
) -> tuple[slice, slice] | None:
    """A square-in-mm zoom box (array-order slices) around the foreground of 2D ``masks``.

    None when every mask is empty (a None mask counts as empty). The box keeps ``margin_mm`` around the structures and spans at
    least ``min_size_mm`` so a few-mm cochlea still shows its surroundings.
    """
    union = np.zeros(shape, dtype=bool)
    for m in masks:
        if m is not None and m.shape == shape:
            union |= np.asarray(m) != 0
    if not union.any():
        return None
    hits_per_axis = [np.flatnonzero(union.any(axis=1 - axis)) for axis in range(2)]
    side_mm = max(
        max((h[-1] + 1 - h[0]) * spacing[a] + 2 * margin_mm, min_size_mm) for a, h in enumerate(hits_per_axis)
    )
    slices = []
    for axis, hits in enumerate(hits_per_axis):
        centre = (hits[0] + hits[-1] + 1) / 2.0
        half = side_mm / spacing[axis] / 2.0
        lo = int(round(centre - half))
        hi = int(round(centre + half))
        n = shape[axis]
        if hi - lo >= n:
            lo, hi = 0, n
        elif lo < 0:
            lo, hi = 0, hi - lo
        elif hi > n:
            lo, hi = lo - (hi - n), n
        slices.append(slice(lo, hi))
    return slices[0], slices[1]


# --------------------------------------------------------------------------- drawing
def display_plane(plane: np.ndarray) -> np.ndarray:
    """Array-order slice ``vol[:, :, k]`` of a RAS volume -> screen image (anterior up, right on the right)."""
    return np.asarray(plane).T[::-1, :]


def _window(image2d: np.ndarray) -> tuple[float, float]:
    """Display window from robust percentiles (0.5 / 99.5) so one bright voxel does not grey the slice."""
    finite = np.asarray(image2d, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def draw_overlay(
    ax,
    image2d: np.ndarray | None,
    label2d: np.ndarray | None = None,
    *,
    aspect: float = 1.0,
    mode: str = "fill",
    title: str | None = None,
    caption: str | None = None,
) -> None:
    """Draw a grey slice with its labels on ``ax`` (array-order inputs, see the module docstring).

    ``mode``: "fill" = translucent fill plus outline; "contour" = outline only (keeps the anatomy
    visible under the label, as in the paper's Fig. 3). ``image2d`` None draws the labels on black.
    """
    ax.set_axis_off()
    if image2d is None and label2d is None:
        ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes, color="0.5")
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("0.85")
    else:
        ref = image2d if image2d is not None else label2d
        assert ref is not None  # both None took the "not available" branch above
        shown = display_plane(ref if image2d is not None else np.zeros_like(ref, dtype=float))
        lo, hi = _window(shown) if image2d is not None else (0.0, 1.0)
        ax.imshow(shown, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        if label2d is not None:
            lab = display_plane(label2d)
            if mode == "fill":
                rgba = np.zeros(lab.shape + (4,), dtype=float)
                for value, colour in LABEL_COLOURS.items():
                    sel = lab == value
                    rgba[sel, :3] = colour
                    rgba[sel, 3] = 0.45
                ax.imshow(rgba, aspect=aspect, interpolation="nearest")
            for value, colour in LABEL_COLOURS.items():
                mask = (lab == value).astype(float)
                if mask.any():
                    ax.contour(mask, levels=[0.5], colors=[colour], linewidths=1.0)
    if title:
        ax.set_title(title, fontsize=9)
    if caption:
        ax.text(0.5, -0.02, caption, ha="center", va="top", transform=ax.transAxes, fontsize=8)


def new_figure(rows: int, cols: int, panel_inches: float = 2.4, extra_height: float = 0.0):
    """A Figure (Agg canvas, no pyplot) with a rows x cols grid of axes, always as a 2D array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_inches * cols, panel_inches * rows + extra_height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def legend_handles():
    from matplotlib.patches import Patch

    return [Patch(facecolor=c, edgecolor=c, label=LABEL_NAMES[v]) for v, c in LABEL_COLOURS.items()]


def save_figure(fig, path: str | Path) -> Path:
    """Save a PNG (parent folders created) and free the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight", facecolor="white")
    fig.clear()
    return path


def overlay_png(
    image2d: np.ndarray | None,
    label2d: np.ndarray | None,
    path: str | Path,
    *,
    title: str | None = None,
    aspect: float = 1.0,
    mode: str = "fill",
) -> Path:
    """Write one slice with its label overlay as a PNG; returns ``path``.

    Inputs are array-order slices ``vol[:, :, k]`` (take volumes through ``canonical`` first for a
    true radiological view); pair with ``slice_with_most_foreground`` to pick ``k``.
    """
    fig, axes = new_figure(1, 1, panel_inches=4.0)
    draw_overlay(axes[0, 0], image2d, label2d, aspect=aspect, mode=mode, title=title)
    return save_figure(fig, path)
