"""The compiled cosmos-pipeline package: DAG shape, GPU scheduling, credentials, caching, CLI.

Fast (no task runs): compiles the pipeline to YAML and inspects the KFP IR.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from components import GPU_STAGES, STAGE_NAMES, STAGES, build, stage_function
from pipelines.compile import compile_pipeline
from pipelines.task_settings import PipelineOptions, Toleration

REPO = Path(__file__).resolve().parents[1]


def _compile(tmp_path: Path, **kw) -> tuple[dict, dict]:
    """(pipeline spec, platform spec); the platform document exists only when something needs it."""
    path = tmp_path / "p.yaml"
    compile_pipeline(str(path), PipelineOptions(**kw))
    docs = list(yaml.safe_load_all(path.read_text()))
    assert len(docs) in (1, 2)
    return docs[0], (docs[1] if len(docs) == 2 else {})


def _tasks_by_component(spec: dict) -> dict[str, list[str]]:
    """component name (e.g. 'train-fold') -> executor labels of every task that runs it."""
    out: dict[str, list[str]] = {}
    for comp_name, comp in spec["components"].items():
        if "executorLabel" in comp:
            base = re.sub(r"-\d+$", "", comp_name.removeprefix("comp-"))
            out.setdefault(base, []).append(comp["executorLabel"])
    return out


NO_FINGERPRINT = "inputs.parameter_values['pipelinechannel--data_fingerprint'] == ''"


def _branch_tasks(spec: dict) -> tuple[str, dict[str, dict]]:
    """(name of the root's If/Else task, its branch tasks by name) in a cluster DAG: there must be one."""
    root = spec["root"]["dag"]["tasks"]
    (name,) = [n for n in root if n.startswith("condition-branches")]
    return name, spec["components"][root[name]["componentRef"]["name"]]["dag"]["tasks"]


def _ingest_branches(spec: dict) -> tuple[str, dict[str, dict]]:
    """(name of the root's If/Else task, {branch condition: its one ingest_validate task})."""
    name, branches = _branch_tasks(spec)
    out = {}
    for cond in branches.values():
        (task,) = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"].values()
        out[cond["triggerPolicy"]["condition"]] = task
    return name, out


def _ingest_names(spec: dict) -> set[str]:
    """The names of the ingest_validate tasks inside the If/Else branches."""
    names: set[str] = set()
    for cond in _branch_tasks(spec)[1].values():
        names |= set(spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"])
    return names


def _producers(spec: dict, dag: dict, ref: dict) -> set[tuple[str, str]]:
    """The (executor task, output) pairs a ``taskOutputArtifact`` input resolves to, through sub-DAG outputs
    (a dsl.OneOf lists one selector per If/Else branch)."""
    task = dag["tasks"][ref["producerTask"]]
    comp = spec["components"][task["componentRef"]["name"]]
    if "dag" not in comp:
        return {(ref["producerTask"], ref["outputArtifactKey"])}
    out: set[tuple[str, str]] = set()
    for sel in comp["dag"]["outputs"]["artifacts"][ref["outputArtifactKey"]]["artifactSelectors"]:
        sub = {"producerTask": sel["producerSubtask"], "outputArtifactKey": sel["outputArtifactKey"]}
        out |= _producers(spec, comp["dag"], sub)
    return out


def _ingest(spec: dict) -> dict:
    """The cacheable ingest_validate task (the Else branch: a run with a data_fingerprint)."""
    _, branches = _ingest_branches(spec)
    return branches[f"!({NO_FINGERPRINT})"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compiled")
    spec, platform = _compile(
        tmp,
        rounds=3,
        gpu_node_selector=(("cloud.google.com/gke-accelerator", "nvidia-l4"),),
        gpu_tolerations=(
            Toleration("nvidia.com/gpu", "Exists", None, "NoSchedule"),
            Toleration("dedicated", "Equal", "gpu", "NoSchedule"),
        ),
    )
    return spec, platform, (tmp / "p.yaml").read_text()


def test_one_parallel_for_over_five_folds_per_round_and_k_plus_one_rounds(compiled):
    spec, _, _ = compiled
    dag = spec["root"]["dag"]["tasks"]
    loops = {name: t for name, t in dag.items() if name.startswith("for-loop")}
    assert len(loops) == 4  # teacher + 3 students
    for task in loops.values():
        assert task["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--folds"
        assert task["iteratorPolicy"]["parallelismLimit"] == 5
        inner = spec["components"][task["componentRef"]["name"]]["dag"]["tasks"]
        assert [t["componentRef"]["name"].startswith("comp-train-fold") for t in inner.values()] == [True]
    folds = spec["root"]["inputDefinitions"]["parameters"]["folds"]["defaultValue"]
    assert [int(f) for f in folds] == [0, 1, 2, 3, 4]
    by_comp = _tasks_by_component(spec)
    assert len(by_comp["prepare-round"]) == 4
    assert len(by_comp["register-round"]) == 4
    assert len(by_comp["predict-validation"]) == 4
    assert len(by_comp["predict-pseudo-labels"]) == 4  # the last round's too: the gate and the report read them
    assert len(by_comp["train-translator"]) == 1 and len(by_comp["report"]) == 1


def test_a_teacher_only_dag_predicts_no_pseudo_labels(tmp_path):
    """K=0 (the benchmark's teacher-only rows): no student to feed, no earlier labels to compare."""
    spec, _ = _compile(tmp_path, rounds=0)
    by_comp = _tasks_by_component(spec)
    assert "predict-pseudo-labels" not in by_comp
    assert len(by_comp["register-round"]) == 1 and len(by_comp["predict-validation"]) == 1
    (reg,) = [t for name, t in spec["root"]["dag"]["tasks"].items() if name.startswith("register-round")]
    assert not {"pseudo_labels", "kept_labels"} & set(reg["inputs"].get("artifacts", {}))


def test_rounds_chain_kept_labels_teacher_models_and_the_final_flag(compiled):
    spec, _, _ = compiled
    dag = spec["root"]["dag"]["tasks"]
    prep = {
        t["inputs"]["parameters"]["round_index"]["runtimeValue"]["constant"]: (name, t)
        for name, t in dag.items()
        if name.startswith("prepare-round")
    }
    assert sorted(prep) == [0, 1, 2, 3]
    assert "kept_labels" not in prep[0][1]["inputs"].get("artifacts", {})
    for k in (1, 2, 3):
        src = prep[k][1]["inputs"]["artifacts"]["kept_labels"]["taskOutputArtifact"]
        assert src["outputArtifactKey"] == "kept_labels"
        producer = dag[src["producerTask"]]
        assert producer["inputs"]["parameters"]["round_index"]["runtimeValue"]["constant"] == k - 1
    final = {
        t["inputs"]["parameters"]["round_index"]["runtimeValue"]["constant"]: t["inputs"]["parameters"]["is_final"][
            "runtimeValue"
        ]["constant"]
        for name, t in dag.items()
        if name.startswith("register-round")
    }
    assert final == {0: False, 1: False, 2: False, 3: True}
    # each student's pseudo-labelling sees the previous round's accepted labels (carry-over, label change)
    pl = {
        t["inputs"]["parameters"]["round_index"]["runtimeValue"]["constant"]: t
        for name, t in dag.items()
        if name.startswith("predict-pseudo-labels")
    }
    assert "previous_kept" not in pl[0]["inputs"].get("artifacts", {})
    assert all(
        pl[k]["inputs"]["artifacts"]["previous_kept"]["taskOutputArtifact"]["outputArtifactKey"] == "kept_labels"
        for k in (1, 2, 3)
    )
    # the round's MLflow run id reaches the fold tasks as an artifact (see components/prepare_round.py);
    # students' folds also get the previous round's models (warm start, selftraining.student_init)
    loops = [t for name, t in dag.items() if name.startswith("for-loop")]
    with_teacher = 0
    for t in loops:
        keys = {v["taskOutputArtifact"]["outputArtifactKey"] for v in t["inputs"]["artifacts"].values()}
        assert "run_info" in keys
        with_teacher += "models" in keys
    assert with_teacher == 3
    # predict gets the fold models of its own round as one collected list
    for name, t in dag.items():
        if name.startswith("predict-validation"):
            art = t["inputs"]["artifacts"]["fold_models"]
            assert art["taskOutputArtifact"]["producerTask"].startswith("for-loop")


def test_accelerator_node_selector_and_tolerations_on_gpu_tasks_only(compiled):
    spec, platform, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    by_comp = _tasks_by_component(spec)
    gpu_components = {n.replace("_", "-") for n in GPU_STAGES}
    assert gpu_components == {
        "train-translator",
        "translate",
        "train-fold",
        "predict-pseudo-labels",
        "predict-validation",
    }
    for comp, labels in by_comp.items():
        for label in labels:
            resources = executors[label]["container"].get("resources", {})
            plat = k8s.get(label, {})
            if comp in gpu_components:
                assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
                assert int(resources["accelerator"]["resourceCount"]) == 1
                assert plat["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
                tols = {(t["key"], t["operator"], t.get("value"), t.get("effect")) for t in plat["tolerations"]}
                assert tols == {
                    ("nvidia.com/gpu", "Exists", None, "NoSchedule"),
                    ("dedicated", "Equal", "gpu", "NoSchedule"),
                }
            else:
                assert "accelerator" not in resources, comp
                assert "nodeSelector" not in plat and "tolerations" not in plat, comp


def test_secret_as_env_and_no_credential_in_yaml(compiled):
    spec, platform, text = compiled
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    # EVERY task: with an s3:// pipeline root and no launcher "providers" block, the launcher that moves a
    # task's artifacts reads the keys from the task's own environment (crop_roi, prepare_round and
    # predict_validation included, though their own code never talks to S3)
    labels = {c["executorLabel"] for c in spec["components"].values() if "executorLabel" in c}
    assert labels == set(spec["deploymentSpec"]["executors"]) and len(labels) >= len(STAGE_NAMES) - 2
    for label in sorted(labels):
        sae = k8s[label]["secretAsEnv"]
        assert len(sae) == 1 and sae[0]["secretName"] == "cosmos-credentials" and sae[0]["optional"] is True
        envs = {m["envVar"] for m in sae[0]["keyToEnv"]}
        assert {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
            "MLFLOW_TRACKING_URI",
            "MLFLOW_S3_ENDPOINT_URL",
        } <= envs
    # no credential value anywhere: no env value for the secret keys, no key-like strings
    for ex in spec["deploymentSpec"]["executors"].values():
        for env in ex["container"].get("env", []):
            assert not env["name"].startswith(("AWS_", "MLFLOW_")), env
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    # the Secret is referenced by name and key only
    assert "stringData" not in text and "secretKeyRef" not in text


def test_no_credential_value_leaks_from_the_environment(tmp_path, monkeypatch):
    """Credentials in the compiling shell's environment must not end up in the package."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://user:hunter2pass@mlflow.example.com")
    path = tmp_path / "p.yaml"
    compile_pipeline(str(path), PipelineOptions(rounds=1))
    text = path.read_text()
    for secret in ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI", "hunter2pass"):
        assert secret not in text


def test_caching_switch_and_image(tmp_path):
    spec, _ = _compile(tmp_path, rounds=0, caching=False, image="registry.example.com/cosmos:9.9")
    for t in spec["root"]["dag"]["tasks"].values():
        if "cachingOptions" in t:
            assert t["cachingOptions"] in ({}, {"enableCache": False})
    images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example.com/cosmos:9.9"}
    spec2, _ = _compile(tmp_path, rounds=0, caching=True)
    # caching on: every task but those with side effects or external inputs (tests/test_pipeline_cluster.py)
    from pipelines.resources import SIDE_EFFECT_STAGES
    from pipelines.task_settings import EXTERNAL_INPUT_STAGES

    never = SIDE_EFFECT_STAGES | EXTERNAL_INPUT_STAGES
    for t in spec2["root"]["dag"]["tasks"].values():
        if t["taskInfo"]["name"].startswith(("for-loop", "condition-branches")):  # the ingest's: see below
            continue
        stage = re.sub(r"-\d+$", "", t["componentRef"]["name"].removeprefix("comp-")).replace("-", "_")
        assert bool(t.get("cachingOptions", {}).get("enableCache")) is (stage not in never), stage


def test_no_gpu_and_no_secret_options(tmp_path):
    spec, platform = _compile(tmp_path, rounds=0, use_gpu=False, secret=None)
    # no node selector, toleration or Secret anywhere (timeouts and /dev/shm remain)
    assert all(
        "accelerator" not in ex["container"].get("resources", {}) for ex in spec["deploymentSpec"]["executors"].values()
    )
    k8s = (platform or {}).get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    assert k8s  # the platform spec now always exists: timeouts and /dev/shm
    assert all("secretAsEnv" not in v and "tolerations" not in v and "nodeSelector" not in v for v in k8s.values())


def _top_level_import_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots |= {(node.module or "").split(".")[0]} if node.level == 0 else {"<relative>"}
    return roots


def test_components_import_only_stdlib_and_kfp_at_module_top_level():
    """``import components`` (every compile) must not pull in the library's heavy dependencies: a
    component module imports the stdlib and kfp only; the specs and package files add ``components``."""
    allowed = set(sys.stdlib_module_names) | {"kfp", "__future__"}
    paths = sorted((REPO / "components").rglob("*.py"))
    assert len([p for p in paths if p.name == "component.py"]) == len(STAGES)
    for path in paths:
        own = set() if path.name == "component.py" else {"components"}
        bad = _top_level_import_roots(path) - allowed - own
        assert not bad, f"{path.relative_to(REPO)}: top-level import of {bad}"


def _stage_name_literals(path: Path, skip_display_names: bool = False) -> list[tuple[int, str]]:
    """String constants in ``path`` that are exactly a stage name, as (line, name)."""
    tree = ast.parse(path.read_text())
    display = set()
    if skip_display_names:  # _configure(ops, task, opts, "display name"): a label for humans, not a table
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "_configure" and len(call.args) == 4:
                display.add(id(call.args[3]))
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and n.value in STAGES and id(n) not in display
    ]


def test_no_stage_name_is_typed_twice():
    """The stage list is components.STAGE_NAMES; everything else is read off the specs. A stage may
    name itself inside its own folder (its resume key, its exports); nothing else names a stage."""
    assert len(set(STAGE_NAMES)) == len(STAGE_NAMES)
    init = REPO / "components" / "__init__.py"
    assert sorted(name for _, name in _stage_name_literals(init)) == sorted(STAGE_NAMES)  # once each
    for path in sorted((REPO / "components").rglob("*.py")):
        if path == init:
            continue
        rel = path.relative_to(REPO / "components")
        own = rel.parts[0] if len(rel.parts) > 1 else None
        others = [(line, name) for line, name in _stage_name_literals(path) if name != own]
        assert not others, f"components/{rel} names other stages: {others}"
    for name in ("cosmos_pipeline.py", "benchmark_pipeline.py", "task_settings.py", "resources.py", "compile.py"):
        found = _stage_name_literals(REPO / "pipelines" / name, skip_display_names=True)
        assert not found, f"pipelines/{name} types stage names (read them off the specs instead): {found}"


def _free_names(fn: ast.FunctionDef) -> set[str]:
    """Names a function reads that it neither binds nor gets from builtins."""
    import builtins

    bound = {a.arg for a in ast.walk(fn) if isinstance(a, ast.arg)}
    for n in ast.walk(fn):
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in n.names}
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            bound.add(n.id)
        elif isinstance(n, ast.FunctionDef) and n is not fn:
            bound.add(n.name)
    used = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return used - bound - set(dir(builtins))


def test_component_functions_are_self_contained():
    """KFP ships only the function's source, prefixed with kfp.dsl and typing star imports: every
    name it uses must come from there, its own body, or builtins; cosmos is imported inside."""
    prefix = "from kfp import dsl\nfrom kfp.dsl import *\nfrom typing import *\n"
    prefix_ns: dict = {}
    exec(prefix, prefix_ns)
    for name in STAGES:
        source = inspect.getsource(stage_function(name))
        tree = ast.parse(source)
        fn = tree.body[0]
        free = _free_names(fn)
        assert free <= set(prefix_ns), f"{name}: uses module-level name(s) {sorted(free - set(prefix_ns))}"
        exec(compile(prefix + source, f"<{name}>", "exec"), dict(prefix_ns))  # the source compiles standalone
        inner = [n for n in ast.walk(fn) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("cosmos")]
        assert inner, f"{name}: expected its cosmos library call imported inside the body"


def test_components_build_with_the_given_image_and_no_kfp_install():
    ops = build("example.org/cosmos:1")
    for name in STAGES:
        comp = getattr(ops, name)
        container = comp.component_spec.implementation.container
        assert container.image == "example.org/cosmos:1"
        assert "pip install" not in " ".join(container.command)
        assert callable(comp.python_func)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("nvidia.com/gpu:Exists", Toleration("nvidia.com/gpu", "Exists", None, None)),
        ("nvidia.com/gpu:Exists:NoSchedule", Toleration("nvidia.com/gpu", "Exists", None, "NoSchedule")),
        ("dedicated=gpu:NoExecute", Toleration("dedicated", "Equal", "gpu", "NoExecute")),
        ("dedicated=gpu", Toleration("dedicated", "Equal", "gpu", None)),
    ],
)
def test_toleration_parse(text, expected):
    assert Toleration.parse(text) == expected


@pytest.mark.parametrize("bad", ["justakey", "k=v:Never", ":Exists", "k:Equal"])
def test_toleration_parse_rejects(bad):
    from cosmos.errors import CosmosError

    with pytest.raises(CosmosError):
        Toleration.parse(bad)


def test_cosmos_compile_cli(tmp_path, capsys):
    from cosmos.cli import main

    out = tmp_path / "sub" / "cosmos-pipeline.yaml"
    rc = main(
        [
            "compile",
            "-o",
            str(out),
            "--rounds",
            "2",
            "--folds",
            "0,1,2",
            "--parallelism",
            "3",
            "--image",
            "r.example/cosmos:2",
            "--gpu-node-selector",
            "pool=gpu",
            "--gpu-toleration",
            "dedicated=gpu:NoSchedule",
            "--gpu-limit",
            "2",
            "--set",
            "segmentation.epochs=7",
        ]
    )
    assert rc == 0
    spec, platform = list(yaml.safe_load_all(out.read_text()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert [int(f) for f in params["folds"]["defaultValue"]] == [0, 1, 2]
    assert params["profile"]["defaultValue"] == "paper"
    assert yaml.safe_load(params["config"]["defaultValue"]) == {"segmentation": {"epochs": 7}}
    assert len([t for t in spec["root"]["dag"]["tasks"] if t.startswith("for-loop")]) == 3
    fold_exec = spec["deploymentSpec"]["executors"]["exec-train-fold"]["container"]
    assert int(fold_exec["resources"]["accelerator"]["resourceCount"]) == 2
    assert fold_exec["image"] == "r.example/cosmos:2"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-fold"]
    assert k8s["nodeSelector"]["labels"] == {"pool": "gpu"}
    assert k8s["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    assert "wrote" in capsys.readouterr().out


def test_cosmos_compile_cli_errors(tmp_path, capsys):
    from cosmos.cli import main

    assert main(["compile", "-o", str(tmp_path / "x.yaml"), "--folds", "0,9"]) == 2
    assert "--folds" in capsys.readouterr().err
    assert main(["compile", "-o", str(tmp_path / "x.yaml"), "--gpu-toleration", "bad"]) == 2
    assert main(["compile", "-o", str(tmp_path / "x.yaml"), "--set", "nosuch.key=1"]) == 2


def test_every_pipeline_parameter_reaches_the_components(compiled):
    spec, _, _ = compiled
    params = set(spec["root"]["inputDefinitions"]["parameters"])
    assert params == {
        "data_uri",
        "val_labels_uri",
        "data_fingerprint",
        "profile",
        "config",
        "folds",
        "tracking_uri",
        "experiment",
        "work_root",
    }
    name, branches = _ingest_branches(spec)
    handed = spec["root"]["dag"]["tasks"][name]["inputs"]["parameters"]  # root -> the If/Else -> each branch
    assert handed["pipelinechannel--data_uri"] == {"componentInputParameter": "data_uri"}
    for ingest in branches.values():
        assert ingest["inputs"]["parameters"]["data_uri"] == {"componentInputParameter": "pipelinechannel--data_uri"}
    assert json.dumps(spec).count('"componentInputParameter": "config"') >= 10


def test_compiled_k_and_folds_reach_the_first_task(compiled):
    """K is unrolled at compile time: the first task gets it as a constant to check the run's config."""
    spec, _, _ = compiled
    _, branches = _ingest_branches(spec)
    for task in branches.values():
        ingest = task["inputs"]["parameters"]
        assert ingest["compiled_rounds"]["runtimeValue"]["constant"] == 3
        assert ingest["folds"] == {"componentInputParameter": "pipelinechannel--folds"}


def test_profile_decides_k_and_folds_at_compile_time(tmp_path):
    from cosmos.cli import main

    out = tmp_path / "small.yaml"
    assert main(["compile", "-o", str(out), "--profile", "small"]) == 0
    spec = list(yaml.safe_load_all(out.read_text()))[0]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert [int(f) for f in params["folds"]["defaultValue"]] == [0, 1]  # small's folds
    assert params["profile"]["defaultValue"] == "small"
    assert len([t for t in spec["root"]["dag"]["tasks"] if t.startswith("for-loop")]) == 4  # K=3 (+ teacher)


def test_benchmark_pipeline_compiles_with_the_same_rounds_per_row(tmp_path):
    from pipelines.compile import compile_pipeline

    path = tmp_path / "b.yaml"
    compile_pipeline(str(path), PipelineOptions(rounds=2, profile="small", folds=(0, 1)), benchmark=True)
    spec = list(yaml.safe_load_all(path.read_text()))[0]
    assert spec["pipelineInfo"]["name"] == "cosmos-benchmark"
    by_comp = _tasks_by_component(spec)
    # rows: source-only, DA w/o Seg, DA w/ Seg + 2 students, oracle = 1 + 1 + 3 + 1 rounds
    assert len(by_comp["register-round"]) == 6
    assert len(by_comp["train-translator"]) == 2 and len(by_comp["labelled-as-pseudo"]) == 2
    assert len(by_comp["benchmark-table"]) == 1
    overrides = {
        t["inputs"]["parameters"]["overrides"]["runtimeValue"]["constant"]
        for name, t in spec["root"]["dag"]["tasks"].items()
        if name.startswith("train-translator")
    }
    assert any("segmentor: false" in o for o in overrides) and all("-benchmark" in o for o in overrides)


ROUND_STAGES = (
    "prepare-round",
    "start-round-run",
    "train-fold",
    "predict-pseudo-labels",
    "predict-validation",
    "evaluate",
    "register-round",
)


def _round_tasks(spec: dict) -> list[tuple]:
    """Every round task of a compiled DAG (loops included) as (stage, constant parameters except the row's
    overrides, input artifact names, the executor's command and args), sorted."""
    executors = spec["deploymentSpec"]["executors"]
    out = []

    def walk(tasks: dict) -> None:
        for task in tasks.values():
            comp_name = task["componentRef"]["name"]
            comp = spec["components"][comp_name]
            if "dag" in comp:
                walk(comp["dag"]["tasks"])
                continue
            base = re.sub(r"-\d+$", "", comp_name.removeprefix("comp-"))
            if base not in ROUND_STAGES:
                continue
            params = {
                k: v.get("runtimeValue", {}).get("constant")
                for k, v in task.get("inputs", {}).get("parameters", {}).items()
                if k != "overrides"
            }
            container = executors[comp["executorLabel"]]["container"]
            out.append(
                (
                    base,
                    json.dumps(params, sort_keys=True, default=str),
                    tuple(sorted(task.get("inputs", {}).get("artifacts", {}))),
                    json.dumps([container.get("command"), container.get("args")]),
                )
            )

    walk(spec["root"]["dag"]["tasks"])
    return sorted(out)


def test_benchmark_cosmos_rows_are_cosmos_runs_rounds(tmp_path):
    """One round engine: the benchmark's COSMOS row compiles to exactly cosmos-pipeline's round tasks (same
    stages, parameters, inputs and component code); only the row's tracking names (``overrides``) differ."""
    from kfp import compiler

    from pipelines.benchmark_pipeline import build_benchmark_pipeline

    opts = PipelineOptions(rounds=2, profile="tiny", folds=(0,))
    run_path, bench_path = tmp_path / "run.yaml", tmp_path / "bench.yaml"
    compile_pipeline(str(run_path), opts)
    compiler.Compiler().compile(build_benchmark_pipeline(opts, rows=("cosmos",)), package_path=str(bench_path))
    ours = _round_tasks(list(yaml.safe_load_all(run_path.read_text()))[0])
    theirs = _round_tasks(list(yaml.safe_load_all(bench_path.read_text()))[0])
    assert len(ours) == 3 * 7  # three rounds of seven stages
    assert ours == theirs


def test_selftrain_variant_starts_from_a_pseudo_folder(tmp_path):
    spec, _ = _compile(tmp_path, rounds=1, start="pseudo")
    by_comp = _tasks_by_component(spec)
    assert "train-translator" not in by_comp and "translate" not in by_comp
    assert len(by_comp["import-pseudo"]) == 1 and len(by_comp["register-round"]) == 2
    # the crop learns its region from the imported (labelled) pseudo-hrT2: import first, then the crop
    crop = spec["root"]["dag"]["tasks"]["crop-roi"]
    source = crop["inputs"]["artifacts"]["roi_source"]["taskOutputArtifact"]
    assert source["producerTask"] == "import-pseudo" and source["outputArtifactKey"] == "pseudo"


# --------------------------------------------------------------------------- issue 27: cluster-real DAG


def _stage_of(task: dict) -> str:
    return re.sub(r"-\d+$", "", task["componentRef"]["name"].removeprefix("comp-")).replace("-", "_")


def _const(task: dict, name: str):
    return task["inputs"]["parameters"][name]["runtimeValue"]["constant"]


def test_unrolled_folds_are_one_task_each_with_its_retry_policy(tmp_path):
    """--unroll-folds: no ParallelFor, one train_fold per compiled fold per round, each with the retry
    policy the backend would drop inside a loop; every consumer gets every fold's model, wired one by one."""
    spec, _ = _compile(tmp_path, rounds=1, folds=(0, 2, 4), unroll_folds=True)
    dag = spec["root"]["dag"]["tasks"]
    assert not [n for n in dag if n.startswith("for-loop")]
    folds = {n: t for n, t in dag.items() if _stage_of(t) == "train_fold"}
    assert len(folds) == 3 * 2
    for task in folds.values():
        assert task["retryPolicy"]["maxRetryCount"] == 3  # the paper table's retries, on the task itself
        assert task["retryPolicy"]["backoffDuration"] == "120s"
        assert task["inputs"]["parameters"]["pipeline_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    by_round: dict[int, dict[int, str]] = {}
    for name, task in folds.items():
        by_round.setdefault(_const(task, "round_index"), {})[_const(task, "fold")] = name
    assert {k: sorted(v) for k, v in by_round.items()} == {0: [0, 2, 4], 1: [0, 2, 4]}
    consumers = [
        t for t in dag.values() if _stage_of(t) in ("predict_validation", "predict_pseudo_labels", "register_round")
    ]
    assert len(consumers) == 2 + 2 + 2
    for task in consumers:
        arts = task["inputs"]["artifacts"]
        assert "fold_models" not in arts
        wired = {arts[f"fold_model_{i}"]["taskOutputArtifact"]["producerTask"] for i in range(3)}
        assert "fold_model_3" not in arts
        assert wired == set(by_round[_const(task, "round_index")].values())  # all folds of ITS round
    for ingest in _ingest_branches(spec)[1].values():
        assert _const(ingest, "compiled_folds") == "0,2,4"


def test_the_parallel_for_stays_the_default_and_its_consumers_collect(compiled):
    spec, _, _ = compiled
    dag = spec["root"]["dag"]["tasks"]
    assert len([n for n in dag if n.startswith("for-loop")]) == 4
    assert not [t for t in dag.values() if _stage_of(t) == "train_fold"]  # all inside the loops
    for task in dag.values():
        if _stage_of(task) in ("predict_validation", "predict_pseudo_labels", "register_round"):
            arts = task["inputs"]["artifacts"]
            assert arts["fold_models"]["taskOutputArtifact"]["producerTask"].startswith("for-loop")
            assert not [k for k in arts if k.startswith("fold_model_")]
    assert [_const(t, "compiled_folds") for t in _ingest_branches(spec)[1].values()] == ["", ""]


def test_unrolling_more_folds_than_the_consumers_take_is_refused(tmp_path):
    from components.spec import MAX_UNROLLED_FOLDS

    with pytest.raises(ValueError, match="--unroll-folds"):
        _compile(tmp_path, rounds=0, folds=tuple(range(MAX_UNROLLED_FOLDS + 1)), unroll_folds=True)


def test_every_task_carries_the_compiled_profile_to_check_the_run_time_one(tmp_path):
    spec, _ = _compile(tmp_path, rounds=1, profile="small")
    tasks = [t for t in spec["root"]["dag"]["tasks"].values() if not t["taskInfo"]["name"].startswith("for-loop")]
    for comp in spec["components"].values():  # the loop bodies too
        tasks += [t for t in comp.get("dag", {}).get("tasks", {}).values()]
    executors = [t for t in tasks if "executorLabel" in spec["components"][t["componentRef"]["name"]]]
    assert len(executors) >= len(STAGE_NAMES) - 3
    for task in executors:
        assert _const(task, "compiled_profile") == "small", task["taskInfo"]["name"]
        assert task["inputs"]["parameters"]["profile"]["componentInputParameter"].endswith("profile")  # the run's


def test_evaluate_fetches_the_validation_set_and_the_crop_windows_not_the_whole_ingest(compiled):
    spec, _, _ = compiled
    root = spec["root"]["dag"]
    dag = root["tasks"]
    ingests = _ingest_names(spec)
    evals = [t for t in dag.values() if _stage_of(t) == "evaluate"]
    assert len(evals) == 4
    for task in evals:
        arts = {k: v["taskOutputArtifact"] for k, v in task["inputs"]["artifacts"].items()}
        assert _producers(spec, root, arts["validation"]) == {(n, "validation") for n in ingests}
        assert arts["roi_records"] == {"outputArtifactKey": "roi_records", "producerTask": "crop-roi"}
        assert not [a for a in arts.values() if a["outputArtifactKey"] in ("data", "roi_data")]
    # the whole ingested data goes to crop_roi alone
    readers = [
        n
        for n, t in dag.items()
        for a in t.get("inputs", {}).get("artifacts", {}).values()
        if "taskOutputArtifact" in a
        and _producers(spec, root, a["taskOutputArtifact"]) & {(i, "data") for i in ingests}
    ]
    assert readers == ["crop-roi"]


def _compile_variant(tmp_path: Path, variant: str) -> tuple[dict, dict]:
    """(pipeline spec, Kubernetes executor configs) of cosmos-pipeline, its unrolled or from-pseudo package, or
    cosmos-benchmark."""
    kw = {"unrolled": {"unroll_folds": True, "folds": (0, 1)}, "from_pseudo": {"start": "pseudo"}}.get(variant, {})
    path = tmp_path / f"{variant}.yaml"
    compile_pipeline(str(path), PipelineOptions(rounds=1, **kw), benchmark=variant == "benchmark")
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.mark.parametrize("variant", ["pipeline", "benchmark", "from_pseudo", "unrolled"])
def test_a_run_without_a_data_fingerprint_gets_an_ingest_that_is_never_cached(tmp_path, variant):
    """The Kubeflow UI and ``kfp run submit`` pass no data_fingerprint: the DAG branches on it, so such a run
    ingests with caching off (stale data is never reused), while a run with one keeps the cacheable ingest.
    The two tasks differ only in caching and their display name, and every reader of an ingest output reads
    the dsl.OneOf of both branches."""
    spec, k8s = _compile_variant(tmp_path, variant)
    root = spec["root"]["dag"]
    assert not [t for t in root["tasks"].values() if _stage_of(t) == "ingest_validate"]  # only inside the branches
    name, branches = _ingest_branches(spec)
    assert set(branches) == {NO_FINGERPRINT, f"!({NO_FINGERPRINT})"}  # If / Else on the parameter
    handed = root["tasks"][name]["inputs"]["parameters"]["pipelinechannel--data_fingerprint"]
    assert handed == {"componentInputParameter": "data_fingerprint"}
    uncached, cached = branches[NO_FINGERPRINT], branches[f"!({NO_FINGERPRINT})"]
    assert uncached.get("cachingOptions", {}).get("enableCache", False) is False
    assert cached["cachingOptions"] == {"enableCache": True}
    assert "not cached" in uncached["taskInfo"]["name"] and "not cached" not in cached["taskInfo"]["name"]
    # the same task otherwise: inputs, interface, container (image, command, resources), platform settings
    assert uncached["inputs"] == cached["inputs"]
    assert cached["inputs"]["parameters"]["data_fingerprint"] == {
        "componentInputParameter": "pipelinechannel--data_fingerprint"
    }
    comps = [spec["components"][t["componentRef"]["name"]] for t in (uncached, cached)]
    assert {k: v for k, v in comps[0].items() if k != "executorLabel"} == {
        k: v for k, v in comps[1].items() if k != "executorLabel"
    }
    labels = [c["executorLabel"] for c in comps]
    executors = [spec["deploymentSpec"]["executors"][label]["container"] for label in labels]
    assert executors[0] == executors[1] and "resources" in executors[0]
    assert k8s[labels[0]] == k8s[labels[1]] and "secretAsEnv" in k8s[labels[0]]
    # every reader of an ingest output, in any DAG but the branches' own, reads the OneOf of both branches
    ingests = _ingest_names(spec)
    branch_dags = {id(spec["components"][c["componentRef"]["name"]]["dag"]) for c in _branch_tasks(spec)[1].values()}
    dags = [root] + [c["dag"] for c in spec["components"].values() if "dag" in c and id(c["dag"]) not in branch_dags]
    reads: dict[str, list[str]] = {}
    for dag in dags:
        for task_name, task in dag["tasks"].items():
            for given in task.get("inputs", {}).get("parameters", {}).values():
                assert given.get("taskOutputParameter", {}).get("producerTask") not in ingests, task_name
            for key, given in task.get("inputs", {}).get("artifacts", {}).items():
                ref = given.get("taskOutputArtifact")
                if ref is None:
                    continue
                assert ref["producerTask"] not in ingests, f"{task_name} reads one branch's ingest"
                found = _producers(spec, dag, ref)
                if found & {(i, k) for i in ingests for k in ("data", "validation")}:
                    assert ref["producerTask"] == name
                    assert found == {(i, key) for i in ingests}, task_name  # both branches, the same output
                    reads.setdefault(key, []).append(_stage_of(task))
    assert reads["data"] == ["crop_roi"]
    n_eval = sum(1 for d in dags for t in d["tasks"].values() if _stage_of(t) == "evaluate")
    assert reads["validation"] == ["evaluate"] * n_eval and n_eval >= 1


def test_a_local_dag_keeps_one_ingest_task_for_kfp_local(tmp_path):
    """kfp.local (cosmos run / selftrain / benchmark) cannot resolve a dsl.OneOf of artifacts, so the local DAG
    has the one ingest task, read directly; local runs resume by their own key and need no fingerprint."""
    from cosmos.config import load_config
    from pipelines.local_run import _local_options

    _, opts = _local_options(load_config("tiny"), None)
    assert opts.local  # what cosmos run, selftrain and benchmark build
    spec, _ = _compile(tmp_path, rounds=0, local=True)
    dag = spec["root"]["dag"]["tasks"]
    assert not [n for n in dag if n.startswith("condition")]
    assert dag["ingest-validate"]["inputs"]["parameters"]["data_fingerprint"] == {
        "componentInputParameter": "data_fingerprint"
    }
    data = dag["crop-roi"]["inputs"]["artifacts"]["data"]["taskOutputArtifact"]
    assert data == {"outputArtifactKey": "data", "producerTask": "ingest-validate"}


def test_ingest_is_cached_on_the_data_fingerprint(compiled):
    spec, _, _ = compiled
    ingest = _ingest(spec)
    assert ingest["cachingOptions"] == {"enableCache": True}
    assert ingest["inputs"]["parameters"]["data_fingerprint"] == {
        "componentInputParameter": "pipelinechannel--data_fingerprint"
    }
    assert spec["root"]["inputDefinitions"]["parameters"]["data_fingerprint"]["defaultValue"] == ""
    # crop_roi, fed only by the ingest, is cacheable too: a cached ingest's artifact keeps its name
    crop = spec["root"]["dag"]["tasks"]["crop-roi"]
    assert crop["cachingOptions"] == {"enableCache": True}


def test_pseudo_uri_exists_only_where_import_pseudo_reads_it(tmp_path):
    spec, _ = _compile(tmp_path, rounds=0)
    assert "pseudo_uri" not in spec["root"]["inputDefinitions"]["parameters"]
    assert "comp-import-pseudo" not in spec["components"]
    spec, _ = _compile(tmp_path, rounds=0, start="pseudo")
    assert "pseudo_uri" in spec["root"]["inputDefinitions"]["parameters"]
    imp = spec["root"]["dag"]["tasks"]["import-pseudo"]
    assert imp["inputs"]["parameters"]["pseudo_uri"] == {"componentInputParameter": "pseudo_uri"}
    assert "comp-train-translator" not in spec["components"]


def test_dataset_gb_scales_timeouts_and_sizes_each_stages_scratch(tmp_path):
    from components import SPECS
    from pipelines.resources import PROFILE_RESOURCES, TRANSFER_S_PER_GB, ScratchVolume, quantity

    base_spec, base_plat = _compile(tmp_path, rounds=0)
    spec, plat = _compile(
        tmp_path, rounds=0, dataset_gb=80.0, scratch=ScratchVolume(kind="ephemeral", size="20Gi", storage_class="fast")
    )
    base_k8s = base_plat["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    k8s = plat["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for comp in spec["components"].values():
        if "executorLabel" not in comp:
            continue
        stage = re.sub(r"-\d+$", "", comp["executorLabel"].removeprefix("exec-")).replace("-", "_")
        label, s = comp["executorLabel"], SPECS[stage]
        base = PROFILE_RESOURCES["paper"][stage].timeout_s
        assert int(base_k8s[label]["activeDeadlineSeconds"]) == base
        extra = int(k8s[label]["activeDeadlineSeconds"]) - base
        assert extra == pytest.approx(80 * (s.disk_per_gb * TRANSFER_S_PER_GB + s.work_s_per_gb), abs=1)
        vols = k8s[label].get("genericEphemeralVolume", [])
        if s.scratch:
            (vol,) = vols
            size = quantity(vol["size"])
            assert size >= s.disk_per_gb * 80e9 and size >= quantity("20Gi")  # the planned need, SIZE a floor
            assert vol["storageClassName"] == "fast"
        else:
            assert not vols
    fold_vol = k8s["exec-train-fold"]["genericEphemeralVolume"][0]
    assert quantity(fold_vol["size"]) > quantity("20Gi")  # 1.8 x 80 GB does not fit the given floor
    # every ingest task knows the size the plan was made for, to refuse data that outgrow it (and 0 when undeclared)
    for compiled, gb in ((spec, 80.0), (base_spec, 0.0)):
        dags = [compiled["root"], *compiled["components"].values()]
        tasks = [t for d in dags for t in d.get("dag", {}).get("tasks", {}).values()]
        ingests = [t for t in tasks if t["componentRef"]["name"].startswith("comp-ingest-validate")]
        assert ingests
        for t in ingests:
            assert t["inputs"]["parameters"]["compiled_dataset_gb"]["runtimeValue"]["constant"] == gb


def test_cosmos_compile_cli_unroll_dataset_gb_and_from_pseudo(tmp_path, capsys):
    from cosmos.cli import main

    out = tmp_path / "u.yaml"
    rc = main(["compile", "-o", str(out), "--rounds", "0", "--folds", "0,1", "--unroll-folds", "--dataset-gb", "120"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "folds unrolled" in text and "plan for 120 GB" in text and "kubeflow/pipelines #11137" in text
    spec = next(yaml.safe_load_all(out.read_text()))
    assert len([t for t in spec["root"]["dag"]["tasks"].values() if _stage_of(t) == "train_fold"]) == 2
    assert main(["compile", "-o", str(tmp_path / "p.yaml"), "--rounds", "0", "--from-pseudo"]) == 0
    spec = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    assert "pseudo_uri" in spec["root"]["inputDefinitions"]["parameters"]
    capsys.readouterr()
    for bad in (["--dataset-gb", "0"], ["--dataset-gb", "nan"], ["--unroll-folds", "--folds", "0,1,2,3,4,5"]):
        assert main(["compile", "-o", str(tmp_path / "x.yaml"), "--rounds", "0", *bad]) == 2, bad
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["compile", "-o", str(tmp_path / "x.yaml"), "--benchmark", "--from-pseudo"]) == 2
