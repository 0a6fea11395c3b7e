"""KFP component: ingest + validate the data, the first task of every DAG.

Thin wrapper around :func:`cosmos.data.ingest.ingest` ("" -> built-in phantom, ``s3://`` ->
download, local path -> copy). As the first task it also checks that the run's configuration
agrees with the compiled DAG (K rounds and the fold list are fixed at compile time), so a
mismatch fails here, in seconds, instead of silently training another shape. Module top level
imports only the standard library and the KFP SDK types that declare the interface.
"""

from typing import List, NamedTuple

from kfp.dsl import Dataset, Output


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
) -> NamedTuple(  # type: ignore[valid-type]  # KFP's syntax for named outputs
    "IngestOutputs", [("has_val_labels", bool), ("n_source", int), ("n_target", int), ("n_validation", int)]
):
    """data_uri: s3://bucket/prefix, a local crossMoDA folder, or "" for the built-in phantom."""
    from collections import namedtuple

    from components import _runtime as rt

    def params(cfg):
        from cosmos.data.storage import fingerprint
        from cosmos.selftraining.rounds import check_compiled_shape

        check_compiled_shape(cfg, compiled_rounds=compiled_rounds, folds=folds)  # before any listing or copy
        # names, sizes and mtimes (local) or keys, sizes and ETags (s3://): edited data is re-ingested
        uris = {"data_uri": fingerprint(data_uri), "val_labels_uri": fingerprint(val_labels_uri)}
        return {**uris, "require_source": bool(require_source)}

    def body(cfg, out):
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

    result = rt.run_component(
        "ingest",
        body,
        {"data": data.path},
        profile=profile,
        config=config,
        work_root=work_root,
        params=params,
        sections=["phantom"],
    )
    data.metadata.update(result)
    outputs = namedtuple("IngestOutputs", ["has_val_labels", "n_source", "n_target", "n_validation"])  # type: ignore[name-match]
    return outputs(result["has_val_labels"], result["n_source"], result["n_target"], result["n_validation"])
