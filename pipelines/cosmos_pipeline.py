"""The ``cosmos-pipeline`` DAG (COSMOS paper Fig. 2 as Kubeflow tasks).

::

    ingest_validate ──► crop_roi ──► train_translator ──► translate   (or import_pseudo: ``cosmos selftrain``)
    round k = 0..K (unrolled here, at compile time; KFP v2 has no dynamic loops):
        prepare_round(pseudo, data, kept[k-1]) ──► start_round_run (MLflow round run)
        ParallelFor fold in folds (parallelism N): train_fold(teacher models[k-1]) ──► fold model  [GPU]
        predict_pseudo_labels(Collected(fold models), kept[k-1]) ──► kept[k]    (not when K=0)     [GPU]
        predict_validation(Collected(fold models)) ──► evaluate ──► register_round (gate, summary)   [GPU]
    report(summary of every round) ──► bundle (report/, predictions/, metrics.json)

``cosmos-benchmark`` (:func:`pipelines.benchmark_pipeline.build_benchmark_pipeline`) adds the same rounds once per
Table-1 row. The same functions run on a cluster (``cosmos compile`` / ``cosmos submit``) and locally
(``cosmos run``, ``cosmos selftrain``, ``cosmos benchmark`` through ``kfp.local``). Compile-time choices (number of
rounds, image, GPU scheduling, credentials Secret, caching, parallelism) live in :class:`PipelineOptions`, and each
task gets its settings from its stage's spec (:mod:`pipelines.task_settings`); run-time choices are pipeline
parameters (see :func:`build_pipeline`). :class:`PipelineOptions`, :class:`Toleration` and the stage tables
are importable from here too (``X as X`` below), so code that builds this DAG needs one import.
"""

# No "from __future__ import annotations": KFP reads the pipeline signature's real types.

from typing import Callable

from components import build
from pipelines.task_settings import EXTERNAL_INPUT_STAGES as EXTERNAL_INPUT_STAGES
from pipelines.task_settings import SECRET_ENV_KEYS as SECRET_ENV_KEYS
from pipelines.task_settings import SECRET_STAGES as SECRET_STAGES
from pipelines.task_settings import PipelineOptions, _configure
from pipelines.task_settings import Toleration as Toleration

PIPELINE_NAME = "cosmos-pipeline"


