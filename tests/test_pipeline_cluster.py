"""Cluster settings in the compiled cosmos-pipeline IR: resources, /dev/shm, timeouts, retries,
caching of side-effect stages, the scratch volume, and the cluster fail-fast on MLflow.

Offline only: the pipeline is compiled to YAML and the IR / platform spec are inspected. No
cluster is involved, so what a KFP backend then does with these fields is NOT tested here (the
minimum backend that accepts them is checked by ``cosmos submit``, see pipelines/submit.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from components import GPU_STAGES, SPECS, STAGES
from components.spec import PROFILES, Caching, StageSpec
from pipelines.compile import compile_pipeline
from pipelines.resources import (
    PROFILE_RESOURCES,
    RETRY_STAGES,
    SHM_STAGES,
    SIDE_EFFECT_STAGES,
    ScratchVolume,
    StageResources,
    quantity,
    stage_resources,
)
from pipelines.task_settings import EXTERNAL_INPUT_STAGES, SECRET_STAGES, PipelineOptions


def _compile(tmp_path: Path, benchmark: bool = False, **kw) -> tuple[dict, dict]:
    path = tmp_path / f"p-{len(list(tmp_path.iterdir()))}.yaml"
    compile_pipeline(str(path), PipelineOptions(**kw), benchmark=benchmark)
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], (docs[1] if len(docs) == 2 else {})


def _stage(name: str) -> str:
    """'train-fold-2' / 'comp-train-fold-2' / 'exec-train-fold-2' -> 'train_fold'."""
    base = re.sub(r"^(comp|exec)-", "", name)
    return re.sub(r"-\d+$", "", base).replace("-", "_")


def _all_tasks(spec: dict):
    """(stage, task) for every task, including those inside ParallelFor sub-DAGs."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        for name, task in dag["tasks"].items():
            if not name.startswith(("for-loop", "condition")):
                yield _stage(task["componentRef"]["name"]), task


def _executors(spec: dict, platform: dict):
    """(stage, container spec, kubernetes platform executor config) per executor."""
    k8s = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    for label, ex in spec["deploymentSpec"]["executors"].items():
        yield _stage(label), ex["container"], k8s.get(label, {})


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("paper"), rounds=1)


@pytest.fixture(scope="module")
def paper_benchmark(tmp_path_factory):
    """cosmos-benchmark: the stages cosmos-pipeline does not use (ablation rows, Table 1)."""
    return _compile(tmp_path_factory.mktemp("bench"), benchmark=True, rounds=0)


def test_every_stage_has_an_explicit_entry_in_every_profile():
    for profile, table in PROFILE_RESOURCES.items():
        assert set(STAGES) <= set(table), profile


def test_the_resource_tables_name_no_stage_that_has_no_spec():
    """Every stage-keyed table in pipelines/ is read off the specs: nothing there names another stage."""
    assert list(PROFILE_RESOURCES) == list(PROFILES)
    for profile, table in PROFILE_RESOURCES.items():
        assert list(table) == list(SPECS), profile
        assert all(table[name] == spec.resources[profile] for name, spec in SPECS.items()), profile
    for table in (SIDE_EFFECT_STAGES, SHM_STAGES, RETRY_STAGES, GPU_STAGES, SECRET_STAGES, EXTERNAL_INPUT_STAGES):
        assert table <= set(SPECS), sorted(table - set(SPECS))
    assert set(ScratchVolume().stages) == {name for name, spec in SPECS.items() if spec.scratch}
    # and each table is exactly what the specs say
    assert SIDE_EFFECT_STAGES == {n for n, s in SPECS.items() if s.caching is Caching.SIDE_EFFECTS}
    assert EXTERNAL_INPUT_STAGES == {n for n, s in SPECS.items() if s.caching is Caching.EXTERNAL_INPUT}
    assert SECRET_STAGES == {n for n, s in SPECS.items() if s.secret}


def test_every_spec_passes_the_compile_time_checks_in_every_profile():
    for name in SPECS:
        for profile in PROFILES:
            stage_resources(profile, name)  # raises on a request over its limit, a bad quantity, a shm too big


def test_a_stage_without_a_spec_is_refused():
    with pytest.raises(ValueError, match="no stage 'train_everything'"):
        stage_resources("paper", "train_everything")
    with pytest.raises(ValueError, match="not pipeline stages"):
        ScratchVolume(stages=("prepare_round", "train_everything"))


