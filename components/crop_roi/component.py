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
    roi_records: Output[Dataset],
    roi_source: Optional[Input[Dataset]] = None,
    compiled_profile: str = "",
) -> int:
    """Every scan cropped to the inner-ear region learnt from the source labels
    (:func:`cosmos.data.roi.crop_dataset`; ``roi.enabled: false`` copies the grids whole), or, without
    source scans, the region ``roi_source`` was cropped with (``cosmos selftrain``: the imported pseudo-hrT2).
    ``roi_records``: only the crop windows (``roi.json``), what scoring a round reads.
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
        # the crop windows alone (roi.json), for the round's scoring: it puts the validation predictions back
        # on the original grids and must not download the whole cropped data set to read one small file
        from cosmos.data.roi import ROI_FILE

        if (out["roi_data"] / ROI_FILE).is_file():
            (out["roi_records"] / ROI_FILE).write_bytes((out["roi_data"] / ROI_FILE).read_bytes())
        return {"n_cropped": sum(1 for f in result["files"].values() if f["cropped"])}

    result = rt.run_component(
        "crop_roi",
        body,
        {"roi_data": roi_data.path, "roi_records": roi_records.path},
        profile=profile,
        compiled_profile=compiled_profile,
        config=config,
        work_root=work_root,
        inputs=[data.path, source],
        params={"outputs": "roi_data+roi_records"},
        sections=["roi"],
    )
    roi_data.metadata.update(result)
    return int(result["n_cropped"])
