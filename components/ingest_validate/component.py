"""KFP component: ingest + validate the data, the first task of every DAG.

Thin wrapper around :func:`cosmos.data.ingest.ingest` ("" -> built-in phantom, ``s3://`` ->
download, local path -> copy). As the first task it also checks that the run's configuration
agrees with the compiled DAG (K rounds and the fold list are fixed at compile time), so a
mismatch fails here, in seconds, instead of silently training another shape. Module top level
imports only the standard library and the KFP SDK types that declare the interface.

Outputs: ``data`` (the whole ingested tree, read by ``crop_roi``) and ``validation`` (only the
validation scans and labels, read by every round's ``evaluate``: on a cluster each task downloads
its inputs whole, so scoring a round must not fetch the training scans).

Caching: KFP's cache key is the component spec plus the input values, so the URI string alone would
serve yesterday's copy of edited data. ``data_fingerprint`` (keys, sizes and ETags of the ``s3://``
data, computed by ``cosmos submit``) puts the data into the key, and this task checks the value
against the bucket before ingesting: a run whose fingerprint is not the data's fails here and is
never cached, so a cached ingest is always one whose data had that fingerprint. A run without one
(started from the Kubeflow UI or ``kfp run submit``) is not refused: the cluster DAG branches on the
parameter and runs this task with caching off (``pipelines/cosmos_pipeline.py`` ``_add_ingest``), and
the task logs one line naming the value that would make it cacheable.
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
    validation: Output[Dataset],
    data_fingerprint: str = "",
    compiled_folds: str = "",
    compiled_profile: str = "",
    compiled_dataset_gb: float = 0.0,
) -> NamedTuple(  # type: ignore[valid-type]  # KFP's syntax for named outputs
    "IngestOutputs", [("has_val_labels", bool), ("n_source", int), ("n_target", int), ("n_validation", int)]
):
    """data_uri: s3://bucket/prefix, a local crossMoDA folder, or "" for the built-in phantom.
    compiled_folds: "0,1,2" when the package was compiled with the folds unrolled (then the ``folds``
    parameter must name exactly these); "" for the ParallelFor package.
    compiled_dataset_gb: the data size the package's timeouts and disks were planned for (``--dataset-gb``; 0: not
    declared); larger data stops here, before anything is copied."""
    from collections import namedtuple

    from components import _runtime as rt

    def params(cfg):
        from cosmos.data.storage import fingerprint
        from cosmos.selftraining.rounds import check_compiled_shape

        check_compiled_shape(cfg, compiled_rounds=compiled_rounds, folds=folds)  # before any listing or copy
        rt.check_unrolled_folds(compiled_folds, folds)
        # names, sizes and mtimes (local) or keys, sizes and ETags (s3://): edited data is re-ingested
        uris = {"data_uri": fingerprint(data_uri), "val_labels_uri": fingerprint(val_labels_uri)}
        known = {data_uri: uris["data_uri"], val_labels_uri: uris["val_labels_uri"]}  # listed once, checked here
        rt.check_data_fingerprint(data_uri, val_labels_uri, data_fingerprint, cluster=not work_root, known=known)
        rt.check_dataset_size(rt.data_size_gb(data_uri), float(compiled_dataset_gb), cluster=not work_root)
        return {**uris, "require_source": bool(require_source), "outputs": "data+validation"}

    def body(cfg, out):
        from cosmos.data.ingest import ingest, validation_set

        ds = ingest(
            data_uri, out["data"], val_labels_uri=val_labels_uri or None, cfg=cfg, require_source=bool(require_source)
        )
        validation_set(out["data"], out["validation"])
        return {
            "has_val_labels": bool(ds.has_validation_labels),
            "n_source": len(ds.source),
            "n_target": len(ds.target),
            "n_validation": len(ds.validation),
        }

    result = rt.run_component(
        "ingest",
        body,
        {"data": data.path, "validation": validation.path},
        profile=profile,
        compiled_profile=compiled_profile,
        config=config,
        work_root=work_root,
        params=params,
        sections=["phantom"],
    )
    data.metadata.update(result)
    validation.metadata.update({"n_validation": result["n_validation"], "has_val_labels": result["has_val_labels"]})
    outputs = namedtuple("IngestOutputs", ["has_val_labels", "n_source", "n_target", "n_validation"])  # type: ignore[name-match]
    return outputs(result["has_val_labels"], result["n_source"], result["n_target"], result["n_validation"])
