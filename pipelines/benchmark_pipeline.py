"""The ``cosmos-benchmark`` DAG: the paper's Table-1 ablation, one row per labelled "pseudo" folder.

Every row adds the same self-training rounds as ``cosmos-pipeline`` (:func:`pipelines.cosmos_pipeline._add_rounds`,
the one definition of a round) after the same ingest and ROI crop (:func:`pipelines.cosmos_pipeline._add_inputs`),
so rows differ only in what they train on. It runs on a cluster (``cosmos compile --benchmark``) and
locally (``cosmos benchmark`` through ``kfp.local``).
"""

# No "from __future__ import annotations": KFP reads the pipeline signature's real types.

from typing import Callable

from components import build
from pipelines.cosmos_pipeline import _add_inputs, _add_rounds
from pipelines.task_settings import PipelineOptions, _configure

BENCHMARK_PIPELINE_NAME = "cosmos-benchmark"
BENCHMARK_ROWS = ("source_only", "da_noseg", "cosmos", "oracle")


def build_benchmark_pipeline(
    opts: PipelineOptions = PipelineOptions(), rows: tuple[str, ...] = BENCHMARK_ROWS
) -> Callable:
    """The ``cosmos-benchmark`` function: the paper's Table-1 ablation as one DAG.

    Every row is the same rounds (:func:`_add_rounds`) on another labelled "pseudo" folder, so the
    nnU-Net recipe is identical across rows, and the ``cosmos`` row is exactly ``cosmos-pipeline``'s
    translator + rounds (its ``COSMOS (ST iter k)`` rows equal a ``cosmos run`` on the same data).
    Rows: ``source_only`` (nnU-Net on ceT1), ``da_noseg`` (pure CycleGAN), ``cosmos`` (the
    target-aware translator; its teacher is the "DA w/ Seg., w/o ST" row), ``oracle`` (labelled real
    hrT2; needs ``target_training_labels/`` in the data). Each row registers under its own model
    name (``<name>-benchmark-<row>``) in ``<experiment>-benchmark``, so a benchmark never moves the
    production ``champion``.
    """
    from kfp import dsl

    from cosmos.ablation import row_overrides

    unknown = set(rows) - set(BENCHMARK_ROWS)
    if unknown or "cosmos" not in rows:
        raise ValueError(f"benchmark rows must include 'cosmos' and be among {BENCHMARK_ROWS}, got {rows}")
    ops = build(opts.image)
    folds_default = [int(f) for f in opts.folds]

    @dsl.pipeline(
        name=BENCHMARK_PIPELINE_NAME, description=f"COSMOS Table-1 ablation ({', '.join(rows)}), K={opts.rounds}"
    )
    def cosmos_benchmark(
        data_uri: str = "",
        val_labels_uri: str = "",
        profile: str = opts.profile,
        config: str = opts.config,
        folds: list = folds_default,
        tracking_uri: str = opts.tracking_uri,
        experiment: str = opts.experiment,
        work_root: str = opts.work_root,
        data_fingerprint: str = "",
    ) -> dsl.Dataset:
        common = dict(profile=profile, config=config, work_root=work_root, compiled_profile=opts.profile)
        _, validation, roi_records, data = _add_inputs(
            ops, opts, common, data_uri, val_labels_uri, data_fingerprint, folds, require_source=True
        )
        summaries = {}
        for row in rows:
            over = row_overrides(row, opts.experiment, opts.rounds)
            if row in ("source_only", "oracle"):
                which = "source" if row == "source_only" else "target"
                src = _configure(
                    ops,
                    ops.labelled_as_pseudo(data=data, which=which, **common),
                    opts,
                    f"{row}: labelled {which} scans as training data",
                )
                pseudo = src.outputs["pseudo"]
            else:
                trans = _configure(
                    ops,
                    ops.train_translator(
                        data=data, tracking_uri=tracking_uri, experiment=experiment, overrides=over, **common
                    ),
                    opts,
                    f"{row}: train translator",
                )
                conv = _configure(
                    ops,
                    ops.translate(translator=trans.outputs["translator"], data=data, overrides=over, **common),
                    opts,
                    f"{row}: translate",
                )
                pseudo = conv.outputs["pseudo"]
            summaries[row] = _add_rounds(
                ops,
                opts,
                rounds=opts.rounds if row == "cosmos" else 0,
                pseudo=pseudo,
                data=data,
                validation=validation,
                roi_records=roi_records,
                folds=folds,
                common=common,
                tracking_uri=tracking_uri,
                experiment=experiment,
                overrides=over,
                label=row,
            )
        table = _configure(
            ops,
            ops.benchmark_table(
                cosmos_rows=summaries["cosmos"], **common, **{r: s for r, s in summaries.items() if r != "cosmos"}
            ),
            opts,
            "Table 1",
        )
        return table.outputs["table"]

    return cosmos_benchmark
