"""KFP component: labelled scans used as they are, as the folder a teacher trains on.

The benchmark's source-only row trains on ceT1, the oracle row on labelled real hrT2
(:func:`cosmos.ablation.labelled_as_pseudo`). Writes the flat folder
``crossmoda_{i}_hrT2pseudo.nii.gz`` + ``crossmoda_{i}_Label.nii.gz``.
"""

from kfp.dsl import Dataset, Input, Output


def labelled_as_pseudo(
    data: Input[Dataset],
    which: str,
    profile: str,
    config: str,
    work_root: str,
    pseudo: Output[Dataset],
    compiled_profile: str = "",
) -> int:
    """which: ``source`` (ceT1 + labels) or ``target`` (hrT2 + target_training_labels)."""
    from components import _runtime as rt

    def body(cfg, out):
        from cosmos.ablation import labelled_as_pseudo as link

        return {"n_cases": link(data.path, which, out["pseudo"])}

    result = rt.run_component(
        "labelled_as_pseudo",
        body,
        {"pseudo": pseudo.path},
        profile=profile,
        compiled_profile=compiled_profile,
        config=config,
        work_root=work_root,
        run_name=f"labelled_as_pseudo_{which}",
        params={"which": which},
        inputs=[data.path],
    )
    pseudo.metadata.update(result)
    return int(result["n_cases"])