def _add_rounds(
    ops,
    opts: PipelineOptions,
    *,
    rounds: int,
    pseudo,
    data,
    validation,
    roi_records,
    folds,
    common: dict,
    tracking_uri,
    experiment,
    overrides: str = "",
    label: str = "",
):
    """Teacher + ``rounds`` students on ``pseudo``: the ONE definition of a self-training round.

    Every pipeline (``cosmos-pipeline`` and each row of ``cosmos-benchmark``) adds its rounds here,
    so a round is the same tasks in the same order whoever runs it. ``data`` is the ROI-cropped
    dataset every step works on; ``validation`` the ingested validation scans and labels, on whose grids
    rounds are scored (``roi_records``: the crop windows that map the predictions back).
    With ``opts.unroll_folds`` the folds are one task each (:func:`_add_folds`).
    Returns the last round's cumulative summary artifact.
    """
    from kfp import dsl

    from cosmos.selftraining.rounds import round_name

    row = dict(common, overrides=overrides)
    tracked = dict(row, tracking_uri=tracking_uri)
    kept = None
    summary = None
    models = None
    prep = None
    prefix = f"{label}: " if label else ""
    for k in range(rounds + 1):
        name = round_name(k)
        prep_args = dict(pseudo=pseudo, data=data, round_index=k, **row)
        if kept is not None and prep is not None:  # a student: the previous round's labels and dataset
            prep_args.update(kept_labels=kept, previous_prepared=prep.outputs["prepared_header"])
        prep = _configure(
            ops, ops.prepare_round(**prep_args), opts, f"{prefix}round {k} ({name}): prepare nnU-Net data"
        )
        run = _configure(
            ops,
            ops.start_round_run(
                prepared=prep.outputs["prepared_header"], round_index=k, experiment=experiment, **tracked
            ),
            opts,
            f"{prefix}round {k}: MLflow round run",
        )
        # the run id keys the fold's object-store checkpoints (segmentation.checkpoint_uri): the same for every
        # retry of the task and of the run (cosmos retry). It costs no KFP cache hits: round_run comes from a
        # never-cached stage.
        fold_args = dict(
            prepared=prep.outputs["prepared"],
            round_index=k,
            round_run=run.outputs["run_info"],
            experiment=experiment,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            **tracked,
        )
        if models is not None:
            fold_args["teacher_models"] = models
        fold_models = _add_folds(ops, opts, folds, fold_args, f"{prefix}round {k}: train fold")

        # Pseudo-labels feed the next student, and the last round's give the label-change figure (against the
        # previous round's) and the label-free gate figure. With no student at all (K=0: the teacher-only
        # rows of the benchmark) they would feed nothing: no next round, no earlier labels, and the gate has
        # validation Dice or no figure either way.
        pl = None
        if rounds > 0:
            pl_args = dict(**fold_models(), data=data, round_index=k, round_run=run.outputs["run_info"], **tracked)
            if kept is not None:
                pl_args["previous_kept"] = kept
            pl = _configure(
                ops,
                ops.predict_pseudo_labels(**pl_args),
                opts,
                f"{prefix}round {k}: pseudo-labels + filter",
            )
        val = _configure(
            ops,
            ops.predict_validation(**fold_models(), data=data, round_index=k, **row),
            opts,
            f"{prefix}round {k}: predict validation",
        )
        ev = _configure(
            ops,
            ops.evaluate(
                predictions=val.outputs["predictions"],
                validation=validation,
                roi_records=roi_records,
                round_index=k,
                round_run=run.outputs["run_info"],
                **tracked,
            ),
            opts,
            f"{prefix}round {k}: evaluate",
        )
        reg_args = dict(
            **fold_models(),
            scores=ev.outputs["scores"],
            val_predictions=val.outputs["predictions"],
            round_run=run.outputs["run_info"],
            round_index=k,
            is_final=k == rounds,
            experiment=experiment,
            **tracked,
        )
        if pl is not None:
            reg_args.update(pseudo_labels=pl.outputs["pseudo_labels"], kept_labels=pl.outputs["kept_labels"])
        if summary is not None:
            reg_args["previous"] = summary
        reg = _configure(
            ops,
            ops.register_round(**reg_args),
            opts,
            f"{prefix}round {k}: register model + promotion gate",
        )
        summary, models = reg.outputs["summary"], reg.outputs["models"]
        kept = pl.outputs["kept_labels"] if pl is not None else None
    return summary


def _add_folds(ops, opts: PipelineOptions, folds, fold_args: dict, display: str) -> Callable[[], dict]:
    """The ``train_fold`` tasks of one round; returns a function giving a consumer's fold-model inputs.

    Default: one task in a ``dsl.ParallelFor`` over the ``folds`` parameter, gathered with
    ``dsl.Collected`` (a fresh one per consumer: KFP cannot compile one Collected shared by several
    tasks). The KFP backend drops the retry policy of a task inside a loop (kubeflow/pipelines #12389,
    #13897; the Argo compiler at 2.17.0), so ``opts.unroll_folds`` adds one task per compiled fold
    instead, each with its own retry policy, and wires each fold's model to its own input
    (``fold_model_<i>``): KFP can gather an artifact list only from a loop.
    """
    from kfp import dsl

    from components.spec import MAX_UNROLLED_FOLDS

    if not opts.unroll_folds:
        with dsl.ParallelFor(folds, parallelism=opts.parallelism) as fold:
            train = _configure(ops, ops.train_fold(fold=fold, **fold_args), opts, display)
        return lambda: {"fold_models": dsl.Collected(train.outputs["model"])}
    if not 1 <= len(opts.folds) <= MAX_UNROLLED_FOLDS:
        raise ValueError(f"--unroll-folds: 1 to {MAX_UNROLLED_FOLDS} folds, got {list(opts.folds)}")
    trained = []
    for fold in opts.folds:
        train = _configure(ops, ops.train_fold(fold=int(fold), **fold_args), opts, f"{display} {int(fold)}")
        trained.append(train.outputs["model"])
    return lambda: {f"fold_model_{i}": model for i, model in enumerate(trained)}


