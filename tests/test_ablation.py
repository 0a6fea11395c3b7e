"""Ablation bookkeeping: gap closure, the paper-ordering check and the Markdown table (no training here)."""

import pytest

from cosmos.ablation import (
    ROW_DA_NO_SEG,
    ROW_DA_SEG,
    ROW_ORACLE,
    ROW_SOURCE_ONLY,
    cosmos_row,
    gap_closure,
    ordering_check,
    to_markdown,
)


def _row(name, dice):
    block = {"dice_mean": dice, "dice_std": 0.01, "assd_mean": 1.0, "assd_std": 0.1}
    return {"name": name, "summary": {"VS": block, "cochlea": block, "mean": block}}


def test_closure_and_ordering():
    rows = [
        _row(ROW_SOURCE_ONLY, 0.2),
        _row(ROW_DA_NO_SEG, 0.6),
        _row(ROW_DA_SEG, 0.7),
        _row(cosmos_row(1), 0.75),
        _row(cosmos_row(2), 0.75),
        _row(ROW_ORACLE, 0.8),
    ]
    assert abs(gap_closure(rows) - (0.75 - 0.2) / (0.8 - 0.2)) < 1e-12
    check = ordering_check(rows)
    assert check["holds"], check
    rows[2] = _row(ROW_DA_SEG, 0.5)  # DA w/ Seg worse than w/o Seg: violated
    check = ordering_check(rows)
    assert not check["holds"]
    assert [p for p in check["pairs"] if not p["holds"]][0]["higher"] == ROW_DA_SEG
    rows[2] = _row(ROW_DA_SEG, 0.7)
    rows[3] = _row(cosmos_row(1), 0.696)  # DA w/ Seg <= ST1: a tie within 0.005 Dice is allowed ...
    assert ordering_check(rows)["pairs"][2]["holds"]
    rows[3] = _row(cosmos_row(1), 0.69)  # ... a real drop is not
    assert not ordering_check(rows)["pairs"][2]["holds"]


def test_row_overrides_change_only_tracking_and_the_segmentor():
    import yaml

    from cosmos.ablation import row_overrides

    cosmos = yaml.safe_load(row_overrides("cosmos", "exp"))
    assert set(cosmos) == {"tracking"} and cosmos["tracking"]["experiment"] == "exp-benchmark"
    assert cosmos["tracking"]["segmenter_model_name"] == "cosmos-segmenter-benchmark-cosmos"
    assert yaml.safe_load(row_overrides("da_noseg"))["translator"] == {"segmentor": False}


def test_closure_needs_oracle_and_markdown_renders():
    rows = [_row(ROW_SOURCE_ONLY, 0.2), _row(ROW_DA_SEG, 0.7)]
    assert gap_closure(rows) is None
    md = to_markdown(
        {
            "profile": "tiny",
            "rounds": 0,
            "folds": [0],
            "data_dir": "/d",
            "machine": "m",
            "rows": rows,
            "closure": None,
            "ordering": ordering_check(rows),
            "seconds": {"x": 1.0},
        }
    )
    assert "| source-only | 0.200 ± 0.010 |" in md
    assert "n/a (no oracle)" in md


def test_benchmark_over_seeds_aggregates_rows_pairs_and_targets():
    """Several dataset seeds: mean ± std per row, the closure per seed, the final student against the teacher in
    every seed, and paired per-case differences between consecutive rows (oracle left out of the pairs)."""
    from cosmos.ablation import ROW_DA_SEG, ROW_ORACLE, ROW_SOURCE_ONLY, cosmos_row
    from cosmos.ablation_seeds import aggregate, to_markdown

    def row(name, dice, cases, iterations):
        return {
            "name": name,
            "summary": {s: {"dice_mean": dice} for s in ("VS", "cochlea", "mean")},
            "cases": cases,
            "train_iterations": iterations,
        }

    def seed(src, teacher, student, oracle, closure):
        return {
            "profile": "tiny",
            "rounds": 1,
            "folds": [0],
            "machine": "test box",
            "closure": closure,
            "rows": [
                row(ROW_SOURCE_ONLY, src, {"a": src, "b": src}, 240),
                row(ROW_DA_SEG, teacher, {"a": teacher, "b": teacher - 0.1}, 240),
                row(cosmos_row(1), student, {"a": student, "b": student}, 480),
                row(ROW_ORACLE, oracle, {"a": oracle, "b": oracle}, 480),
            ],
        }

    result = aggregate({1: seed(0.1, 0.7, 0.8, 0.9, 0.875), 2: seed(0.2, 0.6, 0.5, 0.8, 0.5)})
    assert result["dataset_seeds"] == [1, 2]
    student = next(r for r in result["rows"] if r["name"] == cosmos_row(1))
    assert student["dice"]["mean"]["mean"] == pytest.approx(0.65)
    assert student["dice"]["mean"]["std"] == pytest.approx(0.2121, abs=1e-4)
    assert student["dice"]["mean"]["per_seed"] == [0.8, 0.5] and student["train_iterations"] == 480
    assert result["closure"]["mean"] == pytest.approx(0.6875)
    assert result["final_student_beats_teacher_every_seed"] is False  # seed 2: 0.5 < 0.6
    pairs = {(p["lower"], p["higher"]): p for p in result["paired_differences"]}
    assert set(pairs) == {(ROW_SOURCE_ONLY, ROW_DA_SEG), (ROW_DA_SEG, cosmos_row(1))}
    st = pairs[(ROW_DA_SEG, cosmos_row(1))]
    # per case: seed 1: a +0.1, b +0.2; seed 2: a -0.1, b 0.0
    assert st["n_cases"] == 4 and st["mean_difference"] == pytest.approx(0.05) and st["higher_wins"] == 2
    text = to_markdown(result)
    assert "0.650 ± 0.212" in text and "68.8% ± " in text and "in every seed: False" in text
