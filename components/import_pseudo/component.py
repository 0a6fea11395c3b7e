"""KFP component: an existing pseudo-hrT2 folder (``cosmos selftrain --pseudo``), checked and copied.

Thin wrapper around :func:`cosmos.ablation.import_pseudo`. Writes the flat folder
``crossmoda_{i}_hrT2pseudo.nii.gz`` + ``crossmoda_{i}_Label.nii.gz`` a teacher trains on.
"""

from kfp.dsl import Dataset, Output


def import_pseudo(
    pseudo_uri: str,
    profile: str,
    config: str,
    work_root: str,
    pseudo: Output[Dataset],
) -> int:
    """pseudo_uri: a folder of crossmoda_{i}_hrT2pseudo + _Label files, brought in cropped to the region its
    labels show (``roi.enabled``). Returns the case count."""
    from components import _runtime as rt

    def params(cfg):
        from cosmos.resume import local_fingerprint

        return {"pseudo_uri": local_fingerprint(pseudo_uri)}

    def body(cfg, out):
        from cosmos.ablation import import_pseudo as do_import

        return {"n_cases": do_import(pseudo_uri, out["pseudo"], cfg.roi)}

    result = rt.run_component(
        "import_pseudo",
        body,
        {"pseudo": pseudo.path},
        profile=profile,
        config=config,
        work_root=work_root,
        params=params,
        sections=["roi"],
    )
    pseudo.metadata.update(result)
    return int(result["n_cases"])
