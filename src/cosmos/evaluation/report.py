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

This module decides what the report says (the section builders and :func:`write_report`); the
figures are drawn by :mod:`cosmos.evaluation.report_figures`, the blocks rendered to Markdown and
HTML by :mod:`cosmos.evaluation.report_document`; the summary's shape check and the accessors
that this module and the figures share are in :mod:`cosmos.evaluation.report_summary`.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path

from cosmos.data import layout
from cosmos.data.outputs import atomic_write
from cosmos.evaluation.metrics import summary_row
from cosmos.evaluation.report_document import _Block, _to_html, _to_markdown
from cosmos.evaluation.report_figures import _figure_metrics, _figure_rounds, _figure_translation
from cosmos.evaluation.report_summary import (
    _case_mean,
    _check,
    _has_scores,
    _measurements_blocks,
    _path,
    _round_name,
)

log = logging.getLogger(__name__)

FIGURES = {
    "translation": "fig3_translation.png",
    "pseudo_labels": "fig4_pseudo_labels.png",
    "predictions": "fig4_predictions.png",
    "metrics": "fig5_metrics.png",
}
TABLE_HEADER = ["Model", "Dice mean", "Dice VS", "Dice cochlea", "ASSD mean (mm)", "ASSD VS (mm)", "ASSD cochlea (mm)"]


# --------------------------------------------------------------------------- tables
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


# --------------------------------------------------------------------------- the report
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

    # Tumour measurements of the run's predictions (cosmos.evaluation.measurements)
    blocks += _measurements_blocks(rounds)

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

    # temp file + rename (cosmos.data.outputs.atomic_write): a failed write (full disk) leaves no half report
    atomic_write(out_dir / "report.md", _to_markdown(blocks))
    atomic_write(out_dir / "report.html", _to_html(blocks, title, embed=embed_images))
    log.info("report written to %s", out_dir / "report.html")
    return out_dir