def _spec(**kw) -> StageSpec:
    def some_stage() -> int:
        return 0

    res = StageResources("1", "2", "1Gi", "2Gi", 60)
    kw.setdefault("resources", {p: res for p in PROFILES})
    return StageSpec(some_stage, **kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(resources={"tiny": StageResources("1", "2", "1Gi", "2Gi")}), "missing"),
        (dict(shm=True), "/dev/shm size is required"),
        (dict(resources={p: StageResources("1", "2", "1Gi", "4Gi", shm="1Gi") for p in PROFILES}), "/dev/shm"),
        (dict(resources={p: StageResources("1", "2", "1Gi", "4Gi", retries=2) for p in PROFILES}), "does not retry"),
    ],
)
def test_a_contradictory_spec_fails_when_it_is_declared(kw, match):
    with pytest.raises(ValueError, match=match):
        _spec(**kw)
    assert _spec().name == "some_stage" and _spec().cacheable


def test_every_task_requests_and_limits_cpu_and_memory(paper, paper_benchmark):
    seen = set()
    for spec, platform in (paper, paper_benchmark):
        for stage, container, _ in _executors(spec, platform):
            want = stage_resources("paper", stage)
            res = container["resources"]
            assert res["resourceCpuRequest"] == want.cpu_request and res["resourceCpuLimit"] == want.cpu_limit, stage
            assert res["resourceMemoryRequest"] == want.memory_request, stage
            assert res["resourceMemoryLimit"] == want.memory_limit, stage
            seen.add(stage)
    # the two DAGs together use every stage except import_pseudo (``cosmos selftrain``'s start)
    assert seen >= set(STAGES) - {"import_pseudo"}


def test_translate_and_the_nnunet_stages_run_on_gpu(paper):
    spec, platform = paper
    assert {"translate", "train_translator", "train_fold", "predict_validation", "predict_pseudo_labels"} <= GPU_STAGES
    for stage, container, plat in _executors(spec, platform):
        acc = container["resources"].get("accelerator")
        if stage in GPU_STAGES:
            assert acc["resourceType"] == "nvidia.com/gpu" and int(acc["resourceCount"]) == 1, stage
            assert any(t["key"] == "nvidia.com/gpu" for t in plat["tolerations"]), stage
        else:
            assert acc is None, stage


