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
    compiled_profile: str = "",
) -> int:
    """pseudo_uri: a folder (or an ``s3://`` prefix, downloaded first: the cluster form) of
    crossmoda_{i}_hrT2pseudo + _Label files, brought in cropped to the region its labels show
    (``roi.enabled``). Returns the case count."""
    from components import _runtime as rt

    def params(cfg):
        from cosmos.data.storage import fingerprint

        # names, sizes and mtimes (local) or keys, sizes and ETags (s3://): an edited folder is imported again
        return {"pseudo_uri": fingerprint(pseudo_uri)}

    def body(cfg, out):
        import tempfile

        from cosmos.ablation import import_pseudo as do_import
        from cosmos.data.storage import download, is_s3

        if not is_s3(pseudo_uri):
            return {"n_cases": do_import(pseudo_uri, out["pseudo"], cfg.roi)}
        # on a cluster the folder lives in the object store: fetch it beside the output, then import
        with tempfile.TemporaryDirectory(prefix="pseudo-", dir=out["pseudo"].parent) as tmp:
            return {"n_cases": do_import(download(pseudo_uri, tmp), out["pseudo"], cfg.roi)}

    result = rt.run_component(
        "import_pseudo",
        body,
        {"pseudo": pseudo.path},
        profile=profile,
        compiled_profile=compiled_profile,
        config=config,
        work_root=work_root,
        params=params,
        sections=["roi"],
    )
    pseudo.metadata.update(result)
    return int(result["n_cases"])
