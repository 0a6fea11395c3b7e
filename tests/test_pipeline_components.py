"""Components called as plain functions (``component.python_func``) on real library code.

Each component is a thin wrapper: these tests check the wiring (artifact dirs, output parameters,
metadata, the local resume layer) on cheap stages, with phantom data made by the test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_ingest
from kfp.dsl import Dataset, Metrics

from components import build


@pytest.fixture(scope="module")
def ops():
    return build("example.org/cosmos:test")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    from cosmos.data.phantom import make_phantom

    return make_phantom(
        tmp_path_factory.mktemp("phantom") / "data", n_source=2, n_target=2, n_val=2, seed=3, preview=False
    )


SMALL_PHANTOM = "{phantom: {n_source: 2, n_target: 2, n_val: 2, seed: 3}}"


def test_ingest_validate_on_the_builtin_phantom_and_reuse(ops, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    out = Dataset(name="data", uri=str(tmp_path / "run1" / "data"))
    res = run_ingest(ops, out, config=SMALL_PHANTOM, work_root=str(work))
    assert (res.has_val_labels, res.n_source, res.n_target, res.n_validation) == (True, 2, 2, 2)
    root = Path(out.path)
    assert len(list((root / "source_training").glob("*_ceT1.nii.gz"))) == 2
    assert len(list((root / "target_validation_labels").glob("*_Label.nii.gz"))) == 2
    assert out.metadata["n_target"] == 2
    # a second local run reuses the finished stage (no regeneration)
    stamp = (next(work.glob("ingest-*")) / "DONE").stat().st_mtime
    out2 = Dataset(name="data", uri=str(tmp_path / "run2" / "data"))
    res2 = run_ingest(ops, out2, config=SMALL_PHANTOM, work_root=str(work))
    assert tuple(res2) == tuple(res)
    assert (next(work.glob("ingest-*")) / "DONE").stat().st_mtime == stamp
    assert Path(out2.path).resolve() == root.resolve()


def test_ingest_validate_bad_data_is_a_cosmos_error(ops, tmp_path):
    from cosmos.errors import CosmosError

    bad = tmp_path / "bad"
    (bad / "source_training").mkdir(parents=True)
    (bad / "source_training" / "crossmoda_1_ceT1.nii.gz").write_bytes(b"not a nifti")
    out = Dataset(name="data", uri=str(tmp_path / "out"))
    with pytest.raises(CosmosError):
        run_ingest(ops, out, data_uri=str(bad))


def test_evaluate_scores_predictions_and_fills_the_metrics_artifact(ops, phantom, tmp_path):
    preds = tmp_path / "preds"
    preds.mkdir()
    for lab in (phantom / "target_validation_labels").glob("*_Label.nii.gz"):
        shutil.copy(lab, preds / lab.name)  # perfect predictions
    scores = Dataset(name="scores", uri=str(tmp_path / "scores"))
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    no_run = Dataset(name="r", uri=str(tmp_path / "no-run"))  # MLflow not configured
    res = ops.evaluate.python_func(
        predictions=Dataset(name="p", uri=str(preds)),
        data=Dataset(name="d", uri=str(phantom)),
        roi_data=Dataset(name="d", uri=str(phantom)),
        round_index=0,
        round_run=no_run,
        profile="tiny",
        config="",
        overrides="",
        tracking_uri=f"sqlite:///{tmp_path}/m.db",
        work_root="",
        scores=scores,
        metrics=metrics,
    )
    assert res.has_metrics is True and res.mean_dice == pytest.approx(1.0)
    result = json.loads((Path(scores.path) / "metrics.json").read_text())
    assert result["summary"]["VS"]["dice_mean"] == pytest.approx(1.0)
    assert metrics.metadata["VS_dice_mean"] == pytest.approx(1.0)
    assert metrics.metadata["cochlea_assd_mean"] == pytest.approx(0.0)


def test_evaluate_without_labels_records_that_and_scores_nothing(ops, phantom, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantom, data)
    shutil.rmtree(data / "target_validation_labels")
    scores = Dataset(name="scores", uri=str(tmp_path / "scores"))
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    no_run = Dataset(name="r", uri=str(tmp_path / "no-run"))
    res = ops.evaluate.python_func(
        predictions=Dataset(name="p", uri=str(tmp_path)),
        data=Dataset(name="d", uri=str(data)),
        roi_data=Dataset(name="d", uri=str(data)),
        round_index=1,
        round_run=no_run,
        profile="tiny",
        config="",
        overrides="",
        tracking_uri=f"sqlite:///{tmp_path}/m.db",
        work_root="",
        scores=scores,
        metrics=metrics,
    )
    assert res.has_metrics is False
    assert not (Path(scores.path) / "metrics.json").exists() and metrics.metadata == {}


# ------------------------------------------------------------------------------ the whole chain
# Every other component, called in DAG order through ``python_func`` on a cut budget (no kfp.local,
# no subprocesses): the wiring of each one to its single library step.
CHAIN_CONFIG = (
    "{phantom: {n_source: 2, n_target: 2, n_val: 2, seed: 3}, "
    "translator: {epochs: 1, slices_per_epoch: 8, batch_size: 4}, "
    "segmentation: {epochs: 1, iterations_per_epoch: 2, val_iterations_per_epoch: 1, mirroring: false, "
    "num_folds: 2, folds: [0]}, selftraining: {rounds: 1, student_init: teacher}}"
)


@pytest.fixture(scope="module")
def chain(ops, tmp_path_factory):
    from kfp.dsl import HTML, Markdown, Model

    tmp = tmp_path_factory.mktemp("chain")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    common = dict(profile="tiny", config=CHAIN_CONFIG, work_root="")

    def art(cls, name):
        return cls(name=name, uri=str(tmp / name))

    out: dict = {}
    data = art(Dataset, "data")
    original = art(Dataset, "original")
    ops.ingest_validate.python_func(
        data_uri="", val_labels_uri="", folds=[0], compiled_rounds=1, require_source=True, data=original, **common
    )
    out["n_cropped"] = ops.crop_roi.python_func(data=original, roi_data=data, **common)
    translator = art(Model, "translator")
    out["translator"] = ops.train_translator.python_func(
        data=data, overrides="", tracking_uri=uri, experiment="t", translator=translator, **common
    )
    pseudo = art(Dataset, "pseudo")
    out["n_pseudo"] = ops.translate.python_func(translator=translator, data=data, overrides="", pseudo=pseudo, **common)
    kept = summary = models = None
    for k in (0, 1):
        prepared = art(Dataset, f"prepared{k}")
        extra = {"kept_labels": kept} if kept is not None else {}
        out[f"n_cases{k}"] = ops.prepare_round.python_func(
            pseudo=pseudo, data=data, round_index=k, overrides="", prepared=prepared, **extra, **common
        )
        run_info = art(Dataset, f"run{k}")
        out[f"run_id{k}"] = ops.start_round_run.python_func(
            prepared=prepared,
            round_index=k,
            overrides="",
            tracking_uri=uri,
            experiment="t",
            run_info=run_info,
            **common,
        )
        model = art(Model, f"fold{k}")
        extra = {"teacher_models": models} if models is not None else {}
        ops.train_fold.python_func(
            prepared=prepared,
            fold=0,
            round_index=k,
            round_run=run_info,
            overrides="",
            tracking_uri=uri,
            experiment="t",
            model=model,
            **extra,
            **common,
        )
        labels, kept_new = art(Dataset, f"labels{k}"), art(Dataset, f"kept{k}")
        extra = {"previous_kept": kept} if kept is not None else {}
        out[f"filter{k}"] = ops.predict_pseudo_labels.python_func(
            fold_models=[model],
            data=data,
            round_index=k,
            round_run=run_info,
            overrides="",
            tracking_uri=uri,
            pseudo_labels=labels,
            kept_labels=kept_new,
            **extra,
            **common,
        )
        preds = art(Dataset, f"preds{k}")
        out[f"n_val{k}"] = ops.predict_validation.python_func(
            fold_models=[model], data=data, round_index=k, overrides="", predictions=preds, **common
        )
        scores, metrics = art(Dataset, f"scores{k}"), Metrics(name="m", uri=str(tmp / f"m{k}"))
        ops.evaluate.python_func(
            predictions=preds,
            data=original,
            roi_data=data,
            round_index=k,
            round_run=run_info,
            overrides="",
            tracking_uri=uri,
            scores=scores,
            metrics=metrics,
            **common,
        )
        new_summary, models = art(Dataset, f"summary{k}"), art(Model, f"models{k}")
        extra = {"previous": summary} if summary is not None else {}
        out[f"version{k}"] = ops.register_round.python_func(
            fold_models=[model],
            scores=scores,
            val_predictions=preds,
            round_run=run_info,
            round_index=k,
            is_final=k == 1,
            overrides="",
            tracking_uri=uri,
            experiment="t",
            summary=new_summary,
            models=models,
            pseudo_labels=labels,
            kept_labels=kept_new,
            **extra,
            **common,
        )
        summary, kept = new_summary, kept_new
    bundle = art(Dataset, "bundle")
    out["dice"] = ops.report.python_func(
        summary=summary,
        data=data,
        pseudo=pseudo,
        tracking_uri=uri,
        bundle=bundle,
        report_md=Markdown(name="md", uri=str(tmp / "r.md")),
        report_html=HTML(name="html", uri=str(tmp / "r.html")),
        **common,
    )
    table = art(Dataset, "table")
    out["closure"] = ops.benchmark_table.python_func(
        cosmos_rows=summary, table=table, table_md=Markdown(name="t", uri=str(tmp / "t.md")), **common
    )
    out.update(
        tmp=tmp,
        uri=uri,
        original=Path(original.path),
        summary=Path(summary.path),
        bundle=Path(bundle.path),
        table=Path(table.path),
        pseudo=Path(pseudo.path),
        models=Path(models.path),
    )
    return out


@pytest.mark.slow
def test_chain_translator_and_translate(chain):
    assert chain["translator"].run_id and chain["translator"].model_version == "1"
    assert chain["n_pseudo"] == 2
    assert len(list(chain["pseudo"].glob("*_hrT2pseudo.nii.gz"))) == 2


@pytest.mark.slow
def test_chain_rounds_register_versions_and_summarize(chain):
    assert chain["run_id0"] and chain["run_id1"] and chain["run_id0"] != chain["run_id1"]
    assert (chain["version0"], chain["version1"]) == ("1", "2")
    assert chain["n_cases0"] == 2 and chain["n_val0"] == 2
    rounds = json.loads((chain["summary"] / "rounds.json").read_text())
    assert [r["name"] for r in rounds] == ["teacher", "student 1"]
    assert all(r["gate"]["policy"] == "better" for r in rounds) and sum(r["champion"] for r in rounds) >= 1
    assert set(chain["filter1"]._fields) == {"n_kept", "n_dropped"}


@pytest.mark.slow
def test_chain_student_warm_starts_from_the_teacher_models(chain):
    # register_round hands the fold models on when selftraining.student_init = teacher
    assert (chain["models"] / "fold_0" / "checkpoint_final.pth").is_file()
    fold1 = json.loads(next((chain["tmp"] / "fold1").rglob("cosmos_fold.json")).read_text())
    assert fold1["round_index"] == 1 and fold1["init"]["from"]


@pytest.mark.slow
def test_chain_final_predictions_are_on_the_original_grids(chain):
    from cosmos.data.nifti import load, same_grid

    assert chain["n_cropped"] >= 0 and (chain["tmp"] / "data" / "roi.json").is_file()
    preds = sorted((chain["bundle"] / "predictions").glob("*_Label.nii.gz"))
    assert len(preds) == 2
    for p in preds:
        case = p.name.removesuffix("_Label.nii.gz")
        assert (
            same_grid(load(p, label=True), load(chain["original"] / "target_validation" / f"{case}_hrT2.nii.gz"))
            is None
        )


@pytest.mark.slow
def test_chain_report_and_benchmark_table(chain):
    assert (chain["bundle"] / "report" / "report.html").is_file()
    assert (chain["tmp"] / "r.md").read_text().startswith("#")
    assert chain["dice"] != "" and (chain["bundle"] / "summary.json").is_file()
    result = json.loads((chain["table"] / "benchmark.json").read_text())
    assert [r["name"] for r in result["rows"]] == ["DA w/ Seg., w/o ST", "COSMOS (ST iter1)"]
    assert chain["closure"] == "n/a"  # no oracle row


def test_import_pseudo_and_labelled_as_pseudo(ops, phantom, tmp_path):
    src = Dataset(name="s", uri=str(tmp_path / "src"))
    n = ops.labelled_as_pseudo.python_func(
        data=Dataset(name="d", uri=str(phantom)), which="source", profile="tiny", config="", work_root="", pseudo=src
    )
    assert n == 2 and len(list(Path(src.path).glob("*_hrT2pseudo.nii.gz"))) == 2
    imported = Dataset(name="i", uri=str(tmp_path / "imp"))
    assert (
        ops.import_pseudo.python_func(pseudo_uri=src.path, profile="tiny", config="", work_root="", pseudo=imported)
        == 2
    )
    from cosmos.errors import CosmosError

    with pytest.raises(CosmosError, match="oracle"):
        ops.labelled_as_pseudo.python_func(
            data=Dataset(name="d", uri=str(phantom)),
            which="target",
            profile="tiny",
            config="",
            work_root="",
            pseudo=Dataset(name="x", uri=str(tmp_path / "x")),
        )


def test_ingest_refuses_a_config_that_disagrees_with_the_compiled_dag(ops, tmp_path):
    from cosmos.errors import CosmosError

    out = Dataset(name="data", uri=str(tmp_path / "d"))
    with pytest.raises(CosmosError, match="recompile"):
        run_ingest(ops, out, compiled_rounds=3)
    with pytest.raises(CosmosError, match="folds"):
        run_ingest(ops, out, folds=[0, 1, 2, 3, 4])


@pytest.mark.slow
def test_chain_model_crops_whole_scans_like_its_training_data(chain, tmp_path):
    """The fold models carry their ROI; segmenting a whole (uncropped) scan crops it the same way and
    returns the labels on the scan's own grid (what cosmos predict / cosmos serve get)."""
    from cosmos.config import load_config
    from cosmos.data import roi
    from cosmos.data.nifti import load, same_grid
    from cosmos.segmentation.registry import segment_files

    fold = chain["models"] / "fold_0"
    assert roi.model_of(fold) is not None
    scan = sorted((chain["original"] / "target_validation").glob("*_hrT2.nii.gz"))[0]
    cfg = load_config("tiny", overrides=["segmentation.mirroring=false"])
    (out,) = segment_files([fold], [scan], tmp_path / "seg", cfg)
    assert same_grid(load(out, label=True), load(scan)) is None
