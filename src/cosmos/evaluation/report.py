"""The run report: Table-1-style metrics, Fig.-3/4/5-style figures, pseudo-label filtering counts.

``write_report(out_dir, summary)`` writes ``report.md`` (links the PNGs), ``report.html`` (the PNGs
embedded as data URIs, so the single file renders in the KFP UI's HTML viewer or a browser without
its folder) and the PNGs into ``out_dir``. Everything it shows comes from the ``summary`` dict and the
files it points at; every missing piece (no validation labels, no translator output, one round
only, an unreadable file) becomes a sentence in the report instead of an error.

The ``summary`` schema (JSON-serialisable; paths may be str or Path)::

    {"title": str,                       # report heading
     "profile": str,                     # config profile, e.g. "tiny"
     "data_dir": str | None,             # crossMoDA root: source_training/, target_training/,
                                         #   target_validation/ (+ target_validation_labels/)
     "pseudo_dir": str | None,           # translator output: crossmoda_{i}_hrT2pseudo + _Label
     "rounds": [                         # 0 = teacher, k = student k
        {"index": 0, "name": "teacher",  # "student 1", ...
         "metrics": dict | None,         # evaluate_folder() result on target_validation, or None
         "kept": [case ids], "dropped": [case ids],   # pseudo-label filter outcome of this round
         "pseudo_labels_dir": str | None,  # this round's predictions on target_training (crossmoda_{j}_Label)
         "predictions_dir": str | None,    # this round's predictions on target_validation
         "model_version": str | None},     # cosmos-segmenter registry version
        ...],
     "extra_rows": [{"name": str, "metrics": dict}],   # optional, e.g. ablations; table only
     "translator_fidelity": dict | None}  # optional: the translator's fidelity.json (label-free figures)

Figures (files in ``out_dir``; each only when its inputs exist):

* ``fig3_translation.png``  ceT1 | pseudo-hrT2 | zoomed contours, a few source cases (paper Fig. 3)
* ``fig4_pseudo_labels.png`` pseudo-labels on target_training hrT2, columns = rounds (Fig. 4 a, b)
* ``fig4_predictions.png``  predictions on target_validation, [ground truth +] rounds (Fig. 4 c, d)
* ``fig5_metrics.png``      Dice and ASSD of VS, cochlea and their mean against the round (Fig. 5)
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, TypeGuard

import numpy as np

from cosmos.data import layout
from cosmos.data.nifti import load
from cosmos.errors import CosmosError
from cosmos.evaluation import plots
from cosmos.evaluation.metrics import STRUCTURES, summary_row

log = logging.getLogger(__name__)

FIGURES = {
    "translation": "fig3_translation.png",
    "pseudo_labels": "fig4_pseudo_labels.png",
    "predictions": "fig4_predictions.png",
    "metrics": "fig5_metrics.png",
}
TABLE_HEADER = ["Model", "Dice mean", "Dice VS", "Dice cochlea", "ASSD mean (mm)", "ASSD VS (mm)", "ASSD cochlea (mm)"]


# --------------------------------------------------------------------------- document blocks
@dataclass
class _Block:
    """One piece of the document, rendered to both Markdown and HTML (no markdown library needed)."""

    kind: str  # h2 | p | table | img | list | details
    text: str = ""
    header: list[str] | None = None
    rows: list[list[str]] | None = None
    items: list[str] | None = None
    children: list[_Block] | None = None


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _to_markdown(blocks: Iterable[_Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}\n")
        elif b.kind == "h2":
            out.append(f"## {b.text}\n")
        elif b.kind == "h3":
            out.append(f"### {b.text}\n")
        elif b.kind == "p":
            out.append(b.text + "\n")
        elif b.kind == "list":
            out.append("\n".join(f"- {i}" for i in b.items or []) + "\n")
        elif b.kind == "table":
            out.append("| " + " | ".join(_md_cell(h) for h in b.header or []) + " |")
            out.append("|" + "|".join("---" for _ in b.header or []) + "|")
            out.extend("| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows or [])
            out.append("")
        elif b.kind == "img":
            assert b.items, "an img block holds its file path in items"
            out.append(f"![{b.text}]({Path(b.items[0]).name})\n")
        elif b.kind == "details":
            out.append(f"<details><summary>{html.escape(b.text)}</summary>\n")
            out.append(_to_markdown(b.children or []))
            out.append("</details>\n")
    return "\n".join(out)


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
  padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.2em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%;height:auto}
summary{cursor:pointer;margin:0.4em 0}code{background:#f3f3f3;padding:0 3px}
"""


