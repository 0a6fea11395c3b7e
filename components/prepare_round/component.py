"""KFP component: the round's nnU-Net dataset, at the start of every self-training round.

Raw export + plan + preprocess, one self-contained directory every fold task reads:
:func:`cosmos.selftraining.rounds.prepare`.
"""

from typing import Optional

from kfp.dsl import Dataset, Input, Output


def prepare_round(
    pseudo: Input[Dataset],
    data: Input[Dataset],
    round_index: int,
    profile: str,
    config: str,
    overrides: str,
    work_root: str,
    prepared: Output[Dataset],
    prepared_header: Output[Dataset],
    kept_labels: Optional[Input[Dataset]] = None,
    previous_prepared: Optional[Input[Dataset]] = None,
    compiled_profile: str = "",
) -> int:
    """kept_labels: the previous round's accepted pseudo-labels (None for the teacher);
    previous_prepared: the previous round's ``prepared_header`` (its plan, for warm-started students, and the
    replay check). ``prepared_header``: the prepared round without its images (its manifest and plans), what the
    round's MLflow run and the next round read. Returns the number of training cases."""
    from components import _runtime as rt
    from cosmos.config import PREDICTION_ONLY, ROUND_COUNT

    kept_path = kept_labels.path if kept_labels is not None else None
    previous = previous_prepared.path if previous_prepared is not None else None

    def body(cfg, out):
        from cosmos.segmentation.prepare import write_header
        from cosmos.selftraining.rounds import prepare

        result = prepare(
            round_index,
            cfg,
            pseudo_dir=pseudo.path,
            data_dir=data.path,
            kept_dir=kept_path,
            out_dir=out["prepared"],
            previous_prepared_dir=previous,
        )
        write_header(out["prepared"], out["prepared_header"])
        return result

    result = rt.run_component(
        "prepare_round",
        body,
        {"prepared": prepared.path, "prepared_header": prepared_header.path},
        profile=profile,
        compiled_profile=compiled_profile,
        config=config,
        overrides=overrides,
        work_root=work_root,
        run_name=f"prepare_round{round_index}",
        params={"round": round_index, "outputs": "prepared+header"},  # work dirs from before the header re-run
        inputs=[pseudo.path, data.path, kept_path, previous],
        sections=["segmentation", "selftraining"],
        exclude=(*PREDICTION_ONLY, *ROUND_COUNT),
    )
    prepared.metadata.update({k: v for k, v in result.items() if v is not None})
    return int(result["n_cases"])
