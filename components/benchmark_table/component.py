"""KFP component: the Table-1 ablation table of the ``cosmos-benchmark`` pipeline.

Thin wrapper around :func:`cosmos.ablation.benchmark_table`: reads each row's round summary
(source-only, DA w/o Seg., the COSMOS run, oracle) and writes ``benchmark.{json,md,png}``.
"""

from typing import Optional

from kfp.dsl import Dataset, Input, Markdown, Output


def benchmark_table(
    cosmos_rows: Input[Dataset],
    profile: str,
    config: str,
    work_root: str,
    table: Output[Dataset],
    table_md: Output[Markdown],
    source_only: Optional[Input[Dataset]] = None,
    da_noseg: Optional[Input[Dataset]] = None,
    oracle: Optional[Input[Dataset]] = None,
    compiled_profile: str = "",
) -> str:
    """Returns the gap closure as text ("n/a" without an oracle row)."""
    import shutil
    from pathlib import Path

    from components import _runtime as rt

    paths = {"source_only": source_only, "da_noseg": da_noseg, "cosmos": cosmos_rows, "oracle": oracle}
    given = {k: v.path for k, v in paths.items() if v is not None}

    def body(cfg, out):
        from cosmos.ablation import benchmark_table as build

        result = build(given, out["table"], cfg)
        closure = result.get("closure")
        return {"closure": "n/a" if closure is None else f"{100 * closure:.1f}%"}

    result = rt.run_component(
        "benchmark_table",
        body,
        {"table": table.path},
        profile=profile,
        compiled_profile=compiled_profile,
        config=config,
        work_root=work_root,
        params={"rows": sorted(given)},
        inputs=list(given.values()),
    )
    shutil.copyfile(Path(table.path) / "benchmark.md", table_md.path)
    return str(result["closure"])