def _to_html(blocks: Iterable[_Block], title: str, embed: bool = True) -> str:
    def render(bs: Iterable[_Block]) -> list[str]:
        out: list[str] = []
        for b in bs:
            if b.kind in ("h1", "h2", "h3"):
                out.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
            elif b.kind == "p":
                out.append(f"<p>{_inline_html(b.text)}</p>")
            elif b.kind == "list":
                out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items or []) + "</ul>")
            elif b.kind == "table":
                head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header or [])
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in b.rows or []
                )
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif b.kind == "img":
                assert b.items, "an img block holds its file path in items"
                path = Path(b.items[0])
                if embed:
                    src = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
                else:
                    src = html.escape(path.name)
                out.append(
                    f'<figure><img src="{src}" alt="{html.escape(b.text)}">'
                    f"<figcaption>{html.escape(b.text)}</figcaption></figure>"
                )
            elif b.kind == "details":
                out.append(f"<details><summary>{html.escape(b.text)}</summary>")
                out.extend(render(b.children or []))
                out.append("</details>")
        return out

    body = "\n".join(render(blocks))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _inline_html(text: str) -> str:
    """Escape, then turn Markdown ``code`` spans into <code> (the only inline markup we emit)."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


# --------------------------------------------------------------------------- summary helpers
def _path(value: Any) -> Path | None:
    return Path(value) if value not in (None, "") else None


def _has_scores(metrics: dict | None) -> TypeGuard[dict]:
    return bool(metrics and metrics.get("n_cases", len(metrics.get("cases", {}))))


def _round_name(rnd: dict) -> str:
    name = rnd.get("name")
    if name:
        return str(name)
    idx = int(rnd.get("index", 0))
    return "teacher" if idx == 0 else f"student {idx}"


def _case_mean(scores: dict, metric: str) -> float:
    return float(np.mean([scores[s][metric] for s in STRUCTURES]))


def _metrics_table(rounds: list[dict], extra_rows: list[dict]) -> tuple[_Block, list[str]]:
    """Table 1: one row per round (then the extra rows); notes list the cases that were not scored."""
    entries = [(_round_name(r), r) for r in rounds] + [(str(r.get("name", "extra")), r) for r in extra_rows]
    with_version = any(r.get("model_version") for _, r in entries)
    header = [TABLE_HEADER[0], "cases"] + TABLE_HEADER[1:] + (["model version"] if with_version else [])
    rows, notes = [], []
    for name, rnd in entries:
        metrics = rnd.get("metrics")
        version = [str(rnd.get("model_version") or "")] if with_version else []
        if not metrics:
            rows.append([name, "0", "no validation labels"] + [""] * 5 + version)
            continue
        scored = metrics.get("n_cases", len(metrics.get("cases", {})))
        rows.append([name, str(scored)] + summary_row(metrics["summary"]) + version)
        errors = metrics.get("errors") or {}
        if errors:
            listed = "; ".join(f"{c} ({m})" for c, m in list(errors.items())[:5])
            more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
            notes.append(f"{name}: {len(errors)} case(s) not scored: {listed}{more}")
    return _Block("table", header=header, rows=rows), notes


def _per_case_block(rnd: dict) -> _Block | None:
    metrics = rnd.get("metrics")
    if not _has_scores(metrics):
        return None
    rows = []
    for case, scores in metrics["cases"].items():
        rows.append(
            [
                case,
                f"{scores['VS']['dice']:.3f}",
                f"{scores['cochlea']['dice']:.3f}",
                f"{_case_mean(scores, 'dice'):.3f}",
                f"{scores['VS']['assd']:.3f}",
                f"{scores['cochlea']['assd']:.3f}",
                f"{_case_mean(scores, 'assd'):.3f}",
            ]
        )
    table = _Block(
        "table",
        header=["case", "Dice VS", "Dice cochlea", "Dice mean", "ASSD VS", "ASSD cochlea", "ASSD mean"],
        rows=rows,
    )
    return _Block("details", text=f"Per-case results: {_round_name(rnd)} ({len(rows)} cases)", children=[table])


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


# --------------------------------------------------------------------------- the report
def _check(summary: Any) -> dict:
    if not isinstance(summary, dict):
        raise CosmosError(f"report summary must be a dict, got {type(summary).__name__}")
    rounds = summary.get("rounds") or []
    if not isinstance(rounds, list) or not all(isinstance(r, dict) for r in rounds):
        raise CosmosError("report summary 'rounds' must be a list of dicts")
    extra = summary.get("extra_rows") or []
    if not isinstance(extra, list) or not all(isinstance(r, dict) and "name" in r for r in extra):
        raise CosmosError("report summary 'extra_rows' must be a list of {'name', 'metrics'} dicts")
    return summary


def _fidelity_blocks(fid: dict) -> list[_Block]:
    """A short table of the translator's label-free fidelity figures (``translator_fidelity`` entry)."""

    def num(key: str, fmt: str) -> str:
        v = fid.get(key)
        return fmt.format(v) if isinstance(v, (int, float)) else "n/a"

    rows = [
        ["intensity distance W1 to real hrT2 (pseudo-hrT2)", num("w1", "{:.3f}")],
        ["same for the untranslated ceT1", num("w1_untranslated", "{:.3f}")],
        ["cases with the VS darker than the brightest fluid", num("vs_darker_than_fluid", "{:.0%}")],
        ["cases with a bright cochlea", num("cochlea_bright", "{:.0%}")],
        ["cases with the cochlea brighter than the bone around it", num("cochlea_in_dark_bone", "{:.0%}")],
        ["cases with the VS above the head's median", num("vs_above_median", "{:.0%}")],
    ]
    return [
        _Block("h2", "Translation fidelity"),
        _Block("table", header=["figure", "value"], rows=rows),
        _Block(
            "p",
            f"Over {fid.get('n_source', '?')} source case(s) against {fid.get('n_target', '?')} real "
            "hrT2 volume(s), no target labels. W1 on the per-volume [-1, 1] normalised intensities "
            "inside the head (0 = same histogram); a translated hrT2 has a grey VS below the bright "
            "CSF and a bright cochlea, an untranslated ceT1 neither.",
        ),
    ]