def _add_ingest(ops, opts: PipelineOptions, data_fingerprint, args: dict):
    """The ``ingest_validate`` task(s); returns its ``data`` and ``validation`` outputs.

    Why two tasks on a cluster: KFP's cache key sees the data URI as a string, so only a run that passes
    ``data_fingerprint`` (``cosmos submit`` computes it from the ``s3://`` listing; the task checks it) may
    be served from the cache. A run started from the Kubeflow UI or ``kfp run submit`` passes none, and
    must still work without ever reusing stale data: ``dsl.If(data_fingerprint == "")`` runs the same task
    with caching off, ``dsl.Else`` the cacheable one, and downstream tasks read ``dsl.OneOf`` of the two
    (every ingest output they use). Both tasks are configured from the stage spec (:func:`_configure`);
    only caching and the display name differ. A KFP driver resolves a OneOf of artifacts to the branch that
    ran only since backend 2.17.0 (pipelines/submit.py ``MIN_KFP_BACKEND``). ``opts.local``: one task
    (kfp.local resolves no OneOf of artifacts, and local runs resume by their own key).
    """
    from kfp import dsl

    def task(display: str):
        return _configure(ops, ops.ingest_validate(data_fingerprint=data_fingerprint, **args), opts, display)

    if opts.local:
        one = task("ingest + validate")
        return one.outputs["data"], one.outputs["validation"]
    with dsl.If(data_fingerprint == "", name="no data_fingerprint: ingest never cached"):
        uncached = task("ingest + validate (not cached: no data_fingerprint)")
        uncached.set_caching_options(enable_caching=False)
    with dsl.Else(name="data_fingerprint: ingest cacheable"):
        cached = task("ingest + validate")
    return (
        dsl.OneOf(uncached.outputs["data"], cached.outputs["data"]),
        dsl.OneOf(uncached.outputs["validation"], cached.outputs["validation"]),
    )


def _add_inputs(
    ops,
    opts: PipelineOptions,
    common: dict,
    data_uri,
    val_labels_uri,
    data_fingerprint,
    folds,
    require_source: bool,
    roi_source=None,
):
    """The first two tasks of every DAG: ingest + validate (:func:`_add_ingest`; it also checks the
    compiled K and folds against the run's config, and the data against ``data_fingerprint``), then the
    ROI crop (with the region of ``roi_source`` when the data has no source scans). Returns (crop task,
    the ingested validation set, the crop windows, cropped data)."""
    ingested, validation = _add_ingest(
        ops,
        opts,
        data_fingerprint,
        dict(
            data_uri=data_uri,
            val_labels_uri=val_labels_uri,
            folds=folds,
            compiled_rounds=opts.rounds,
            compiled_folds=",".join(str(int(f)) for f in opts.folds) if opts.unroll_folds else "",
            compiled_dataset_gb=float(opts.dataset_gb),  # ingest refuses data that outgrow the timeouts and disks
            require_source=require_source,
            **common,
        ),
    )
    extra = {"roi_source": roi_source} if roi_source is not None else {}
    crop = _configure(ops, ops.crop_roi(data=ingested, **extra, **common), opts, "crop to the inner-ear region")
    return crop, validation, crop.outputs["roi_records"], crop.outputs["roi_data"]


