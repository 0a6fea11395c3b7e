"""The report's figures: Fig.-3/4/5-style PNGs drawn from the volumes and metrics a run produced.

Why a module of its own: drawing is the bulk of the report's code and its only use of matplotlib
(through :mod:`cosmos.evaluation.plots`) and of the volumes themselves; the report only needs to
know whether a figure was drawn and, if not, why. Each function returns the PNG path (or None and
a reason), and a file that cannot be read is skipped with a logged warning, so one bad volume
never stops the report:

* :func:`_figure_translation` -- ceT1 | pseudo-hrT2 | zoomed contours, a few source cases (Fig. 3)
* :func:`_figure_rounds` -- pseudo-labels or predictions, columns = [ground truth +] rounds (Fig. 4)
* :func:`_figure_metrics` -- Dice and ASSD of VS, cochlea and their mean against the round (Fig. 5)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cosmos.data import layout
from cosmos.data.nifti import load
from cosmos.errors import CosmosError
from cosmos.evaluation import plots
from cosmos.evaluation.report_summary import _case_mean, _has_scores, _path, _round_name

# The logger of cosmos.evaluation.report, where this code lived: log lines keep their name.
log = logging.getLogger("cosmos.evaluation.report")


# --------------------------------------------------------------------------- volume access
def _load_canonical(path: Path | None, label: bool = False):
    """(RAS array, spacing) or None with a logged reason, so one bad file never stops the report."""
    if path is None or not path.exists():
        return None
    try:
        vol = load(path, label=label)
    except CosmosError as exc:
        log.warning("report: skipping %s", exc)
        return None
    data, spacing = plots.canonical(vol.data, vol.affine)
    return data, spacing


def _label_files(folder: Path | None) -> dict[str, Path]:
    if folder is None or not folder.is_dir():
        return {}
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        case = layout.parse_prediction_name(p.name)
        if case is not None:
            out.setdefault(case, p)
    return out


def _aspect(spacing) -> float:
    return float(spacing[1] / spacing[0])


def _crop(plane: np.ndarray | None, box) -> np.ndarray | None:
    return None if plane is None or box is None else plane[box[0], box[1]]


def _draw_box(ax, box, shape) -> None:
    """Outline the zoom box on a full-slice panel (display = transposed array, vertical axis flipped)."""
    from matplotlib.patches import Rectangle

    (i0, i1), (j0, j1) = (box[0].start, box[0].stop), (box[1].start, box[1].stop)
    ni, nj = shape
    ax.add_patch(
        Rectangle(
            (i0 - 0.5, nj - j1 - 0.5),
            i1 - i0,
            j1 - j0,
            fill=False,
            edgecolor="deepskyblue",
            linewidth=0.8,
            linestyle="--",
        )
    )


def _box_fraction(box, shape) -> float:
    """Area fraction of the slice that the zoom box covers (no outline when it is nearly all of it)."""
    return (box[0].stop - box[0].start) * (box[1].stop - box[1].start) / float(shape[0] * shape[1])


def _row_label(ax, text: str) -> None:
    ax.text(-0.04, 0.5, text, rotation=90, ha="right", va="center", transform=ax.transAxes, fontsize=9)


# --------------------------------------------------------------------------- figures
def _figure_translation(data_dir: Path, pseudo_dir: Path, out: Path, max_cases: int) -> tuple[Path | None, str]:
    """Fig.-3 style grid: rows = source cases; ceT1 | pseudo-hrT2 | both zoomed with the label contour.

    The pseudo-hrT2 lies on its ceT1's grid (the translator keeps the source geometry), so one slice
    index, chosen on the label, serves the whole row. Returns (png or None, why not).
    """
    ds = layout.discover(data_dir)
    pseudo = {}
    for p in sorted(pseudo_dir.iterdir()) if pseudo_dir.is_dir() else []:
        parsed = layout.parse_name(p.name)
        if parsed and parsed[1] == "hrT2pseudo":
            pseudo[parsed[0]] = p
    cases = [c for c in ds.source if c.case_id in pseudo][:max_cases]
    if not cases:
        return None, f"no source case of `{data_dir}` has a pseudo-hrT2 in `{pseudo_dir}`."
    cols = ["ceT1", "pseudo-hrT2", "ceT1 + label (zoom)", "pseudo-hrT2 + label (zoom)"]
    fig, axes = plots.new_figure(len(cases), len(cols), panel_inches=2.6)
    for r, case in enumerate(cases):
        t1 = _load_canonical(case.image)
        ps = _load_canonical(pseudo[case.case_id])
        label_path = pseudo_dir / layout.label_name(case.case_id)
        lab = _load_canonical(label_path if label_path.exists() else case.label, label=True)
        ref = lab or t1
        if ref is None:
            for c in range(len(cols)):
                plots.draw_overlay(axes[r, c], None, None)
            continue
        k = plots.slice_with_most_foreground(lab[0]) if lab else ref[0].shape[2] // 2
        spacing = ref[1]

        t1p, psp, labp = [
            v[0][:, :, k] if v is not None and v[0].shape == ref[0].shape else None for v in (t1, ps, lab)
        ]
        box = plots.foreground_box([labp], ref[0].shape[:2], spacing) if labp is not None else None
        asp = _aspect(spacing)
        plots.draw_overlay(axes[r, 0], t1p, None, aspect=asp)
        plots.draw_overlay(axes[r, 1], psp, None, aspect=asp)
        plots.draw_overlay(axes[r, 2], _crop(t1p, box), _crop(labp, box), aspect=asp, mode="contour")
        plots.draw_overlay(axes[r, 3], _crop(psp, box), _crop(labp, box), aspect=asp, mode="contour")
        if box is not None and _box_fraction(box, ref[0].shape[:2]) < 0.8:
            for c, panel in ((0, t1p), (1, psp)):
                if panel is not None:
                    _draw_box(axes[r, c], box, panel.shape)
        _row_label(axes[r, 0], f"{case.case_id}  z={k}")
    for c, name in enumerate(cols):
        axes[0, c].set_title(name, fontsize=9)
    fig.legend(handles=plots.legend_handles(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.06)
    return plots.save_figure(fig, out), ""


def _figure_rounds(
    images: dict[str, Path],
    rounds: list[dict],
    key: str,
    gt: dict[str, Path],
    out: Path,
    max_cases: int,
    captions: bool,
) -> tuple[Path | None, str]:
    """Fig.-4 style grid: rows = cases, columns = [ground truth +] rounds, filled overlays, zoomed."""
    per_round = [(rnd, _label_files(_path(rnd.get(key)))) for rnd in rounds]
    per_round = [(rnd, files) for rnd, files in per_round if files]
    if not per_round:
        return None, "no round has predictions here."
    candidates = [c for c in sorted(images, key=layout.case_sort_key) if any(c in f for _, f in per_round)]
    if gt:
        candidates.sort(key=lambda c: (c not in gt, layout.case_sort_key(c)))
    cases = candidates[:max_cases]
    if not cases:
        return None, "no predicted case has its image in the data directory."
    columns: list[tuple[str, dict[str, Path], dict | None]] = []
    if gt:
        columns.append(("ground truth", gt, None))
    columns += [(_round_name(rnd), files, rnd) for rnd, files in per_round]
    fig, axes = plots.new_figure(len(cases), len(columns), panel_inches=2.3, extra_height=0.3)
    for r, case in enumerate(cases):
        image = _load_canonical(images[case])
        labels = [_load_canonical(files.get(case), label=True) for _, files, _ in columns]
        shape = image[0].shape if image is not None else next((lab[0].shape for lab in labels if lab), None)
        if shape is None:
            for c in range(len(columns)):
                plots.draw_overlay(axes[r, c], None, None)
            continue
        labels = [lab if lab is not None and lab[0].shape == shape else None for lab in labels]
        spacing = image[1] if image is not None else next(lab[1] for lab in labels if lab)
        basis = labels[0] if gt and labels[0] is not None else None
        if basis is not None:
            k = plots.slice_with_most_foreground(basis[0])
        else:
            union = np.zeros(shape, dtype=bool)
            for lab in labels:
                if lab is not None:
                    union |= lab[0] != 0
            k = plots.slice_with_most_foreground(union)
        planes = [lab[0][:, :, k] if lab is not None else None for lab in labels]
        box = plots.foreground_box(planes, shape[:2], spacing)
        img_plane = image[0][:, :, k] if image is not None else None
        for c, ((_col_name, files, rnd), plane) in enumerate(zip(columns, planes)):
            caption = None
            if rnd is not None and key == "pseudo_labels_dir":
                if case in (rnd.get("dropped") or []):
                    caption = "dropped"
                elif case in (rnd.get("kept") or []):
                    caption = "kept"
            if captions and rnd is not None and rnd.get("metrics") and case in rnd["metrics"].get("cases", {}):
                s = rnd["metrics"]["cases"][case]
                caption = f"{_case_mean(s, 'dice'):.3f} / {_case_mean(s, 'assd'):.2f} mm"
            if case not in files:
                plots.draw_overlay(axes[r, c], None, None, caption="no prediction")
                continue
            plots.draw_overlay(
                axes[r, c],
                _crop(img_plane, box) if box else img_plane,
                _crop(plane, box) if box else plane,
                aspect=_aspect(spacing),
                caption=caption,
            )
        _row_label(axes[r, 0], f"{case}  z={k}")
    for c, (name, _, _) in enumerate(columns):
        axes[0, c].set_title(name, fontsize=9)
    fig.legend(handles=plots.legend_handles(), loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.subplots_adjust(bottom=0.08, hspace=0.25)
    return plots.save_figure(fig, out), ""


def _figure_metrics(rounds: list[dict], out: Path) -> Path | None:
    """Fig.-5 style: Dice and ASSD (mean, ± std bars) of VS, cochlea and their mean per round."""
    scored = [r for r in rounds if _has_scores(r.get("metrics"))]
    if not scored:
        return None
    fig, axes = plots.new_figure(1, 2, panel_inches=4.0)
    x = [int(r.get("index", i)) for i, r in enumerate(scored)]
    names = [_round_name(r) for r in scored]
    styles = {"VS": ("tab:red", "o"), "cochlea": ("goldenrod", "s"), "mean": ("black", "D")}
    for ax, metric, ylabel in ((axes[0, 0], "dice", "Dice"), (axes[0, 1], "assd", "ASSD (mm)")):
        for name, (colour, marker) in styles.items():
            m = np.array([r["metrics"]["summary"][name][f"{metric}_mean"] for r in scored], dtype=float)
            s = np.array([r["metrics"]["summary"][name][f"{metric}_std"] for r in scored], dtype=float)
            ax.errorbar(x, m, yerr=s, marker=marker, color=colour, label=name, linewidth=1.5, capsize=3, elinewidth=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=20, fontsize=8)
        ax.set_xlabel("self-training iteration")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if len(x) == 1:
            ax.set_xlim(x[0] - 0.5, x[0] + 0.5)
    axes[0, 0].set_ylim(max(0.0, axes[0, 0].get_ylim()[0]), min(1.02, axes[0, 0].get_ylim()[1]))
    assd_max = max(r["metrics"]["summary"][n]["assd_mean"] for r in scored for n in styles)
    if assd_max > 20:  # a missed structure scores 350 mm: keep the small values readable
        axes[0, 1].set_yscale("symlog", linthresh=1.0)
    axes[0, 1].set_ylim(bottom=0.0)
    axes[0, 0].legend(fontsize=8)
    axes[0, 0].set_title("Dice (higher is better)", fontsize=10)
    axes[0, 1].set_title("ASSD (lower is better)", fontsize=10)
    fig.tight_layout()
    return plots.save_figure(fig, out)
