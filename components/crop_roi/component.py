"""KFP component: crop every scan to the inner-ear region (the second task of every DAG).

Thin wrapper around :func:`cosmos.data.roi.crop_dataset`. Module top level imports only the
standard library and the KFP SDK types that declare the interface.
"""

from typing import Optional

from kfp.dsl import Dataset, Input, Output


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

    source = roi_source.path if roi_source is not None else None

    def body(cfg, out):
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

    result = rt.run_component(
        "crop_roi",
        body,
        {"roi_data": roi_data.path},
        profile=profile,
        config=config,
        work_root=work_root,
        inputs=[data.path, source],
        sections=["roi"],
    )
    roi_data.metadata.update(result)
    return int(result["n_cropped"])
