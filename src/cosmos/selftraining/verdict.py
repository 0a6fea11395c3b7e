"""The label-free checks of a round and the run's verdict: a pipeline that knows when it failed.

In unsupervised domain adaptation the target labels do not exist, so a run cannot grade itself by
Dice. It can still tell a useless model from a working one, from what it has (``checks`` config):

=================  ==========================================================================
check              fails when
=================  ==========================================================================
translation        the pseudo-hrT2 fails the fidelity checks (contrast signs, the anatomy checks
                   that catch an inverted contrast; :func:`cosmos.translation.fidelity.failed_checks`)
learning           a fold's own validation pseudo-Dice never reached ``min_pseudo_dice`` for a label
pseudo-labels      fewer than ``min_kept_fraction`` of the real hrT2 pseudo-labels pass the filter, or
                   (a student's) agree with the previous round's at a mean Dice below ``min_label_agreement``, or
                   a student trained on no pseudo-labelled real hrT2 at all (a replay of its teacher)
predictions        fewer than ``min_plausible`` of the validation predictions (or, without validation
                   scans, of the pseudo-labels) are plausible (:mod:`cosmos.selftraining.plausibility`)
=================  ==========================================================================

A check that cannot be made (no fidelity sample, no pseudo-labels in a K=0 run) is ``None``: neither
passed nor failed. A round passes when none of its checks failed; only a passing round may become the
``champion`` (:func:`cosmos.selftraining.rounds.promotion_decision`). The run's verdict is the final
round's: ``cosmos run`` and ``cosmos selftrain`` print its one line and exit with
:data:`EXIT_CHECKS_FAILED` when it failed. No label is read here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from cosmos.config import ChecksConfig

# `cosmos run` / `cosmos selftrain`: the run finished, but its own label-free checks condemn its model.
EXIT_CHECKS_FAILED = 3
VERDICT_FILE = "verdict.json"
LINEAGE_FILE = "lineage.json"  # what a round's training data came from (the translation's checks), beside its models


@dataclass
class Check:
    """One label-free check: ``passed`` is None when it could not be made."""

    name: str
    passed: bool | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def translation_check(
    figures: Mapping[str, Any] | None,
    attempts: Mapping[str, Any] | None,
    min_pass: float,
    gate: Sequence[str] | None = None,
) -> Check:
    """The pseudo-hrT2 a round trained on (``fidelity.json`` of the converted set, and the translator's
    candidates); ``gate``: the checks that count (``checks.fidelity_gate``), the others are shown."""
    from cosmos.translation.fidelity import failed_checks

    if figures is None:
        return Check("translation", None, "no fidelity figures (pseudo-hrT2 from elsewhere, or no hrT2 to compare)")
    failed = failed_checks(figures, min_pass, gate)
    tried = f" after {len(attempts['attempts'])} translator attempt(s)" if attempts and attempts.get("attempts") else ""
    if failed:
        return Check("translation", False, "; ".join(failed) + tried)
    advisory = [f for f in failed_checks(figures, min_pass) if f not in failed]
    note = f" (not gating: {'; '.join(advisory)})" if advisory else ""
    return Check("translation", True, "anatomy and intensity checks hold" + tried + note)


def learning_check(fold_manifests: Sequence[Mapping[str, Any]], min_dice: float) -> Check:
    """Every fold reached ``min_dice`` pseudo-Dice for every label in some epoch (``cosmos_fold.json``)."""
    if min_dice <= 0:
        return Check("learning", None, "off (checks.min_pseudo_dice = 0)")
    known = [m for m in fold_manifests if m.get("pseudo_dice_best") is not None]
    if not known:
        return Check("learning", None, "no pseudo-Dice recorded by the folds")
    bad = []
    for m in known:
        missing = [name for name, v in m["pseudo_dice_best"].items() if float(v) < min_dice]
        if missing:
            best = ", ".join(f"{n} {float(m['pseudo_dice_best'][n]):.3f}" for n in missing)
            bad.append(f"fold {m.get('fold')}: best pseudo-Dice {best} after {m.get('epochs')} epochs")
    if bad:
        return Check("learning", False, "; ".join(bad) + f" (needs {min_dice:.2f})")
    lows = [min(float(v) for v in m["pseudo_dice_best"].values()) for m in known if m["pseudo_dice_best"]]
    return Check("learning", True, f"every label learned in {len(known)} fold(s) (lowest best {min(lows):.2f})")


def pseudo_label_check(
    filter_summary: Mapping[str, Any] | None,
    min_fraction: float,
    min_agreement: float = 0.0,
    replayed: bool = False,
) -> Check:
    """Enough pseudo-labels pass the filter, and (from the first student on) they agree with the previous
    round's accepted ones (``change.mean_dice``: Dice between the two rounds' labels of the same scans).

    ``replayed``: this round is a student that trained on no pseudo-labelled real hrT2 (its teacher's filter kept
    none), so it is its teacher's training again with another seed, not self-training; whatever it predicts
    rests on nothing its teacher could show. Measured on a randomised phantom (seed 3): the teacher scored 0.00
    and had 0 of 8 pseudo-labels kept; its replayed student passed every other check with a mean Dice of 0.05."""
    if replayed:
        return Check(
            "pseudo-labels", False, "trained on no pseudo-labelled real hrT2 (the teacher's filter kept none): a replay"
        )
    if not filter_summary or (not filter_summary.get("kept") and not filter_summary.get("dropped")):
        return Check("pseudo-labels", None, "no pseudo-labels this round")
    kept, dropped = len(filter_summary.get("kept", [])), len(filter_summary.get("dropped", []))
    total = kept + dropped
    detail = f"{kept} of {total} kept by the filter"
    problems = []
    if min_fraction > 0 and kept < min_fraction * total:
        problems.append(f"needs {100 * min_fraction:.0f}% kept")
    agreement = (filter_summary.get("change") or {}).get("mean_dice")
    if agreement is not None:
        detail += f", Dice {float(agreement):.2f} against the previous round's labels"
        if min_agreement > 0 and float(agreement) < min_agreement:
            problems.append(f"needs agreement {min_agreement:.2f}")
    if problems:
        return Check("pseudo-labels", False, detail + f" ({'; '.join(problems)})")
    return Check("pseudo-labels", True, detail)


def prediction_check(plausibility: Mapping[str, Any] | None, min_plausible: float, what: str) -> Check:
    if not plausibility or not plausibility.get("n_cases"):
        return Check("predictions", None, f"no {what} to judge")
    n, ok = int(plausibility["n_cases"]), int(plausibility["n_plausible"])
    problems: dict[str, int] = {}
    for case in plausibility.get("cases", {}).values():
        for p in case.get("problems", []):
            key = _problem_kind(p)
            problems[key] = problems.get(key, 0) + 1
    common = ", ".join(f"{k} in {v}" for k, v in sorted(problems.items(), key=lambda kv: -kv[1])[:3])
    detail = f"{ok} of {n} {what} plausible" + (f" ({common})" if common else "")
    if min_plausible > 0 and ok < min_plausible * n:
        return Check("predictions", False, detail + f"; needs {100 * min_plausible:.0f}%")
    return Check("predictions", True, detail)


def _problem_kind(problem: str) -> str:
    """A plausibility problem without its numbers (``cosmos.selftraining.plausibility.case_plausibility``'s
    phrases), so that the cases with the same kind of problem can be counted together."""
    if "mm3 outside" in problem:
        return f"{problem.split(' ')[0]} volume out of range"
    if "components on one side" in problem:
        return "several cochleae on a side"
    if "VS components" in problem:
        return "several VS"
    return problem


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def round_checks(
    checks: ChecksConfig,
    *,
    fold_dirs: Sequence[str | Path],
    filter_summary: Mapping[str, Any] | None,
    validation_plausibility: Mapping[str, Any] | None,
    pseudo_plausibility: Mapping[str, Any] | None,
) -> list[Check]:
    """Every label-free check of one round, in the table's order."""
    from cosmos.segmentation.training import FOLD_MANIFEST

    lineage = next((read_json(Path(d) / LINEAGE_FILE) for d in fold_dirs if (Path(d) / LINEAGE_FILE).is_file()), None)
    lineage = lineage or {}
    manifests = [m for m in (read_json(Path(d) / FOLD_MANIFEST) for d in fold_dirs) if m]
    if validation_plausibility and validation_plausibility.get("n_cases"):
        predictions = prediction_check(validation_plausibility, checks.min_plausible, "validation predictions")
    else:
        predictions = prediction_check(pseudo_plausibility, checks.min_plausible, "pseudo-labels")
    return [
        translation_check(
            lineage.get("fidelity"), lineage.get("attempts"), checks.fidelity_min_pass, checks.fidelity_gate
        ),
        learning_check(manifests, checks.min_pseudo_dice),
        pseudo_label_check(
            filter_summary,
            checks.min_kept_fraction,
            checks.min_label_agreement,
            # off with the kept-fraction check: both say the previous round's filter kept too little
            replayed=checks.min_kept_fraction > 0
            and any(int(m.get("round_index", 0)) > 0 and int(m.get("num_real", 1)) == 0 for m in manifests),
        ),
        predictions,
    ]


