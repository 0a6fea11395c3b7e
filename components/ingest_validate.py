"""KFP components at the start of a run: ingest + validate, then the region-of-interest crop.

Thin wrapper around :func:`cosmos.data.ingest.ingest` ("" -> built-in phantom, ``s3://`` ->
download, local path -> copy). As the first task it also checks that the run's configuration
agrees with the compiled DAG (K rounds and the fold list are fixed at compile time), so a
mismatch fails here, in seconds, instead of silently training another shape. Module top level
imports only the standard library and the KFP SDK types that declare the interface.
"""

from typing import List, NamedTuple, Optional

from kfp.dsl import Dataset, Input, Output


def ingest_validate(
    data_uri: str,
    val_labels_uri: str,
    folds: List[int],
    compiled_rounds: int,
    require_source: bool,
    profile: str,
    config: str,
    work_root: str,
    data: Output[Dataset],
) -> NamedTuple(
    "IngestOutputs", [("has_val_labels", bool), ("n_source", int), ("n_target", int), ("n_validation", int)]
):
    """data_uri: s3://bucket/prefix, a local crossMoDA folder, or "" for the built-in phantom."""
    from collections import namedtuple

    from components import _runtime as rt
    from cosmos.data.storage import fingerprint
    from cosmos.resume import stage_key
    from cosmos.selftraining.rounds import check_compiled_shape

    rt.setup()
    cfg = rt.load_cfg(profile, config)
    check_compiled_shape(cfg, compiled_rounds=compiled_rounds, folds=folds)
    # names, sizes and mtimes (local) or keys, sizes and ETags (s3://): edited data is re-ingested
    params = {"data_uri": fingerprint(data_uri), "val_labels_uri": fingerprint(val_labels_uri)}
    key = stage_key("ingest", {**params, "require_source": bool(require_source)}, [], cfg, ["phantom"])

    def body(out):
        from cosmos.data.ingest import ingest

        ds = ingest(
            data_uri, out["data"], val_labels_uri=val_labels_uri or None, cfg=cfg, require_source=bool(require_source)
        )
        return {
            "has_val_labels": bool(ds.has_validation_labels),
            "n_source": len(ds.source),
            "n_target": len(ds.target),
            "n_validation": len(ds.validation),
        }

    result = rt.run("ingest", {"data": data.path}, body, key=key, work_root=work_root)
    data.metadata.update(result)
    outputs = namedtuple("IngestOutputs", ["has_val_labels", "n_source", "n_target", "n_validation"])
    return outputs(result["has_val_labels"], result["n_source"], result["n_target"], result["n_validation"])


def crop_roi(
    data: Input[Dataset],
    profile: str,
    config: str,
    work_root: str,
    roi_data: Output[Dataset],
    roi_source: Optional[Input[Dataset]] = None,
) -> int:
    """Every scan cropped to the inner-ear region learnt from the source labels
    (:func:`cosmos.data.roi.crop_dataset`; ``roi.enabled: false`` copies the grids whole), or, without
    source scans, the region ``roi_source`` was cropped with (``cosmos selftrain``: the imported pseudo-hrT2).
    Returns the number of files that were actually cropped."""
    from components import _runtime as rt
    from cosmos.resume import stage_key

    rt.setup()
    cfg = rt.load_cfg(profile, config)
    source = roi_source.path if roi_source is not None else None
    key = stage_key("crop_roi", {}, [data.path, source], cfg, ["roi"])

    def body(out):
        from cosmos.data.roi import crop_dataset, model_of

        r = cfg.roi
        result = crop_dataset(
            data.path,
            out["roi_data"],
            enabled=r.enabled,
            margin_mm=r.margin_mm,
            min_size_mm=r.min_size_mm,
            source_extent_ratio=r.source_extent_ratio,
            model=model_of(source) if source is not None else None,
        )
        return {"n_cropped": sum(1 for f in result["files"].values() if f["cropped"])}

    result = rt.run("crop_roi", {"roi_data": roi_data.path}, body, key=key, work_root=work_root)
    roi_data.metadata.update(result)
    return int(result["n_cropped"])
