"""The Table-1 ablation over several datasets: mean ± std per row, paired differences, per-seed targets.

Why: one dataset and one run is an anecdote. The phantom family (``phantom.style: random``) draws a
new rendering per dataset seed (contrast curves, fields of view, resolution, anatomy proportions), so
a recipe is measured on styles it was not tuned on. Each seed is benchmarked on its own
(:func:`cosmos.ablation.benchmark_table`, ``OUT/seed_<s>/``), and :func:`aggregate` combines them:

* every row's mean Dice (and per structure) as mean, std and the per-seed values, with its cumulative
  training iterations;
* paired per-case differences between consecutive rows (same scans, so the noise of the data cancels);
* the gap closure per seed and its mean; whether the final student beats the teacher ("DA w/ Seg.") in
  every seed; whether the paper's ordering holds on the means.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from cosmos.ablation import ROW_DA_SEG, ROW_ORACLE, ordering_check

STRUCTS = ("VS", "cochlea", "mean")


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    known = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not known:
        return {"mean": None, "std": None, "per_seed": list(values)}
    mean = sum(known) / len(known)
    std = math.sqrt(sum((v - mean) ** 2 for v in known) / (len(known) - 1)) if len(known) > 1 else 0.0
    return {"mean": round(mean, 4), "std": round(std, 4), "per_seed": list(values)}


def _row_dice(row: Mapping[str, Any] | None, struct: str) -> float | None:
    value = (((row or {}).get("summary") or {}).get(struct) or {}).get("dice_mean")
    return float(value) if isinstance(value, (int, float)) else None


def aggregate(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Combine single-dataset benchmark results (``{seed: benchmark.json}``) into one result."""
    seeds = sorted(per_seed)
    names: list[str] = []
    for seed in seeds:
        for r in per_seed[seed]["rows"]:
            if r["name"] not in names:
                names.append(r["name"])
    by_seed = {seed: {r["name"]: r for r in per_seed[seed]["rows"]} for seed in seeds}
    rows = []
    for name in names:
        entries = [by_seed[s].get(name) for s in seeds]
        iterations = [e.get("train_iterations") for e in entries if e and e.get("train_iterations")]
        rows.append(
            {
                "name": name,
                "dice": {struct: _stats([_row_dice(e, struct) for e in entries]) for struct in STRUCTS},
                "summary": {"mean": {"dice_mean": _stats([_row_dice(e, "mean") for e in entries])["mean"]}},
                "train_iterations": max(iterations) if iterations else None,
            }
        )
    pairs = []
    for lower, higher in zip(names, names[1:]):
        if higher == ROW_ORACLE or lower == ROW_ORACLE:
            continue
        diffs = []
        for s in seeds:
            a, b = by_seed[s].get(lower), by_seed[s].get(higher)
            if a and b:
                common = set(a.get("cases") or {}) & set(b.get("cases") or {})
                diffs += [float(b["cases"][c]) - float(a["cases"][c]) for c in sorted(common)]
        stats = _stats(diffs)
        pairs.append(
            {
                "lower": lower,
                "higher": higher,
                "n_cases": len(diffs),
                "mean_difference": stats["mean"],
                "std": stats["std"],
                "higher_wins": sum(1 for d in diffs if d > 0),
            }
        )
    students = [n for n in names if n.startswith("COSMOS")]
    final = students[-1] if students else None
    beats = None
    if final is not None:
        beats = all(
            (_row_dice(by_seed[s].get(final), "mean") or 0.0) > (_row_dice(by_seed[s].get(ROW_DA_SEG), "mean") or 0.0)
            for s in seeds
        )
    first = per_seed[seeds[0]] if seeds else {}
    return {
        "profile": first.get("profile"),
        "rounds": first.get("rounds"),
        "folds": first.get("folds"),
        "dataset_seeds": seeds,
        "rows": rows,
        "closure": _stats([per_seed[s].get("closure") for s in seeds]),
        "final_student_beats_teacher_every_seed": beats,
        "ordering_in_mean": ordering_check(rows),
        "paired_differences": pairs,
        "per_seed": {str(s): per_seed[s] for s in seeds},
        "machine": first.get("machine"),
    }


def to_markdown(result: Mapping[str, Any]) -> str:
    """The multi-seed table (mean ± std) with the paired differences and the targets' outcome."""

    def fmt(stats: Mapping[str, Any]) -> str:
        if stats.get("mean") is None:
            return "n/a"
        return f"{stats['mean']:.3f} ± {stats['std']:.3f}"

    lines = [
        f"# COSMOS ablation over dataset seeds {result['dataset_seeds']} (profile `{result['profile']}`, "
        f"K={result['rounds']}, folds {result['folds']})",
        "",
        f"Machine: {result.get('machine')}",
        "",
        "| row | Dice VS | Dice cochlea | Dice mean | per seed (mean) | train iterations |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        per = ", ".join("-" if v is None else f"{v:.3f}" for v in r["dice"]["mean"]["per_seed"])
        lines.append(
            f"| {r['name']} | {fmt(r['dice']['VS'])} | {fmt(r['dice']['cochlea'])} | {fmt(r['dice']['mean'])} "
            f"| {per} | {r.get('train_iterations') or '-'} |"
        )
    c = result["closure"]
    closure = "n/a (no oracle)" if c.get("mean") is None else f"{100 * c['mean']:.1f}% ± {100 * c['std']:.1f}%"
    lines += [
        "",
        f"Gap closure (mean over seeds): {closure}  ",
        f"Final student > DA w/ Seg. in every seed: {result['final_student_beats_teacher_every_seed']}  ",
        f"Paper ordering holds on the means: {'yes' if result['ordering_in_mean']['holds'] else 'no'}",
        "",
        "Paired per-case differences (higher - lower, mean Dice of VS and cochlea; all seeds' scans):",
        "",
        "| lower | higher | cases | mean difference | std | higher wins |",
        "|---|---|---|---|---|---|",
    ]
    for p in result["paired_differences"]:
        mean = "n/a" if p["mean_difference"] is None else f"{p['mean_difference']:+.3f}"
        std = "n/a" if p["std"] is None else f"{p['std']:.3f}"
        lines.append(f"| {p['lower']} | {p['higher']} | {p['n_cases']} | {mean} | {std} | {p['higher_wins']} |")
    return "\n".join(lines) + "\n"