def test_memory_backed_dev_shm_on_fold_training_and_every_prediction(paper):
    spec, platform = paper
    for stage, container, plat in _executors(spec, platform):
        mounts = [m for m in plat.get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
        if stage in SHM_STAGES:
            assert len(mounts) == 1, stage
            assert mounts[0]["medium"] == "Memory"
            assert mounts[0]["sizeLimit"] == stage_resources("paper", stage).shm
            # RAM-backed: it must fit under the container's memory limit with room for the process
            limit = quantity(container["resources"]["resourceMemoryLimit"])
            assert quantity(mounts[0]["sizeLimit"]) <= limit / 2
        else:
            assert not mounts, stage
    assert SHM_STAGES == {"train_fold", "predict_validation", "predict_pseudo_labels"}


def test_timeouts_on_every_stage_and_retries_on_train_fold_only(paper):
    spec, platform = paper
    for stage, _, plat in _executors(spec, platform):
        assert int(plat["activeDeadlineSeconds"]) == stage_resources("paper", stage).timeout_s > 0, stage
    retried = set()
    for stage, task in _all_tasks(spec):
        policy = task.get("retryPolicy")
        if stage in RETRY_STAGES:
            assert policy["maxRetryCount"] == PROFILE_RESOURCES["paper"]["train_fold"].retries >= 1
            assert policy["backoffDuration"] == "120s" and policy["backoffMaxDuration"] == "3600s"
            retried.add(stage)
        else:
            assert policy is None, stage
    assert retried == {"train_fold"}


def test_retried_folds_get_the_run_id_that_keys_their_checkpoints(paper, paper_benchmark):
    """Every train_fold task gets KFP's run id (the same for each retry of the task): it keys the fold's
    object-store checkpoints (segmentation.checkpoint_uri), so a retried pod resumes (tests/test_checkpoint_sync.py)."""
    from kfp import dsl

    folds = [task for spec, _ in (paper, paper_benchmark) for stage, task in _all_tasks(spec) if stage == "train_fold"]
    assert len(folds) >= 2
    for task in folds:
        assert task["inputs"]["parameters"]["pipeline_run_id"] == {
            "runtimeValue": {"constant": dsl.PIPELINE_JOB_ID_PLACEHOLDER}
        }


def test_side_effect_stages_are_never_cached(paper, paper_benchmark):
    """... nor the stages that read a URI whose contents can change under the same string (KFP's key
    would see the string only; their own stage key fingerprints the data)."""
    from pipelines.task_settings import EXTERNAL_INPUT_STAGES

    assert {"start_round_run", "register_round", "report", "evaluate", "train_translator"} <= SIDE_EFFECT_STAGES
    assert {"import_pseudo"} <= EXTERNAL_INPUT_STAGES
    # ingest_validate is cacheable: data_fingerprint (an input, so in KFP's cache key) follows the data
    assert "ingest_validate" not in EXTERNAL_INPUT_STAGES | SIDE_EFFECT_STAGES
    never = SIDE_EFFECT_STAGES | EXTERNAL_INPUT_STAGES
    seen = set()
    for spec, _ in (paper, paper_benchmark):
        ingest = []
        for stage, task in _all_tasks(spec):
            enabled = task.get("cachingOptions", {}).get("enableCache", False)
            if stage == "ingest_validate":  # two: without a data_fingerprint never cached, with one cacheable
                ingest.append(enabled)
                continue
            assert enabled is (stage not in never), stage
            seen.add(stage)
        assert sorted(ingest) == [False, True]
    assert SIDE_EFFECT_STAGES & seen == SIDE_EFFECT_STAGES


def test_caching_off_switch_still_disables_everything(tmp_path):
    spec, _ = _compile(tmp_path, rounds=0, caching=False)
    assert not any(t.get("cachingOptions", {}).get("enableCache") for _, t in _all_tasks(spec))


def test_overrides_shm_retries_and_timeouts_switch(tmp_path):
    big = StageResources("1", "2", "1Gi", "64Gi", 60, shm="20Gi")
    spec, platform = _compile(
        tmp_path,
        rounds=0,
        shm_size="4Gi",
        retries=5,
        timeouts=False,
        resources=(("report", StageResources("250m", "500m", "256Mi", "512Mi", 60)), ("train_fold", big)),
    )
    for stage, container, plat in _executors(spec, platform):
        assert "activeDeadlineSeconds" not in plat, stage
        if stage == "report":
            assert container["resources"]["resourceMemoryLimit"] == "512Mi"
        if stage == "train_fold":
            assert container["resources"]["resourceMemoryLimit"] == "64Gi"
        if stage in SHM_STAGES:
            assert plat["emptyDirMounts"][0]["sizeLimit"] == "4Gi"  # shm_size wins over the table
    assert [t["retryPolicy"]["maxRetryCount"] for s, t in _all_tasks(spec) if s == "train_fold"] == [5]


def test_cpu_profiles_compile_without_retries(tmp_path):
    """tiny/small mostly run under kfp.local, which honours retries: none there."""
    spec, platform = _compile(tmp_path, rounds=0, profile="tiny", use_gpu=False, secret=None)
    assert all("retryPolicy" not in t for _, t in _all_tasks(spec))
    fold = next(c for s, c, _ in _executors(spec, platform) if s == "train_fold")
    assert fold["resources"]["resourceMemoryLimit"] == PROFILE_RESOURCES["tiny"]["train_fold"].memory_limit


def test_generic_ephemeral_scratch_volume(tmp_path):
    scratch = ScratchVolume(kind="ephemeral", size="500Gi", storage_class="fast-ssd")
    spec, platform = _compile(tmp_path, rounds=0, scratch=scratch)
    for stage, _, plat in _executors(spec, platform):
        vols = plat.get("genericEphemeralVolume", [])
        if stage in scratch.stages:
            assert len(vols) == 1, stage
            v = vols[0]
            assert (v["mountPath"], v["size"], v["storageClassName"]) == ("/s3", "500Gi", "fast-ssd")
            assert v["accessModes"] == ["ReadWriteOnce"]
        else:
            assert not vols, stage


def test_existing_pvc_scratch_volume(tmp_path):
    scratch = ScratchVolume(kind="pvc", pvc_name="cosmos-scratch", mount_path="/minio", stages=("prepare_round",))
    spec, platform = _compile(tmp_path, rounds=0, scratch=scratch)
    mounted = {stage: plat["pvcMount"] for stage, _, plat in _executors(spec, platform) if "pvcMount" in plat}
    assert set(mounted) == {"prepare_round"}
    m = mounted["prepare_round"][0]
    assert m["mountPath"] == "/minio" and m["pvcNameParameter"]["runtimeValue"]["constant"] == "cosmos-scratch"


@pytest.mark.parametrize(
    "bad",
    [
        dict(kind="nfs"),
        dict(kind="pvc"),
        dict(size="lots"),
        dict(mount_path="s3"),
    ],
)
def test_scratch_volume_rejects(bad):
    with pytest.raises(ValueError):
        ScratchVolume(**bad)


@pytest.mark.parametrize(
    "res, match",
    [
        (StageResources("4", "2", "1Gi", "2Gi"), "cpu request"),
        (StageResources("1", "2", "4Gi", "2Gi"), "memory request"),
        (StageResources("1", "2", "1Gi", "16GB"), "not a Kubernetes quantity"),
        (StageResources("1", "2", "1Gi", "8Gi", shm="6Gi"), "charged to the memory limit"),
    ],
)
def test_stage_resources_refuse_what_the_cluster_would_reject(res, match):
    with pytest.raises(ValueError, match=match):
        stage_resources("paper", "train_fold", {"train_fold": res})


def test_unknown_resource_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="no resource table for profile 'huge'"):
        stage_resources("huge", "train_fold")