def passed(checks: Sequence[Check | Mapping[str, Any]]) -> bool:
    """A round passes when none of its checks failed (a check that could not be made does not fail it)."""
    return not any((c.passed if isinstance(c, Check) else c.get("passed")) is False for c in checks)


def failures(checks: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"{c['name']}: {c['detail']}" for c in checks if c.get("passed") is False]


def run_verdict(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's verdict from its summary entries: the final round's checks decide; the champion is named.

    Returns ``{"passed", "round", "champion_round", "failed", "line"}``; ``line`` is what a person reads.
    """
    if not rounds:
        return {"passed": False, "round": None, "champion_round": None, "failed": ["no round finished"],
                "line": "verdict: FAIL - no round finished"}  # fmt: skip
    final = rounds[-1]
    checks = final.get("checks") or []
    failed = failures(checks)
    champion = next((r["index"] for r in reversed(rounds) if r.get("champion")), None)
    name = final.get("name", f"round {final.get('index')}")
    if failed:
        line = (
            f"verdict: FAIL - the {name}'s label-free checks failed: "
            + " | ".join(failed)
            + ("; no champion was promoted" if champion is None else f"; champion stays on round {champion}")
        )
    else:
        made = [c["name"] for c in checks if c.get("passed") is True]
        line = f"verdict: PASS - {', '.join(made) or 'no check could be made'} passed their label-free checks" + (
            f"; champion: round {champion}" if champion is not None else "; no champion"
        )
    return {
        "passed": not failed,
        "round": final.get("index"),
        "champion_round": champion,
        "failed": failed,
        "line": line,
    }


def write_lineage(out_dir: str | Path, pseudo_dir: str | Path) -> None:
    """Record the translation's figures and candidates of ``pseudo_dir`` beside a round's data (prepare step)."""
    from cosmos.translation.model_io import ATTEMPTS_JSON
    from cosmos.translation.training import FIDELITY_JSON

    pseudo = Path(pseudo_dir)
    data = {"fidelity": read_json(pseudo / FIDELITY_JSON), "attempts": read_json(pseudo / ATTEMPTS_JSON)}
    (Path(out_dir) / LINEAGE_FILE).write_text(json.dumps(data, indent=2))
