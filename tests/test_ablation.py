"""Ablation bookkeeping: gap closure, the paper-ordering check and the Markdown table (no training here)."""

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