def test_quantity():
    assert quantity("500m") == pytest.approx(0.5)
    assert quantity("16Gi") == 16 * 2**30
    assert quantity("2") == 2


# -- fail fast on the cluster: MLflow without a tracking URI ----------------------------------


def test_cluster_stage_without_tracking_uri_stops_naming_the_secret_key(tmp_path, monkeypatch):
    from components import _runtime as rt
    from cosmos.errors import CosmosError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(CosmosError) as info:
        rt.tracking("", tmp_path, cluster=True)
    message = str(info.value)
    assert "MLFLOW_TRACKING_URI" in message and "\n" not in message
    # the same through the stage wrapper in cluster mode (work_root == "")
    with pytest.raises(CosmosError, match="MLFLOW_TRACKING_URI"):
        rt.run("s", {"out": str(tmp_path / "out")}, lambda out: rt.tracking("", out["out"]), key="k", work_root="")


def test_cluster_stage_uses_the_secret_or_the_parameter(tmp_path, monkeypatch):
    from components import _runtime as rt

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://cosmos-mlflow:5000")
    assert rt.tracking("", tmp_path, cluster=True) == "http://cosmos-mlflow:5000"
    assert rt.tracking("http://other:5000", tmp_path, cluster=True) == "http://other:5000"


def test_local_stage_still_falls_back_to_sqlite(tmp_path, monkeypatch):
    from components import _runtime as rt

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert rt.tracking("", tmp_path).startswith("sqlite:///")  # outside any stage: local helper use
    work = tmp_path / "work"
    work.mkdir()
    uri = rt.run(
        "s",
        {"out": str(tmp_path / "out")},
        lambda out: {"uri": rt.tracking("", out["out"])},
        key="k",
        work_root=str(work),
    )["uri"]
    assert uri.startswith("sqlite:///")


# -- cosmos compile: the same choices from the command line ------------------------------------


def test_cosmos_compile_cli_cluster_flags(tmp_path, capsys):
    from cosmos.cli import main

    out = tmp_path / "p.yaml"
    rc = main(
        [
            "compile",
            "-o",
            str(out),
            "--rounds",
            "0",
            "--shm-size",
            "4Gi",
            "--fold-retries",
            "1",
            "--no-timeouts",
            "--scratch-volume",
            "ephemeral:300Gi:fast-ssd",
            "--scratch-mount",
            "/minio",
        ]
    )
    assert rc == 0
    docs = list(yaml.safe_load_all(out.read_text()))
    spec, platform = docs[0], docs[1]
    assert [t["retryPolicy"]["maxRetryCount"] for s, t in _all_tasks(spec) if s == "train_fold"] == [1]
    for stage, _, plat in _executors(spec, platform):
        assert "activeDeadlineSeconds" not in plat
        if stage in SHM_STAGES:
            assert plat["emptyDirMounts"][0]["sizeLimit"] == "4Gi"
        if stage == "prepare_round":
            v = plat["genericEphemeralVolume"][0]
            assert (v["size"], v["storageClassName"], v["mountPath"]) == ("300Gi", "fast-ssd", "/minio")


