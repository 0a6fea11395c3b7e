"""KFP component: every annotated ceT1 volume -> pseudo-hrT2 on its own grid (a GPU task).

Thin wrapper around :func:`cosmos.translation.conversion.convert_source`. Writes the flat folder
``crossmoda_{i}_hrT2pseudo.nii.gz`` + ``crossmoda_{i}_Label.nii.gz`` a teacher trains on (as do
``import_pseudo`` and ``labelled_as_pseudo``, the other two ways to that folder).
"""

from kfp.dsl import Dataset, Input, Model, Output


def translate(
    translator: Input[Model],
    data: Input[Dataset],
    profile: str,
    config: str,
    overrides: str,
    work_root: str,
    pseudo: Output[Dataset],
    compiled_profile: str = "",
) -> int:
    """Returns the number of converted cases."""
    from components import _runtime as rt

    def body(cfg, out):
        from cosmos.resume import read_pointer
        from cosmos.translation.conversion import convert_source

        written = convert_source(str(read_pointer(translator.path)), data.path, out["pseudo"], cfg=cfg)
        return {"n_cases": len(written)}

    result = rt.run_component(
        "translate",
        body,
        {"pseudo": pseudo.path},
        profile=profile,
        compiled_profile=compiled_profile,
        config=config,
        overrides=overrides,
        work_root=work_root,
        inputs=[translator.path, data.path],
        sections=["translator"],
    )
    pseudo.metadata.update(result)
    return int(result["n_cases"])
