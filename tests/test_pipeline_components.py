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
        validation=Dataset(name="v", uri=str(phantom)),
        roi_records=Dataset(name="r", uri=str(tmp_path / "no-crop")),  # no roi.json: predictions on the whole grids
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
        validation=Dataset(name="v", uri=str(data)),
        roi_records=Dataset(name="r", uri=str(tmp_path / "no-crop")),
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


# -- one folder per stage ------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def test_each_stage_is_found_from_its_name_in_one_step():
    """components/<name>/ holds the stage's component and its spec, and nothing else is a stage folder."""
    import importlib

    from components import SPECS, STAGE_NAMES, STAGES
    from components.spec import StageSpec

    folders = {p.parent.name for p in (REPO / "components").glob("*/__init__.py")}
    assert folders == set(STAGE_NAMES)
    for name in STAGE_NAMES:
        folder = REPO / "components" / name
        assert (folder / "component.py").is_file() and (folder / "spec.py").is_file(), name
        module = importlib.import_module(f"components.{name}")
        assert isinstance(module.SPEC, StageSpec) and module.SPEC.name == name
        assert getattr(module, name) is STAGES[name] is module.SPEC.component
        assert SPECS[name] is module.SPEC
        assert STAGES[name].__module__ == f"components.{name}.component"


def test_built_components_know_their_spec(ops):
    from kfp import dsl

    from components import SPECS, STAGE_NAMES

    assert list(ops) == list(STAGE_NAMES)
    seen = {}

    @dsl.pipeline(name="probe")  # no parameters: this module's annotations are strings, KFP wants types
    def probe():
        task = ops.import_pseudo(pseudo_uri="", profile="tiny", config="", work_root="")
        seen["spec"] = ops.spec_of(task)

    assert probe is not None and seen["spec"] is SPECS["import_pseudo"]
    with pytest.raises(AttributeError, match="no stage 'train_everything'"):
        _ = ops.train_everything


def test_the_package_build_finds_every_stage_folder():
    """The wheel (and the Docker image, which pip-installs the repository) must ship components/<stage>/."""
    import tomllib
    from setuptools import find_packages

    from components import STAGE_NAMES

    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    found = set(find_packages(where=str(REPO), include=find["include"]))
    assert {f"components.{name}" for name in STAGE_NAMES} | {"components"} <= found


# -- issue 27: what a task checks and fetches on a cluster ----------------------------------------


def test_a_run_time_profile_other_than_the_compiled_one_stops_the_task_before_any_work(ops, phantom, tmp_path):
    from cosmos.errors import CosmosError

    out = Dataset(name="x", uri=str(tmp_path / "x"))
    with pytest.raises(CosmosError) as err:
        ops.labelled_as_pseudo.python_func(
            data=Dataset(name="d", uri=str(phantom)),
            which="source",
            profile="paper",
            config="",
            work_root="",
            pseudo=out,
            compiled_profile="tiny",
        )
    assert len(str(err.value).splitlines()) == 1
    assert "profile='paper'" in str(err.value) and "compiled for profile 'tiny'" in str(err.value)
    assert not Path(out.path).exists() or not any(Path(out.path).iterdir())  # nothing was done
    # the same call with the compiled profile works
    n = ops.labelled_as_pseudo.python_func(
        data=Dataset(name="d", uri=str(phantom)),
        which="source",
        profile="tiny",
        config="",
        work_root="",
        pseudo=out,
        compiled_profile="tiny",
    )
    assert n == 2


def test_ingest_writes_the_validation_set_as_its_own_artifact(ops, tmp_path):
    data = Dataset(name="data", uri=str(tmp_path / "data"))
    validation = Dataset(name="validation", uri=str(tmp_path / "validation"))
    res = run_ingest(ops, data, validation=validation, config=SMALL_PHANTOM)
    folders = sorted(p.name for p in Path(validation.path).iterdir() if p.is_dir())
    assert folders == ["target_validation", "target_validation_labels"]
    for folder in folders:  # the same files as in the whole ingest, byte for byte
        names = sorted(p.name for p in (Path(data.path) / folder).iterdir())
        assert names == sorted(p.name for p in (Path(validation.path) / folder).iterdir()) and len(names) == 2
        for name in names:
            assert (Path(data.path) / folder / name).read_bytes() == (
                Path(validation.path) / folder / name
            ).read_bytes()
    assert validation.metadata["n_validation"] == res.n_validation == 2


def test_crop_roi_hands_the_crop_windows_on_alone(ops, phantom, tmp_path):
    roi_data = Dataset(name="roi", uri=str(tmp_path / "roi"))
    records = Dataset(name="records", uri=str(tmp_path / "records"))
    ops.crop_roi.python_func(
        data=Dataset(name="d", uri=str(phantom)),
        profile="tiny",
        config="",
        work_root="",
        roi_data=roi_data,
        roi_records=records,
    )
    assert sorted(p.name for p in Path(records.path).iterdir() if not p.name.startswith(".")) == ["roi.json"]
    assert (Path(records.path) / "roi.json").read_bytes() == (Path(roi_data.path) / "roi.json").read_bytes()
    windows = json.loads((Path(records.path) / "roi.json").read_text())["files"]
    assert any(k.startswith("target_validation/") for k in windows)


