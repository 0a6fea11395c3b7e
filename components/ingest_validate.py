"""KFP component: bring the input data into the crossMoDA layout and validate every file.

Thin wrapper around :func:`cosmos.data.ingest.ingest` ("" -> built-in phantom, ``s3://`` ->
download, local path -> copy). Module top level imports only the standard library and the KFP
SDK types that declare the interface; everything else is imported inside the function body,
because KFP ships only the function's source into the container.
"""

from typing import NamedTuple

from kfp.dsl import Dataset, Output


def ingest_validate(
    data_uri: str,
    val_labels_uri: str,
    profile: str,
    config: str,
    work_root: str,
    data: Output[Dataset],
) -> NamedTuple("IngestOutputs", [("has_val_labels", bool), ("n_source", int), ("n_target", int),
                                  ("n_validation", int)]):
    """data_uri: s3://bucket/prefix, a local crossMoDA folder, or "" for the built-in phantom."""
    from collections import namedtuple

    from components import _runtime as rt

    rt.setup()
    cfg = rt.load_cfg(profile, config)
    params = {"data_uri": rt.local_fingerprint(data_uri), "val_labels_uri": rt.local_fingerprint(val_labels_uri)}
    key = rt.stage_key("ingest", params, [], cfg, ["phantom"])

    def body(out):
        from cosmos.data.ingest import ingest

        ds = ingest(data_uri, out["data"], val_labels_uri=val_labels_uri or None, cfg=cfg)
        return {"has_val_labels": bool(ds.has_validation_labels), "n_source": len(ds.source),
                "n_target": len(ds.target), "n_validation": len(ds.validation)}

    result = rt.run_stage("ingest", {"data": data.path}, body, key=key, work_root=work_root)
    data.metadata.update(result)
    outputs = namedtuple("IngestOutputs", ["has_val_labels", "n_source", "n_target", "n_validation"])
    return outputs(result["has_val_labels"], result["n_source"], result["n_target"], result["n_validation"])
