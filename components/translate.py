"""KFP components that produce the labelled "pseudo" folder a teacher trains on.

* ``translate``: every annotated ceT1 volume -> pseudo-hrT2 on its own grid
  (:func:`cosmos.translation.conversion.convert_source`).
* ``import_pseudo``: an existing pseudo-hrT2 folder (``cosmos selftrain --pseudo``), checked and
  copied (:func:`cosmos.ablation.import_pseudo`).
* ``labelled_as_pseudo``: labelled scans used as they are (the benchmark's source-only row trains
  on ceT1, the oracle row on labelled real hrT2; :func:`cosmos.ablation.labelled_as_pseudo`).

Each writes the flat folder ``crossmoda_{i}_hrT2pseudo.nii.gz`` + ``crossmoda_{i}_Label.nii.gz``.
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
) -> int:
    """Returns the number of converted cases."""
    from components import _runtime as rt
    from cosmos.resume import read_pointer, stage_key

    rt.setup()
    cfg = rt.load_cfg(profile, config, "", overrides)
    key = stage_key("translate", {}, [translator.path, data.path], cfg, ["translator"])

    def body(out):
        from cosmos.translation.conversion import convert_source

        written = convert_source(str(read_pointer(translator.path)), data.path, out["pseudo"], cfg=cfg)
        return {"n_cases": len(written)}

    result = rt.run("translate", {"pseudo": pseudo.path}, body, key=key, work_root=work_root)
    pseudo.metadata.update(result)
    return int(result["n_cases"])


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
    from cosmos.resume import local_fingerprint, stage_key

    rt.setup()
    cfg = rt.load_cfg(profile, config)
    key = stage_key("import_pseudo", {"pseudo_uri": local_fingerprint(pseudo_uri)}, [], cfg, ["roi"])

    def body(out):
        from cosmos.ablation import import_pseudo as do_import

        return {"n_cases": do_import(pseudo_uri, out["pseudo"], cfg.roi)}

    result = rt.run("import_pseudo", {"pseudo": pseudo.path}, body, key=key, work_root=work_root)
    pseudo.metadata.update(result)
    return int(result["n_cases"])


def labelled_as_pseudo(
    data: Input[Dataset],
    which: str,
    profile: str,
    config: str,
    work_root: str,
    pseudo: Output[Dataset],
) -> int:
    """which: ``source`` (ceT1 + labels) or ``target`` (hrT2 + target_training_labels)."""
    from components import _runtime as rt
    from cosmos.resume import stage_key

    rt.setup()
    cfg = rt.load_cfg(profile, config)
    key = stage_key("labelled_as_pseudo", {"which": which}, [data.path], cfg, [])

    def body(out):
        from cosmos.ablation import labelled_as_pseudo as link

        return {"n_cases": link(data.path, which, out["pseudo"])}

    result = rt.run(f"labelled_as_pseudo_{which}", {"pseudo": pseudo.path}, body, key=key, work_root=work_root)
    pseudo.metadata.update(result)
    return int(result["n_cases"])