def test_unrolled_fold_inputs_and_the_compiled_fold_check():
    from types import SimpleNamespace

    from components._runtime import check_unrolled_folds, fold_model_paths
    from cosmos.errors import CosmosError

    m = [SimpleNamespace(path=f"/a/fold_{i}") for i in range(3)]
    assert fold_model_paths(None, (m[2], None, m[0], m[1], None)) == ["/a/fold_0", "/a/fold_1", "/a/fold_2"]
    assert fold_model_paths([m[1], m[0]], (None,) * 5) == ["/a/fold_0", "/a/fold_1"]
    with pytest.raises(CosmosError, match="no fold models"):
        fold_model_paths([], (None,) * 5)
    check_unrolled_folds("", [0, 1, 2])  # the ParallelFor package follows the parameter
    check_unrolled_folds("0,2", [2.0, 0.0])
    with pytest.raises(CosmosError, match="--unroll-folds for folds \\[0, 2\\]"):
        check_unrolled_folds("0,2", [0, 1, 2])


def test_import_pseudo_reads_an_s3_prefix(ops, phantom, tmp_path, real_s3_env):
    """pseudo_uri on a cluster: an s3:// prefix of a labelled pseudo-hrT2 folder (REAL S3: SeaweedFS)."""
    import boto3

    from cosmos.data.storage import upload

    src = Dataset(name="s", uri=str(tmp_path / "src"))
    ops.labelled_as_pseudo.python_func(
        data=Dataset(name="d", uri=str(phantom)), which="source", profile="tiny", config="", work_root="", pseudo=src
    )
    boto3.client("s3", endpoint_url=real_s3_env).create_bucket(Bucket="pseudo-in")
    upload(src.path, "s3://pseudo-in/pseudo")
    imported = Dataset(name="i", uri=str(tmp_path / "imp"))
    n = ops.import_pseudo.python_func(
        pseudo_uri="s3://pseudo-in/pseudo", profile="tiny", config="", work_root="", pseudo=imported
    )
    assert n == 2
    assert len(list(Path(imported.path).glob("*_hrT2pseudo.nii.gz"))) == 2
    assert not [p for p in Path(imported.path).parent.iterdir() if p.name.startswith("pseudo-")]  # no temp left


def test_ingest_on_s3_without_a_data_fingerprint_runs_and_a_stale_one_is_refused(
    ops, phantom, tmp_path, real_s3_env, capsys
):
    """A cluster run started from the Kubeflow UI or ``kfp run submit`` passes no data_fingerprint: its ingest
    of s3:// data (REAL S3: SeaweedFS) runs, in the DAG branch whose caching is off, and says in one line how
    to make it cacheable. A fingerprint that is not the data's still stops the task (it guards the cache)."""
    import boto3

    from components._runtime import data_fingerprint
    from cosmos.data.storage import upload
    from cosmos.errors import CosmosError

    boto3.client("s3", endpoint_url=real_s3_env).create_bucket(Bucket="nofp")
    upload(str(phantom), "s3://nofp/crossmoda")
    uri = "s3://nofp/crossmoda"
    out = Dataset(name="data", uri=str(tmp_path / "run" / "data"))
    res = run_ingest(ops, out, data_uri=uri, data_fingerprint="", work_root="")  # work_root "": the cluster
    assert (res.n_source, res.n_target, res.n_validation) == (2, 2, 2)
    assert len(list((Path(out.path) / "source_training").glob("*_ceT1.nii.gz"))) == 2
    said = [line for line in capsys.readouterr().err.splitlines() if "data_fingerprint is empty" in line]
    assert len(said) == 1 and f"data_fingerprint={data_fingerprint(uri)}" in said[0] and "cosmos submit" in said[0]
    # the data changes after the submitter fingerprinted it: refused, in one line, before anything is copied
    stale = data_fingerprint(uri)
    boto3.client("s3", endpoint_url=real_s3_env).put_object(Bucket="nofp", Key="crossmoda/extra.txt", Body=b"x")
    out2 = Dataset(name="data", uri=str(tmp_path / "run2" / "data"))
    with pytest.raises(CosmosError, match="changed since the run was submitted") as err:
        run_ingest(ops, out2, data_uri=uri, data_fingerprint=stale, work_root="")
    assert "\n" not in str(err.value) and not Path(out2.path).exists()
    # a local run (work_root set) needs no fingerprint and says nothing about KFP's cache
    work = tmp_path / "work"
    work.mkdir()
    run_ingest(
        ops,
        Dataset(name="data", uri=str(tmp_path / "run3" / "data")),
        data_uri=uri,
        data_fingerprint="",
        work_root=str(work),
    )
    assert "data_fingerprint" not in capsys.readouterr().err