_MARK = {True: "pass", False: "FAIL", None: "n/a"}


def _verdict_blocks(summary: dict, rounds: list[dict]) -> list[_Block]:
    """The run's verdict, the reported and the champion round, each round's label-free checks and the
    translator's candidates (``verdict``, ``checks``, ``translator_attempts`` entries; none are label-based)."""
    blocks: list[_Block] = []
    verdict = summary.get("verdict") or {}
    if verdict.get("line"):
        blocks.append(_Block("h2", "Verdict (label-free checks)"))
        blocks.append(_Block("p", str(verdict["line"])))
        final, champion = summary.get("final_round"), summary.get("champion_round")
        if final is not None:
            note = f"Reported scores are the final round's (round {final}), as in the paper."
            if champion is None:
                note += " No round was promoted to champion."
            elif champion != final:
                note += (
                    f" The champion is round {champion}: chosen by the promotion gate, so its score is not a "
                    "held-out figure."
                )
            blocks.append(_Block("p", note))
    checked = [r for r in rounds if r.get("checks")]
    if checked:
        names = [c["name"] for c in checked[0]["checks"]]
        rows = []
        for rnd in checked:
            by = {c["name"]: c for c in rnd["checks"]}
            cells = [f"{_MARK[by[n]['passed']]}: {by[n]['detail']}" if n in by else "-" for n in names]
            rows.append([_round_name(rnd), *cells, "yes" if rnd.get("champion") else "no"])
        blocks.append(_Block("table", header=["round", *names, "champion"], rows=rows))
    attempts = (summary.get("translator_attempts") or {}).get("attempts") or []
    if attempts:
        rows = [
            [
                str(a.get("attempt")),
                str(a.get("seed")),
                ", ".join(f"{k}={v}" for k, v in (a.get("overrides") or {}).items()) or "-",
                "n/a" if a.get("score") is None else f"{a['score']:.3f}",
                "pass" if a.get("passed") else "; ".join(a.get("failed_checks") or []),
                "kept" if a.get("kept") else "",
            ]
            for a in attempts
        ]
        blocks.append(_Block("h3", "Translator candidates"))
        blocks.append(
            _Block("table", header=["attempt", "seed", "settings", "fidelity score", "checks", ""], rows=rows)
        )
    return blocks


