"""KFP component: translate every annotated ceT1 volume into a pseudo-hrT2 on its own grid.

Thin wrapper around :func:`cosmos.translation.conversion.convert_source`; writes the flat
pseudo folder (crossmoda_{i}_hrT2pseudo.nii.gz + crossmoda_{i}_Label.nii.gz).
"""

from kfp.dsl import Dataset, Input, Model, Output


def translate(
    translator: Input[Model],
    data: Input[Dataset],
    profile: str,
    config: str,
    work_root: str,
    pseudo: Output[Dataset],
) -> int:
    """Returns the number of converted cases."""
    from components import _runtime as rt

    rt.setup()
    cfg = rt.load_cfg(profile, config)
    key = rt.stage_key("translate", {}, [translator.path, data.path], cfg, ["translator"])

    def body(out):
        from cosmos.translation.conversion import convert_source

        written = convert_source(str(rt.read_pointer(translator.path)), data.path, out["pseudo"], cfg=cfg)
        return {"n_cases": len(written)}

    result = rt.run_stage("translate", {"pseudo": pseudo.path}, body, key=key, work_root=work_root)
    pseudo.metadata.update(result)
    return int(result["n_cases"])