def test_cosmos_compile_cli_resource_profile_and_pvc(tmp_path):
    from cosmos.cli import main

    out = tmp_path / "p.yaml"
    assert (
        main(
            [
                "compile",
                "-o",
                str(out),
                "--rounds",
                "0",
                "--resource-profile",
                "tiny",
                "--scratch-volume",
                "pvc:shared-data",
            ]
        )
        == 0
    )
    spec, platform = list(yaml.safe_load_all(out.read_text()))[:2]
    fold = next(c for s, c, _ in _executors(spec, platform) if s == "train_fold")
    assert fold["resources"]["resourceMemoryLimit"] == PROFILE_RESOURCES["tiny"]["train_fold"].memory_limit
    assert all("retryPolicy" not in t for _, t in _all_tasks(spec))  # tiny's table retries nothing
    pvcs = {s for s, _, plat in _executors(spec, platform) if "pvcMount" in plat}
    assert "train_fold" in pvcs and "benchmark_table" not in pvcs and "register_round" not in pvcs


@pytest.mark.parametrize(
    "args, match",
    [
        (["--scratch-volume", "nfs:x"], "ephemeral:SIZE"),
        (["--scratch-volume", "ephemeral:lots"], "not a Kubernetes quantity"),
        (["--shm-size", "16GB"], "--shm-size"),
        (["--fold-retries", "-1"], "--fold-retries"),
    ],
)
def test_cosmos_compile_cli_rejects_bad_cluster_flags(tmp_path, capsys, args, match):
    from cosmos.cli import main

    rc = main(["compile", "-o", str(tmp_path / "p.yaml"), "--rounds", "0", *args])
    assert rc != 0
    captured = capsys.readouterr()
    assert match in captured.out + captured.err
    assert not (tmp_path / "p.yaml").exists()


def test_dataset_plan_grows_with_the_data_from_each_specs_per_gb_figures():
    """--dataset-gb: disk need and timeout per stage are linear in the data's size, on top of the profile's base."""
    from pipelines.resources import TRANSFER_S_PER_GB, dataset_plan, quantity, scratch_size

    small, big = dataset_plan("paper", 10.0), dataset_plan("paper", 200.0)
    assert [p.stage for p in small] == list(SPECS)
    for a, b in zip(small, big):
        spec, base = SPECS[a.stage], PROFILE_RESOURCES["paper"][a.stage].timeout_s
        per_gb = spec.disk_per_gb * TRANSFER_S_PER_GB + spec.work_s_per_gb
        assert a.timeout_s - base == a.extra_s == pytest.approx(10 * per_gb, abs=1)
        assert b.timeout_s - base == pytest.approx(200 * per_gb, abs=1)
        assert b.disk_gb == pytest.approx(20 * a.disk_gb, abs=0.2)
        assert quantity(scratch_size(a.stage, 200.0)) >= spec.disk_per_gb * 200e9  # with headroom
    # the stages that move the most get the most: prepare_round holds data, pseudo and two nnU-Net sets
    by_stage = {p.stage: p for p in big}
    assert by_stage["prepare_round"].disk_gb > by_stage["train_fold"].disk_gb > by_stage["evaluate"].disk_gb
    with pytest.raises(ValueError, match="> 0"):
        dataset_plan("paper", 0)


def test_every_stage_gets_the_credentials_and_plans_its_disk():
    """With an s3:// pipeline root the launcher of EVERY task needs the keys (no providers block)."""
    assert SECRET_STAGES == set(SPECS)
    assert all(s.disk_per_gb >= 0 and s.work_s_per_gb >= 0 for s in SPECS.values())
    assert {n for n, s in SPECS.items() if s.disk_per_gb >= 1.0} <= {n for n, s in SPECS.items() if s.scratch}