def write_report(out_dir: str | Path, summary: dict, max_cases: int = 3, embed_images: bool = True) -> Path:
    """Write ``report.md``, ``report.html`` and the figure PNGs into ``out_dir``; returns ``out_dir``.

    See the module docstring for the ``summary`` schema. ``max_cases`` = rows per image grid;
    ``embed_images`` = PNGs inlined in the HTML (False: linked beside it).
    """
    summary = _check(summary)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FIGURES.values():  # a re-run must not show a stale figure whose inputs are gone
        (out_dir / name).unlink(missing_ok=True)
    title = str(summary.get("title") or "COSMOS report")
    rounds = sorted(summary.get("rounds") or [], key=lambda r: int(r.get("index", 0)))
    extra = list(summary.get("extra_rows") or [])
    data_dir, pseudo_dir = _path(summary.get("data_dir")), _path(summary.get("pseudo_dir"))

    blocks: list[_Block] = [_Block("h1", title)]
    blocks.append(
        _Block(
            "list",
            items=[
                f"profile: `{summary.get('profile', 'unknown')}`",
                f"data: `{data_dir}`" if data_dir else "data: not given",
                f"translator output (pseudo-hrT2): `{pseudo_dir}`" if pseudo_dir else "translator output: not given",
                f"rounds: {len(rounds)} ({', '.join(_round_name(r) for r in rounds) or 'none'})",
                f"generated: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
            ],
        )
    )

    blocks += _verdict_blocks(summary, rounds)

    # Table 1
    blocks.append(_Block("h2", "Segmentation on target_validation (Table 1 style)"))
    if not rounds and not extra:
        blocks.append(_Block("p", "No segmentation rounds in this run."))
    else:
        table, notes = _metrics_table(rounds, extra)
        blocks.append(table)
        if not any(_has_scores(r.get("metrics")) for r in rounds + extra):
            blocks.append(
                _Block(
                    "p",
                    "No validation labels: Dice and ASSD could not be computed "
                    "(give target_validation_labels/ to score the rounds).",
                )
            )
        blocks.append(
            _Block(
                "p",
                'Mean ± standard deviation over validation cases; "mean" averages VS and '
                "cochlea per case first. ASSD in mm (an empty structure scores 350 mm, the "
                "crossMoDA convention).",
            )
        )
        if notes:
            blocks.append(_Block("list", items=notes))
        for rnd in rounds + extra:
            block = _per_case_block(rnd)
            if block is not None:
                blocks.append(block)

    # Fig 5
    if len(rounds) > 0:
        blocks.append(_Block("h2", "Dice and ASSD across self-training iterations (Fig. 5 style)"))
        fig = _figure_metrics(rounds, out_dir / FIGURES["metrics"])
        if fig is None:
            blocks.append(_Block("p", "No validation labels: nothing to plot."))
        else:
            if len([r for r in rounds if _has_scores(r.get("metrics"))]) == 1:
                blocks.append(_Block("p", "Only one scored round: the plot shows a single point."))
            blocks.append(_Block("img", "Dice and ASSD per round", items=[str(fig)]))

    # Pseudo-label filtering
    if rounds:
        blocks.append(_Block("h2", "Pseudo-label filtering"))
        rows = []
        for rnd in rounds:
            kept, dropped = list(rnd.get("kept") or []), list(rnd.get("dropped") or [])
            carried = list(rnd.get("carried") or [])
            change = rnd.get("label_change") or {}
            moved = (
                "-"
                if not change
                else (
                    f"{change.get('n_changed', 0)} of {change.get('n_compared', 0)}, "
                    + (f"Dice {change['mean_dice']:.3f}" if change.get("mean_dice") is not None else "Dice n/a")
                )
            )
            if not kept and not dropped:
                rows.append([_round_name(rnd), "-", "-", "-", moved, "no pseudo-labels"])
                continue
            shown = ", ".join(dropped[:10]) + (f" (+{len(dropped) - 10} more)" if len(dropped) > 10 else "")
            rows.append(
                [_round_name(rnd), str(len(kept)), str(len(dropped)), str(len(carried)), moved, shown or "none"]
            )
        blocks.append(
            _Block(
                "table",
                header=["round", "kept", "dropped", "carried over", "changed vs previous round", "dropped cases"],
                rows=rows,
            )
        )
        blocks.append(
            _Block(
                "p",
                "A rejected case keeps its last accepted pseudo-label (carried over). 'Changed' "
                "counts accepted labels that differ from the previous round's, with their mean "
                "Dice to them (1.000 = identical).",
            )
        )
        blocks.append(
            _Block(
                "p",
                "A case is kept when its pseudo-label contains every required structure "
                "(VS and cochlea); kept cases join the next student's training set.",
            )
        )
        if any((r.get("dropped") and not r.get("kept")) for r in rounds):
            blocks.append(
                _Block(
                    "p",
                    "WARNING: a round kept no pseudo-label, so the next student trained "
                    "on pseudo-hrT2 only (self-training degenerated to the teacher).",
                )
            )

    # Promotion gate
    if any(r.get("gate") for r in rounds):
        blocks.append(_Block("h2", "Champion (promotion gate)"))
        rows = []
        for rnd in rounds:
            g = rnd.get("gate") or {}
            value = g.get("value")
            rows.append(
                [
                    _round_name(rnd),
                    str(rnd.get("model_version") or "-"),
                    g.get("figure") or "-",
                    f"{value:.4f}" if isinstance(value, (int, float)) else "-",
                    "yes" if g.get("promoted") else "no",
                    g.get("why") or "",
                ]
            )
        blocks.append(_Block("table", header=["round", "version", "figure", "value", "promoted", "why"], rows=rows))
        final = [r for r in rounds if r.get("champion")]
        if final:
            blocks.append(
                _Block(
                    "p",
                    f"The champion alias ends on {_round_name(final[-1])} "
                    f"(version {final[-1].get('model_version')}); its predictions are the run's.",
                )
            )

    # Translation fidelity (label-free; the translator's fidelity.json, cosmos.translation.fidelity)
    if isinstance(summary.get("translator_fidelity"), dict):
        blocks += _fidelity_blocks(summary["translator_fidelity"])

    # Fig 3
    blocks.append(_Block("h2", "Translation samples (Fig. 3 style)"))
    if data_dir is None or pseudo_dir is None:
        blocks.append(_Block("p", "No translator output given: no translation samples."))
    else:
        fig, why = _figure_translation(data_dir, pseudo_dir, out_dir / FIGURES["translation"], max_cases)
        if fig is None:
            blocks.append(_Block("p", f"No translation samples: {why}"))
        else:
            blocks.append(
                _Block(
                    "p",
                    "Source ceT1, its translation to pseudo-hrT2 and the source label's "
                    "contour on both (zoomed to the dashed box), on the axial slice with "
                    "the most foreground. Neurological view: anterior up, subject's right "
                    "on the right.",
                )
            )
            blocks.append(_Block("img", "ceT1 | pseudo-hrT2 | label contours", items=[str(fig)]))

    # Fig 4
    blocks.append(_Block("h2", "Pseudo-labels and predictions per round (Fig. 4 style)"))
    if data_dir is None or not rounds:
        blocks.append(_Block("p", "No data directory or no rounds: no segmentation figures."))
    else:
        ds = layout.discover(data_dir)
        target_images = {c.case_id: c.image for c in ds.target}
        val_images = {c.case_id: c.image for c in ds.validation}
        val_gt = {c.case_id: c.label for c in ds.validation if c.label is not None}
        fig, why = _figure_rounds(
            target_images,
            rounds,
            "pseudo_labels_dir",
            {},
            out_dir / FIGURES["pseudo_labels"],
            max_cases,
            captions=False,
        )
        blocks.append(_Block("h3", "Pseudo-labels on target_training (a, b)"))
        if fig is None:
            blocks.append(_Block("p", f"No pseudo-label figure: {why}"))
        else:
            blocks.append(
                _Block("img", "pseudo-labels on real hrT2, columns = rounds (kept/dropped below)", items=[str(fig)])
            )
        fig, why = _figure_rounds(
            val_images, rounds, "predictions_dir", val_gt, out_dir / FIGURES["predictions"], max_cases, captions=True
        )
        blocks.append(_Block("h3", "Predictions on target_validation (c, d)"))
        if fig is None:
            blocks.append(_Block("p", f"No prediction figure: {why}"))
        else:
            text = "predictions on target_validation, columns = rounds"
            text += "; captions = per-case mean Dice / ASSD" if val_gt else " (no validation labels)"
            blocks.append(_Block("img", text, items=[str(fig)]))

    (out_dir / "report.md").write_text(_to_markdown(blocks))
    (out_dir / "report.html").write_text(_to_html(blocks, title, embed=embed_images))
    log.info("report written to %s", out_dir / "report.html")
    return out_dir