def build_pipeline(opts: PipelineOptions = PipelineOptions()) -> Callable:
    """The ``cosmos-pipeline`` function for these compile-time options.

    Pipeline parameters (run time):
      data_uri         s3://bucket/prefix or a path in the image; "" = the built-in phantom
      val_labels_uri   validation labels (s3:// or path); "" = those inside the data, if any
      data_fingerprint keys, sizes and ETags of the s3:// data (``cosmos submit`` computes it): KFP's cache
                       key of ingest_validate, checked against the bucket by the task; "" (a run from the
                       Kubeflow UI or ``kfp run submit``) = an ingest that is never cached (:func:`_add_ingest`)
      pseudo_uri       (only in a package compiled with ``start="pseudo"``: ``cosmos selftrain``,
                       ``cosmos compile --from-pseudo``) an existing labelled pseudo-hrT2 folder or
                       s3:// prefix; the translator stages are then not part of the DAG
      profile          tiny | small | paper; must be the compiled one (every task checks)
      config           YAML mapping merged over the profile (e.g. "segmentation: {epochs: 50}")
      folds            nnU-Net folds trained per round (the ParallelFor items; must equal the config's)
      tracking_uri     MLflow tracking URI; "" = $MLFLOW_TRACKING_URI from the Secret
      experiment       MLflow experiment name
      work_root        local runs only: deterministic resumable work dirs; "" on a cluster
    """
    from kfp import dsl

    if opts.rounds < 0:
        raise ValueError("rounds must be >= 0")
    if opts.start not in ("data", "pseudo"):
        raise ValueError(f"start must be data or pseudo, got {opts.start!r}")
    ops = build(opts.image)
    folds_default = [int(f) for f in opts.folds]

    def dag(
        data_uri,
        val_labels_uri,
        data_fingerprint,
        pseudo_uri,
        profile,
        config,
        folds,
        tracking_uri,
        experiment,
        work_root,
    ):
        common = dict(profile=profile, config=config, work_root=work_root, compiled_profile=opts.profile)
        imported = None
        if pseudo_uri is not None:  # first: the region its labels show is where the target scans are cut too
            imp = _configure(ops, ops.import_pseudo(pseudo_uri=pseudo_uri, **common), opts, "import pseudo-hrT2")
            imported = imp.outputs["pseudo"]
        crop, validation, roi_records, data = _add_inputs(
            ops,
            opts,
            common,
            data_uri,
            val_labels_uri,
            data_fingerprint,
            folds,
            require_source=pseudo_uri is None,
            roi_source=imported,
        )
        if imported is not None:
            pseudo = imported
        else:
            trans = _configure(
                ops,
                ops.train_translator(
                    data=data, tracking_uri=tracking_uri, experiment=experiment, overrides="", **common
                ),
                opts,
                "train translator (CycleGAN)",
            )
            conv = _configure(
                ops,
                ops.translate(translator=trans.outputs["translator"], data=data, overrides="", **common),
                opts,
                "translate ceT1 -> pseudo-hrT2",
            )
            pseudo = conv.outputs["pseudo"]
        summary = _add_rounds(
            ops,
            opts,
            rounds=opts.rounds,
            pseudo=pseudo,
            data=data,
            validation=validation,
            roi_records=roi_records,
            folds=folds,
            common=common,
            tracking_uri=tracking_uri,
            experiment=experiment,
        )
        rep = _configure(
            ops,
            ops.report(summary=summary, data=data, pseudo=pseudo, tracking_uri=tracking_uri, **common),
            opts,
            "report",
        )
        return rep.outputs["bundle"]

    decorate = dsl.pipeline(
        name=PIPELINE_NAME,
        description=f"COSMOS ceT1 -> hrT2 domain adaptation: translator, teacher + {opts.rounds} "
        "self-training students (nnU-Net folds in parallel), evaluation, report",
    )
    # Two signatures, because KFP reads the parameters off the function: pseudo_uri exists only where an
    # import_pseudo task reads it (a parameter that does nothing would only mislead).
    if opts.start == "pseudo":

        def cosmos_pipeline_from_pseudo(
            data_uri: str = "",
            val_labels_uri: str = "",
            data_fingerprint: str = "",
            pseudo_uri: str = "",
            profile: str = opts.profile,
            config: str = opts.config,
            folds: list = folds_default,
            tracking_uri: str = opts.tracking_uri,
            experiment: str = opts.experiment,
            work_root: str = opts.work_root,
        ) -> dsl.Dataset:
            return dag(
                data_uri,
                val_labels_uri,
                data_fingerprint,
                pseudo_uri,
                profile,
                config,
                folds,
                tracking_uri,
                experiment,
                work_root,
            )

        return decorate(cosmos_pipeline_from_pseudo)

    def cosmos_pipeline(
        data_uri: str = "",
        val_labels_uri: str = "",
        data_fingerprint: str = "",
        profile: str = opts.profile,
        config: str = opts.config,
        folds: list = folds_default,
        tracking_uri: str = opts.tracking_uri,
        experiment: str = opts.experiment,
        work_root: str = opts.work_root,
    ) -> dsl.Dataset:
        return dag(
            data_uri,
            val_labels_uri,
            data_fingerprint,
            None,
            profile,
            config,
            folds,
            tracking_uri,
            experiment,
            work_root,
        )

    return decorate(cosmos_pipeline)
